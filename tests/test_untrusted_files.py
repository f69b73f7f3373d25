"""Untrusted files and interrupts (issue 15, rows 1, 2, 4, 7, 8).

- Every ``.pt`` entry point loads with ``weights_only=True``: a payload file whose unpickling would
  create a marker file is refused with a one-line error, and the marker never appears.
- Track files: only known members are read, after a size check of their ``.npy`` headers; fps and
  image size are range-checked; resampling (and so ``align``) is bounded.
- SIGINT / SIGTERM during a command exit 130 / 143 with ``interrupted`` and leave no temp files.
- A resumed training run keeps ``log.csv``'s header and earlier rows.
"""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

from evp_anim.errors import EvpError
from evp_anim.tracks import MAX_FRAMES, Track, load_track, save_track

REPO = pathlib.Path(__file__).resolve().parents[1]
EXE = [sys.executable, "-m", "evp_anim.cli"]


def run(*args, sfm_dir=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if sfm_dir is not None:
        env["EVP_ANIM_SFM_DIR"] = str(sfm_dir)
    return subprocess.run(EXE + [str(a) for a in args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def assert_one_line_error(proc, pattern):
    import re
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert re.search(pattern, lines[0]), lines[0]


# ---------------------------------------------------------------------- row 1: code from .pt files
class _Touch:
    """Unpickles into ``Path(marker).touch()``: the stand-in for ``os.system`` in a hostile file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _payload(path, marker, **fields) -> pathlib.Path:
    """A ``.pt`` file shaped like one of ours (``fields``) with the payload tucked inside."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**fields, "x": _Touch(marker)}, path)
    return path


def test_the_payload_is_live(tmp_path):
    """The payload does run when unpickled unsafely, so the tests below prove something."""
    marker = tmp_path / "ran"
    evil = _payload(tmp_path / "evil.pt", marker)
    torch.load(evil, map_location="cpu", weights_only=False)
    assert marker.is_file()


def _one_line(e: EvpError) -> str:
    msg = str(e)
    assert "\n" not in msg
    return msg


def test_training_checkpoint_reader_refuses_payload(tmp_path):
    from evp_anim.train.loop import read_checkpoint
    marker = tmp_path / "ran"
    evil = _payload(tmp_path / "run" / "checkpoint.pt", marker, stage=0, step=3)
    with pytest.raises(EvpError) as e:
        read_checkpoint(evil)
    assert str(evil) in _one_line(e.value) and "not loaded" in str(e.value)
    assert not marker.exists()


def test_evp_pretrained_refuses_payload(tmp_path):
    from evp_anim.train.evp_trainer import Trainer
    marker = tmp_path / "ran"
    evil = _payload(tmp_path / "stage1.pt", marker, stage=1, step=0)
    with pytest.raises(EvpError) as e:
        Trainer._start_from_pretrained(object(), evil)     # the --pretrained path of `train`
    assert str(evil) in _one_line(e.value)
    assert not marker.exists()


def test_emote_pretrained_refuses_payload(tmp_path):
    from evp_anim.train.emote_trainer import EmoteTrainer
    marker = tmp_path / "ran"
    evil = _payload(tmp_path / "perceptual.pt", marker, kind="emote-checkpoint", stage=4)
    with pytest.raises(EvpError, match="not a readable checkpoint") as e:
        EmoteTrainer._start_from_pretrained(object(), evil)   # the --pretrained path of `train-emote`
    _one_line(e.value)
    assert not marker.exists()


def test_evp_from_checkpoint_refuses_payload(tmp_path):
    from evp_anim.models.evp import EvpModel
    marker = tmp_path / "ran"
    evil = _payload(tmp_path / "stage1.pt", marker, stage=1, step=0)
    with pytest.raises(EvpError, match="not a readable training checkpoint") as e:
        EvpModel.from_checkpoint(evil)
    _one_line(e.value)
    assert not marker.exists()


def test_emotion_classifier_cache_refuses_payload_and_still_round_trips(tmp_path):
    from evp_anim.eval.emotion_classifier import FORMAT, VERSION, EmotionClassifier, train_classifier
    marker = tmp_path / "ran"
    evil = _payload(tmp_path / "cache" / "clf.pt", marker, format=FORMAT, version=VERSION)
    with pytest.raises(EvpError, match="not a readable emotion classifier") as e:
        EmotionClassifier.load(evil)
    _one_line(e.value)
    assert not marker.exists()

    # what save() writes loads under weights_only=True (mean/std as tensors, not numpy arrays)
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(12, 68, 2)).astype(np.float32) for _ in range(8)]
    refs = [rng.normal(size=(68, 2)).astype(np.float32) for _ in range(8)]
    clf = train_classifier(seqs, refs, np.arange(8) % 8, epochs=1, channels=8)
    back = EmotionClassifier.load(clf.save(tmp_path / "ok.pt"))
    assert back.mean.dtype == np.float32 and back.mean.shape == clf.mean.shape
    np.testing.assert_array_equal(back.mean, clf.mean)
    np.testing.assert_array_equal(back.std, clf.std)
    np.testing.assert_array_equal(back.predict_many(seqs, refs), clf.predict_many(seqs, refs))


def test_render_model_loader_refuses_payload(tmp_path):
    from render.model_file import FORMAT, load_blob
    marker = tmp_path / "ran"
    evil = _payload(tmp_path / "model" / "model.pt", marker, format=FORMAT)
    with pytest.raises(EvpError) as e:
        load_blob(evil, "model")
    assert str(evil) in _one_line(e.value)
    assert not marker.exists()


def _small_track(t=40, fps=25.0, **kw) -> Track:
    rng = np.random.default_rng(1)
    return Track.new(rng.uniform(60, 200, (t, 68, 2)), fps=fps,
                     landmarks_3d=rng.normal(size=(t, 68, 3)).astype(np.float32), **kw)


def test_render_run_cli_refuses_payload_model(tmp_path):
    marker = tmp_path / "ran"
    _payload(tmp_path / "evil" / "model.pt", marker, format="evp-anim-renderer-1")
    track = save_track(_small_track(), tmp_path / "t.npz")
    p = run("render", "run", track, "--target", tmp_path / "x.mp4", "--model", tmp_path / "evil",
            "-o", tmp_path / "o.mp4")
    assert_one_line_error(p, "model.pt")
    assert not marker.exists() and not (tmp_path / "o.mp4").exists()


def test_animate_cli_refuses_payload_model(tmp_path):
    marker = tmp_path / "ran"
    evil = _payload(tmp_path / "evil.pt", marker, format="evp-anim-evp-model")
    p = run("animate", REPO / "assets" / "sample_speech.wav", "--model", evil, "-o", tmp_path / "a.npz")
    assert_one_line_error(p, "not a readable model file")
    assert not marker.exists() and not (tmp_path / "a.npz").exists()


# ---------------------------------------------------------------------- rows 2 and 8: track files
def _rewrite(path, **meta_changes) -> pathlib.Path:
    """Rewrite the track at ``path`` with its JSON meta changed (bypassing save_track's checks)."""
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(bytes(data["meta"]).decode())
    meta.update(meta_changes)
    data["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **data)
    return path


def test_tiny_fps_is_refused_by_the_loader_and_the_cli(tmp_path):
    path = _rewrite(save_track(_small_track(), tmp_path / "slow.npz"), fps=0.001)
    with pytest.raises(EvpError, match=r"fps must be a number in \[1, 240\], got 0.001"):
        load_track(path)
    assert_one_line_error(run("info", path), r"slow\.npz: fps must be")
    fast = _rewrite(save_track(_small_track(), tmp_path / "fast.npz"), fps=1e6)
    assert_one_line_error(run("info", fast), "fps must be")


@pytest.mark.parametrize("size", ["ab", [[1, 2], [3, 4]], [256], [256, 0], [256, 1e9], [True, 256], "256"])
def test_malformed_image_size_is_a_one_line_error(tmp_path, size):
    path = _rewrite(save_track(_small_track(), tmp_path / "t.npz"), image_size=size)
    with pytest.raises(EvpError, match="image_size must be two integers"):
        load_track(path)
    assert_one_line_error(run("info", path), "image_size must be two integers")


@pytest.mark.parametrize("size", ["ab", [[1, 2], [3, 4]]])
def test_malformed_image_size_in_preview_is_a_one_line_error(tmp_path, sfm_dir, size):
    path = _rewrite(save_track(_small_track(), tmp_path / "t.npz"), image_size=size)
    p = run("preview", path, "-o", tmp_path / "p.mp4", sfm_dir=sfm_dir)
    assert_one_line_error(p, "image_size must be two integers")
    assert not (tmp_path / "p.mp4").exists()


def _npy_header(shape, dtype="<f4") -> bytes:
    """A version 1.0 .npy header (magic included) declaring ``shape``; the data is up to the caller."""
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _add_member(path, name, shape, dtype="<f4", data=b"\0" * 16) -> None:
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(name + ".npy", _npy_header(shape, dtype) + data)


def test_an_extra_3_gib_member_is_never_read(tmp_path):
    tr = _small_track()
    path = save_track(tr, tmp_path / "t.npz")
    _add_member(path, "junk", (3 << 30,), "|u1")
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        back = load_track(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20          # numpy's allocations are traced: 3 GiB would show
    np.testing.assert_array_equal(back.landmarks_2d, tr.landmarks_2d)
    p = run("info", path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["fps"] == 25.0


@pytest.mark.parametrize("name,shape,dtype", [
    ("landmarks_2d", (40_000_000, 68, 2), "<f4"),   # 20 GiB of landmarks
    ("expression", (40, 3 << 30), "<f4"),           # 3 G channels for the 0 the meta names
    ("identity", (3 << 30,), "<f4"),
    ("meta", (3 << 30,), "|u1"),
    ("pose_scale", (40,), "<c16"),                  # 16-byte items
])
def test_a_huge_known_member_is_refused_before_allocation(tmp_path, name, shape, dtype):
    path = tmp_path / "t.npz"
    tr = _small_track()
    with open(path, "wb") as f:
        members = {**tr.arrays(), "identity": tr.identity,
                   "meta": np.frombuffer(json.dumps(tr.meta()).encode(), np.uint8)}
        members.pop(name)
        np.savez(f, **members)
    _add_member(path, name, shape, dtype)
    tracemalloc.start()
    try:
        with pytest.raises(EvpError) as e:
            load_track(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20
    msg = _one_line(e.value)
    assert f"array {name}" in msg and msg.endswith("refused")


def test_a_truncated_member_is_refused_before_allocation(tmp_path):
    path = tmp_path / "t.npz"
    tr = _small_track()
    members = {**tr.arrays(), "identity": tr.identity,
               "meta": np.frombuffer(json.dumps(tr.meta()).encode(), np.uint8)}
    members.pop("landmarks_2d")
    np.savez(path, **members)
    _add_member(path, "landmarks_2d", (40, 68, 2))      # a header for 21,760 bytes, 16 stored
    with pytest.raises(EvpError, match="array landmarks_2d is truncated"):
        load_track(path)


def test_deeply_nested_meta_is_a_one_line_error(tmp_path):
    path = save_track(_small_track(), tmp_path / "t.npz")
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data["meta"] = np.frombuffer(("[" * 100_000 + "]" * 100_000).encode(), np.uint8)
    np.savez(path, **data)
    assert_one_line_error(run("info", path), "meta")


def test_resampling_and_align_are_bounded(tmp_path):
    from evp_anim.footage.alignment import align_tracks
    speech = _small_track(t=5000, fps=1.0)
    with pytest.raises(EvpError, match=f"more than the {MAX_FRAMES}"):
        speech.resample(240.0)
    target = _small_track(t=10, fps=240.0, identity=np.zeros(63, np.float32))
    with pytest.raises(EvpError, match="would give 1200000 frames"):
        align_tracks(speech, target, identity="speech")
    assert len(speech.resample(25.0).landmarks_2d) == 125_000


# ---------------------------------------------------------------------- row 4: interrupts
def _interrupt(args, out_dir, wait_for, sig, sfm_dir):
    """Start ``evp-anim args``, wait until a file matching ``wait_for`` appears in ``out_dir`` (the
    command is mid-write), send ``sig``; None when the command finished first."""
    env = dict(os.environ, OMP_NUM_THREADS="1", EVP_ANIM_SFM_DIR=str(sfm_dir))
    proc = subprocess.Popen(EXE + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if any(wait_for(p.name) for p in out_dir.iterdir()):
                proc.send_signal(sig)
                break
            time.sleep(0.05)
        else:
            proc.kill()
            proc.communicate()
            return None
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def _long_wav(path, seconds):
    audio, sr = sf.read(REPO / "assets" / "sample_speech.wav", dtype="float32")
    sf.write(path, np.tile(audio, int(np.ceil(seconds * sr / len(audio))))[: int(seconds * sr)], sr)
    return path


def test_sigint_during_animate_exits_130_and_leaves_no_temp_file(tmp_path, sfm_dir):
    for seconds in (30, 120):
        out = tmp_path / f"out{seconds}"
        out.mkdir()
        wav = _long_wav(tmp_path / f"speech{seconds}.wav", seconds)
        got = _interrupt(["--quiet", "animate", wav, "-o", out / "a.npz", "--preview", out / "a.mp4"], out,
                         lambda n: n.startswith(".a.mp4."), signal.SIGINT, sfm_dir)
        if got is not None:
            break
    else:
        pytest.skip("animate finished before the interrupt could be sent")
    rc, err = got
    assert rc == 130, err
    assert err.strip().splitlines() == ["interrupted"]
    # the track was finished before the preview began; the half-written preview is gone
    assert sorted(p.name for p in out.iterdir()) == ["a.npz"]
    assert load_track(out / "a.npz").n_frames == seconds * 25


def test_sigterm_during_preview_exits_143_and_leaves_no_temp_file(tmp_path, sfm_dir):
    for frames in (2000, 8000):
        out = tmp_path / f"out{frames}"
        out.mkdir()
        track = save_track(_small_track(t=frames), tmp_path / f"t{frames}.npz")
        got = _interrupt(["--machine-readable", "preview", track, "-o", out / "p.mp4"], out,
                         lambda n: n.startswith(".p.mp4."), signal.SIGTERM, sfm_dir)
        if got is not None:
            break
    else:
        pytest.skip("preview finished before the signal could be sent")
    rc, err = got
    assert rc == 143, err
    last = json.loads(err.strip().splitlines()[-1])
    assert last["event"] == "failure" and last["error"] == "interrupted" and last["task"] == "preview"
    assert "Traceback" not in err
    assert list(out.iterdir()) == []


def test_sigterm_inside_c_code_running_python_still_exits_143_under_python_m(tmp_path):
    """A KeyboardInterrupt raised while C code runs Python through ``PyRun_String`` (as a Cython
    module's import does) is marked unhandled by CPython, which under ``python -m`` would end the
    process by SIGINT (-2) after main's SystemExit(143). The SIGTERM is sent from inside such a
    call, so the interrupt lands there every time."""
    (tmp_path / "interrupt_in_pyrun.py").write_text(
        "import ctypes\n"
        "from evp_anim import cli\n"
        "run = ctypes.pythonapi.PyRun_String\n"
        "run.restype = ctypes.py_object\n"
        "run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]\n"
        "def app(**kwargs):\n"
        "    code = b'import os, signal, time\\nos.kill(os.getpid(), signal.SIGTERM)\\ntime.sleep(30)\\n'\n"
        "    scope = {'__builtins__': __builtins__}\n"
        "    run(code, 257, scope, scope)\n"
        "cli.app = app\n"
        "cli.main()\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    proc = subprocess.run([sys.executable, "-m", "interrupt_in_pyrun", "preview"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines() == ["interrupted"]


# ---------------------------------------------------------------------- row 7: log.csv on resume
def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_step_log_keeps_header_and_earlier_rows_on_resume(tmp_path):
    from evp_anim.train.loop import StepLog
    path = tmp_path / "log.csv"
    log = StepLog(path)
    for step in range(1, 8):
        log.write("pretrain", step, 1.0 / step, {"l": step})
    log.close()
    with open(path, "a") as fh:
        fh.write('pretrain,8,0.1')                     # a kill mid-line
    # the checkpoint was at step 5: the resumed run redoes steps 6.. and appends after step 5
    log = StepLog(path)
    log.write("pretrain", 6, 0.5, {"l": 60})
    log.write("pretrain", 7, 0.25, {"l": 70})
    log.close()
    rows = _rows(path)
    assert rows[0] == ["stage", "step", "loss", "terms"]
    assert [r[1] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6", "7"]
    assert rows[2] == ["pretrain", "2", "0.50000", '{"l": 2}']
    assert rows[6][2:] == ["0.50000", '{"l": 60}']
    # a later stage appends without touching anything
    log = StepLog(path)
    log.write("disentangle", 1, 2.0, {})
    log.close()
    assert _rows(path)[-1] == ["disentangle", "1", "2.00000", "{}"] and len(_rows(path)) == 9


def test_step_log_of_a_run_killed_before_its_first_row_gets_a_header(tmp_path):
    from evp_anim.train.loop import StepLog
    path = tmp_path / "log.csv"
    path.write_text("")                                # opened, nothing flushed, then killed
    log = StepLog(path)
    log.write("pretrain", 1, 0.75, {"a": 1.5})
    log.close()
    assert _rows(path) == [["stage", "step", "loss", "terms"], ["pretrain", "1", "0.75000", '{"a": 1.5}']]


def test_step_log_rows_are_on_disk_before_close(tmp_path):
    """A SIGKILL leaves every written row: each one is flushed."""
    from evp_anim.train.loop import StepLog
    path = tmp_path / "log.csv"
    log = StepLog(path)
    log.write("landmarks", 1, 0.5, {})
    log.write("landmarks", 2, 0.25, {})
    assert [r[1] for r in _rows(path)[1:]] == ["1", "2"]
    log.close()


def test_train_resume_keeps_log_rows(tiny_corpus, sfm_dir, tmp_path):
    """A real EVP run killed after its step-3 checkpoint resumes and appends to log.csv; the
    checkpoint it resumes from loads under weights_only=True."""
    from evp_anim.data.pairs import load_pairs
    from evp_anim.train.evp_trainer import Trainer, TrainConfig
    from evp_anim.train.features import load_features

    feats = load_features(tiny_corpus, sfm_dir)
    pairs = load_pairs(tiny_corpus / "pairs.npz")
    cfg = TrainConfig(steps=(5, 0, 0), batch=4, pair_batch=2, checkpoint_every=3)

    class Killed(Exception):
        pass

    def kill(stage, step, total, logs):
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        Trainer(feats, pairs, cfg, tmp_path / "run", progress=kill).run()
    before = _rows(tmp_path / "run" / "log.csv")
    assert [r[1] for r in before[1:]] == ["1", "2", "3", "4"]
    resumed = Trainer(feats, pairs, cfg, tmp_path / "run")
    assert (resumed.stage, resumed.step) == (0, 3)
    resumed.run()
    after = _rows(tmp_path / "run" / "log.csv")
    assert after[0] == ["stage", "step", "loss", "terms"]
    assert after[1:4] == before[1:4]                   # steps 1-3 kept as written
    assert [r[1] for r in after[1:]] == ["1", "2", "3", "4", "5"]
