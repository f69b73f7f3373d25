"""Baselines, the emotion classifier, the report and `evp-anim eval` on a small real corpus."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evp_anim.emotions import EMOTIONS
from evp_anim.errors import EvpError

EXE = [sys.executable, "-m", "evp_anim.cli"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sfm_dir) -> Path:
    from evp_anim.synth.corpus import CorpusConfig, synthesize_corpus
    root = tmp_path_factory.mktemp("evalcorpus") / "corpus"
    # 3 speakers (1 held out) x 3 sentences (1 held out) x 8 emotions x levels = 198 clips
    synthesize_corpus(root, CorpusConfig(n_speakers=3, n_sentences=3, seed=5), sfm_dir, workers=2)
    return root


@pytest.fixture(scope="module")
def feats(corpus, sfm_dir):
    from evp_anim.train.features import load_features
    return load_features(corpus, sfm_dir)


@pytest.fixture(scope="module")
def classifier(corpus, feats):
    from evp_anim.eval.emotion_classifier import corpus_classifier
    return corpus_classifier(corpus, feats)       # trained on the GT train split, cached in corpus/cache


# ---------------------------------------------------------------- baselines
def test_static_baseline_ld_is_the_ground_truths_distance_from_rest(feats):
    from evp_anim.eval.baselines import static_face
    from evp_anim.eval.metrics import clip_metrics
    i = feats.split("test_speaker")[5]
    gt, ref = feats.aligned(i), feats.reference_aligned(i)
    m = clip_metrics(static_face(ref, len(gt)), gt)
    mouth_dist = np.linalg.norm(gt[:, 48:68] - ref[None, 48:68], axis=-1).mean()
    assert m["M-LD"] > 0.5 and m["M-LD"] == pytest.approx(mouth_dist, rel=1e-5)
    # a still face has no velocity: its LVD is the ground truth's own mean speed
    speed = np.linalg.norm(np.diff(gt, axis=0), axis=-1).mean()
    assert m["F-LVD"] == pytest.approx(speed, rel=1e-5)


def _inner_lip_gap(lm):
    return lm[:, 66, 1] - lm[:, 62, 1]          # iBUG 67 (lower inner lip) below 63 (upper), px


@pytest.mark.parametrize("use_ps", [True, False])
def test_rule_based_baseline_opens_the_mouth_during_speech(corpus, feats, sfm_dir, use_ps):
    from evp_anim.audio.io import load_audio
    from evp_anim.eval.baselines import RuleBasedAnimator, pocketsphinx_available
    from evp_anim.tracks import load_track
    if use_ps and not pocketsphinx_available():
        pytest.skip("pocketsphinx not installed")
    anim = RuleBasedAnimator(sfm_dir, use_pocketsphinx=use_ps)
    i = next(k for k in feats.split("test_sentence") if feats.rows[k].emotion == "neutral")
    r = feats.rows[i]
    track = load_track(corpus / r.track)
    audio = load_audio(corpus / r.audio)
    lm, source = anim.animate(audio, track.n_frames, identity=track.identity)
    assert lm.shape == (track.n_frames, 68, 2) and source == ("phonemes" if use_ps else "energy")
    # the reference-only path (rig is linear) gives the same face
    lm2, _ = anim.animate(audio, track.n_frames, reference=feats.reference[i])
    assert np.abs(lm - lm2).max() < 1e-2
    t = (np.arange(track.n_frames) + 0.5) / 25.0
    lead_end = next(s for s, e, p in track.phonemes if p != "_")
    vowels = [(s, e) for s, e, p in track.phonemes if p[0] in "aeiouAEIOU@3V0"]
    silent = t < lead_end - 0.1
    voiced = np.zeros_like(silent)
    for s, e in vowels:
        voiced |= (t >= s) & (t < e)
    gap = _inner_lip_gap(lm)
    assert silent.sum() >= 2 and voiced.sum() >= 5
    assert gap[voiced].mean() > gap[silent].mean() + 1.0


def test_arpabet_phones_all_map_to_visemes():
    from evp_anim.audio.phones import ARPABET_TO_ESPEAK, arpabet_to_espeak
    from evp_anim.synth.visemes import is_mapped
    assert all(is_mapped(v) for v in ARPABET_TO_ESPEAK.values())
    assert arpabet_to_espeak("AY1") == "aI" and arpabet_to_espeak("+NSN+") == "_" and arpabet_to_espeak("??") == "_"


# ---------------------------------------------------------------- classifier
def test_classifier_beats_chance_on_held_out_ground_truth(feats, classifier):
    from evp_anim.eval.emotion_classifier import gt_accuracy
    acc = gt_accuracy(classifier, feats, ["test_speaker", "test_sentence"])
    assert acc["test_speaker"] > 0.5 and acc["test_sentence"] > 0.5        # chance: 1/8


def test_classifier_save_load_and_bad_files(tmp_path, feats, classifier):
    from evp_anim.eval.emotion_classifier import EmotionClassifier
    idx = feats.split("test_speaker")[:10]
    seqs = [feats.aligned(i) for i in idx]
    refs = [feats.reference_aligned(i) for i in idx]
    p = classifier.save(tmp_path / "clf.pt")
    again = EmotionClassifier.load(p)
    assert np.allclose(again.predict_proba_many(seqs, refs), classifier.predict_proba_many(seqs, refs), atol=1e-6)
    assert again.predict(seqs[0], refs[0]) in EMOTIONS
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(EvpError, match="not a readable"):
        EmotionClassifier.load(tmp_path / "bad.pt")
    with pytest.raises(EvpError, match="not found"):
        EmotionClassifier.load(tmp_path / "missing.pt")


# ---------------------------------------------------------------- report
class _LabelOracle:
    """A stand-in model: the still neutral face wearing the rig's expression of the code's emotion."""

    name = "oracle"

    def __init__(self, rig):
        self.rig = rig

    def content_codes(self, windows):
        return np.asarray(windows, np.float32).reshape(len(windows), -1)[:, :6]

    def emotion_code(self, windows):
        w = np.asarray(windows, np.float32)          # a code that depends on the audio, not on the emotion
        return np.r_[w.mean(axis=(0, 2))[:8], float(np.tanh(np.abs(w).mean()))]

    def label_code(self, emotion, intensity):
        return np.r_[np.eye(8, dtype=np.float32)[EMOTIONS.index(emotion)], intensity]

    def predict_lm3d(self, windows, reference, code):
        e = EMOTIONS[int(np.argmax(code[:8]))]
        d = self.rig.landmarks_3d(None, self.rig.emotion_weights(e, float(code[8]))) - self.rig.landmarks_3d(None)
        return np.repeat((reference + d)[None], len(windows), 0)


def test_evaluate_compares_the_model_with_the_baselines(corpus, feats, classifier, sfm_dir):
    from evp_anim.eval.baselines import static_face
    from evp_anim.eval.metrics import clip_metrics, mean_metrics
    from evp_anim.eval.report import OURS, RULE, STATIC, STATIC_EMOTION, evaluate, select_clips
    from evp_anim.face.rig import FaceRig
    lines = []
    res = evaluate(corpus, _LabelOracle(FaceRig(sfm_dir)), sfm_dir, splits=("test_speaker",), max_clips=8,
                   probe_max_clips=40, out=lines.append)
    entry = res["splits"]["test_speaker"]
    assert entry["n_clips"] == 8 and set(entry["methods"]) == {OURS, STATIC, RULE, STATIC_EMOTION}
    idx = select_clips(feats, "test_speaker", 8)
    expect = mean_metrics(clip_metrics(static_face(feats.reference_aligned(i), len(feats.lm3d[i])), feats.aligned(i))
                          for i in idx)
    for k, v in expect.items():
        assert entry["methods"][STATIC][k] == pytest.approx(v)
    ours = entry["methods"][OURS]
    assert ours["emotion_acc"] > entry["methods"][STATIC]["emotion_acc"]      # label control reaches the judge
    assert ours["F-LD"] < entry["methods"][STATIC]["F-LD"]
    assert sum(map(sum, ours["confusion"])) == 8 and 0 < ours["emotion_prob"] <= 1
    assert sum(entry["methods"][RULE]["sources"].values()) == 8
    assert set(res["classifier"]["gt_accuracy"]) == {"train", "test_speaker", "test_sentence", "test_both"}
    p = res["probes"]
    assert p["emotion_chance"] == 1 / 8 and 0 <= p["emotion_from_content"] <= 1
    assert "test_speaker" in lines[0] and "rule-based visemes" in lines[0]
    assert (corpus / "cache" / "eval_phones_v1.json").is_file()
    # reference-clip control: this model's audio emotion code knows nothing of the emotion
    ref = evaluate(corpus, _LabelOracle(FaceRig(sfm_dir)), sfm_dir, splits=("test_speaker",), max_clips=8,
                   emotion_source="reference", baselines=False, probes=False, out=None)
    assert set(ref["splits"]["test_speaker"]["methods"]) == {OURS}
    assert ref["splits"]["test_speaker"]["methods"][OURS]["emotion_acc"] <= ours["emotion_acc"]


def test_reference_clips_share_speaker_emotion_level_but_not_sentence(feats):
    from evp_anim.eval.report import reference_clips
    refs = reference_clips(feats)
    assert len(refs) == len(feats)
    for i, j in refs.items():
        a, b = feats.rows[i], feats.rows[j]
        assert (a.speaker, a.emotion, a.level) == (b.speaker, b.emotion, b.level) and a.sentence_id != b.sentence_id


def test_ablation_table_and_emotion_code_plot(tmp_path, corpus, feats, sfm_dir):
    from evp_anim.eval.report import ablation_table, plot_emotion_codes
    from evp_anim.face.rig import FaceRig
    oracle = _LabelOracle(FaceRig(sfm_dir))
    out = []
    res = ablation_table(corpus, {"w/o L_cross": oracle, "full": oracle}, sfm_dir, max_clips=4, out=out.append)
    assert set(res["rows"]) == {"full", "w/o L_cross"} and res["n_clips"] == 4
    assert out[0].index("full") < out[0].index("w/o L_cross")               # Table 2 order
    png = tmp_path / "codes.png"
    scores = plot_emotion_codes({"a": oracle}, corpus, png, sfm_dir, max_clips=30, feats=feats)
    assert png.stat().st_size > 5000 and set(scores) == {"a"}
    plot_emotion_codes({"a": oracle, "b": oracle}, corpus, png, sfm_dir, max_clips=30, method="tsne", feats=feats)
    with pytest.raises(EvpError, match="'pca' or 'tsne'"):
        plot_emotion_codes({"a": oracle}, corpus, png, sfm_dir, max_clips=30, method="umap", feats=feats)


# ---------------------------------------------------------------- CLI
def _run(*args, sfm_dir):
    env = dict(os.environ, EVP_ANIM_SFM_DIR=str(sfm_dir))
    return subprocess.run(EXE + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=300)


def _one_line_error(capsys, argv, text):
    from evp_anim.cli import main
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], err


def test_eval_command(tmp_path, corpus, classifier, sfm_dir, capsys, monkeypatch):
    evp = pytest.importorskip("evp_anim.models.evp")
    model = evp.EvpModel(evp.EvpNet(evp.EvpConfig()), {"name": "untrained"})
    mpath = model.save(tmp_path / "m.pt")
    out = tmp_path / "res.json"
    p = _run("--quiet", "eval", corpus, "--model", mpath, "--split", "test_sentence", "--max-clips", "3",
             "--no-probes", "--json", out, "--plot", tmp_path / "codes.png", sfm_dir=sfm_dir)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert set(res["splits"]) == {"test_sentence"} and res["splits"]["test_sentence"]["n_clips"] == 3
    assert "EVP (ours)" in res["splits"]["test_sentence"]["methods"] and "M-LVD" in p.stdout
    assert (tmp_path / "codes.png").is_file()
    # user errors: one line, exit status 2 (in-process: no interpreter start-up per case)
    monkeypatch.setenv("EVP_ANIM_SFM_DIR", str(sfm_dir))
    (tmp_path / "bad.pt").write_bytes(b"\x00garbage")
    _one_line_error(capsys, ["eval", corpus, "--model", tmp_path / "bad.pt"], "bad.pt")
    _one_line_error(capsys, ["eval", corpus, "--model", tmp_path / "missing.pt"], "not found")
    _one_line_error(capsys, ["eval", tmp_path, "--model", mpath], "manifest")
    _one_line_error(capsys, ["eval", corpus, "--ablation", "nameonly"], "NAME=PATH")
