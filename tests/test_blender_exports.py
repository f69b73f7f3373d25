"""`evp-anim export -f blend|fbx|gltf` (through bpy and the add-on's builder) read back by Blender.

Blender's own importers read each file back; the shape-key F-curves must equal the track's
values at every frame, the head pose must match, and the frame rate must be the track's.
FBX and glTF put track frame i at i / fps seconds; .blend keeps frame 1 = track frame 0.
The take (FBX AnimStack, glTF animation) is named after the clip (the track file's stem).
"""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from evp_anim.face.projection import euler_to_matrix
from evp_anim.tracks import load_track
from test_blender_support import REPO, blender, isolated, make_say_track

BASIS = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float)  # SFM axes -> Blender axes


@pytest.fixture(scope="module")
def track_path(tmp_path_factory, sfm_dir):
    return make_say_track(tmp_path_factory.mktemp("say"), sfm_dir)


def _export(track_path, fmt, out, sfm_dir):
    r = subprocess.run([sys.executable, "-m", "evp_anim", "export", str(track_path), "-f", fmt, "-o", str(out),
                        "--sfm-dir", str(sfm_dir)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.is_file()


def _check_readback(bpy, builder, tr, first_frame_expected=None):
    scene = bpy.context.scene
    assert scene.render.fps / scene.render.fps_base == pytest.approx(tr.fps)
    head = next(o for o in scene.objects if o.type == "MESH" and o.data.shape_keys)
    key = head.data.shape_keys
    assert [kb.name for kb in key.key_blocks][1:] == tr.expression_names
    _, bag = builder.active_channelbag(key)
    first = min(fc.keyframe_points[0].co[0] for fc in bag.fcurves)
    if first_frame_expected is not None:
        assert first == first_frame_expected
    worst = 0.0
    for k, ch in enumerate(tr.expression_names):
        fc = bag.fcurves.find(f'key_blocks["{ch}"].value')
        got = np.array([fc.evaluate(first + i) for i in range(tr.n_frames)])
        worst = max(worst, float(np.abs(got - tr.expression[:, k]).max()))
    assert worst < 1e-5, worst
    for i in (0, tr.n_frames // 2):
        scene.frame_set(int(first) + i)
        m = np.array(head.matrix_world.to_3x3())
        m /= np.linalg.norm(m, axis=0, keepdims=True)           # importers may add a unit scale
        np.testing.assert_allclose(m, BASIS @ euler_to_matrix(tr.pose_rotation[i]) @ BASIS.T, atol=1e-4)
    return worst


@isolated
def test_gltf_export_round_trips(track_path, sfm_dir, tmp_path):
    out = tmp_path / "say.glb"
    _export(track_path, "gltf", out, sfm_dir)
    data = out.read_bytes()                      # GLB: 12-byte header, then the JSON chunk
    (json_len,) = struct.unpack("<I", data[12:16])
    doc = json.loads(data[20:20 + json_len])
    assert [a["name"] for a in doc["animations"]] == [track_path.stem]   # not "Animation"
    bpy, builder = blender(sfm_dir)
    builder._enable("io_scene_gltf2")
    bpy.context.scene.render.fps = 25   # glTF stores seconds, not fps: the importer uses the scene's
    bpy.ops.import_scene.gltf(filepath=str(out))
    _check_readback(bpy, builder, load_track(track_path), first_frame_expected=0.0)


@isolated
def test_fbx_export_round_trips(track_path, sfm_dir, tmp_path):
    out = tmp_path / "say.fbx"
    _export(track_path, "fbx", out, sfm_dir)
    data = out.read_bytes()                      # binary FBX: the take's name is stored "<name>\0\1AnimStack"
    assert track_path.stem.encode() + b"\x00\x01AnimStack" in data and b"Scene\x00\x01AnimStack" not in data
    bpy, builder = blender(sfm_dir)
    builder._enable("io_scene_fbx")
    bpy.ops.import_scene.fbx(filepath=str(out))   # FBX carries the frame rate itself
    _check_readback(bpy, builder, load_track(track_path))


@isolated
def test_blend_export_round_trips_through_export_track(track_path, sfm_dir, tmp_path):
    out = tmp_path / "say.blend"
    _export(track_path, "blend", out, sfm_dir)
    bpy, builder = blender(sfm_dir)
    bpy.ops.wm.open_mainfile(filepath=str(out))
    tr = load_track(track_path)
    _check_readback(bpy, builder, tr, first_frame_expected=1.0)
    head = next(o for o in bpy.context.scene.objects if o.type == "MESH" and o.data.shape_keys)
    back = builder.export_track(head)
    np.testing.assert_allclose(back.expression, tr.expression, atol=1e-6)
    np.testing.assert_allclose(back.pose_rotation, tr.pose_rotation, atol=1e-6)
    assert len(bpy.context.scene.sequence_editor.strips) == 1   # the audio came along
    assert head.evp.is_head and head.evp.frame_start == 1 and head.evp.fps == 25.0   # editable in the add-on


def test_two_blend_exports_to_one_path_do_not_collide(track_path, sfm_dir, tmp_path):
    out = tmp_path / "same.blend"
    cmd = [sys.executable, "-m", "evp_anim", "export", str(track_path), "-f", "blend", "-o", str(out),
           "--sfm-dir", str(sfm_dir)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate()
        assert p.returncode == 0, err[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ["same.blend"]   # no stray temp or .blend1 file
    assert out.read_bytes()[:7] == b"BLENDER"


@pytest.mark.parametrize("fmt, name", [("blend", "q.blend"), ("fbx", "q.fbx"), ("gltf", "q.glb")])
def test_quiet_export_prints_nothing(track_path, sfm_dir, tmp_path, fmt, name):
    """Blender's operators print to the process's stdout ("Info: Saved copy as …", the FBX and glTF
    exporters' progress): with --quiet the command prints nothing at all."""
    r = subprocess.run([sys.executable, "-m", "evp_anim", "--quiet", "export", str(track_path), "-f", fmt,
                        "-o", str(tmp_path / name), "--sfm-dir", str(sfm_dir)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / name).stat().st_size > 10_000
    assert r.stdout == "" and r.stderr == ""
