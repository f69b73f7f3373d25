"""EVP training: features, the three stages, resume after a kill, DDP under torchrun."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from evp_anim.data.pairs import load_pairs
from evp_anim.errors import EvpError
from evp_anim.models.evp import EvpModel
from evp_anim.train.evp_trainer import Trainer, TrainConfig, pair_index
from evp_anim.train.features import load_features


@pytest.fixture(scope="module")
def feats(tiny_corpus, sfm_dir):
    return load_features(tiny_corpus, sfm_dir)


def test_features_match_the_clips(feats, tiny_corpus):
    from evp_anim.tracks import load_track
    r = feats.rows[0]
    tr = load_track(tiny_corpus / r.track)
    assert feats.windows[0].shape == (tr.n_frames, 28, 12)
    np.testing.assert_array_equal(feats.lm3d[0], tr.landmarks_3d)
    assert feats.reference.shape == (len(feats), 68, 3)
    assert feats.aligned(0).shape == (tr.n_frames, 68, 2)
    # The speaker's neutral reference: one per speaker, shared by all their clips.
    same = [i for i, q in enumerate(feats.rows) if q.speaker == r.speaker]
    assert all(np.array_equal(feats.reference[i], feats.reference[0]) for i in same)


def test_feature_cache_is_reused(tiny_corpus, sfm_dir, feats):
    cache = tiny_corpus / "cache" / "evp_features_v1.npz"
    assert cache.is_file()
    again = load_features(tiny_corpus, sfm_dir)
    np.testing.assert_array_equal(again.windows[3], feats.windows[3])


def test_pairs_give_quadruples_of_one_speaker(feats, tiny_corpus):
    pairs = pair_index(feats, load_pairs(tiny_corpus / "pairs.npz"), feats.split("train"))
    assert pairs
    (spk, sent, ka, kb), (a, b, path) = next(iter(pairs.items()))
    assert feats.rows[a].speaker == feats.rows[b].speaker == spk
    assert (feats.rows[a].emotion, feats.rows[a].level) == ka and ka != kb
    assert path[:, 0].max() < feats.windows[a].shape[0] and path[:, 1].max() < feats.windows[b].shape[0]


def test_landmark_stage_fits_a_fixed_batch(feats, tiny_corpus, tmp_path):
    """Eq. 7's gradient path: on pre-trained encoders, 40 Adam steps on one batch cut the landmark
    loss by more than half."""
    from evp_anim.train.evp_trainer import LandmarkLoss
    trainer, batch = _landmark_stage_batch(feats, tiny_corpus, tmp_path, pretrain_steps=80)
    first, last = _fit_fixed_batch(LandmarkLoss(trainer.net), batch, trainer.net.a2l.parameters())
    assert last < 0.5 * first


def _landmark_stage_batch(feats, corpus, tmp_path, pretrain_steps):
    """A trainer after ``pretrain_steps`` of stage 1, set to stage 3, and one stage-3 batch."""
    cfg = TrainConfig(steps=(pretrain_steps, 0, 0), batch=8)
    trainer = Trainer(feats, load_pairs(corpus / "pairs.npz"), cfg, tmp_path / "run")
    trainer.run()
    trainer.stage = 2
    trainer._codes = np.zeros((len(feats), trainer.net.cfg.emotion_dim), np.float32)
    trainer._label_codes = trainer._codes.copy()
    return trainer, trainer._batch()


def _fit_fixed_batch(loss_fn, batch, params, steps: int = 40) -> tuple[float, float]:
    """(loss before, loss after) ``steps`` Adam steps on one batch."""
    optim = torch.optim.Adam(list(params), lr=3e-3)
    first = loss_fn(*batch)[0].item()
    for _ in range(steps):
        loss, _ = loss_fn(*batch)
        optim.zero_grad()
        loss.backward()
        optim.step()
    return first, loss_fn(*batch)[0].item()


def test_killed_run_resumes_to_identical_weights(feats, tiny_corpus, tmp_path):
    pairs = load_pairs(tiny_corpus / "pairs.npz")
    cfg = TrainConfig(steps=(6, 6, 6), batch=4, pair_batch=2, checkpoint_every=3)
    straight = Trainer(feats, pairs, cfg, tmp_path / "a").run().net.state_dict()

    class Killed(Exception):
        pass

    def kill_in_stage_two(stage, step, total, logs):
        if stage == "disentangle" and step == 5:  # after the checkpoint at step 3
            raise Killed

    t = Trainer(feats, pairs, cfg, tmp_path / "b", progress=kill_in_stage_two)
    with pytest.raises(Killed):
        t.run()
    resumed_trainer = Trainer(feats, pairs, cfg, tmp_path / "b")
    assert (resumed_trainer.stage, resumed_trainer.step) == (1, 3)
    resumed = resumed_trainer.run().net.state_dict()
    for k, v in straight.items():
        torch.testing.assert_close(resumed[k], v, msg=k)


def test_resume_with_other_options_is_refused(feats, tiny_corpus, tmp_path):
    pairs = load_pairs(tiny_corpus / "pairs.npz")
    Trainer(feats, pairs, TrainConfig(steps=(2, 0, 0), batch=4), tmp_path / "r").run()
    with pytest.raises(EvpError, match="other training options"):
        Trainer(feats, pairs, TrainConfig(steps=(3, 0, 0), batch=4), tmp_path / "r")


def test_pairs_without_a_second_sentence_are_an_error_not_a_hang(feats, tiny_corpus, tmp_path):
    """Cross-reconstruction needs x_im, x_in and x_jm, x_jn: with pairs of one sentence only, refuse."""
    pairs = load_pairs(tiny_corpus / "pairs.npz")
    first = feats.rows[feats.split("train")[0]].sentence_id
    by_id = {r.clip_id: r for r in feats.rows}
    one_sentence = [p for p in pairs if by_id[p.clip_a].sentence_id == first]
    assert one_sentence
    with pytest.raises(EvpError, match="two training sentences"):
        Trainer(feats, one_sentence, TrainConfig(steps=(0, 2, 0), batch=4, pair_batch=2), tmp_path / "r")


def test_ablation_term_names_are_checked():
    with pytest.raises(EvpError, match="unknown loss term"):
        TrainConfig(without=("kl",)).validate()


def test_trained_model_round_trips_and_predicts(tiny_model, feats):
    m = EvpModel.load(tiny_model)
    pred = m.predict_lm3d(feats.windows[0], feats.reference[0], m.label_code("happy", 0.5))
    assert pred.shape == feats.lm3d[0].shape and np.isfinite(pred).all()
    # Chunked prediction (LSTM state carried) equals one pass.
    whole = m.predict_lm3d(feats.windows[0], feats.reference[0], m.label_code("sad", 1.0), chunk=10_000)
    chunked = m.predict_lm3d(feats.windows[0], feats.reference[0], m.label_code("sad", 1.0), chunk=7)
    np.testing.assert_allclose(chunked, whole, atol=1e-4)


def test_label_codes_interpolate_between_levels(tiny_model):
    m = EvpModel.load(tiny_model)
    table = m.net.label_codes.numpy()
    np.testing.assert_allclose(m.label_code("happy", 2 / 3), table[5, 2], atol=1e-5)
    np.testing.assert_allclose(m.label_code("happy", 0.5), 0.5 * (table[5, 1] + table[5, 2]), atol=1e-5)
    np.testing.assert_allclose(m.label_code("happy", 0.0), m.label_code("neutral"), atol=1e-5)
    with pytest.raises(EvpError, match="outside"):
        m.label_code("happy", 1.5)


def test_corrupt_and_missing_model_files_are_one_line_errors(tmp_path, tiny_model):
    with pytest.raises(EvpError, match="not found"):
        EvpModel.load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(tiny_model.read_bytes()[:1000])
    with pytest.raises(EvpError, match="not a readable model"):
        EvpModel.load(bad)


def test_training_runs_under_torchrun_with_two_processes(tiny_corpus, sfm_dir, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "ddp.pt"
    env = dict(os.environ, EVP_ANIM_SFM_DIR=str(sfm_dir), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "evp_anim.cli", "--quiet", "train",
         str(tiny_corpus), "-o", str(out), "--steps", "4,4,4", "--batch", "4", "--threads", "1"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = EvpModel.load(out)
    assert m.meta["world_size"] == 2
    c = m.meta["speech_mfcc_mean"]        # the training clips' voiced frames (animate's MFCC shift)
    assert len(c) == 12 and all(np.isfinite(c)) and c[0] > 0
    assert (tmp_path / "ddp.run" / "log.csv").is_file()


def test_single_process_loop_helpers_are_no_ops(monkeypatch):
    from torch import nn

    from evp_anim.train.loop import barrier, dist_info, wrap_ddp
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist_info() == (0, 1)
    module = nn.Linear(2, 2)
    assert wrap_ddp(module, 1) is module
    barrier(1)


def test_phone_encoder_learns_in_the_landmark_stage(feats, tiny_corpus, tmp_path):
    """Stage 3 with every sample on the phone front end: Ep and the LSTM together cut the landmark
    loss on a fixed batch, and Ec (frozen) does not move."""
    from evp_anim.train.evp_trainer import LandmarkLoss
    trainer, batch = _landmark_stage_batch(feats, tiny_corpus, tmp_path, pretrain_steps=40)
    assert batch[4].shape == batch[0].shape[:2]           # visemes (B, T) with the windows
    assert batch[5] is None                               # no acoustic frames loaded
    ec_before = [p.detach().clone() for p in trainer.net.content.parameters()]
    ep_before = [p.detach().clone() for p in trainer.net.phones.parameters()]
    params = list(trainer.net.a2l.parameters()) + list(trainer.net.phones.parameters())
    first, last = _fit_fixed_batch(LandmarkLoss(trainer.net, phone_content=1.0), batch, params)
    assert last < 0.5 * first
    assert all(torch.equal(a, b) for a, b in zip(ec_before, trainer.net.content.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(ep_before, trainer.net.phones.parameters()))


def test_phone_front_end_predicts_and_streams(tiny_model, feats):
    """Viseme shares in, landmarks out: the shape of the clip, chunked = one pass (Ep's ±3 frames of
    context carried as overlap), and the phones change the mouth."""
    from evp_anim.train.features import phone_visemes
    m = EvpModel.load(tiny_model)
    assert m.reads_phones
    shares = phone_visemes(torch.from_numpy(feats.visemes[0])[None], 15)[0].numpy()
    code = m.label_code("happy", 1.0)
    whole = m.predict_lm3d(feats.windows[0], feats.reference[0], code, visemes=shares, chunk=10_000)
    chunked = m.predict_lm3d(feats.windows[0], feats.reference[0], code, visemes=shares, chunk=7)
    assert whole.shape == feats.lm3d[0].shape and np.isfinite(whole).all()
    np.testing.assert_allclose(chunked, whole, atol=1e-4)
    silent = np.zeros_like(shares)
    silent[:, 0] = 1.0
    quiet = m.predict_lm3d(feats.windows[0], feats.reference[0], code, visemes=silent)
    assert np.abs(quiet - whole).max() > 1e-3
    with pytest.raises(EvpError, match="viseme shares must be"):
        m.predict_lm3d(feats.windows[0], feats.reference[0], code, visemes=shares[:-1])


def test_version_1_model_files_load_without_the_phone_encoder(tiny_model, tmp_path, feats):
    """A model file from before the phone encoder still loads and animates from MFCCs; asking it
    for phones is a one-line error."""
    blob = torch.load(tiny_model, map_location="cpu", weights_only=True)
    blob["version"] = 1
    blob["config"].pop("phone_encoder")
    blob["state"] = {k: v for k, v in blob["state"].items() if not k.startswith("phones.")}
    old = tmp_path / "v1.pt"
    torch.save(blob, old)
    m = EvpModel.load(old)
    assert not m.reads_phones
    pred = m.predict_lm3d(feats.windows[0], feats.reference[0], m.label_code("neutral"))
    assert pred.shape == feats.lm3d[0].shape
    with pytest.raises(EvpError, match="no phone content encoder"):
        m.predict_lm3d(feats.windows[0], feats.reference[0], m.label_code("neutral"),
                       visemes=np.zeros((len(pred), 15), np.float32))


def test_content_delay_shortens_the_look_ahead_and_chunks_still_agree():
    """A model with content_delay d: frame t's landmarks depend on audio windows up to t - d + 2
    only (Ec's ±2 frames), d frames less of the future than the offline model; chunked
    prediction (animate, live) still gives what one call gives."""
    import torch

    from evp_anim.models.evp import EvpConfig, EvpModel, EvpNet
    torch.manual_seed(0)
    d, T, k = 3, 40, 20
    net = EvpNet(EvpConfig(content_delay=d))
    net.pca_basis.normal_()
    model = EvpModel(net, {})
    rng = np.random.default_rng(0)
    w = rng.normal(size=(T, 28, 12)).astype(np.float32)
    ref = rng.normal(size=(68, 3)).astype(np.float32)
    code = np.zeros(net.cfg.emotion_dim, np.float32)
    whole = model.predict_lm3d(w, ref, code)
    np.testing.assert_allclose(model.predict_lm3d(w, ref, code, chunk=7), whole, atol=1e-5)
    w2 = w.copy()
    w2[k:] = rng.normal(size=(T - k, 28, 12))
    changed = np.abs(model.predict_lm3d(w2, ref, code) - whole).max(axis=(1, 2)) > 1e-6
    assert not changed[:k + d - 2].any() and changed[k + d - 2]
    # The offline model (no delay) already reacts two frames before the change.
    net.cfg = EvpConfig(content_delay=0)
    base = model.predict_lm3d(w, ref, code)
    assert (np.abs(model.predict_lm3d(w2, ref, code) - base).max(axis=(1, 2)) > 1e-6)[k - 2]


def test_acoustic_frames_of_the_corpus_are_cached_and_feed_the_phone_path(tiny_corpus, sfm_dir, tmp_path):
    """``load_features(acoustic=True)``: per clip the acoustic front end's (T, 15) viseme posteriors
    (the same as ``acoustic_frames`` of its audio), cached; a stage-3 batch carries them and the
    phone path's input is the true visemes blended with them at the front ends' weights."""
    from evp_anim.audio.acoustic import PHONE_BLEND, acoustic_frames
    from evp_anim.audio.io import load_audio
    from evp_anim.train.evp_trainer import LandmarkLoss
    from evp_anim.train.features import FRONT_END_MIX, front_end_visemes, phone_visemes
    feats = load_features(tiny_corpus, sfm_dir, acoustic=True)
    assert len(feats.acoustic) == len(feats)
    for i in (0, len(feats) - 1):
        a = feats.acoustic[i]
        assert a.shape == (len(feats.visemes[i]), 15)
        np.testing.assert_allclose(a.sum(1), 1.0, atol=5e-3)
        direct = acoustic_frames(load_audio(tiny_corpus / feats.rows[i].audio), len(feats.visemes[i])).visemes
        np.testing.assert_allclose(a, direct, atol=2e-3)            # float16 in the cache
    assert (tiny_corpus / "cache" / "acoustic_visemes_v1.npz").is_file()
    again = load_features(tiny_corpus, sfm_dir, acoustic=True)
    np.testing.assert_array_equal(again.acoustic[2], feats.acoustic[2])

    torch.manual_seed(0)
    cls = torch.from_numpy(np.stack([feats.visemes[0][:20]] * 400))
    heard = torch.from_numpy(np.stack([feats.acoustic[0][:20]] * 400))
    mixed = front_end_visemes(cls, heard, 15)
    phones = phone_visemes(cls, 15)
    np.testing.assert_allclose(mixed.sum(-1).numpy(), 1.0, atol=5e-3)
    # each sample is (1 - w) phones + w heard for one of the mix's weights, in its proportions
    diff = (heard - phones).reshape(400, -1)
    w = ((mixed - phones).reshape(400, -1) * diff).sum(1) / (diff * diff).sum(1)
    assert torch.allclose(w, torch.round(w * 2) / 2, atol=1e-4)
    shares = {x: float((torch.round(w * 2) / 2 == x).float().mean()) for x, _ in FRONT_END_MIX}
    assert PHONE_BLEND in shares
    for x, p in FRONT_END_MIX:
        assert abs(shares[x] - p) < 0.08, shares

    trainer, batch = _landmark_stage_batch(feats, tiny_corpus, tmp_path, pretrain_steps=5)
    assert batch[5].shape == batch[4].shape + (15,)
    loss, _ = LandmarkLoss(trainer.net, phone_content=1.0)(*batch)
    assert torch.isfinite(loss)


def test_label_code_samples_get_their_emotion_and_level_code(feats, tiny_corpus, tmp_path):
    """Stage 3's label-code share reads the table label control uses: a clip of emotion e at level
    k gets ``label_code(e, k / 3)``, a neutral clip the neutral code."""
    from evp_anim.models.evp import EvpModel
    trainer, _ = _landmark_stage_batch(feats, tiny_corpus, tmp_path, pretrain_steps=5)
    trainer._codes = np.random.default_rng(0).normal(size=trainer._codes.shape).astype(np.float32)
    per_clip = trainer._clip_label_codes()
    model = EvpModel(trainer.net, {})
    for i, r in enumerate(feats.rows[:12]):
        want = model.label_code(r.emotion, 0.0 if r.emotion == "neutral" else r.level / 3)
        np.testing.assert_allclose(per_clip[i], want, atol=1e-5)
    # the table is the mean of the training clips' codes of that emotion and level
    train = [i for i in feats.split("train") if feats.rows[i].emotion == "sad" and feats.rows[i].level == 2]
    np.testing.assert_allclose(per_clip[train[0]], trainer._codes[train].mean(0), atol=1e-5)


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_phone_encoder_reads_only_its_lookahead(ahead):
    """Ep with ``phone_lookahead`` R: a frame's code moves when a viseme R frames later changes,
    never when one R + 1 or more frames later does, and reads 6 − R frames back; chunked
    prediction (the context carried as overlap) equals one pass."""
    from evp_anim.models.evp import EvpConfig, EvpNet, PhoneContentEncoder
    torch.manual_seed(0)
    ep = PhoneContentEncoder(EvpConfig(phone_lookahead=ahead)).eval()
    x = torch.rand(1, 30, 15)
    t = 12
    with torch.no_grad():
        base = ep(x)[0, t]
        for k in range(-9, 10):
            y = x.clone()
            y[0, t + k] += 1.0
            moved = (ep(y)[0, t] - base).abs().max().item() > 1e-6
            assert moved == (-(PhoneContentEncoder.SPAN - ahead) <= k <= ahead), (ahead, k)
    net = EvpNet(EvpConfig(phone_lookahead=ahead))
    m = EvpModel(net, {})
    shares = np.random.default_rng(1).random((40, 15)).astype(np.float32)
    windows = np.zeros((40, 28, 12), np.float32)
    ref = np.zeros((68, 3), np.float32)
    code = np.zeros(net.cfg.emotion_dim, np.float32)
    whole = m.predict_lm3d(windows, ref, code, visemes=shares, chunk=10_000)
    np.testing.assert_allclose(m.predict_lm3d(windows, ref, code, visemes=shares, chunk=7), whole, atol=1e-5)
    assert m.context(shares) == ahead and m.left_context(shares) == PhoneContentEncoder.SPAN - ahead


def test_inner_lip_gap_is_the_lipsync_measure_in_mm(feats):
    """The stage-3 gap loss measures what eval-lipsync measures: inner_lip_gap of ground-truth
    landmarks = mouth_openness × mouth width; a lower lip moved 1 mm down reads 1 mm more."""
    from evp_anim.face.lip_contact import mouth_openness
    from evp_anim.train.evp_trainer import inner_lip_gap
    lm = feats.lm3d[0]
    width = np.linalg.norm(lm[:, 54] - lm[:, 48], axis=-1)
    t = torch.from_numpy(lm)
    np.testing.assert_allclose(inner_lip_gap(t, t).numpy(), mouth_openness(lm) * width, atol=1e-4)
    wider = t.clone()
    for i in (65, 66, 67):
        wider[:, i] += torch.from_numpy((lm[:, 57] - lm[:, 51]) / np.linalg.norm(lm[:, 57] - lm[:, 51], axis=-1,
                                                                                   keepdims=True))
    np.testing.assert_allclose((inner_lip_gap(wider, t) - inner_lip_gap(t, t)).numpy(), 1.0, atol=0.01)
