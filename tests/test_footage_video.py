"""Decoding target footage: timestamps -> 25 fps, rotation metadata, and unreadable files."""

from fractions import Fraction

import av
import numpy as np
import pytest

from evp_anim.cli import main
from evp_anim.errors import EvpError
from evp_anim.footage.video import iter_frames, probe, read_frames


def _write(path, times_s, size=(64, 48), rotation=None, audio=False):
    """H.264 video whose frame k is uniformly grey level 10 + 20 k, shown at times_s[k]."""
    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=1000)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.time_base = Fraction(1, 1000)
        s.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            s.set_display_rotation(rotation)
        for k, t in enumerate(times_s):
            img = np.full((h, w, 3), 10 + 20 * k, np.uint8)
            img[:8, :8] = 255  # marker at the top-left corner
            f = av.VideoFrame.from_ndarray(img, format="bgr24")
            f.pts = int(round(t * 1000))
            f.time_base = Fraction(1, 1000)
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def _level(img):
    return int(round((float(np.median(img)) - 10) / 20))


def test_variable_frame_rate_is_resampled_to_25fps_by_timestamp(tmp_path):
    # source frames at irregular times; output frame i (at i/25 s) shows the nearest source frame
    times = [0.0, 0.032, 0.05, 0.16, 0.17, 0.30]
    p = tmp_path / "vfr.mp4"
    _write(p, times)
    frames = read_frames(p, fmt="gray")
    got = [_level(f) for f in frames]
    want = [int(np.argmin([abs(i / 25 - t) for t in times])) for i in range(len(frames))]
    assert got == want
    assert len(frames) == 8  # 0.30 s + one source period (~0.033 s at its average rate) -> 8 frames


def test_rotation_metadata_is_applied(tmp_path):
    p = tmp_path / "rot.mp4"
    _write(p, [0.0, 0.04], size=(64, 48), rotation=90)
    info = probe(p)
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    img = read_frames(p, fmt="gray")[0]
    assert img.shape == (64, 48)
    # rotated 90 degrees counter-clockwise: the top-left marker goes to the bottom-left
    assert img[-4, 3] > 200 and img[3, 3] < 200


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(EvpError, match="not found"):
        probe(tmp_path / "nope.mp4")


def test_random_bytes_are_a_user_error(tmp_path):
    p = tmp_path / "junk.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(EvpError, match="cannot read video"):
        read_frames(p)


def test_truncated_file_is_a_user_error(tmp_path):
    p = tmp_path / "ok.mp4"
    _write(p, [k / 25 for k in range(10)])
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3])
    with pytest.raises(EvpError) as err:
        read_frames(cut)
    assert "\n" not in str(err.value)


def _write_faststart(path, n=100, size=(128, 96)):
    """4 s of noisy 25 fps H.264 with its index (moov) at the front of the file."""
    rng = np.random.default_rng(0)
    w, h = size
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for _ in range(n):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_faststart_file_cut_in_half_is_reported_not_decoded_silently(tmp_path, capsys, sfm_dir):
    p = tmp_path / "ok.mp4"
    _write_faststart(p)
    data = p.read_bytes()
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")  # index in front
    assert len(read_frames(p, fmt="gray")) == 100
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(EvpError, match=r"truncated or corrupt video \(decoded [0-9.]+ s of 4\.0 s\)"):
        read_frames(cut, fmt="gray")
    out = tmp_path / "t.npz"
    with pytest.raises(SystemExit) as ex:
        main(["track", str(cut), "-o", str(out), "--sfm-dir", str(sfm_dir)])
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "truncated or corrupt video" in err and "\n" not in err
    assert not out.exists() and not list(tmp_path.glob(".t.npz*"))


def test_audio_only_file_is_a_user_error(tmp_path):
    import soundfile as sf
    p = tmp_path / "speech.wav"
    sf.write(str(p), np.zeros(1600, np.float32), 16000)
    with pytest.raises(EvpError, match="no video stream"):
        read_frames(p)


def test_cli_track_on_audio_only_file_exits_nonzero_with_one_line_and_no_output(tmp_path, capsys, sfm_dir):
    import soundfile as sf
    p = tmp_path / "speech.wav"
    sf.write(str(p), np.zeros(1600, np.float32), 16000)
    out = tmp_path / "t.npz"
    with pytest.raises(SystemExit) as ex:
        main(["track", str(p), "-o", str(out), "--sfm-dir", str(sfm_dir)])
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no video stream" in err and "\n" not in err
    assert not out.exists() and not list(tmp_path.glob(".t.npz*"))


def test_iter_frames_stops_at_max_frames(tmp_path):
    p = tmp_path / "v.mp4"
    _write(p, [k / 25 for k in range(10)])
    assert len(list(iter_frames(p, max_frames=4))) == 4
