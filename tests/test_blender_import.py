"""The add-on's scene builder under bpy 5.0.1 from PyPI: import, edit, export, bad input, retarget.

Each test runs in its own forked process (``@isolated``: bpy keeps global state); bpy is imported
inside the tests so the pytest parent never loads it.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evp_anim.export.blender_math import ibug_edges, sfm_to_blender
from evp_anim.tracks import load_track, save_track

from test_blender_support import REPO, blender, isolated, make_say_track


@pytest.fixture(scope="module")
def track_path(tmp_path_factory, sfm_dir):
    """A real 'happy' track (42 rig channels, 25 fps) with its wav beside it."""
    return make_say_track(tmp_path_factory.mktemp("say"), sfm_dir)


def fcurve_values(builder, id_data, data_path, frames, index=0):
    _, bag = builder.active_channelbag(id_data)
    fc = bag.fcurves.find(data_path, index=index)
    assert fc is not None, data_path
    return np.array([fc.evaluate(float(f)) for f in frames])


@isolated
def test_import_fcurves_equal_track_and_scene_fps(track_path, sfm_dir):
    bpy, builder = blender(sfm_dir)
    tr = load_track(track_path)
    assert bpy.ops.evp.import_track(filepath=str(track_path)) == {"FINISHED"}
    scene = bpy.context.scene
    head = bpy.context.active_object
    assert (scene.render.fps, scene.render.fps_base) == (25, 1.0)
    assert (scene.frame_start, scene.frame_end) == (1, tr.n_frames)
    key = head.data.shape_keys
    assert [kb.name for kb in key.key_blocks][1:] == tr.expression_names
    sample = [0, 7, 19, tr.n_frames - 1]
    for ch in ("jawOpen", "mouthSmileLeft", "sfm_happiness", "eyeBlinkRight"):
        got = fcurve_values(builder, key, f'key_blocks["{ch}"].value', [1 + i for i in sample])
        np.testing.assert_allclose(got, tr.channel(ch)[sample], atol=1e-6)
    # pose: Blender 'XZY' Euler (pitch, -roll, yaw) reproduces the track's matrix
    from evp_anim.face.projection import euler_to_matrix
    scene.frame_set(1 + 19)
    m_bl = np.array(head.matrix_world.to_3x3())
    basis = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float)   # SFM (x, y, z) -> Blender (x, -z, y)
    np.testing.assert_allclose(m_bl, basis @ euler_to_matrix(tr.pose_rotation[19]) @ basis.T, atol=1e-5)
    # the depsgraph shows the shape key value at that frame
    assert key.key_blocks["jawOpen"].value == pytest.approx(tr.channel("jawOpen")[19], abs=1e-5)
    # one new slotted Action: OBJECT (head), KEY (shape keys) and one OBJECT slot per eye (gaze)
    action = head.animation_data.action
    assert sorted(s.target_id_type for s in action.slots) == ["KEY", "OBJECT", "OBJECT", "OBJECT"]
    eyes = [o for o in head.children if o.get("evp_part", "").startswith("eye_")]
    assert len(eyes) == 2 and all(e.animation_data.action == action for e in eyes)
    assert key.animation_data.action == action
    # the audio became a sound strip at the first frame
    strips = list(scene.sequence_editor.strips)
    assert len(strips) == 1 and strips[0].type == "SOUND" and strips[0].frame_start == 1


@isolated
def test_landmarks_follow_the_track(track_path, sfm_dir):
    bpy, builder = blender(sfm_dir)
    tr = load_track(track_path)
    res = builder.import_track(track_path)
    dg = bpy.context.evaluated_depsgraph_get()
    for i in (0, 30):
        bpy.context.scene.frame_set(1 + i)
        mesh = res.landmarks.evaluated_get(dg).to_mesh()
        co = np.array([v.co[:] for v in mesh.vertices])
        assert co.shape == (68, 3) and len(mesh.edges) == len(ibug_edges())
        np.testing.assert_allclose(co, sfm_to_blender(tr.landmarks_3d[i]), atol=1e-6)
    assert res.landmarks.parent == res.head


@isolated
def test_import_at_30_fps_sets_scene_fps(track_path, sfm_dir, tmp_path):
    bpy, builder = blender(sfm_dir)
    tr = load_track(track_path).resample(30.0)
    p = save_track(tr, tmp_path / "t30.npz")
    builder.import_track(p, sound=False)
    assert bpy.context.scene.render.fps == 30 and bpy.context.scene.render.fps_base == 1.0
    assert bpy.context.scene.frame_end == tr.n_frames


@isolated
def test_fcurve_edit_shows_in_exported_track(track_path, sfm_dir, tmp_path):
    bpy, builder = blender(sfm_dir)
    tr = load_track(track_path)
    res = builder.import_track(track_path)
    key = res.head.data.shape_keys
    _, bag = builder.active_channelbag(key)
    fc = bag.fcurves.find('key_blocks["jawOpen"].value')
    fc.keyframe_points[10].co.y = 0.9          # the artist drags frame 10 up
    fc.update()
    _, obag = builder.active_channelbag(res.head)
    rot_z = obag.fcurves.find("rotation_euler", index=2)   # Blender Z = yaw
    rot_z.keyframe_points[5].co.y = 0.3
    rot_z.update()
    bpy.context.view_layer.objects.active = res.head
    assert bpy.ops.evp.export_track(filepath=str(tmp_path / "edited.npz")) == {"FINISHED"}
    out = load_track(tmp_path / "edited.npz")
    assert out.channel("jawOpen")[10] == pytest.approx(0.9, abs=1e-6)
    unchanged = np.arange(tr.n_frames) != 10
    np.testing.assert_allclose(out.channel("jawOpen")[unchanged], tr.channel("jawOpen")[unchanged], atol=1e-6)
    assert out.pose_rotation[5, 1] == pytest.approx(0.3, abs=1e-6)
    np.testing.assert_allclose(out.pose_rotation[6:], tr.pose_rotation[6:], atol=1e-6)
    # landmarks follow the edited weights: the jaw opened further at frame 10 only
    chin = 8
    assert out.landmarks_3d[10, chin, 1] < tr.landmarks_3d[10, chin, 1] - 1.0
    np.testing.assert_allclose(out.landmarks_3d[11], tr.landmarks_3d[11], atol=1e-3)
    assert out.fps == tr.fps and out.provenance["edited_in"] == "blender"


@isolated
def test_export_after_apply_adjustments_keeps_the_source_track(track_path, sfm_dir, tmp_path):
    # issue 16: Apply Adjustments rebuilt the Action from an in-memory track and cleared the head's
    # source path, so Export EVP Track then failed with "has no source track path"
    bpy, builder = blender(sfm_dir)
    src = load_track(track_path)
    assert bpy.ops.evp.import_track(filepath=str(track_path)) == {"FINISHED"}
    head = bpy.context.active_object
    first = head.animation_data.action
    head.evp.strength = 0.5
    assert bpy.ops.evp.apply_adjustments() == {"FINISHED"}
    assert head.animation_data.action != first
    assert head["evp_track_path"] == str(track_path) and head.evp.track_path == str(track_path)
    assert head.animation_data.action["evp_track_path"] == str(track_path)
    out = tmp_path / "adjusted.npz"
    assert bpy.ops.evp.export_track(filepath=str(out)) == {"FINISHED"}
    got = load_track(out)
    np.testing.assert_allclose(got.channel("jawOpen"), 0.5 * src.channel("jawOpen"), atol=1e-6)
    np.testing.assert_array_equal(got.identity, src.identity)   # identity comes from the source file
    assert got.n_frames == src.n_frames and got.fps == src.fps
    # a second Apply (strength 0.5 of the already halved animation) still exports
    assert bpy.ops.evp.apply_adjustments() == {"FINISHED"}
    assert bpy.ops.evp.export_track(filepath=str(out)) == {"FINISHED"}
    np.testing.assert_allclose(load_track(out).channel("jawOpen"), 0.25 * src.channel("jawOpen"), atol=1e-6)


@isolated
def test_keyed_emotions_export_as_toml_keys(track_path, sfm_dir, tmp_path):
    bpy, builder = blender(sfm_dir)
    from evp_anim.emotion_keys import read_emotion_keys
    builder.import_track(track_path)
    head = next(o for o in bpy.context.scene.objects if o.evp.is_head)
    bpy.context.view_layer.objects.active = head
    head.evp.emotion, head.evp.intensity = "sad", 0.5
    head.keyframe_insert('evp.emotion', frame=26)
    head.keyframe_insert('evp.intensity', frame=26)
    head.evp.strength = 0.8
    head.evp.multipliers["jawOpen"].multiplier = 1.5
    assert bpy.ops.evp.export_emotion_keys(filepath=str(tmp_path / "k.toml")) == {"FINISHED"}
    keys = read_emotion_keys(tmp_path / "k.toml")
    got = [(round(k.time, 6), k.emotion, round(k.intensity, 6)) for k in keys.keys]
    assert got[0] == (0.0, "happy", 1.0)
    assert (1.0, "sad", 0.5) in got                  # frame 26 = 1.0 s at 25 fps
    assert keys.strength == pytest.approx(0.8) and keys.multipliers == {"jawOpen": 1.5}


@isolated
def test_reimport_never_overwrites_the_artists_action(track_path, sfm_dir):
    bpy, builder = blender(sfm_dir)
    tr = load_track(track_path)
    first = builder.import_track(track_path)
    old = first.action
    key = first.head.data.shape_keys
    _, bag = builder.active_channelbag(key)
    old_values = [kp.co.y for kp in bag.fcurves.find('key_blocks["jawOpen"].value').keyframe_points]
    half = tr.copy()
    half.expression *= 0.5
    second = builder.import_track(half, head=first.head, sound=False, landmarks=False, nla=True)
    assert second.action != old and old.name in bpy.data.actions and old.use_fake_user
    assert builder.active_channelbag(key) == (None, None)   # NLA mode: the new Action is a strip
    tracks = key.animation_data.nla_tracks
    assert tracks[-1].strips[0].action == second.action
    assert tracks[0].mute and tracks[0].strips[0].action == old   # the previous one, kept, muted
    old_bag = builder.channelbag(old, next(s for s in old.slots if s.target_id_type == "KEY"))
    assert [kp.co.y for kp in old_bag.fcurves.find('key_blocks["jawOpen"].value').keyframe_points] == old_values
    # what the head plays now (the top strip) is what exports
    back = builder.export_track(first.head, source=tr)
    np.testing.assert_allclose(back.expression, 0.5 * tr.expression, atol=1e-6)


def _scene_state(bpy):
    return (sorted(o.name for o in bpy.data.objects), sorted(a.name for a in bpy.data.actions),
            sorted(m.name for m in bpy.data.meshes), bpy.context.scene.render.fps, bpy.context.scene.frame_end)


def _artist_scene(bpy):
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.context.active_object
    cube.keyframe_insert("location", frame=1)
    bpy.context.scene.render.fps = 24
    bpy.context.scene.frame_end = 99
    return cube


def _write_variant(src: Path, dst: Path, meta_change=None, arrays_change=None) -> Path:
    with np.load(src) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(bytes(data.pop("meta")).decode())
    if meta_change:
        meta_change(meta)
    if arrays_change:
        arrays_change(data)
    np.savez(dst, **data, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    return dst


@pytest.mark.parametrize("case", ["newer_schema", "unknown_channels", "missing_audio", "zero_frames"])
@isolated
def test_bad_input_reports_error_and_leaves_scene_alone(track_path, sfm_dir, tmp_path, case):
    bpy, builder = blender(sfm_dir)
    _artist_scene(bpy)
    before = _scene_state(bpy)
    kwargs = {"filepath": str(track_path)}
    if case == "newer_schema":
        kwargs["filepath"] = str(_write_variant(track_path, tmp_path / "new.npz",
                                                lambda m: m.update(schema_version=99)))
        expect = "schema version 99 is newer"
    elif case == "unknown_channels":
        tr = load_track(track_path)
        tr.expression_names = [f"custom{i}" for i in range(len(tr.expression_names))]
        kwargs["filepath"] = str(save_track(tr, tmp_path / "odd.npz"))
        expect = "track channels not in the face rig: custom0"
    elif case == "missing_audio":
        kwargs["audio"] = str(tmp_path / "nowhere.wav")
        expect = "audio file not found"
    else:
        def empty(d):
            for k in d:
                if k != "identity":
                    d[k] = d[k][:0]
        kwargs["filepath"] = str(_write_variant(track_path, tmp_path / "zero.npz",
                                                lambda m: m.update(n_frames=0), empty))
        expect = "track has 0 frames"
    with pytest.raises(RuntimeError, match=expect):   # bpy.ops turns an ERROR report into this
        bpy.ops.evp.import_track(**kwargs)
    assert _scene_state(bpy) == before


def test_cli_rejects_bad_input_with_exit_2(track_path, tmp_path):
    tr = load_track(track_path)
    tr.expression_names = [f"custom{i}" for i in range(len(tr.expression_names))]
    def empty(d):
        for k in d:
            if k != "identity":
                d[k] = d[k][:0]
    cases = {
        "newer": ([str(_write_variant(track_path, tmp_path / "new.npz", lambda m: m.update(schema_version=99)))],
                  "schema version 99 is newer"),
        "channels": ([str(save_track(tr, tmp_path / "odd.npz"))], "track channels not in the face rig"),
        "audio": ([str(track_path), "--audio", str(tmp_path / "nowhere.wav")], "audio file not found"),
        "zero": ([str(_write_variant(track_path, tmp_path / "zero.npz", lambda m: m.update(n_frames=0), empty))],
                 "track has 0 frames"),
    }
    for name, (args, expect) in cases.items():
        out = tmp_path / f"{name}.blend"
        r = subprocess.run([sys.executable, "-m", "evp_anim", "export", *args, "-f", "blend", "-o", str(out)],
                           capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 2, (name, r.stderr[-500:])
        assert r.stderr.startswith("error: ") and expect in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not out.exists()


@isolated
def test_retarget_matches_case_insensitively_and_reports_missing(track_path, sfm_dir):
    bpy, builder = blender(sfm_dir)
    tr = load_track(track_path)
    bpy.ops.mesh.primitive_cube_add()
    char = bpy.context.active_object
    char.shape_key_add(name="Basis")
    for n in ("JawOpen", "mouthsmileleft", "eyeBlinkLeft", "cheekPuff", "notARKit"):
        char.shape_key_add(name=n)
    rep = builder.retarget(track_path, [char])
    assert set(rep.matched) == {"jawOpen", "mouthSmileLeft", "eyeBlinkLeft", "cheekPuff"} - {"cheekPuff"}
    assert "mouthSmileRight" in rep.missing and "jawOpen" not in rep.missing
    # the sfm_* emotion channels reach ARKit through the fitted table: nothing is skipped any more
    assert rep.not_arkit == []
    from evp_anim.export.emotion_arkit import SFM_TO_ARKIT
    happy = SFM_TO_ARKIT["sfm_happiness"]
    vals = fcurve_values(builder, char.data.shape_keys, 'key_blocks["JawOpen"].value', [1, 11])
    np.testing.assert_allclose(vals, np.clip(tr.channel("jawOpen") + happy.get("jawOpen", 0.0)
                                             * tr.channel("sfm_happiness"), 0, 1)[[0, 10]], atol=1e-6)
    smile = fcurve_values(builder, char.data.shape_keys, 'key_blocks["mouthsmileleft"].value', [11])
    expect = np.clip(tr.channel("mouthSmileLeft")[10] + tr.channel("mouthSmirkLeft")[10]
                     + happy["mouthSmileLeft"] * tr.channel("sfm_happiness")[10], 0, 1)
    assert smile[0] == pytest.approx(expect, abs=1e-6)
    assert tr.channel("sfm_happiness")[10] > 0.2 and smile[0] > tr.channel("mouthSmileLeft")[10] + 0.1


@isolated
def test_retarget_cli_writes_blend_and_lists_missing(track_path, sfm_dir, tmp_path):
    bpy, builder = blender(sfm_dir)
    bpy.ops.mesh.primitive_cube_add()
    char = bpy.context.active_object
    char.shape_key_add(name="Basis")
    char.shape_key_add(name="jawopen")
    char_path = builder.save_blend(tmp_path / "char.blend")
    out = tmp_path / "driven.blend"
    r = subprocess.run([sys.executable, "-m", "evp_anim", "--machine-readable", "retarget", str(track_path),
                        "--mesh", str(char_path), "-o", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    done = [json.loads(line) for line in r.stderr.splitlines() if line.startswith('{"event": "success"')][0]
    assert done["matched"] == ["jawOpen"] and "mouthSmileLeft" in done["missing"]
    bpy.ops.wm.open_mainfile(filepath=str(out))
    key = bpy.data.objects["Cube"].data.shape_keys
    assert key.animation_data.action is not None and bpy.context.scene.render.fps == 25


@isolated
def test_head_builds_without_scipy_from_the_rig_cache(track_path, sfm_dir, tmp_path, monkeypatch):
    # stock Blender has numpy but no scipy: the builder falls back to `evp-anim export-rig`
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("EVP_ANIM_CLI", str(Path(sys.executable).parent / "evp-anim"))
    bpy, builder = blender(sfm_dir)
    from evp_anim.face.rig import FaceRig
    expected = FaceRig(sfm_dir)
    for name in [m for m in sys.modules if m == "scipy" or m.startswith(("scipy.", "evp_anim.face.articulation",
                                                                           "evp_anim.face.rig"))]:
        del sys.modules[name]
    sys.modules["scipy"] = None          # any `import scipy...` now raises ImportError
    builder._RIG_CACHE.clear()
    rig = builder.load_rig(sfm_dir)
    assert type(rig).__name__ == "RigData"
    assert list((tmp_path / "cache" / "evp-anim" / "rig").glob("rig-*.npz"))
    tr = load_track(track_path)
    np.testing.assert_allclose(rig.vertices(tr.identity), expected.vertices(tr.identity), atol=1e-4)
    np.testing.assert_allclose(rig.landmarks_3d(tr.identity, tr.expression),
                               expected.landmarks_3d(tr.identity, tr.expression), atol=1e-4)
    res = builder.import_track(track_path)
    assert len(res.head.data.shape_keys.key_blocks) == 1 + len(tr.expression_names)
    back = builder.export_track(res.head)
    np.testing.assert_allclose(back.landmarks_3d, tr.landmarks_3d, atol=1e-3)


@isolated
def test_landmark_only_track_drives_the_head_and_exports_edits(track_path, sfm_dir, tmp_path):
    # what `evp-anim animate` writes: 3D landmarks, no expression channels, no identity
    bpy, builder = blender(sfm_dir)
    tr = load_track(track_path)
    rig = builder.load_rig(sfm_dir)
    lm_only = tr.copy()
    lm_only.landmarks_3d = rig.landmarks_3d(None, tr.expression)
    lm_only.expression = np.zeros((tr.n_frames, 0), np.float32)
    lm_only.expression_names = []
    lm_only.identity = np.zeros(0, np.float32)
    p = save_track(lm_only, tmp_path / "animate.npz")
    res = builder.import_track(p, sound=False)
    assert any("solved" in w for w in res.warnings)
    vals = fcurve_values(builder, res.head.data.shape_keys, 'key_blocks["jawOpen"].value',
                         1 + np.arange(tr.n_frames))
    np.testing.assert_allclose(vals, tr.channel("jawOpen"), atol=0.02)
    _, bag = builder.active_channelbag(res.head.data.shape_keys)
    fc = bag.fcurves.find('key_blocks["jawOpen"].value')
    fc.keyframe_points[4].co.y = 1.0
    fc.update()
    back = builder.export_track(res.head)
    assert back.expression_names == list(rig.channels) and back.channel("jawOpen")[4] == pytest.approx(1.0)
    assert back.landmarks_3d[4, 8, 1] < lm_only.landmarks_3d[4, 8, 1] - 1.0    # chin dropped with the edit


@isolated
def test_failure_while_building_removes_what_the_import_made(track_path, sfm_dir):
    bpy, builder = blender(sfm_dir)
    _artist_scene(bpy)
    before = _scene_state(bpy)[:3]

    def broken(*a, **k):
        raise RuntimeError("disk full")
    builder._build_landmarks = broken
    with pytest.raises(RuntimeError, match="disk full"):
        builder.import_track(track_path)
    assert _scene_state(bpy)[:3] == before


@isolated
def test_keep_scene_fps_resamples_the_track(track_path, sfm_dir, tmp_path):
    bpy, builder = blender(sfm_dir)
    tr = load_track(track_path)
    bpy.context.scene.render.fps = 24
    assert bpy.ops.evp.import_track(filepath=str(track_path), keep_scene_fps=True) == {"FINISHED"}
    scene = bpy.context.scene
    want = tr.resample(24.0)
    assert scene.render.fps == 24 and scene.frame_end == want.n_frames
    head = bpy.context.active_object
    got = fcurve_values(builder, head.data.shape_keys, 'key_blocks["jawOpen"].value', 1 + np.arange(want.n_frames))
    np.testing.assert_allclose(got, want.channel("jawOpen"), atol=1e-6)
    back = builder.export_track(head)
    assert back.fps == 24.0 and back.n_frames == want.n_frames
    np.testing.assert_allclose(back.expression, want.expression, atol=1e-6)
