"""The CLI in pipelines: --version, frame progress, `animate` over many files, `export -o -`.

Real CLI runs (subprocesses, or :func:`evp_anim.cli.main` in-process where a count is checked) on
short slices of the bundled speech sample, with the shipped EVP model.
"""

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from evp_anim.audio.features import n_frames
from evp_anim.audio.io import load_audio
from evp_anim.tracks import load_track

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "assets" / "sample_speech.wav"
EXE = [sys.executable, "-m", "evp_anim.cli"]


def run(*args, sfm_dir=None, **kw):
    env = dict(os.environ)
    if sfm_dir is not None:
        env["EVP_ANIM_SFM_DIR"] = str(sfm_dir)
    return subprocess.run(EXE + [str(a) for a in args], capture_output=True, env=env, timeout=300, **kw)


def lines(err: bytes) -> list[str]:
    return [ln for ln in err.decode().splitlines() if ln.strip()]


def events(err: bytes) -> list[dict]:
    return [json.loads(ln) for ln in lines(err)]      # every stderr line must be JSON


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def frames_of(path: Path) -> int:
    """The frames the decoder gives for ``path`` (the truth progress totals are checked against)."""
    return n_frames(len(load_audio(path)))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A folder with a.wav (1.0 s, 16 kHz mono), b.flac (2.0 s, 44.1 kHz stereo: resampled on
    reading), bad.wav (not audio) and notes.txt (not an audio file: ignored)."""
    import soxr
    d = tmp_path_factory.mktemp("clips")
    x, sr = sf.read(SAMPLE, dtype="float32")
    assert sr == 16000
    sf.write(d / "a.wav", x[:16000], sr)
    y = soxr.resample(x[16000:48000], 16000, 44100)
    sf.write(d / "b.flac", np.stack([y, 0.5 * y], 1), 44100)
    (d / "bad.wav").write_bytes(b"RIFF\x00\x00garbage-not-audio" * 10)
    (d / "notes.txt").write_text("not audio")
    return d


# ---------------------------------------------------------------------- --version
def test_version_prints_the_package_version_without_importing_torch():
    want = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    p = run("--version")
    assert p.returncode == 0 and p.stdout.decode() == f"evp-anim {want}\n", p.stderr
    import evp_anim
    assert evp_anim.__version__ == want
    script = ("import sys\nfrom evp_anim.cli import main\nmain(['--version'])\n"
              "print(sorted(m for m in ('torch', 'numpy', 'librosa') if m in sys.modules), file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == f"evp-anim {want}\n"
    assert p.stderr.strip() == "[]", p.stderr      # nothing heavy imported


# ---------------------------------------------------------------------- progress
def test_reporter_carries_task_fields_and_corrects_the_total():
    import io
    from evp_anim.progress import Reporter
    buf = io.StringIO()
    rep = Reporter(machine_readable=True, stream=buf)
    rep.start("animate", total=10, input="a.wav", index=1, count=2)
    rep.update(0)
    rep.update(12, total=12)            # the estimate was short: the total follows the frames
    rep.success(output="a.npz", frames=12)
    rep.failure("2 of 2 failed")        # a later line of no task: the fields are not repeated
    ev = [json.loads(ln) for ln in buf.getvalue().splitlines()]
    assert [e["event"] for e in ev] == ["start", "progress", "progress", "success", "failure"]
    assert all(e["input"] == "a.wav" and e["index"] == 1 for e in ev[:4]) and "input" not in ev[4]
    assert (ev[1]["done"], ev[1]["total"], ev[1]["progress"]) == (0, 10, 0.0)
    assert (ev[2]["done"], ev[2]["total"], ev[2]["progress"]) == (12, 12, 1.0)


def test_animate_machine_readable_counts_frames_of_the_total(clips, tmp_path, sfm_dir):
    src = clips / "b.flac"
    want = frames_of(src)
    assert want == 50
    out = tmp_path / "b.npz"
    p = run("--machine-readable", "animate", src, "-o", out, "--emotion", "happy", sfm_dir=sfm_dir)
    assert p.returncode == 0, p.stderr
    ev = events(p.stderr)
    # The word recogniser runs first (a task of its own, reported as a fraction), then the frames.
    assert ev[0] == {"event": "start", "task": "hear", "total": 1000}
    heard = [e for e in ev if e["task"] == "hear"]
    assert heard[-1]["event"] == "success" and heard[-2]["progress"] == 1.0
    ev = [e for e in ev if e["task"] == "animate"]
    assert ev[0] == {"event": "start", "task": "animate", "total": want}       # known before any frame
    prog = [e for e in ev if e["event"] == "progress"]
    assert prog[0]["done"] == 0 and prog[-1]["done"] == want and prog[-1]["progress"] == 1.0
    assert all(e["total"] == want for e in prog)
    assert [e["done"] for e in prog] == sorted(e["done"] for e in prog)
    assert ev[-1]["event"] == "success" and ev[-1]["frames"] == want
    assert load_track(out).n_frames == want


def test_animate_to_file_tells_frames_written_after_each_chunk(tmp_path, sfm_dir):
    from evp_anim.face.rig import FaceRig
    from evp_anim.models.animate import EmotionSpec, animate_speech_to_file, load_animation_model
    from evp_anim.models.commands import expected_frames
    total = expected_frames(SAMPLE)
    assert total == frames_of(SAMPLE) == 105
    told = []
    n = animate_speech_to_file(SAMPLE, tmp_path / "s.npz", load_animation_model(None), EmotionSpec("sad", 0.5),
                               FaceRig(sfm_dir), chunk_frames=40, frame_progress=told.append)
    assert told == [40, 80, 105] and n == 105 == load_track(tmp_path / "s.npz").n_frames


def test_expected_frames_of_a_compressed_file_is_close(tmp_path):
    from evp_anim.models.commands import expected_frames
    x, sr = sf.read(SAMPLE, dtype="float32")
    sf.write(tmp_path / "s.mp3", x, sr)
    assert abs(expected_frames(tmp_path / "s.mp3") - frames_of(tmp_path / "s.mp3")) <= 1
    (tmp_path / "junk.mp3").write_bytes(b"\x00" * 100)
    assert expected_frames(tmp_path / "junk.mp3") is None


# ---------------------------------------------------------------------- animate over many files
def test_animate_folder_runs_every_clip_and_reports_the_bad_one(clips, tmp_path, sfm_dir):
    before = {f.name: sha(f) for f in clips.iterdir()}
    out = tmp_path / "tracks"
    p = run("animate", clips, "-o", f"{out}/", "--emotion", "sad", sfm_dir=sfm_dir)
    assert p.returncode == 2, p.stderr
    err = lines(p.stderr)
    assert "Traceback" not in p.stderr.decode()
    errors = [ln for ln in err if ln.startswith("error: ")]
    assert len(errors) == 2, err
    assert "bad.wav" in errors[0] and "cannot decode" in errors[0]
    assert errors[1] == f"error: 1 of 3 inputs failed: {clips / 'bad.wav'}"
    assert sorted(f.name for f in out.iterdir()) == ["a.npz", "b.npz"]      # no bad.npz, no temporaries
    for name in ("a.wav", "b.flac"):
        tr = load_track(out / f"{Path(name).stem}.npz")
        assert tr.n_frames == frames_of(clips / name) and tr.emotion[0].argmax() == 6      # sad
    assert {f.name: sha(f) for f in clips.iterdir()} == before                         # inputs untouched


def test_animate_list_into_new_folder_machine_readable(clips, tmp_path, sfm_dir):
    out = tmp_path / "new" / "tracks"           # made, parents too; no trailing slash needed
    p = run("--machine-readable", "animate", clips / "a.wav", clips / "b.flac", "-o", out, sfm_dir=sfm_dir)
    assert p.returncode == 0, p.stderr
    ev = events(p.stderr)
    assert [e["task"] for e in ev if e["event"] == "start"] == ["hear", "animate"] * 2
    ev = [e for e in ev if e["task"] == "animate"]        # the frames (after each clip's words)
    starts = [e for e in ev if e["event"] == "start"]
    assert [(e["input"], e["index"], e["count"]) for e in starts] == [
        (str(clips / "a.wav"), 1, 2), (str(clips / "b.flac"), 2, 2)]
    ok = [e for e in ev if e["event"] == "success"]
    assert [(e["output"], e["frames"]) for e in ok] == [(str(out / "a.npz"), 25), (str(out / "b.npz"), 50)]
    for e in ev:
        if e["event"] == "progress":
            assert e["total"] == (25 if e["input"].endswith("a.wav") else 50)
    assert load_track(out / "b.npz").n_frames == 50


def test_batch_loads_the_model_and_rig_once(clips, tmp_path, sfm_dir, monkeypatch, capsys):
    import evp_anim.face.rig as rig_module
    import evp_anim.models.animate as animate_module
    from evp_anim.cli import main
    loads = {"model": 0, "rig": 0}
    real_load, real_rig = animate_module.load_animation_model, rig_module.FaceRig

    def counting_load(path, engine="auto"):
        loads["model"] += 1
        return real_load(path, engine)

    class CountingRig(real_rig):
        @classmethod
        def cached(cls, *a, **k):          # the CLI's way to the rig (the per-user rig cache)
            loads["rig"] += 1
            return super().cached(*a, **k)

    monkeypatch.setattr(animate_module, "load_animation_model", counting_load)
    monkeypatch.setattr(rig_module, "FaceRig", CountingRig)
    monkeypatch.setenv("EVP_ANIM_SFM_DIR", str(sfm_dir))
    d = tmp_path / "in"
    d.mkdir()
    for i, name in enumerate(("c1.wav", "c2.wav", "c3.wav")):
        sf.write(d / name, sf.read(SAMPLE, dtype="float32")[0][i * 8000:(i + 2) * 8000], 16000)
    main(["--quiet", "animate", str(d), "-o", str(tmp_path / "out")])
    assert loads == {"model": 1, "rig": 1}
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["c1.npz", "c2.npz", "c3.npz"]
    assert capsys.readouterr().out == ""


def test_a_write_error_mid_batch_is_one_line_and_the_rest_still_run(tmp_path, sfm_dir, monkeypatch, capsys):
    import errno
    import evp_anim.models.animate as animate_module
    from evp_anim.cli import main
    real = animate_module.animate_speech_to_file

    def disk_full_on_c2(path, output, *a, **k):
        if Path(path).name == "c2.wav":
            raise OSError(errno.ENOSPC, "No space left on device", str(output))
        return real(path, output, *a, **k)

    monkeypatch.setattr(animate_module, "animate_speech_to_file", disk_full_on_c2)
    monkeypatch.setenv("EVP_ANIM_SFM_DIR", str(sfm_dir))
    d = tmp_path / "in"
    d.mkdir()
    x = sf.read(SAMPLE, dtype="float32")[0]
    for name in ("c1.wav", "c2.wav", "c3.wav"):
        sf.write(d / name, x[:12000], 16000)
    with pytest.raises(SystemExit) as stop:
        main(["--quiet", "animate", str(d), "-o", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == [f"error: {d / 'c2.wav'}: cannot write {tmp_path / 'out' / 'c2.npz'}: No space left on device "
                   "(free some space or write elsewhere)",
                   f"error: 1 of 3 inputs failed: {d / 'c2.wav'}"]
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["c1.npz", "c3.npz"]


def test_batch_never_overwrites_an_input(clips, tmp_path, sfm_dir):
    d = tmp_path / "d"
    d.mkdir()
    sf.write(d / "a.wav", sf.read(clips / "a.wav", dtype="float32")[0], 16000)
    # speech under a track's name: its track would be d/take.npz, the input itself
    (d / "take.npz").write_bytes((clips / "a.wav").read_bytes())
    before = sha(d / "take.npz")
    p = run("animate", d / "a.wav", d / "take.npz", "-o", d, sfm_dir=sfm_dir)
    assert p.returncode == 2
    err = lines(p.stderr)
    assert any("take.npz" in ln and "would overwrite an input" in ln for ln in err), err
    assert sha(d / "take.npz") == before and load_track(d / "a.npz").n_frames == 25
    p = run("animate", d / "take.npz", "-o", d / "take.npz", sfm_dir=sfm_dir)       # one input, same
    assert p.returncode == 2 and "is the input itself" in lines(p.stderr)[0] and sha(d / "take.npz") == before


@pytest.mark.parametrize("args,message", [
    (["{a}", "{b}", "-o", "{t}/x.npz"], "-o names the output folder"),
    (["{a}", "{t}/a.mp3", "-o", "{t}/o/"], "would both be written to"),
    (["{a}", "{b}", "-o", "{t}/o", "--preview", "{t}/p.mp4"], "--preview writes one video"),
    (["{a}", "{b}", "-o", "{t}/o", "--text", "hello"], "give one input"),
    (["{t}", "-o", "{t}/o"], "no audio files in this folder"),
    (["{a}", "{b}", "-o", "{file}/o/"], "cannot write .*Not a directory"),     # a write error: one line
])
def test_batch_usage_errors_are_one_line_before_any_work(clips, tmp_path, args, message, sfm_dir):
    import re
    (tmp_path / "file").write_text("a file where a folder should be")
    if "{t}/a.mp3" in args:         # a.wav and a.mp3 would both become a.npz
        sf.write(tmp_path / "a.mp3", sf.read(clips / "a.wav")[0], 16000)
    fill = {"a": clips / "a.wav", "b": clips / "b.flac", "t": tmp_path, "file": tmp_path / "file"}
    before = sorted(tmp_path.iterdir())
    p = run("animate", *[a.format(**fill) for a in args], sfm_dir=sfm_dir)
    err = lines(p.stderr)
    assert p.returncode == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(message, err[0]), err[0]
    assert sorted(tmp_path.iterdir()) == before       # nothing written


# ---------------------------------------------------------------------- export -o -
@pytest.fixture(scope="module")
def track(clips, tmp_path_factory, sfm_dir) -> Path:
    out = tmp_path_factory.mktemp("track") / "a.npz"
    p = run("--quiet", "animate", clips / "a.wav", "-o", out, "--emotion", "happy", sfm_dir=sfm_dir)
    assert p.returncode == 0, p.stderr
    return out


@pytest.mark.parametrize("fmt,suffix", [("arkit-csv", ".csv"), ("livelink-csv", ".csv"),
                                        ("openface-csv", ".csv"), ("rhubarb-json", ".json")])
def test_export_to_stdout_gives_the_file_bytes(track, tmp_path, fmt, suffix):
    path = tmp_path / f"x{suffix}"
    p = run("--quiet", "export", track, "-f", fmt, "-o", path)
    assert p.returncode == 0, p.stderr
    p = run("--machine-readable", "export", track, "-f", fmt, "-o", "-", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == path.read_bytes() and len(p.stdout) > 100
    ev = events(p.stderr)                       # stderr: JSON lines only; stdout: the format only
    assert [e["event"] for e in ev] == ["start", "success"] and ev[-1]["output"] == "-"
    assert sorted(f.name for f in tmp_path.iterdir()) == [path.name]       # no file named "-"
    p = run("export", track, "-f", fmt, "-o", "-")             # human mode: notes go to stderr
    assert p.stdout == path.read_bytes() and lines(p.stderr)[-1].startswith("wrote stdout (")
    if suffix == ".json":
        assert "mouthCues" in json.loads(p.stdout)
    else:
        assert len(p.stdout.decode().splitlines()) == load_track(track).n_frames + 1   # header + a row a frame


def test_export_binary_format_to_stdout_is_a_one_line_error(track):
    p = run("export", track, "-f", "fbx", "-o", "-")
    assert p.returncode == 2 and p.stdout == b""
    err = lines(p.stderr)
    assert len(err) == 1 and err[0].startswith("error: fbx is a binary format"), err


def test_export_to_a_closed_pipe_is_a_one_line_error(track):
    proc = subprocess.Popen(EXE + ["export", str(track), "-f", "openface-csv", "-o", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                         # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 2
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        "error: cannot write to stdout: the reading program closed the pipe"], err
