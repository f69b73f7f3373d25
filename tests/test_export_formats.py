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


def test_arkit_mapping_splits_smirk_folds_sfm_and_drops_unknown():
    from evp_anim.export.emotion_arkit import SFM_TO_ARKIT
    names = ["jawOpen", "mouthSmirkLeft", "mouthSmileLeft", "sfm_anger", "EYEBLINKLEFT", "notAChannel"]
    x = np.array([[0.5, 0.3, 0.4, 0.5, 0.2, 0.9]], np.float32)
    out = to_arkit52(x, names)
    col = {n: i for i, n in enumerate(ARKIT_52)}
    anger = SFM_TO_ARKIT["sfm_anger"]
    assert out[0, col["jawOpen"]] == pytest.approx(0.5 + 0.5 * anger.get("jawOpen", 0.0))
    assert out[0, col["mouthSmileLeft"]] == pytest.approx(0.7)   # own 0.4 + smirk 0.3
    assert out[0, col["mouthDimpleLeft"]] == pytest.approx(0.3)
    assert out[0, col["eyeBlinkLeft"]] == pytest.approx(0.2)     # case-insensitive
    # sfm_anger at 0.5 adds half its fitted row: squinting, glaring eyes and lowered brows
    assert out[0, col["eyeSquintLeft"]] == pytest.approx(0.5 * anger["eyeSquintLeft"]) and anger["eyeSquintLeft"] > 0.5
    assert out[0, col["browDownRight"]] == pytest.approx(0.5 * anger["browDownRight"]) and anger["browDownRight"] > 0.2
    assert out.sum() == pytest.approx(0.5 + 0.7 + 0.3 + 0.2 + 0.5 * sum(anger.values()), rel=1e-5)
    assert unmapped_channels(names) == ["notAChannel"]
    assert unmapped_channels(RIG_CHANNELS) == []                  # every rig channel reaches ARKit


def test_arkit_csv_round_trips(tmp_path):
    tr = make_track(fps=30.0)
    p = write_arkit_csv(tr, tmp_path / "a.csv")
    header = p.read_text().splitlines()[0].split(",")
    assert header == ["frame", "time", *ARKIT_52]
    back = read_arkit_csv(p)
    assert back.fps == pytest.approx(30.0)
    np.testing.assert_allclose(back.times, np.arange(tr.n_frames) / 30.0, atol=1e-6)
    np.testing.assert_allclose(back.values, to_arkit52(tr.expression, tr.expression_names), atol=1e-6)


# ---------------------------------------------------------------- Live Link Face: the app's layout
# Written from the public description of the CSV the Live Link Face iOS app records (Epic's ARKit
# blendshape enum order, then the head and eye angles), not from the project's constants.
LLF_COLUMNS = """Timecode BlendShapeCount
EyeBlinkLeft EyeLookDownLeft EyeLookInLeft EyeLookOutLeft EyeLookUpLeft EyeSquintLeft EyeWideLeft
EyeBlinkRight EyeLookDownRight EyeLookInRight EyeLookOutRight EyeLookUpRight EyeSquintRight EyeWideRight
JawForward JawRight JawLeft JawOpen MouthClose MouthFunnel MouthPucker MouthRight MouthLeft
MouthSmileLeft MouthSmileRight MouthFrownLeft MouthFrownRight MouthDimpleLeft MouthDimpleRight
MouthStretchLeft MouthStretchRight MouthRollLower MouthRollUpper MouthShrugLower MouthShrugUpper
MouthPressLeft MouthPressRight MouthLowerDownLeft MouthLowerDownRight MouthUpperUpLeft MouthUpperUpRight
BrowDownLeft BrowDownRight BrowInnerUp BrowOuterUpLeft BrowOuterUpRight CheekPuff CheekSquintLeft
CheekSquintRight NoseSneerLeft NoseSneerRight TongueOut
HeadYaw HeadPitch HeadRoll LeftEyeYaw LeftEyePitch LeftEyeRoll RightEyeYaw RightEyePitch RightEyeRoll""".split()


def _read_llf_by_position(path):
    """A position-based reader, as many importers are: column i of each row is LLF_COLUMNS[i]
    whatever the header says. Returns (header, timecodes, counts, {name: (T,) values})."""
    lines = Path(path).read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    values = {name: np.array([float(r[i]) for r in rows]) for i, name in enumerate(LLF_COLUMNS) if i >= 2}
    return lines[0].split(","), [r[0] for r in rows], [int(r[1]) for r in rows], values


def _llf_seconds(tc: str, fps: float) -> float:
    h, m, s, f = tc.split(":")            # HH:MM:SS:FF.fff, FF (+ sub-frame) at the clip's rate
    return int(h) * 3600 + int(m) * 60 + int(s) + float(f) / fps


def test_livelink_csv_matches_the_apps_layout_by_position(tmp_path):
    assert len(LLF_COLUMNS) == 63 and LLF_COLUMNS[2 + 17] == "JawOpen"
    n, fps = 40, 30.0
    rng = np.random.default_rng(7)
    camel = [c[0].lower() + c[1:] for c in LLF_COLUMNS[2:54]]       # ARKit's own spelling
    names = list(rng.permutation(camel))                              # any channel order in the track
    tr = Track.new(np.zeros((n, 68, 2), np.float32) + 100, fps=fps,
                   expression=rng.uniform(0, 1, (n, 52)).astype(np.float32), expression_names=names,
                   pose_rotation=rng.normal(0, 0.2, (n, 3)).astype(np.float32))
    tr.expression[:, names.index("jawOpen")] = 0.58
    p = write_livelink_csv(tr, tmp_path / "take.csv")
    header, codes, counts, got = _read_llf_by_position(p)
    assert header == LLF_COLUMNS                                       # byte-for-byte header
    assert counts == [61] * n                                          # BlendShapeCount as the app writes
    np.testing.assert_allclose(got["JawOpen"], 0.58, atol=1e-6)        # position 2 + 17
    for name in LLF_COLUMNS[2:54]:
        want = tr.expression[:, names.index(name[0].lower() + name[1:])]
        np.testing.assert_allclose(got[name], want, atol=1e-6, err_msg=name)
    pitch, yaw, roll = tr.pose_rotation.T                               # radians
    np.testing.assert_allclose(got["HeadYaw"], yaw, atol=1e-6)
    np.testing.assert_allclose(got["HeadPitch"], pitch, atol=1e-6)
    np.testing.assert_allclose(got["HeadRoll"], roll, atol=1e-6)
    for eye in LLF_COLUMNS[57:]:
        assert np.all(got[eye] == 0.0), eye                            # no gaze in the track
    assert codes[0] == "00:00:00:00.000" and codes[31] == "00:00:01:01.000"
    np.testing.assert_allclose([_llf_seconds(c, fps) for c in codes], np.arange(n) / fps, atol=1e-9)


def test_livelink_csv_round_trips_through_our_reader(tmp_path):
    tr = make_track(n=80)
    p = write_livelink_csv(tr, tmp_path / "l.csv")
    assert p.read_text().splitlines()[0] == ",".join(LIVELINK_HEADER)
    back = read_livelink_csv(p)                                 # fps inferred from the frame field
    assert back.fps == 25.0
    np.testing.assert_allclose(back.times, np.arange(80) / 25.0, atol=1e-9)
    np.testing.assert_allclose(back.values, to_arkit52(tr.expression, tr.expression_names), atol=1e-6)
    np.testing.assert_allclose(back.head_rotation, tr.pose_rotation, atol=1e-6)
    # other tools write camelCase names or another order: the reader goes by name, in any case
    lines = p.read_text().splitlines()
    cols = [line.split(",") for line in lines]
    order = [0, 1] + list(range(62, 1, -1))
    lines = [",".join(c[i] if k else c[i][0].lower() + c[i][1:] for i in order) if k == 0 else
             ",".join(c[i] for i in order) for k, c in enumerate(cols)]
    p.write_text("\n".join(lines) + "\n")
    np.testing.assert_allclose(read_livelink_csv(p).values, back.values)


def test_livelink_timecode_at_track_fps():
    assert livelink_timecode(0, 25) == "00:00:00:00.000"
    assert livelink_timecode(24, 25) == "00:00:00:24.000"
    assert livelink_timecode(25 * 3661 + 3, 25) == "01:01:01:03.000"
    assert livelink_timecode(31, 30) == "00:00:01:01.000"


# ---------------------------------------------------------------- OpenFace 2.x FeatureExtraction
def _openface_documented_columns():
    """OpenFace 2.x FeatureExtraction's CSV columns with every output on, in order, from its
    wiki page "Output Format" (written out here, independent of the project's constants)."""
    cols = "frame face_id timestamp confidence success".split()
    cols += "gaze_0_x gaze_0_y gaze_0_z gaze_1_x gaze_1_y gaze_1_z gaze_angle_x gaze_angle_y".split()
    cols += [f"eye_lmk_{a}_{i}" for a in "xyXYZ" for i in range(56)]
    cols += "pose_Tx pose_Ty pose_Tz pose_Rx pose_Ry pose_Rz".split()
    cols += [f"{a}_{i}" for a in "xyXYZ" for i in range(68)]
    cols += "p_scale p_rx p_ry p_rz p_tx p_ty".split() + [f"p_{i}" for i in range(34)]
    aus = "01 02 04 05 06 07 09 10 12 14 15 17 20 23 25 26".split()
    cols += [f"AU{a}_r" for a in aus + ["45"]] + [f"AU{a}_c" for a in aus + ["28", "45"]]
    return cols


def _openface_rows(path):
    lines = Path(path).read_text().splitlines()
    return lines[0].split(", "), [dict(zip(lines[0].split(", "), map(float, line.split(", ")))) for line in lines[1:]]


def test_openface_csv_has_openfaces_columns_and_units(tmp_path):
    from evp_anim.face.projection import euler_to_matrix, project
    tr = make_track(n=12)
    tr.pose_rotation[:] = tr.pose_rotation * 0 + [0.1, -0.2, 0.05]
    tr.landmarks_2d = project(tr.landmarks_3d, tr.pose_rotation, tr.pose_translation, tr.pose_scale).astype(np.float32)
    p = write_openface_csv(tr, tmp_path / "o.csv")
    text = p.read_text()
    header, rows = _openface_rows(p)
    assert header == _openface_documented_columns() and len(header) == 714
    assert all(len(r) == 714 for r in rows) and text.count(",") == text.count(", ")   # ", " separated
    f = (500 * 256 / 640 + 500 * 256 / 480) / 2        # OpenFace's default focal length, px
    for i in (0, 7):
        r = rows[i]
        assert (r["frame"], r["timestamp"], r["success"]) == (i + 1, pytest.approx(i / 25.0), 1.0)
        tz = f / tr.pose_scale[i]                         # mm: the depth at which s px = 1 mm
        assert r["pose_Tz"] == pytest.approx(tz, rel=1e-5)
        assert r["pose_Tx"] == pytest.approx((tr.pose_translation[i, 0] - 128) * tz / f, abs=1e-4)
        assert r["pose_Ty"] == pytest.approx((tr.pose_translation[i, 1] - 128) * tz / f, abs=1e-4)
        # camera space, x right / y down / z forward: OpenFace's R = Rx Ry Rz of the flipped model rotation
        a, b, c = r["pose_Rx"], r["pose_Ry"], r["pose_Rz"]
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
        flip = np.diag([1, -1, -1])
        np.testing.assert_allclose(rx @ ry @ rz, flip @ euler_to_matrix(tr.pose_rotation[i]) @ flip, atol=1e-5)
        # a 3D landmark in camera space projects (pinhole, OpenFace's camera) onto its 2D landmark
        for k in (8, 30, 48):
            X, Y, Z = r[f"X_{k}"], r[f"Y_{k}"], r[f"Z_{k}"]
            assert f * X / tz + 128 == pytest.approx(r[f"x_{k}"], abs=1e-3)   # weak perspective at Tz
            assert f * Y / tz + 128 == pytest.approx(r[f"y_{k}"], abs=1e-3)
            assert abs(Z - tz) < 150                                         # a head's depth around Tz
        assert r["p_scale"] == pytest.approx(tr.pose_scale[i], abs=1e-6)
        assert (r["p_tx"], r["p_ty"]) == (pytest.approx(tr.pose_translation[i, 0], abs=1e-6),
                                          pytest.approx(tr.pose_translation[i, 1], abs=1e-6))
        assert all(r[c] == 0 for c in header if c.startswith(("gaze_", "eye_lmk_")))   # not estimated
        assert all(r[f"p_{m}"] == 0 for m in range(34))
        arkit = dict(zip(ARKIT_52, to_arkit52(tr.expression, tr.expression_names)[i]))   # smirk adds to smile
        smile = (arkit["mouthSmileLeft"] + arkit["mouthSmileRight"]) / 2
        assert r["AU12_r"] == pytest.approx(5 * smile, abs=0.006)                      # 0–5 intensity
        assert r["AU26_r"] == pytest.approx(5 * arkit["jawOpen"], abs=0.006)
        assert r["AU25_r"] == pytest.approx(5 * max(arkit["jawOpen"] - arkit["mouthClose"], 0), abs=0.006)
        assert r["AU12_c"] == float(r["AU12_r"] >= 1.0)


def test_openface_csv_round_trips_to_track(tmp_path):
    tr = make_track(n=40)
    p = write_openface_csv(tr, tmp_path / "o.csv")
    back = read_openface_csv(p)
    assert back.fps == pytest.approx(25.0)
    rt = back.to_track(tr.image_size)
    for field, tol in (("landmarks_2d", 1e-5), ("landmarks_3d", 1e-3), ("pose_rotation", 1e-5),
                       ("pose_translation", 1e-5), ("pose_scale", 1e-5)):
        np.testing.assert_allclose(getattr(rt, field), getattr(tr, field), atol=tol, err_msg=field)


def test_openface_reads_a_file_without_3d_or_rigid_columns(tmp_path):
    tr = make_track(n=5, with_3d=False)
    p = write_openface_csv(tr, tmp_path / "o.csv")
    back = read_openface_csv(p)
    assert back.landmarks_3d is None                      # zero-filled 3D columns read as absent
    np.testing.assert_allclose(back.landmarks_2d, tr.landmarks_2d, atol=1e-5)
    header, *rows = [line.split(", ") for line in p.read_text().splitlines()]
    keep = [i for i, h in enumerate(header) if not h.startswith(("p_", "X_", "Y_", "Z_"))]
    p.write_text("\n".join(",".join(r[i] for i in keep) for r in [header, *rows]) + "\n")   # "," too
    back = read_openface_csv(p)
    assert back.pose_scale is None
    np.testing.assert_allclose(back.pose_rotation, tr.pose_rotation, atol=1e-5)   # from pose_R*
    np.testing.assert_allclose(back.pose_translation, tr.landmarks_2d.mean(axis=1, dtype=np.float64), atol=1e-4)


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
    # every rig channel reaches ARKit now (sfm_* through the fitted emotion table): nothing left out
    assert events[-1]["event"] == "success"
    assert not any("left out" in n for n in events[-1].get("notes", [])), events[-1]


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


# ---------------------------------------------------------------- atomic outputs (issue 15 rows 3, 10)
NUMPY_FORMATS = [("arkit-csv", "x.csv"), ("livelink-csv", "x.csv"), ("openface-csv", "x.csv"),
                 ("rhubarb-json", "x.json")]


def _disk_full_after(monkeypatch, nbytes=100):
    """Make every Path.write_bytes write ``nbytes`` and then fail as a full disk does."""
    import errno

    def write_bytes(self, data):
        with open(self, "wb") as f:
            f.write(bytes(data)[:nbytes])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_bytes", write_bytes)


@pytest.mark.parametrize("fmt,name", NUMPY_FORMATS)
def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, fmt, name):
    from evp_anim.export.commands import export_track_file
    src = save_track(make_track(n=10), tmp_path / "t.npz")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "keep.csv").write_text("old\n")               # an earlier output under the final name
    _disk_full_after(monkeypatch)
    for target in (out_dir / name, out_dir / "keep.csv") if name.endswith(".csv") else (out_dir / name,):
        with pytest.raises(EvpError, match=r"^cannot write .*No space left on device \(free some space"):
            export_track_file(src, fmt, target)
    monkeypatch.undo()
    assert sorted(p.name for p in out_dir.iterdir()) == ["keep.csv"]    # no partial file, no temp file
    assert (out_dir / "keep.csv").read_text() == "old\n"                # the old one untouched


def test_cli_export_write_error_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from evp_anim import cli
    src = save_track(make_track(n=10), tmp_path / "t.npz")
    _disk_full_after(monkeypatch)
    with pytest.raises(SystemExit) as e:
        cli.main(["export", str(src), "-f", "livelink-csv", "-o", str(tmp_path / "o" / "l.csv")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write") and "No space left" in err[0]
    assert list((tmp_path / "o").iterdir()) == []


def test_cli_export_into_an_unwritable_place_fails_before_the_work(tmp_path):
    src = save_track(make_track(n=10), tmp_path / "t.npz")
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file\n")                             # the output's "folder" is a file
    for fmt, name in [("openface-csv", "o.csv"), ("fbx", "o.fbx")]:   # fbx: refused before bpy starts
        r = _cli("export", src, "-f", fmt, "-o", blocker / name)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {blocker / name}:"), r.stderr
        assert "Traceback" not in r.stderr
    assert blocker.read_text() == "a file\n" and sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder", "t.npz"]


def test_atomic_writers_use_unique_temporary_names(tmp_path):
    from evp_anim.atomic import atomic_output
    target = tmp_path / "same.csv"
    with atomic_output(target) as a, atomic_output(target) as b:      # two writers of one path at once
        assert a != b and a.parent == b.parent == tmp_path
        a.write_text("first\n")
        b.write_text("second\n")
    assert target.read_text() == "first\n"                           # the last rename wins (a's, outermost)
    assert [p.name for p in tmp_path.iterdir()] == ["same.csv"]


class _FakeBuilder:
    """Stands in for the add-on's builder (no bpy): writes like Blender's exporters, then maybe fails."""

    def __init__(self, fail: bool):
        self.fail, self.paths = fail, []

    def export_scene(self, track_path, fmt, output, sfm_dir=None, audio=None):
        import errno
        import types
        out = Path(output)
        self.paths.append(out)
        if out.suffix == ".gltf":
            out.with_suffix(".bin").write_bytes(b"\0" * 64)            # glTF's buffer, named after the .gltf
        out.write_bytes(b"x" * 245_000)                                # e.g. FBX's partial file
        if self.fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        return types.SimpleNamespace(warnings=["w"])


@pytest.mark.parametrize("fmt,name", [("fbx", "a.fbx"), ("gltf", "a.glb"), ("gltf", "a.gltf"), ("blend", "a.blend")])
def test_blender_formats_write_atomically(tmp_path, monkeypatch, fmt, name):
    from evp_anim.export import registry
    out = tmp_path / "out" / name
    fake = _FakeBuilder(fail=True)
    monkeypatch.setattr(registry, "blender_builder", lambda: fake)
    with pytest.raises(EvpError, match=r"^cannot write .*No space left on device"):
        export_format(fmt).write(None, tmp_path / "t.npz", out)
    assert fake.paths[0].parent != out.parent and fake.paths[0].name == name   # final name, private folder
    assert list(out.parent.iterdir()) == []                                     # nothing partial, no temp
    fake.fail = False
    assert export_format(fmt).write(None, tmp_path / "t.npz", out) == ["w"]
    expected = [name, "a.bin"] if name.endswith(".gltf") else [name]            # the .gltf's .bin comes along
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(expected)
    assert out.stat().st_size == 245_000


# ---------------------------------------------------------------- gaze in the exports
def _gaze_track(gaze_deg, pose_deg=(0.0, 0.0, 0.0), n=30):
    g = np.deg2rad(np.tile(np.asarray(gaze_deg, np.float64), (n, 1))).astype(np.float32)
    rot = np.deg2rad(np.tile(np.asarray(pose_deg, np.float64), (n, 1))).astype(np.float32)
    return Track.new(np.full((n, 68, 2), 128.0, np.float32), expression=np.zeros((n, 1), np.float32),
                     expression_names=["jawOpen"], gaze=g, pose_rotation=rot)


def test_gaze_to_the_characters_left_is_eye_look_out_left_and_in_right(tmp_path):
    from evp_anim.export.arkit import EYE_LOOK_HORIZONTAL_DEG, EYE_LOOK_VERTICAL_DEG
    assert (EYE_LOOK_HORIZONTAL_DEG, EYE_LOOK_VERTICAL_DEG) == (30.0, 25.0)
    col = {n: i for i, n in enumerate(ARKIT_52)}
    left = read_arkit_csv(write_arkit_csv(_gaze_track([0.0, 10.0]), tmp_path / "l.csv")).values
    assert left[:, col["eyeLookOutLeft"]] == pytest.approx(10 / 30, abs=1e-5)
    assert left[:, col["eyeLookInRight"]] == pytest.approx(10 / 30, abs=1e-5)
    for n in ("eyeLookInLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookDownRight"):
        assert np.all(left[:, col[n]] == 0), n
    # down and to the character's right (positive pitch = down, as the head's pose)
    dr = to_arkit52(np.zeros((1, 0)), [], gaze=np.deg2rad([[5.0, -15.0]]))[0]
    assert dr[col["eyeLookDownLeft"]] == pytest.approx(5 / 25, abs=1e-6) == dr[col["eyeLookDownRight"]]
    assert dr[col["eyeLookInLeft"]] == pytest.approx(0.5, abs=1e-6) == dr[col["eyeLookOutRight"]]
    up = to_arkit52(np.zeros((1, 0)), [], gaze=np.deg2rad([[-40.0, 0.0]]))[0]
    assert up[col["eyeLookUpLeft"]] == 1.0 and up[col["eyeLookDownLeft"]] == 0.0     # clipped at full range
    # no gaze: eye-look channels stay 0 (today's output)
    none = to_arkit52(np.zeros((2, 0)), [])
    assert not none.any()


def test_gaze_sign_matches_the_image():
    """A gaze toward the subject's left must point to the image's right (the projection's +u), and
    down must point down in the image (+v), also when the head is turned."""
    from evp_anim.face.projection import project
    for pose in ([0.0, 0.0, 0.0], [0.1, 0.3, -0.05]):
        for gaze, du_sign, dv_sign in (([0.0, 0.2], 1, 0), ([0.2, 0.0], 0, 1)):
            d = formats.gaze_directions(np.array([gaze]), np.array([pose]))[0]    # OpenFace camera space
            assert np.linalg.norm(d) == pytest.approx(1.0)
            # the same ray in model space, projected: the far point minus the eye
            rest = formats.gaze_directions(np.zeros((1, 2)), np.array([pose]))[0]
            shift = d - rest                                                     # camera x right, y down
            if du_sign:
                assert np.sign(shift[0]) == du_sign and abs(shift[0]) > 0.1
            if dv_sign:
                assert np.sign(shift[1]) == dv_sign and abs(shift[1]) > 0.1
    # and the camera frame agrees with the projection's image axes for the head itself
    pts = project(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 100.0]]), np.array([0.0, 0.3, 0.0]), np.zeros(2), 1.0)
    nose_dir = formats.gaze_directions(np.zeros((1, 2)), np.array([[0.0, 0.3, 0.0]]))[0]
    assert np.sign(pts[1, 0] - pts[0, 0]) == np.sign(nose_dir[0]) == 1


def test_livelink_eye_columns_carry_the_gaze_and_read_back(tmp_path):
    tr = _gaze_track([6.0, -12.0], pose_deg=(3.0, 8.0, -2.0))
    p = write_livelink_csv(tr, tmp_path / "g.csv")
    _, _, _, cols = _read_llf_by_position(p)
    assert cols["LeftEyeYaw"] == pytest.approx(np.deg2rad(-12.0), abs=1e-6)
    assert cols["RightEyeYaw"] == pytest.approx(np.deg2rad(-12.0), abs=1e-6)
    assert cols["LeftEyePitch"] == pytest.approx(np.deg2rad(6.0), abs=1e-6)
    assert cols["RightEyePitch"] == pytest.approx(np.deg2rad(6.0), abs=1e-6)
    assert np.all(cols["LeftEyeRoll"] == 0) and np.all(cols["RightEyeRoll"] == 0)
    assert cols["HeadYaw"] == pytest.approx(np.deg2rad(8.0), abs=1e-6)     # same convention as the head
    assert cols["EyeLookInLeft"] == pytest.approx(12 / 30, abs=1e-5) and cols["EyeLookDownRight"] == pytest.approx(
        6 / 25, abs=1e-5)
    back = read_livelink_csv(p, fps=25)
    np.testing.assert_allclose(back.gaze, tr.gaze, atol=1e-6)
    # no gaze: eye columns 0, read back as zero gaze
    plain = make_track(n=30)
    _, _, _, cols = _read_llf_by_position(write_livelink_csv(plain, tmp_path / "p.csv"))
    assert all(np.all(cols[c] == 0) for c in ("LeftEyeYaw", "LeftEyePitch", "RightEyeYaw", "RightEyePitch"))


def test_openface_gaze_vectors_angles_and_read_back(tmp_path):
    cols = list(formats.OPENFACE_COLUMNS)
    # looking straight into the camera: (0, 0, -1), angles 0
    ahead = formats.openface_gaze(_gaze_track([0.0, 0.0], n=3))
    np.testing.assert_allclose(ahead[0], [0, 0, -1, 0, 0, -1, 0, 0], atol=1e-9)
    # 10° to the character's left, head straight: camera x > 0 (image right), OpenFace's angle atan2(x, -z)
    tr = _gaze_track([0.0, 10.0], n=30)
    p = write_openface_csv(tr, tmp_path / "o.csv")
    lines = p.read_text().splitlines()
    row = [float(v) for v in lines[1].split(", ")]
    g0 = np.array([row[cols.index(f"gaze_0_{a}")] for a in "xyz"])
    g1 = np.array([row[cols.index(f"gaze_1_{a}")] for a in "xyz"])
    np.testing.assert_allclose(g0, [np.sin(np.deg2rad(10)), 0.0, -np.cos(np.deg2rad(10))], atol=1e-6)
    np.testing.assert_allclose(g1, g0, atol=1e-9)
    assert row[cols.index("gaze_angle_x")] == pytest.approx(np.deg2rad(10.0), abs=1e-6)
    assert row[cols.index("gaze_angle_y")] == pytest.approx(0.0, abs=1e-6)
    # looking down: y down in camera space, gaze_angle_y > 0
    down = formats.openface_gaze(_gaze_track([10.0, 0.0], n=2))[0]
    assert down[1] == pytest.approx(np.sin(np.deg2rad(10)), abs=1e-6) and down[7] == pytest.approx(np.deg2rad(10), abs=1e-6)
    # with a turned head the vectors are in the camera, and the reader brings them back into the head
    turned = _gaze_track([-7.0, 15.0], pose_deg=(5.0, -20.0, 4.0))
    back = read_openface_csv(write_openface_csv(turned, tmp_path / "t.csv"))
    np.testing.assert_allclose(back.gaze, turned.gaze, atol=2e-6)
    assert back.to_track().gaze is not None
    # a track without gaze writes zeros, read back as no gaze
    plain = read_openface_csv(write_openface_csv(make_track(n=5), tmp_path / "p.csv"))
    assert plain.gaze is None
