"""Export formats without Blender: ARKit / Live Link / OpenFace CSV, Rhubarb JSON, emotion keys,
adjustments, and the `evp-anim export` command."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evp_anim.emotion_keys import EmotionKey, EmotionKeys, read_emotion_keys, write_emotion_keys
from evp_anim.errors import EvpError
from evp_anim.export.adjust import adjust_track, smooth_frames
from evp_anim.export.arkit import ARKIT_52, to_arkit52, unmapped_channels
from evp_anim.export import formats
from evp_anim.export.formats import (LIVELINK_HEADER, livelink_timecode, read_arkit_csv, read_livelink_csv,
                                     read_openface_csv, read_rhubarb_json, rhubarb_cues, write_arkit_csv,
                                     write_livelink_csv, write_openface_csv, write_rhubarb_json)
from evp_anim.export.registry import EXPORT_FORMATS, export_format, formats_help
from evp_anim.face.channels import RIG_CHANNELS
from evp_anim.tracks import Track, save_track

REPO = Path(__file__).resolve().parents[1]


def make_track(n=60, fps=25.0, seed=0, with_3d=True) -> Track:
    rng = np.random.default_rng(seed)
    lm = rng.uniform(20, 230, (n, 68, 2)).astype(np.float32)
    expr = rng.uniform(0, 1, (n, len(RIG_CHANNELS))).astype(np.float32)
    return Track.new(lm, fps=fps, expression=expr, expression_names=list(RIG_CHANNELS),
                     pose_rotation=rng.normal(0, 0.1, (n, 3)).astype(np.float32),
                     pose_translation=rng.uniform(100, 150, (n, 2)).astype(np.float32),
                     pose_scale=rng.uniform(0.9, 1.2, n).astype(np.float32),
                     landmarks_3d=rng.normal(0, 50, (n, 68, 3)).astype(np.float32) if with_3d else None,
                     phonemes=[(0.0, 0.4, "_"), (0.4, 0.6, "m"), (0.6, 0.9, "a"), (0.9, 1.0, "l")])


def test_arkit_mapping_splits_smirk_and_drops_sfm():
    names = ["jawOpen", "mouthSmirkLeft", "mouthSmileLeft", "sfm_anger", "EYEBLINKLEFT"]
    x = np.array([[0.5, 0.3, 0.4, 0.9, 0.2]], np.float32)
    out = to_arkit52(x, names)
    col = {n: i for i, n in enumerate(ARKIT_52)}
    assert out[0, col["jawOpen"]] == pytest.approx(0.5)
    assert out[0, col["mouthSmileLeft"]] == pytest.approx(0.7)   # own 0.4 + smirk 0.3
    assert out[0, col["mouthDimpleLeft"]] == pytest.approx(0.3)
    assert out[0, col["eyeBlinkLeft"]] == pytest.approx(0.2)     # case-insensitive
    assert out.sum() == pytest.approx(0.5 + 0.7 + 0.3 + 0.2)
    assert unmapped_channels(names) == ["sfm_anger"]


def test_arkit_csv_round_trips(tmp_path):
    tr = make_track(fps=30.0)
    p = write_arkit_csv(tr, tmp_path / "a.csv")
    header = p.read_text().splitlines()[0].split(",")
    assert header == ["frame", "time", *ARKIT_52]
    back = read_arkit_csv(p)
    assert back.fps == pytest.approx(30.0)
    np.testing.assert_allclose(back.times, np.arange(tr.n_frames) / 30.0, atol=1e-6)
    np.testing.assert_allclose(back.values, to_arkit52(tr.expression, tr.expression_names), atol=1e-6)


def test_livelink_csv_header_and_round_trip(tmp_path):
    tr = make_track(n=80)
    p = write_livelink_csv(tr, tmp_path / "l.csv")
    lines = p.read_text().splitlines()
    assert lines[0] == ",".join(LIVELINK_HEADER)
    assert lines[0].startswith("Timecode,BlendShapeCount,EyeBlinkLeft,") is False  # ARKit order: Brow first
    assert lines[0].endswith("TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,"
                             "RightEyeYaw,RightEyePitch,RightEyeRoll")
    assert len(lines[1].split(",")) == 2 + 61
    assert lines[1 + 26].split(",")[0] == "00:00:01:01.000"   # frame 26 at 25 fps
    back = read_livelink_csv(p)                                 # fps inferred from the frame field
    assert back.fps == 25.0
    np.testing.assert_allclose(back.times, np.arange(80) / 25.0, atol=1e-9)
    np.testing.assert_allclose(back.values, to_arkit52(tr.expression, tr.expression_names), atol=1e-6)
    np.testing.assert_allclose(back.head_rotation, tr.pose_rotation, atol=1e-6)


def test_livelink_header_has_arkit_names_in_pascal_case():
    names = LIVELINK_HEADER[2:54]
    assert len(names) == 52 and "EyeBlinkLeft" in names and names[-1] == "TongueOut"
    assert LIVELINK_HEADER[:2] == ("Timecode", "BlendShapeCount")


def test_livelink_timecode_at_track_fps():
    assert livelink_timecode(0, 25) == "00:00:00:00.000"
    assert livelink_timecode(24, 25) == "00:00:00:24.000"
    assert livelink_timecode(25 * 3661 + 3, 25) == "01:01:01:03.000"
    assert livelink_timecode(31, 30) == "00:00:01:01.000"


def test_openface_csv_round_trips_to_track(tmp_path):
    tr = make_track(n=40)
    p = write_openface_csv(tr, tmp_path / "o.csv")
    header = p.read_text().splitlines()[0].split(",")
    assert header[:11] == ["frame", "face_id", "timestamp", "confidence", "success", "pose_Tx", "pose_Ty",
                           "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    assert header[11] == "x_0" and header[11 + 68] == "y_0" and "Z_67" in header
    back = read_openface_csv(p)
    assert back.fps == pytest.approx(25.0)
    rt = back.to_track(tr.image_size)
    for field in ("landmarks_2d", "landmarks_3d", "pose_rotation", "pose_translation", "pose_scale"):
        np.testing.assert_allclose(getattr(rt, field), getattr(tr, field), atol=1e-5, err_msg=field)


def test_openface_reads_openface_spacing(tmp_path):
    tr = make_track(n=5, with_3d=False)
    p = write_openface_csv(tr, tmp_path / "o.csv")
    text = p.read_text().replace(",", ", ")   # OpenFace's own files separate with ", "
    p.write_text(text)
    back = read_openface_csv(p)
    assert back.landmarks_3d is None
    np.testing.assert_allclose(back.landmarks_2d, tr.landmarks_2d, atol=1e-5)


def test_rhubarb_json_round_trips_and_uses_phonemes(tmp_path):
    tr = make_track(n=25)
    p = write_rhubarb_json(tr, tmp_path / "r.json", sound_file="say.wav")
    meta, cues = read_rhubarb_json(p)
    assert meta == {"soundFile": "say.wav", "duration": 1.0, "frameRate": 25.0}
    assert cues == rhubarb_cues(tr)
    assert cues[0]["value"] == "X" and cues[0]["start"] == 0.0       # "_" silence
    assert cues[-1]["end"] == pytest.approx(tr.duration)
    shape_at = lambda t: next(c["value"] for c in cues if c["start"] <= t < c["end"])  # noqa: E731
    assert shape_at(0.5) == "A"          # m
    assert shape_at(0.95) == "H"         # l
    assert all(a["end"] == b["start"] for a, b in zip(cues, cues[1:]))


def test_rhubarb_from_channels_without_phonemes():
    tr = make_track(n=4)
    tr.phonemes = []
    tr.expression[:] = 0
    k = tr.expression_names.index
    tr.expression[1, k("jawOpen")] = 0.8
    tr.expression[2, k("mouthPucker")] = 0.6
    tr.expression[3, k("mouthClose")] = 0.7
    assert [c["value"] for c in rhubarb_cues(tr)] == ["X", "D", "F", "A"]


def test_reader_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,time\n0,0\n")
    with pytest.raises(EvpError, match="lacks the column"):
        read_arkit_csv(bad)
    with pytest.raises(EvpError, match="not found"):
        read_livelink_csv(tmp_path / "none.csv")
    (tmp_path / "r.json").write_text('{"mouthCues": [{"start": 0, "end": 1, "value": "Q"}]}')
    with pytest.raises(EvpError, match="unknown mouth shape"):
        read_rhubarb_json(tmp_path / "r.json")


def test_emotion_keys_toml_round_trip(tmp_path):
    keys = EmotionKeys([EmotionKey(0.0, "Happy", 0.8), EmotionKey(1.5, "sadness", 0.5)], strength=1.2,
                       smoothing=3, multipliers={"jawOpen": 1.5, "odd name": 0.5})
    p = write_emotion_keys(keys, tmp_path / "k.toml")
    back = read_emotion_keys(p)   # the reader `animate --emotion-keys` uses
    assert [(k.time, k.emotion, k.intensity) for k in back.keys] == [(0.0, "happy", 0.8), (1.5, "sad", 0.5)]
    assert (back.strength, back.smoothing, back.multipliers) == (1.2, 3, {"jawOpen": 1.5, "odd name": 0.5})


@pytest.mark.parametrize("times", [(1.5, 0.0), (0.0, 0.0)])
def test_emotion_keys_writer_refuses_what_the_reader_refuses(tmp_path, times):
    keys = EmotionKeys([EmotionKey(t, "happy", 1.0) for t in times])
    with pytest.raises(EvpError, match="out of order"):
        write_emotion_keys(keys, tmp_path / "k.toml")
    assert not (tmp_path / "k.toml").exists()


def test_emotion_keys_bad_file(tmp_path):
    p = tmp_path / "k.toml"
    p.write_text('[[key]]\ntime = 0\nemotion = "bored"\n')
    with pytest.raises(EvpError, match="unknown emotion"):
        read_emotion_keys(p)
    p.write_text('[[key]]\ntime = 0\nemotion = "sad"\n[adjust]\nsmoothing = -1\n')
    with pytest.raises(EvpError, match="must be >= 0"):
        read_emotion_keys(p)


def test_adjust_strength_multipliers_smoothing():
    tr = make_track(n=10)
    tr.expression[:] = 0.5
    out, unknown = adjust_track(tr, strength=0.5, multipliers={"JAWOPEN": 3.0, "nope": 2.0})
    assert unknown == ["nope"]
    assert out.channel("jawOpen") == pytest.approx(np.full(10, 0.75))
    assert out.channel("mouthClose") == pytest.approx(np.full(10, 0.25))
    x = np.zeros((7, 1), np.float32)
    x[3] = 3.0
    np.testing.assert_allclose(smooth_frames(x, 3)[2:5, 0], [1.0, 1.0, 1.0])


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "evp_anim", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, **kw)


def test_registry_rows_name_real_writers():
    assert list(EXPORT_FORMATS) == ["arkit-csv", "livelink-csv", "openface-csv", "rhubarb-json", "blend", "fbx", "gltf"]
    for f in EXPORT_FORMATS.values():
        assert f.suffixes and all(s.startswith(".") and s == s.lower() for s in f.suffixes)
        if not f.needs_bpy:
            assert callable(getattr(formats, f.writer))
    assert formats_help() == "arkit-csv, livelink-csv, openface-csv, rhubarb-json, blend, fbx or gltf (.glb/.gltf)"
    with pytest.raises(EvpError, match="unknown format 'x': expected one of arkit-csv, .*, gltf"):
        export_format("x")
    with pytest.raises(EvpError, match=r"gltf output must end in \.glb or \.gltf"):
        export_format("gltf").check_output(Path("a.fbx"))
    export_format("gltf").check_output(Path("A.GLB"))


def test_cli_export_formats(tmp_path):
    tr = make_track(n=30)
    src = save_track(tr, tmp_path / "t.npz")
    for fmt, name in [("arkit-csv", "a.csv"), ("rhubarb-json", "r.json"), ("openface-csv", "o.csv")]:
        r = _cli("export", src, "-f", fmt, "-o", tmp_path / name)
        assert r.returncode == 0, r.stderr
    assert read_arkit_csv(tmp_path / "a.csv").values.shape == (30, 52)
    assert read_openface_csv(tmp_path / "o.csv").landmarks_3d.shape == (30, 68, 3)
    r = _cli("--machine-readable", "export", src, "-f", "livelink-csv", "-o", tmp_path / "l.csv")
    events = [json.loads(line) for line in r.stderr.splitlines()]
    assert events[-1]["event"] == "success" and "sfm_anger" in events[-1]["notes"][0]


def test_cli_export_bad_input_exits_2(tmp_path):
    tr = make_track(n=5)
    src = save_track(tr, tmp_path / "t.npz")
    r = _cli("export", src, "-f", "nope", "-o", tmp_path / "x.csv")
    assert r.returncode == 2 and r.stderr.startswith("error: unknown format 'nope'")
    r = _cli("export", src, "-f", "arkit-csv", "-o", tmp_path / "x.json")
    assert r.returncode == 2 and "must end in .csv" in r.stderr
    r = _cli("export", tmp_path / "missing.npz", "-f", "arkit-csv", "-o", tmp_path / "x.csv")
    assert r.returncode == 2 and "track file not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_weights_solved_from_landmarks_reproduce_them(sfm_dir):
    from evp_anim.face.solve import weights_from_landmarks
    from evp_anim.face.rig import FaceRig
    rig = FaceRig(sfm_dir)
    rng = np.random.default_rng(3)
    ident = rig.sample_identity(rng, 0.5)
    truth = np.zeros((6, rig.num_channels), np.float32)
    for name, v in [("jawOpen", 0.7), ("mouthSmileLeft", 0.5), ("mouthPucker", 0.4), ("browInnerUp", 0.6)]:
        truth[rng.integers(0, 6, 3), rig.channel_index(name)] = v
    lm = rig.landmarks_3d(ident, truth)
    w = weights_from_landmarks(rig, lm, ident)
    assert w.shape == truth.shape and w.min() >= 0 and w.max() <= 1
    np.testing.assert_allclose(rig.landmarks_3d(ident, w), lm, atol=0.05)        # mm
    j = rig.channel_index("jawOpen")
    np.testing.assert_allclose(w[:, j], truth[:, j], atol=0.02)


def test_cli_exports_landmark_only_tracks_by_solving_weights(tmp_path, sfm_dir):
    from evp_anim.face.rig import FaceRig
    rig = FaceRig(sfm_dir)
    truth = np.zeros((10, rig.num_channels), np.float32)
    truth[:, rig.channel_index("jawOpen")] = np.linspace(0, 0.8, 10)
    lm3 = rig.landmarks_3d(None, truth)
    tr = Track.new(np.zeros((10, 68, 2), np.float32) + 100, landmarks_3d=lm3)   # what `animate` writes
    src = save_track(tr, tmp_path / "t.npz")
    r = _cli("export", src, "-f", "arkit-csv", "-o", tmp_path / "a.csv", "--sfm-dir", sfm_dir)
    assert r.returncode == 0, r.stderr
    assert "solved" in r.stderr
    back = read_arkit_csv(tmp_path / "a.csv")
    np.testing.assert_allclose(back.values[:, ARKIT_52.index("jawOpen")], np.linspace(0, 0.8, 10), atol=0.02)
