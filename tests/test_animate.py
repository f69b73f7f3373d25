"""Inference: emotion keys, silence gating, and `evp-anim animate` end to end with a trained model."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from evp_anim.errors import EvpError
from evp_anim.models.animate import _silence_gate
from evp_anim.emotion_keys import EmotionKey, EmotionKeys, read_emotion_keys, validate_keys, write_emotion_keys
from evp_anim.models.emotion_control import per_frame
from evp_anim.tracks import load_track


def write_keys(path, keys):
    path.write_text("".join(f'[[key]]\ntime = {t}\nemotion = "{e}"\nintensity = {i}\n\n' for t, e, i in keys))
    return path


def test_keys_cross_fade_codes_weights_and_intensity(tmp_path):
    keys = read_emotion_keys(write_keys(tmp_path / "k.toml", [(0.0, "happy", 1.0), (2.0, "sad", 0.5)])).keys
    code = {"happy": np.array([1.0, 0.0]), "sad": np.array([0.0, 1.0])}
    codes, weights, inten = per_frame(keys, 75, 25.0, lambda e, i: code[e] * i)
    t = (np.arange(75) + 0.5) / 25
    mid = int(np.argmin(np.abs(t - 1.0)))  # halfway between the keys
    np.testing.assert_allclose(codes[mid], [0.5 * 1.0, 0.5 * 0.5], atol=0.03)
    np.testing.assert_allclose(weights[mid, [5, 6]], [0.5, 0.5], atol=0.03)
    assert inten[0] == pytest.approx(1.0, abs=0.02) and inten[-1] == pytest.approx(0.5)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(codes[-1], [0, 0.5])  # held after the last key


@pytest.mark.parametrize("keys,message", [
    ([(1.0, "happy", 1.0), (0.5, "sad", 1.0)], "out of order"),
    ([(0.0, "happy", 1.0), (0.0, "sad", 1.0)], "out of order"),
    ([(-1.0, "happy", 1.0)], "outside the clip"),
    ([(0.0, "joyful", 1.0)], "unknown emotion"),
    ([(0.0, "happy", 2.0)], r"outside \[0, 1\]"),
])
def test_bad_keys_are_rejected(tmp_path, keys, message):
    with pytest.raises(EvpError, match=message):
        read_emotion_keys(write_keys(tmp_path / "k.toml", keys))


def test_keys_outside_the_clip_are_rejected():
    with pytest.raises(EvpError, match="outside the clip"):
        validate_keys([EmotionKey(0.0, "happy", 1.0), EmotionKey(9.0, "sad", 1.0)], duration=3.0)


def test_silence_gate_covers_long_pauses_only():
    vad = np.ones(60, bool)
    vad[10:13] = False      # a 3-frame gap inside speech: not a silence
    vad[30:50] = False      # 0.8 s pause
    gate = _silence_gate(vad)
    assert gate[10:13].max() == 0.0
    assert gate[36:44].min() == pytest.approx(1.0)
    assert gate[:10].max() == 0.0 and gate[55:].max() == 0.0


EXE = [sys.executable, "-m", "evp_anim.cli"]


def run(*args, sfm_dir=None):
    env = dict(os.environ)
    if sfm_dir:
        env["EVP_ANIM_SFM_DIR"] = str(sfm_dir)
    return subprocess.run(EXE + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def speech(tiny_corpus):
    from evp_anim.data.manifest import read_manifest
    rows = read_manifest(tiny_corpus / "manifest.csv")
    return tiny_corpus / next(r for r in rows if r.emotion == "neutral").audio


def test_animate_writes_a_track_with_the_label_emotion(tmp_path, tiny_model, speech, sfm_dir):
    out = tmp_path / "a.npz"
    p = run("--quiet", "animate", speech, "-o", out, "--emotion", "sad", "--intensity", "0.6",
            "--model", tiny_model, "--preview", tmp_path / "a.mp4", sfm_dir=sfm_dir)
    assert p.returncode == 0, p.stderr
    tr = load_track(out)
    audio, sr = sf.read(speech)
    assert tr.n_frames == int(np.ceil(len(audio) / sr * 25)) and tr.fps == 25.0
    assert tr.landmarks_3d.shape == (tr.n_frames, 68, 3)
    assert tr.emotion[:, 6].min() == 1.0 and tr.intensity[0] == pytest.approx(0.6)
    assert tr.provenance["model"] == "evp" and len(tr.provenance["source_audio_sha256"]) == 64
    assert (tmp_path / "a.mp4").stat().st_size > 0


def test_animate_with_keys_and_with_a_reference_clip(tmp_path, tiny_model, speech, tiny_corpus):
    # the file as the Blender add-on writes it (knobs included): animate reads it with the same reader
    keys = write_emotion_keys(EmotionKeys([EmotionKey(0.0, "happy", 1.0), EmotionKey(1.5, "sad", 1.0)],
                                          strength=0.8, multipliers={"jawOpen": 1.2}), tmp_path / "k.toml")
    p = run("--quiet", "animate", speech, "-o", tmp_path / "k.npz", "--emotion-keys", keys, "--model", tiny_model)
    assert p.returncode == 0, p.stderr
    tr = load_track(tmp_path / "k.npz")
    assert tr.emotion[0, 5] > 0.9 and tr.emotion[-1, 6] == pytest.approx(1.0)
    p = run("--quiet", "animate", speech, "-o", tmp_path / "r.npz", "--emotion-audio", speech, "--model", tiny_model)
    assert p.returncode == 0, p.stderr
    assert load_track(tmp_path / "r.npz").emotion.sum(1) == pytest.approx(1.0)


def test_silent_reference_and_missing_model_are_one_line_errors(tmp_path, tiny_model, speech):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000), 16000)
    p = run("animate", speech, "-o", tmp_path / "x.npz", "--emotion-audio", silent, "--model", tiny_model)
    assert p.returncode == 2 and "silent" in p.stderr and "Traceback" not in p.stderr
    p = run("animate", speech, "-o", tmp_path / "x.npz", "--model", tmp_path / "none.pt")
    assert p.returncode == 2 and "model file not found" in p.stderr
    assert not (tmp_path / "x.npz").exists()


def test_keys_outside_the_clip_fail_on_the_cli(tmp_path, tiny_model, speech):
    keys = write_keys(tmp_path / "k.toml", [(0.0, "happy", 1.0), (60.0, "sad", 1.0)])
    p = run("animate", speech, "-o", tmp_path / "x.npz", "--emotion-keys", keys, "--model", tiny_model)
    assert p.returncode == 2 and "outside the clip" in p.stderr


def test_silence_closes_the_mouth(tmp_path, tiny_model):
    """Speech, then 1.5 s of quiet noise: the inner lips close in the quiet part."""
    from evp_anim.models.animate import EmotionSpec, animate
    from evp_anim.models.evp import EvpModel
    rng = np.random.default_rng(0)
    tone = 0.3 * np.sin(2 * np.pi * 180 * np.arange(16000) / 16000) * (1 + 0.5 * np.sin(2 * np.pi * 4 * np.arange(16000) / 16000))
    audio = np.concatenate([tone, 0.001 * rng.standard_normal(24000)]).astype(np.float32)
    model = EvpModel.load(tiny_model)
    tr = animate(audio, model, EmotionSpec("neutral"))
    gap = np.abs(tr.landmarks_3d[:, 66, 1] - tr.landmarks_3d[:, 62, 1])
    silent_gap = gap[40:].mean()
    rest = model.predict_lm3d(__import__("evp_anim.audio.features", fromlist=["x"]).mfcc_windows(
        np.zeros(9600, np.float32)), model.net.ref_mean.numpy().reshape(68, 3), model.label_code("neutral"))[-1]
    assert silent_gap == pytest.approx(abs(rest[66, 1] - rest[62, 1]), abs=0.05)


@pytest.mark.slow
def test_ten_minutes_of_audio_animate_with_bounded_memory(tmp_path, tiny_model, speech):
    """10 minutes of speech (15,000 frames) animate in one call; peak memory stays under 1.5 GB."""
    long_wav = tmp_path / "long.wav"
    x, sr = sf.read(speech)
    sf.write(long_wav, np.tile(x, int(np.ceil(600 * sr / len(x))))[: 600 * sr], sr)
    script = (
        "import resource, sys\n"
        "from evp_anim.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    p = subprocess.run([sys.executable, "-c", script, "--quiet", "animate", str(long_wav), "-o",
                        str(tmp_path / "long.npz"), "--model", str(tiny_model)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    peak_kb = int(p.stdout.strip().splitlines()[-1])
    assert peak_kb < 1.5 * 1024 * 1024
    assert load_track(tmp_path / "long.npz").n_frames == 15000


def test_animate_without_reference_records_the_mean_face_so_align_works(tmp_path, tiny_model, speech, sfm_dir):
    from evp_anim.face.rig import FaceRig
    from evp_anim.face.projection import project
    from evp_anim.tracks import Track, save_track

    out = tmp_path / "s.npz"
    p = run("--quiet", "animate", speech, "-o", out, "--emotion", "happy", "--model", tiny_model, sfm_dir=sfm_dir)
    assert p.returncode == 0, p.stderr
    sp = load_track(out)
    rig = FaceRig(sfm_dir)
    np.testing.assert_array_equal(sp.identity, np.zeros(rig.num_identity, np.float32))
    # a footage track with a known pose: the aligned landmarks land on the footage's face
    n = 30
    ident = rig.sample_identity(np.random.default_rng(4), 0.8)
    l3d = np.repeat(rig.landmarks_3d(ident)[None], n, 0)
    rot, trans, scale = np.zeros((n, 3)), np.tile([320.0, 240.0], (n, 1)), np.full(n, 1.5)
    tg = Track.new(project(l3d, rot, trans, scale).astype(np.float32), image_size=(640, 480), landmarks_3d=l3d,
                   pose_rotation=rot, pose_translation=trans, pose_scale=scale, identity=ident)
    save_track(tg, tmp_path / "t.npz")
    p = run("--quiet", "align", out, tmp_path / "t.npz", "-o", tmp_path / "a.npz", "--sfm-dir", sfm_dir)
    assert p.returncode == 0, p.stderr
    al = load_track(tmp_path / "a.npz")
    assert al.n_frames == sp.n_frames
    # eye corners (iBUG 37, 46) do not move with speech: they sit where the footage's are
    want = np.broadcast_to(tg.landmarks_2d[0, [36, 45]], (al.n_frames, 2, 2))
    np.testing.assert_allclose(al.landmarks_2d[:, [36, 45]], want, atol=3.0)
