"""The EMOTE path: networks, losses, exchange, checkpoints, training, `animate --model` and eval."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from evp_anim.emotions import EMOTIONS
from evp_anim.errors import EvpError
from evp_anim.face.channels import RIG_CHANNELS
from evp_anim.tracks import load_track

EXE = [sys.executable, "-m", "evp_anim.cli"]


def run(*args, sfm_dir=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if sfm_dir is not None:
        env["EVP_ANIM_SFM_DIR"] = str(sfm_dir)
    return subprocess.run(EXE + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=300)


def one_line_error(proc, text):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def rig(sfm_dir):
    from evp_anim.face.rig import FaceRig
    return FaceRig(sfm_dir)


@pytest.fixture(scope="module")
def data(tiny_corpus, sfm_dir):
    from evp_anim.train.emote_trainer import load_rig_weights
    from evp_anim.train.features import load_features
    feats = load_features(tiny_corpus, sfm_dir)
    return feats, load_rig_weights(tiny_corpus, feats.rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data, rig, tiny_corpus):
    """A real (short) five-stage training run on the tiny corpus, saved like the CLI does."""
    from evp_anim.train.emote_trainer import EmoteTrainConfig, EmoteTrainer
    feats, weights = data
    out = tmp_path_factory.mktemp("emote")
    torch.set_num_threads(1)
    cfg = EmoteTrainConfig(steps=(40, 30, 20, 30, 40), batch=6, crop=32, checkpoint_every=15)
    model = EmoteTrainer(feats, weights, rig, cfg, out / "run", corpus_name=str(tiny_corpus)).run()
    return model.save(out / "emote.pt"), out / "run", cfg


@pytest.fixture(scope="module")
def speech(tiny_corpus):
    from evp_anim.data.manifest import read_manifest
    row = read_manifest(tiny_corpus / "manifest.csv")[0]
    return tiny_corpus / row.audio


def test_rig_weights_cache_matches_the_tracks(data, tiny_corpus):
    feats, weights = data
    tr = load_track(tiny_corpus / feats.rows[4].track)
    assert tr.expression_names == list(RIG_CHANNELS)
    np.testing.assert_allclose(weights[4], tr.expression, atol=1e-3)   # float16 cache
    assert all(len(w) == len(x) for w, x in zip(weights, feats.windows))


def test_network_shapes_for_lengths_not_a_multiple_of_the_latent_rate(rig):
    from evp_anim.models.emote import EmoteConfig, EmoteNet, lip_vertices
    lips = lip_vertices(rig)
    assert 100 < len(lips) < 400
    lm = rig.mean[rig.landmark_vertices]
    # the lip vertices lie around the mouth landmarks
    assert np.abs(rig.mean[lips, 1] - lm[48:68, 1].mean()).max() < 15
    net = EmoteNet(EmoteConfig(n_speakers=3, lip_vertices=len(lips)))
    b, t = 2, 37
    win = torch.randn(b, t, 28, 12)
    emo = torch.zeros(b, t, 8)
    emo[..., 5] = 1
    probs = net.viseme_probs(win)
    assert probs.shape == (b, t, 15)
    torch.testing.assert_close(probs.sum(-1), torch.ones(b, t))
    z = net.generator(probs, emo, torch.full((b, t), 0.5), torch.tensor([0, 3]))
    assert z.shape == (b, 19, 32)            # 12.5 Hz latents: ceil(37 / 2)
    assert net.prior.decode(z, t).shape == (b, t, 42)
    w = net.generate(win, emo, torch.full((b, t), 0.5), torch.tensor([1, 2]))
    assert w.shape == (b, t, 42)
    mu, logvar = net.prior.encode(w)
    assert mu.shape == logvar.shape == (b, 19, 32)
    slow = EmoteNet(EmoteConfig(n_speakers=3, lip_vertices=len(lips), rate=4))
    assert slow.prior.encode(w)[0].shape == (b, 10, 32)
    assert slow.generate(win, emo, torch.zeros(b, t), torch.tensor([0, 0])).shape == (b, t, 42)
    with pytest.raises(EvpError, match="latent rate"):
        EmoteNet(EmoteConfig(rate=3))
    assert net.lip_reader(w).shape == (b, t, 15) and net.emotion_classifier(w).shape == (b, 8)
    direct = EmoteNet(EmoteConfig(n_speakers=3, lip_vertices=len(lips), direct=True))
    assert direct.generate(win, emo, torch.zeros(b, t), torch.tensor([0, 0])).shape == (b, t, 42)


def test_gram_matrix_gives_the_mean_squared_vertex_error(rig):
    from evp_anim.models.emote import rig_bases
    bases = rig_bases(rig)
    rng = np.random.default_rng(0)
    e = rng.normal(0, 0.1, (5, 42)).astype(np.float32)
    v = rig.vertices(None, e) - rig.vertices()[None]
    want = (v ** 2).sum(-1).mean(1)
    got = ((e @ bases["gram_face"]) * e).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-3)
    lv = v[:, bases["lip_vertices"]]
    np.testing.assert_allclose(((e @ bases["gram_lip"]) * e).sum(-1), (lv ** 2).sum(-1).mean(1), rtol=1e-3)


def test_lip_vertex_error_is_the_mean_of_per_frame_maxima():
    from evp_anim.eval.metrics import lip_vertex_error
    gt = np.zeros((4, 10, 3))
    gen = gt.copy()
    gen[:, :, 0] = 1.0            # every vertex 1 mm off
    gen[2, 3] = [0.0, 3.0, 4.0]   # one vertex 5 mm off in frame 2
    assert lip_vertex_error(gen, gt) == pytest.approx((1 + 1 + 5 + 1) / 4)
    with pytest.raises(EvpError, match="differ in shape"):
        lip_vertex_error(gen[:2], gt)


def test_exchange_permutation_moves_samples_to_other_emotions():
    from evp_anim.train.emote_trainer import exchange_permutation
    rng = np.random.default_rng(3)
    emo = np.array([0, 0, 5, 5, 6, 6, 1, 2])
    for _ in range(20):
        perm = exchange_permutation(emo, rng)
        assert (emo[perm] != emo).all()
    assert (exchange_permutation(np.zeros(4, int), rng) != np.arange(4)).all()  # one emotion: still moved


def _stage_loss(trainer, stage, batch):
    trainer.stage = stage
    trainer._freeze_for_stage()
    module = trainer._module()
    torch.manual_seed(0)
    loss, _ = module(*batch)
    return module, loss


@pytest.mark.parametrize("stage", [0, 1, 2, 3, 4])
def test_one_training_step_lowers_each_stage_loss(stage, data, rig, tmp_path):
    from evp_anim.train.emote_trainer import EmoteTrainConfig, EmoteTrainer
    feats, weights = data
    torch.manual_seed(0)
    trainer = EmoteTrainer(feats, weights, rig, EmoteTrainConfig(batch=8, crop=32, lr=1e-3), tmp_path / "r")
    trainer.stage = stage
    batch = trainer._batch()
    trainer.optim = trainer._make_optim()
    _, before = _stage_loss(trainer, stage, batch)
    mods = trainer._stage_modules()
    start = [[p.detach().clone() for p in m.parameters()] for m in mods]
    for _ in range(2):
        _, loss = _stage_loss(trainer, stage, batch)
        trainer.optim.zero_grad()
        loss.backward()
        trainer.optim.step()
    _, after = _stage_loss(trainer, stage, batch)
    assert after.item() < before.item()
    # only this stage's module moved: the others (e.g. the content encoder in stage 5) stay frozen
    moved = [any(not torch.equal(p, q) for p, q in zip(m.parameters(), s0)) for m, s0 in zip(mods, start)]
    assert moved == [k == stage for k in range(len(mods))]


def test_exchange_conditions_the_second_pass_on_the_swapped_emotions(data, rig, tmp_path):
    from evp_anim.train.emote_trainer import EmoteTrainConfig, EmoteTrainer, GeneratorLoss
    feats, weights = data
    trainer = EmoteTrainer(feats, weights, rig, EmoteTrainConfig(batch=6, crop=32), tmp_path / "r")
    trainer.stage = 4
    batch = trainer._batch()
    seen = []
    real = trainer.net.generate

    def spy(windows, emotion, intensity, speaker, visemes=None):
        seen.append((emotion[:, 0].clone(), intensity[:, 0].clone(), visemes))
        return real(windows, emotion, intensity, speaker, visemes)

    trainer.net.generate = spy
    loss, logs = GeneratorLoss(trainer.net, trainer.rig_loss, trainer.cfg)(*batch)
    emotion, intensity, perm = batch[3], batch[4], batch[7]
    assert len(seen) == 2 and {"x_emo", "x_lip", "lip", "emo"} <= set(logs)
    torch.testing.assert_close(seen[0][0], emotion)
    torch.testing.assert_close(seen[1][0], emotion[perm])
    torch.testing.assert_close(seen[1][1], intensity[perm])
    assert seen[0][2] is seen[1][2]            # one content pass: the same visemes for both
    seen.clear()
    no_x = EmoteTrainConfig(batch=6, crop=32, without=("exchange", "lip"))
    _, logs = GeneratorLoss(trainer.net, trainer.rig_loss, no_x)(*batch)
    assert len(seen) == 1 and "x_emo" not in logs and "lip" not in logs


def test_generator_stage_reads_the_acoustic_frames_blended_into_the_phone_samples(data, rig, tiny_corpus,
                                                                                   sfm_dir, tmp_path):
    """With the corpus's acoustic frames loaded, a generator batch carries them (B, T, 15) and the
    phone samples' viseme input is the true visemes blended with them; without, the batch's last
    item is None and the phone samples read the true visemes alone."""
    from evp_anim.train.emote_trainer import EmoteTrainConfig, EmoteTrainer, GeneratorLoss
    from evp_anim.train.features import load_features, phone_visemes
    feats = load_features(tiny_corpus, sfm_dir, acoustic=True)
    cfg = EmoteTrainConfig(batch=64, crop=32, phone_content=1.0)
    trainer = EmoteTrainer(feats, data[1], rig, cfg, tmp_path / "r")
    trainer.stage = 4
    batch = trainer._batch()
    assert batch[-1].shape == batch[2].shape + (15,)
    seen = []
    real = trainer.net.generate

    def spy(windows, emotion, intensity, speaker, visemes=None):
        seen.append(visemes)
        return real(windows, emotion, intensity, speaker, visemes)

    trainer.net.generate = spy
    torch.manual_seed(0)
    GeneratorLoss(trainer.net, trainer.rig_loss, cfg)(*batch)
    phones = phone_visemes(batch[2], 15)
    exact = (seen[0] - phones).abs().amax(dim=(1, 2)) < 1e-6
    heard_only = (seen[0] - batch[-1]).abs().amax(dim=(1, 2)) < 1e-6
    assert 0 < exact.sum() < 64 and 0 < heard_only.sum() < 64     # both ends of the mix, and blends
    no_acoustic = EmoteTrainer(data[0], data[1], rig, cfg, tmp_path / "r2")
    no_acoustic.stage = 4
    assert no_acoustic._batch()[-1] is None


def test_checkpoint_round_trip_resume_and_corrupt_files(trained, data, tmp_path, tiny_model, rig):
    from evp_anim.models.emote import EmoteModel
    from evp_anim.train.emote_trainer import EmoteTrainer
    path, run_dir, cfg = trained
    feats, weights = data
    model = EmoteModel.load(path)
    assert model.meta["channels"] == list(RIG_CHANNELS) and model.speakers
    a = model.predict(feats.windows[0], np.eye(8)[5], 1.0, 1)
    assert a.shape == (len(feats.windows[0]), 42) and a.min() >= 0 and a.max() <= 1
    b = EmoteModel.load(model.save(tmp_path / "again.pt")).predict(feats.windows[0], np.eye(8)[5], 1.0, 1)
    np.testing.assert_allclose(a, b, atol=1e-6)
    # a finished run resumes at its end and gives the same model
    again = EmoteTrainer(feats, weights, rig, cfg, run_dir).run()
    np.testing.assert_allclose(again.predict(feats.windows[0], np.eye(8)[5], 1.0, 1), a, atol=2e-3)
    assert (run_dir / "perceptual.pt").is_file()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(path.read_bytes()[:5000])
    old = tmp_path / "old.pt"                  # a format-1 file (end-to-end audio encoder, 6.25 Hz prior)
    blob = torch.load(path, weights_only=True)
    torch.save(dict(blob, version=1), old)
    for p, text in ((bad, "not a readable model file"), (tiny_model, "an EVP model"),
                    (tmp_path / "none.pt", "not found"), (old, "older evp-anim")):
        with pytest.raises(EvpError, match=text) as e:
            EmoteModel.load(p)
        assert "\n" not in str(e.value)


def test_train_emote_cli_and_animate_with_the_emote_model(tmp_path, tiny_corpus, speech, sfm_dir, trained):
    path = trained[0]
    out = tmp_path / "cli.pt"
    p = run("--quiet", "train-emote", tiny_corpus, "-o", out, "--steps", "6,4,4,4,6", "--batch", "4", "--crop", "32",
            "--threads", "1", sfm_dir=sfm_dir)
    assert p.returncode == 0, p.stderr
    assert out.is_file() and (tmp_path / "cli.run" / "checkpoint.pt").is_file()
    from evp_anim.models.emote import EmoteModel
    assert len(EmoteModel.load(out).meta["speech_mfcc_mean"]) == 12      # animate's MFCC shift
    p = run("--quiet", "animate", speech, "-o", tmp_path / "a.npz", "--model", path, "--emotion", "happy",
            "--intensity", "0.7", sfm_dir=sfm_dir)
    assert p.returncode == 0, p.stderr
    tr = load_track(tmp_path / "a.npz")
    assert tr.expression_names == list(RIG_CHANNELS) and tr.expression.shape == (tr.n_frames, 42)
    assert tr.landmarks_3d.shape == (tr.n_frames, 68, 3) and tr.landmarks_2d.shape == (tr.n_frames, 68, 2)
    assert tr.emotion[:, EMOTIONS.index("happy")].min() == 1.0 and tr.intensity[0] == pytest.approx(0.7)
    from evp_anim.face.rig import FaceRig
    np.testing.assert_allclose(tr.landmarks_3d, FaceRig(sfm_dir).landmarks_3d(None, tr.expression), atol=1e-3)
    keys = tmp_path / "k.toml"
    keys.write_text('[[key]]\ntime = 0.0\nemotion = "happy"\n\n[[key]]\ntime = 1.0\nemotion = "sad"\n')
    p = run("--quiet", "animate", speech, "-o", tmp_path / "k.npz", "--model", path, "--emotion-keys", keys,
            sfm_dir=sfm_dir)
    assert p.returncode == 0, p.stderr
    tr = load_track(tmp_path / "k.npz")
    assert tr.emotion[0, EMOTIONS.index("happy")] > 0.95 and tr.emotion[-1, EMOTIONS.index("sad")] == 1.0


def test_bad_inputs_are_one_line_errors(tmp_path, tiny_corpus, speech, sfm_dir, trained, tiny_model):
    path = trained[0]
    x = tmp_path / "x.npz"
    one_line_error(run("animate", speech, "-o", x, "--model", path, "--emotion-audio", speech, sfm_dir=sfm_dir),
                   "needs the EVP model")
    one_line_error(run("animate", speech, "-o", x, "--model", path, "--style", "S999", sfm_dir=sfm_dir),
                   "unknown speaker style")
    one_line_error(run("animate", speech, "-o", x, "--model", tiny_model, "--style", "S001", sfm_dir=sfm_dir),
                   "EMOTE model only")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    one_line_error(run("animate", speech, "-o", x, "--model", bad, sfm_dir=sfm_dir), "not a readable model")
    one_line_error(run("train-emote", tiny_corpus, "-o", tmp_path / "m.pt", "--without", "cross",
                       sfm_dir=sfm_dir), "unknown term")
    one_line_error(run("train-emote", tiny_corpus, "-o", tmp_path / "m.pt", "--steps", "1,2", sfm_dir=sfm_dir),
                   "5 non-negative")
    one_line_error(run("train-emote", tiny_corpus, "-o", tmp_path / "m.npz", sfm_dir=sfm_dir), "must end in .pt")
    one_line_error(run("train-emote", tmp_path, "-o", tmp_path / "m.pt", sfm_dir=sfm_dir), "no manifest.csv")
    assert not x.exists() and not (tmp_path / "m.pt").exists()


def test_emote_evaluation_and_ablation_tables(tiny_corpus, sfm_dir, trained, tiny_model):
    from evp_anim.eval.emote_eval import (EMOTE, EVP_LIFTED, GROUND_TRUTH, RULE, EmoteContext, emote_ablation,
                                          evaluate_emote)
    from evp_anim.eval.report import QuietReporter, load_model
    from evp_anim.models.emote import EmoteModel
    model = EmoteModel.load(trained[0])
    ctx = EmoteContext(tiny_corpus, sfm_dir, QuietReporter(), judge_steps=40)
    lines = []
    res = evaluate_emote(tiny_corpus, model, sfm_dir, evp_model=load_model(tiny_model), splits=("test_speaker",),
                         max_clips=3, out=lines.append, context=ctx)
    methods = res["splits"]["test_speaker"]["methods"]
    assert set(methods) == {EMOTE, EVP_LIFTED, RULE, GROUND_TRUTH}
    gt = methods[GROUND_TRUTH]
    assert gt["LVE"] == 0.0 and gt["M-LD"] == pytest.approx(0.0, abs=0.05) and gt["lip_rel"] == 1.0
    for m in methods.values():
        assert np.isfinite(m["LVE"]) and 0 <= m["lip_acc"] <= 1 and m["n_clips"] == 3
    assert methods[EMOTE]["LVE"] > 0 and "LVE mm" in lines[0]
    ab = emote_ablation(ctx, {"full": model, "w/o lip": model}, split="test_speaker", max_clips=2,
                        out=lines.append)
    assert ab["rows"]["full"]["LVE"] == pytest.approx(ab["rows"]["w/o lip"]["LVE"])
    assert "EMOTE ablation" in lines[-1]


def test_phone_visemes_are_sharp_shares_like_the_phone_front_end():
    import torch
    from evp_anim.audio.phones import viseme_posteriors
    from evp_anim.synth.visemes import VISEMES
    from evp_anim.train.features import phone_visemes
    cls = torch.tensor([[0, 0, 1, 1, 1, 10, 10, 10]])
    v = phone_visemes(cls, 15)[0].numpy()
    assert v.shape == (8, 15)
    np.testing.assert_allclose(v.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(v[0, 0], 1.0)
    np.testing.assert_allclose(v[3, 1], 1.0)
    np.testing.assert_allclose(v[1, [0, 1]], [0.75, 0.25])        # a class change shares the frame
    # the same segments through the inference front end: same classes win on every frame
    segs = [(0.0, 0.08, "SIL"), (0.08, 0.20, "P"), (0.20, 0.32, "AA")]
    post = viseme_posteriors(segs, 8)
    assert VISEMES[1] == "PP" and VISEMES[10] == "AA"
    assert (post.argmax(1) == v.argmax(1)).all()
