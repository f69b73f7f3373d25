"""The evp-anim command line: real subprocesses, exit codes, one-line errors, outputs on disk."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from evp_anim.tracks import load_track, save_track

EXE = [sys.executable, "-m", "evp_anim.cli"]


def run(*args, sfm_dir=None, env=None, cwd=None):
    e = dict(os.environ)
    if sfm_dir is not None:
        e["EVP_ANIM_SFM_DIR"] = str(sfm_dir)
    e.update(env or {})
    return subprocess.run(EXE + [str(a) for a in args], capture_output=True, text=True, env=e, cwd=cwd,
                          timeout=300)


def assert_one_line_error(proc, pattern):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    import re
    assert re.search(pattern, lines[0]), lines[0]


def test_help_lists_the_commands():
    p = run("--help")
    assert p.returncode == 0
    for cmd in ("synth", "speak", "preview", "info", "features", "pairs", "assets", "rig", "corpus", "demo"):
        assert cmd in p.stdout


def test_help_lists_every_stage_command_in_order():
    import re
    p = run("--help")
    assert p.returncode == 0
    names = re.findall(r"^│ ([a-z][a-z-]*) ", p.stdout, flags=re.M)
    expected = ["synth", "speak", "pairs", "info", "preview", "features", "demo", "eval", "eval-lipsync", "export",
                "export-rig", "retarget", "track", "align", "overlay", "footage-synth", "train", "train-emote",
                "animate", "eval-video", "dub", "assets", "rig", "corpus", "render"]
    assert [n for n in names if n in expected] == expected and len(set(names)) == len(names)


@pytest.fixture(scope="module")
def spoken(tmp_path_factory, sfm_dir):
    out = tmp_path_factory.mktemp("speak") / "hello.npz"
    p = run("--quiet", "speak", "Bring the map back before lunch.", "-o", out, "--emotion", "happy",
            "--intensity", "0.7", "--preview", out.with_suffix(".mp4"), sfm_dir=sfm_dir)
    assert p.returncode == 0, p.stderr
    return out


def test_speak_writes_wav_track_and_preview(spoken):
    from evp_anim.video_io import probe_video
    tr = load_track(spoken)
    wav, sr = sf.read(spoken.with_suffix(".wav"))
    assert sr == 16000 and tr.n_frames == int(np.ceil(len(wav) / 16000 * 25))
    assert tr.intensity[0] == pytest.approx(0.7) and tr.emotion[0].argmax() == 5
    info = probe_video(spoken.with_suffix(".mp4"))
    assert info["frames"] == tr.n_frames and info["has_audio"] and info["fps"] == 25.0


def test_info_prints_a_summary(spoken):
    p = run("info", spoken)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["dominant_emotion"] == "happy" and summary["fps"] == 25.0


def test_unknown_emotion_and_bad_intensity_are_one_line_errors(tmp_path, sfm_dir):
    assert_one_line_error(run("speak", "hello there", "-o", tmp_path / "a.npz", "--emotion", "joyful",
                              sfm_dir=sfm_dir), "unknown emotion 'joyful'")
    assert_one_line_error(run("speak", "hello there", "-o", tmp_path / "a.npz", "--intensity", "1.5",
                              sfm_dir=sfm_dir), r"outside \[0, 1\]")
    assert not list(tmp_path.iterdir())


def test_track_with_nan_is_refused(tmp_path, spoken):
    tr = load_track(spoken)
    path = tmp_path / "nan.npz"
    save_track(tr, path)
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data["landmarks_2d"][2, 0, 0] = np.nan
    np.savez(path, **data)
    assert_one_line_error(run("info", path), "NaN")


def test_track_with_wrong_shapes_is_refused(tmp_path, spoken):
    path = tmp_path / "bad.npz"
    save_track(load_track(spoken), path)
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data["landmarks_2d"] = data["landmarks_2d"][:, :60]
    np.savez(path, **data)
    assert_one_line_error(run("info", path), "landmarks_2d has shape")


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00garbage-not-audio" * 10])
def test_corrupt_or_empty_audio_is_a_one_line_error(tmp_path, content):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    out = tmp_path / "f.npz"
    assert_one_line_error(run("features", bad, "-o", out), "bad.wav")
    assert not out.exists()


def test_missing_audio_is_a_one_line_error(tmp_path):
    assert_one_line_error(run("features", tmp_path / "nope.wav", "-o", tmp_path / "f.npz"), "nope.wav")


def test_features_of_stereo_44k_8bit_and_silence(tmp_path):
    sr = 44100
    t = np.arange(int(sr * 1.0)) / sr
    tone = 0.5 * np.sin(2 * np.pi * 220 * t)
    sf.write(tmp_path / "stereo.wav", np.stack([tone, tone], 1), sr)
    sf.write(tmp_path / "u8.wav", tone, sr, subtype="PCM_U8")
    sf.write(tmp_path / "silence.wav", np.zeros(16000), 16000)
    for name in ("stereo", "u8", "silence"):
        out = tmp_path / f"{name}.npz"
        p = run("--quiet", "features", tmp_path / f"{name}.wav", "-o", out)
        assert p.returncode == 0, p.stderr
        with np.load(out) as z:
            assert z["mfcc_windows"].shape == (25, 28, 12)
            assert z["voice_activity"].any() == (name != "silence")


def test_missing_sfm_files_name_the_fix(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    p = run("rig", "sheet", "-o", tmp_path / "s.png", env={"EVP_ANIM_SFM_DIR": str(empty),
                                                          "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert_one_line_error(p, "evp-anim assets download")


def test_missing_espeak_is_a_one_line_error(tmp_path, sfm_dir):
    p = run("speak", "hello", "-o", tmp_path / "a.npz", sfm_dir=sfm_dir,
            env={"EVP_ANIM_ESPEAK_LIB": str(tmp_path / "no-libespeak.so")})
    assert_one_line_error(p, "espeak-ng")
    assert not list(tmp_path.glob("a.*"))


def test_machine_readable_progress_is_json_lines(tmp_path, sfm_dir):
    out = tmp_path / "c"
    p = run("--machine-readable", "synth", out, "--speakers", "1", "--sentences", "1",
            "--emotions", "neutral,sad", "--no-pairs", sfm_dir=sfm_dir)
    assert p.returncode == 0, p.stderr
    events = [json.loads(ln) for ln in p.stderr.splitlines() if ln.strip()]
    assert events[0]["event"] == "start" and events[0]["total"] == 4
    assert events[-1]["event"] == "success"
    assert all(0 <= e["progress"] <= 1 for e in events if e["event"] == "progress")
    assert (out / "manifest.csv").is_file()


def test_machine_readable_failure_is_a_json_line(tmp_path):
    p = run("--machine-readable", "info", tmp_path / "missing.npz")
    assert p.returncode == 2
    event = json.loads(p.stderr.strip().splitlines()[-1])
    assert event["event"] == "failure" and "not found" in event["error"]
