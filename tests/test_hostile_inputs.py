"""Issue 15 row 10: names and files chosen by someone else.

* the Blender add-on's command line: a track/output/audio name starting with ``-`` stays an
  argument (the paths it passes are absolute);
* ``preview``: a track's ``info.audio`` may name any file on disk, so it is muxed only when the
  file has the sha256 the track's provenance recorded;
* ``corpus import``: a symlink that leads out of the corpus folder is skipped, with the reason;
* a truncated WAV (header declares more data than the file holds) is read with a warning.
"""

import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from evp_anim.audio.io import audio_sha256, load_audio, save_wav, wav_shortfall
from evp_anim.data.manifest import read_manifest
from evp_anim.data.readers import OUTSIDE_REASON, read_cremad, read_mead, read_ravdess
from evp_anim.errors import EvpError
from evp_anim.tracks import Track, save_track

REPO = Path(__file__).resolve().parents[1]


def _jobs():
    """blender_addon/jobs.py on its own: the package's __init__ imports bpy, jobs.py does not."""
    spec = importlib.util.spec_from_file_location("evp_addon_jobs_under_test", REPO / "blender_addon" / "jobs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _track(n: int = 3, **fields) -> Track:
    lm = np.random.default_rng(1).uniform(60, 200, (n, 68, 2)).astype(np.float32)
    return Track.new(lm, fps=25, **fields)


def _tone(seconds: float, freq: float = 220.0, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---------------------------------------------------------------------- (a) the add-on's command line
CLI = "{python} -m evp_anim.cli --machine-readable animate {audio} --emotion-keys {keys} -o {output}"


def test_addon_command_line_makes_every_path_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = _jobs().build_argv(CLI, audio="-speech.wav", keys="--help.toml", output="-o.npz")
    assert argv == [sys.executable, "-m", "evp_anim.cli", "--machine-readable", "animate",
                    str(tmp_path / "-speech.wav"), "--emotion-keys", str(tmp_path / "--help.toml"),
                    "-o", str(tmp_path / "-o.npz")]
    # Already-absolute paths and spaces are kept as they are, one argument each.
    argv = _jobs().build_argv(CLI, audio="/data/my take.wav", keys="/k.toml", output="/out dir/-x.npz")
    assert argv[5] == "/data/my take.wav" and argv[-1] == "/out dir/-x.npz"


def test_a_dash_name_reaches_the_cli_as_a_file(tmp_path, monkeypatch):
    # The real CLI, given what build_argv makes for a track named "-t.npz" in the current folder,
    # reads the file; given the bare relative name it would take it for an option.
    monkeypatch.chdir(tmp_path)
    save_track(_track(), tmp_path / "-t.npz")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    bare = subprocess.run([sys.executable, "-m", "evp_anim.cli", "info", "-t.npz"], capture_output=True,
                          text=True, env=env)
    assert bare.returncode == 2 and "-t" in bare.stderr      # the problem the add-on had
    argv = _jobs().build_argv("{python} -m evp_anim.cli info {output}", output="-t.npz")
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["frames"] == 3


# ---------------------------------------------------------------------- (b) preview's audio
@pytest.fixture()
def audio_files(tmp_path):
    own, secret = tmp_path / "speech.wav", tmp_path / "private" / "secret.wav"
    save_wav(own, _tone(0.3, 220))
    secret.parent.mkdir()
    save_wav(secret, _tone(0.3, 440))
    return own, secret


def test_track_audio_is_used_only_with_the_recorded_sum(tmp_path, audio_files):
    from evp_anim.preview import find_track_audio
    own, secret = audio_files
    track_path = tmp_path / "t.npz"
    warnings = []

    # info.audio names a private file, and the track records no sum: not used.
    tr = _track(info={"audio": str(secret)})
    assert find_track_audio(tr, track_path, warn=warnings.append) is None
    assert "records no source_audio_sha256" in warnings[-1] and "--audio" in warnings[-1]
    # The track records its own audio's sum but names another file: not used.
    tr = _track(info={"audio": str(secret)}, provenance={"source_audio_sha256": audio_sha256(own)})
    assert find_track_audio(tr, track_path, warn=warnings.append) is None
    assert "differs from the source_audio_sha256" in warnings[-1]
    # The file the sum names: used, absolute or relative to a folder above the track.
    tr = _track(info={"audio": str(own)}, provenance={"source_audio_sha256": audio_sha256(own)})
    assert find_track_audio(tr, track_path, warn=warnings.append) == own
    tr = _track(info={"audio": "speech.wav"}, provenance={"source_audio_sha256": audio_sha256(own)})
    assert find_track_audio(tr, tmp_path / "a" / "b" / "t.npz", warn=warnings.append) == own
    assert len(warnings) == 2


def _audio_streams(path: Path) -> int:
    with av.open(str(path)) as c:
        return len(c.streams.audio)


def test_preview_muxes_only_the_verified_audio(tmp_path, audio_files, sfm_dir):
    from evp_anim.preview import write_preview
    own, secret = audio_files
    warnings = []
    tr = _track(8, info={"audio": str(secret)}, provenance={"source_audio_sha256": audio_sha256(own)})
    out = write_preview(tr, tmp_path / "p.mp4", sfm_dir=sfm_dir, size=128, track_path=tmp_path / "t.npz",
                        warn=warnings.append)
    assert _audio_streams(out) == 0 and len(warnings) == 1        # silent, and said why
    tr.info["audio"] = str(own)
    out = write_preview(tr, tmp_path / "q.mp4", sfm_dir=sfm_dir, size=128, track_path=tmp_path / "t.npz",
                        warn=warnings.append)
    assert _audio_streams(out) == 1 and len(warnings) == 1


# ---------------------------------------------------------------------- (c) corpus import and symlinks
def _touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_cremad_skips_symlinks_to_outside(tmp_path):
    root, elsewhere = tmp_path / "CREMA-D", tmp_path / "elsewhere"
    _touch(root / "AudioWAV" / "1001_IEO_HAP_HI.wav")
    _touch(root / "extra" / "take.wav")
    (root / "AudioWAV" / "1002_IEO_SAD_LO.wav").symlink_to(_touch(elsewhere / "private.wav"))
    (root / "AudioWAV" / "1003_IEO_ANG_MD.wav").symlink_to(root / "extra" / "take.wav")   # stays inside
    (root / "VideoMP4").mkdir()
    (root / "VideoMP4" / "1001_IEO_HAP_HI.mp4").symlink_to(_touch(elsewhere / "private.mp4"))
    scan = read_cremad(root)
    assert [r.clip_id for r in scan.rows] == ["cremad_1001_IEO_HAP_HI", "cremad_1003_IEO_ANG_MD"]
    assert scan.rows[0].video == ""
    assert ("AudioWAV/1002_IEO_SAD_LO.wav", OUTSIDE_REASON) in scan.skipped
    assert ("VideoMP4/1001_IEO_HAP_HI.mp4", OUTSIDE_REASON) in scan.skipped


def test_mead_and_ravdess_skip_symlinks_to_outside(tmp_path):
    elsewhere = _touch(tmp_path / "elsewhere" / "x.m4a").parent
    mead = tmp_path / "MEAD"
    _touch(mead / "M003/audio/happy/level_1/001.m4a")
    (mead / "M003/audio/happy/level_1/002.m4a").symlink_to(elsewhere / "x.m4a")
    (mead / "M005").mkdir()
    (mead / "M005/audio").symlink_to(elsewhere, target_is_directory=True)   # a whole folder out
    _touch(elsewhere / "happy/level_1/001.m4a")
    scan = read_mead(mead)
    assert [r.clip_id for r in scan.rows] == ["mead_M003_happy_l1_001"]
    assert ("M003/audio/happy/level_1/002.m4a", OUTSIDE_REASON) in scan.skipped
    assert ("M005/audio/happy/level_1/001.m4a", OUTSIDE_REASON) in scan.skipped

    rav = tmp_path / "RAVDESS"
    _touch(rav / "Actor_01/03-01-03-01-01-01-01.wav")
    (rav / "Actor_01/03-01-04-01-01-01-01.wav").symlink_to(elsewhere / "x.m4a")
    scan = read_ravdess(rav)
    assert [r.clip_id for r in scan.rows] == ["ravdess_01_happy_i01_s01_r01"]
    assert ("Actor_01/03-01-04-01-01-01-01.wav", OUTSIDE_REASON) in scan.skipped


def test_corpus_import_command_leaves_outside_files_out(tmp_path, capsys):
    from evp_anim.cli import main
    root = tmp_path / "CREMA-D"
    _touch(root / "AudioWAV" / "1001_IEO_HAP_HI.wav")
    (root / "AudioWAV" / "1002_IEO_SAD_LO.wav").symlink_to(_touch(tmp_path / "private.wav"))
    main(["corpus", "import", str(root), "-o", str(tmp_path / "m.csv")])
    assert [r.audio for r in read_manifest(tmp_path / "m.csv")] == ["AudioWAV/1001_IEO_HAP_HI.wav"]
    err = capsys.readouterr().err
    assert "skipped 1" in err and "outside the corpus folder" in err


# ---------------------------------------------------------------------- (d) truncated WAVs
def test_truncated_wav_is_read_with_a_warning(tmp_path):
    full = tmp_path / "full.wav"
    save_wav(full, _tone(0.5))
    data = full.read_bytes()
    cut = _touch(tmp_path / "cut.wav", data[: 44 + 4000])          # 2000 of 8000 samples
    assert wav_shortfall(full) is None and wav_shortfall(cut) == (16000, 4000)
    warnings = []
    assert load_audio(full, warn=warnings.append).shape == (8000,) and warnings == []
    audio = load_audio(cut, warn=warnings.append)
    assert audio.shape == (2000,)
    np.testing.assert_allclose(audio, load_audio(full)[:2000], atol=1e-4)
    assert len(warnings) == 1 and "truncated" in warnings[0] and "16000 bytes" in warnings[0]
    assert "\n" not in warnings[0]


def test_truncated_wav_warning_reaches_the_cli_reporter(tmp_path):
    from evp_anim.cli_common import reporter, set_reporter
    from evp_anim.progress import Reporter
    full = tmp_path / "full.wav"
    save_wav(full, _tone(0.5))
    cut = _touch(tmp_path / "cut.wav", full.read_bytes()[:-2000])
    old, buf = reporter(), io.StringIO()
    set_reporter(Reporter(stream=buf))
    try:
        load_audio(cut)
    finally:
        set_reporter(old)
    assert buf.getvalue().startswith(f"warning: {cut} is truncated")


def test_streamed_wav_with_open_size_is_not_called_truncated(tmp_path):
    # Writers that stream to a pipe leave the data size open (0xFFFFFFFF); that is not truncation.
    full = tmp_path / "full.wav"
    save_wav(full, _tone(0.2))
    data = bytearray(full.read_bytes())
    pos = data.index(b"data")
    data[pos + 4: pos + 8] = struct.pack("<I", 0xFFFFFFFF)
    streamed = _touch(tmp_path / "streamed.wav", bytes(data))
    assert wav_shortfall(streamed) is None


def test_a_wav_below_1_khz_is_refused(tmp_path):
    # 1 Hz would be resampled 16000-fold: a 100 kB file would become gigabytes.
    odd = tmp_path / "odd.wav"
    import soundfile as sf
    sf.write(str(odd), _tone(0.1)[:200], 500, subtype="PCM_16", format="WAV")
    with pytest.raises(EvpError, match="500 Hz"):
        load_audio(odd)


def test_disk_errors_of_any_command_are_one_line(tmp_path, monkeypatch, capsys):
    """A full disk (or a file where a folder should be) while `preview` writes is one `error:` line
    and exit 2, not a traceback: the CLI turns any OSError that reaches it into the write error."""
    import errno

    import evp_anim.preview
    from evp_anim.cli import main

    track = tmp_path / "t.npz"
    save_track(_track(5), track)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.mp4"))

    monkeypatch.setattr(evp_anim.preview, "write_preview", full_disk)
    with pytest.raises(SystemExit) as ex:
        main(["preview", str(track), "-o", str(tmp_path / "out.mp4")])
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write") and "free some space" in err[0]
    monkeypatch.undo()
    (tmp_path / "afile").write_text("x")
    r = subprocess.run([sys.executable, "-m", "evp_anim", "preview", str(track), "-o",
                        str(tmp_path / "afile" / "out.mp4")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: cannot write")
