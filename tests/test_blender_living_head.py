"""The Blender head's eyes, teeth, tongue and mouth interior (bpy 5.0.1 from PyPI, real SFM rig).

One synthetic 10-frame track with the rig's 42 channels drives everything (no model run): frame
3 closes the left eye, frame 5 turns the gaze 10° (yaw), frame 7 opens the jaw fully.
Each test runs in a forked process (bpy keeps global state); see test_blender_support.
"""

import numpy as np
import pytest

from evp_anim.export.blender_math import sfm_to_blender
from evp_anim.face.projection import euler_to_matrix
from evp_anim.tracks import Track
from test_blender_support import blender, isolated

BASIS = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float)   # SFM axes -> Blender axes
BLINK_F, GAZE_F, JAW_F = 3, 5, 7                                 # track frames (scene frame = 1 + i)
PARTS = {"eye_R", "eye_L", "socket_R", "socket_L", "teeth_upper", "teeth_lower", "tongue", "mouth_interior"}


def _track(rig, gaze=True) -> Track:
    t = 10
    ex = np.zeros((t, len(rig.channels)), np.float32)
    ex[BLINK_F, rig.channels.index("eyeBlinkLeft")] = 1.0
    ex[JAW_F, rig.channels.index("jawOpen")] = 1.0
    g = np.zeros((t, 2), np.float32)
    g[GAZE_F, 1] = np.radians(10.0)
    return Track.new(np.zeros((t, 68, 2), np.float32), expression=ex, expression_names=list(rig.channels),
                     gaze=g if gaze else None)


def _import(sfm_dir, gaze=True):
    bpy, builder = blender(sfm_dir)
    rig = builder.load_rig()
    res = builder.import_track(_track(rig, gaze), sound=False, landmarks=False, name="T")
    return bpy, builder, rig, res


@isolated
def test_parts_are_parented_and_eyes_sit_in_the_sockets(sfm_dir):
    bpy, builder, rig, res = _import(sfm_dir)
    parts = builder.face_parts(res.head)
    assert set(parts) == PARTS
    for obj in parts.values():
        assert obj.parent == res.head and obj.type == "MESH" and obj.data.materials
    assert all(o in res.created for o in parts.values())            # an aborted import removes them
    # the eye openings are cut: fewer faces than the rig's triangles, every vertex (shape keys) kept
    assert len(res.head.data.vertices) == rig.num_vertices
    assert len(rig.triangles) - 200 < len(res.head.data.polygons) < len(rig.triangles)
    lm = rig.vertices()[rig.landmark_vertices]
    for side, first in (("R", 36), ("L", 42)):
        eye = parts[f"eye_{side}"]
        pts = lm[first:first + 6]
        lids = pts[[1, 2, 4, 5]]
        # the socket centre computed independently: midway between the corners, lid height,
        # 24 mm ball whose front is 1.5 mm behind the lid line
        want = np.array([0.5 * (pts[0, 0] + pts[3, 0]), lids[:, 1].mean(), lids[:, 2].mean() - 1.5 - 12.0])
        got_mm = np.array(eye.location) / 1e-3
        np.testing.assert_allclose(got_mm, sfm_to_blender(want) / 1e-3, atol=1.0)
        co = np.array([v.co[:] for v in eye.data.vertices])
        diam = co.max(0) - co.min(0)
        np.testing.assert_allclose(diam, 0.024, atol=0.0005)        # 24 mm ball
        # inside the head: front pole (the pupil, toward the viewer, -Y) 1.5 mm behind the lid line
        front = np.array(eye.location) + co[co[:, 1].argmin()]
        assert front[1] - sfm_to_blender(lids)[:, 1].mean() == pytest.approx(0.0015, abs=1e-4)
        assert abs(front[0] - eye.location[0]) < 1e-6
    assert parts["eye_L"].location[0] > 0 > parts["eye_R"].location[0]    # subject's left = +X


@isolated
def test_gaze_keys_rotate_the_eyes(sfm_dir):
    bpy, builder, rig, res = _import(sfm_dir)
    scene = bpy.context.scene
    parts = builder.face_parts(res.head)
    for frame, yaw in ((1 + GAZE_F, 10.0), (1 + GAZE_F + 2, 0.0)):
        scene.frame_set(frame)
        for side in "RL":
            eye = parts[f"eye_{side}"]
            assert eye.rotation_mode == "XZY"
            np.testing.assert_allclose(np.degrees(eye.rotation_euler), [0.0, 0.0, yaw], atol=1e-4)  # yaw = Blender Z
            # same convention as the head pose: the eye's matrix in the head is the track's
            m = np.array(eye.matrix_local.to_3x3())
            np.testing.assert_allclose(m, BASIS @ euler_to_matrix(np.radians([0.0, yaw, 0.0])) @ BASIS.T, atol=1e-5)
    # yaw turns the pupils toward the subject's left (+X)
    scene.frame_set(1 + GAZE_F)
    dg = bpy.context.evaluated_depsgraph_get()
    eye = parts["eye_L"].evaluated_get(dg)
    look = np.array(eye.matrix_world.to_3x3()) @ np.array([0.0, -1.0, 0.0])
    assert look[0] == pytest.approx(np.sin(np.radians(10.0)), abs=1e-4)
    # gaze edits come back out of Export (eye curves → track.gaze)
    out = builder.export_track(res.head, source=_track(rig))
    np.testing.assert_allclose(out.gaze, _track(rig).gaze, atol=1e-6)


@isolated
def test_eyes_look_ahead_without_gaze(sfm_dir):
    bpy, builder, rig, res = _import(sfm_dir, gaze=False)
    bpy.context.scene.frame_set(1 + GAZE_F)
    for side in "RL":
        assert np.allclose(builder.face_parts(res.head)[f"eye_{side}"].rotation_euler, 0.0)


@isolated
def test_lower_teeth_and_tongue_follow_the_jaw(sfm_dir):
    bpy, builder, rig, res = _import(sfm_dir)
    scene = bpy.context.scene
    parts = builder.face_parts(res.head)

    def world_points(frame):
        scene.frame_set(frame)
        dg = bpy.context.evaluated_depsgraph_get()
        out = {}
        for name in ("teeth_upper", "teeth_lower", "tongue"):
            ob = parts[name].evaluated_get(dg)
            co = np.array([v.co[:] for v in ob.data.vertices])
            m = np.array(ob.matrix_world)
            out[name] = co @ m[:3, :3].T + m[:3, 3]
        mesh = res.head.evaluated_get(dg).to_mesh()
        out["chin"] = np.array(mesh.vertices[int(rig.landmark_vertices[8])].co[:])
        res.head.evaluated_get(dg).to_mesh_clear()
        return out

    closed, opened = world_points(1), world_points(1 + JAW_F)
    drop = closed["teeth_lower"][:, 2].mean() - opened["teeth_lower"][:, 2].mean()
    chin_drop = closed["chin"][2] - opened["chin"][2]
    assert drop > 0.008                                              # lower teeth go down (> 8 mm)
    assert closed["tongue"][:, 2].mean() - opened["tongue"][:, 2].mean() > 0.005
    np.testing.assert_allclose(opened["teeth_upper"], closed["teeth_upper"], atol=1e-7)   # fixed to the skull
    # rigid with the jaw: a lower incisor's tip moves like the rig's chin region
    assert 0.5 * chin_drop < drop < 1.2 * chin_drop
    # the mouth interior's floor follows (its jawOpen shape key is driven to the head's value)
    interior_key = parts["mouth_interior"].data.shape_keys.key_blocks["jawOpen"]
    scene.frame_set(1)
    assert interior_key.value == pytest.approx(0.0)
    scene.frame_set(1 + JAW_F)
    assert interior_key.value == pytest.approx(1.0)


@isolated
def test_blink_covers_the_eyeball(sfm_dir):
    """A ray from in front of the left eye toward its centre meets the head mesh only behind the
    eyeball's front at rest (the opening is cut), and in front of it at eyeBlinkLeft = 1."""
    bpy, builder, rig, res = _import(sfm_dir)
    from mathutils import Vector                  # importable once bpy is
    from mathutils.bvhtree import BVHTree
    scene = bpy.context.scene
    eye = builder.face_parts(res.head)["eye_L"]
    c = np.array(eye.location)                                      # head-local (head unrotated)
    front_y = c[1] - 0.012
    for frame, covered in ((1, False), (1 + BLINK_F, True)):
        scene.frame_set(frame)
        dg = bpy.context.evaluated_depsgraph_get()
        tree = BVHTree.FromObject(res.head, dg)
        hits = []
        for dx, dz in ((0, 0), (0.002, 0.001), (-0.002, -0.001)):  # the pupil and either side of it
            origin = Vector((c[0] + dx, c[1] - 0.2, c[2] + dz))
            loc, *_ = tree.ray_cast(origin, Vector((0.0, 1.0, 0.0)))
            hits.append(loc is not None and loc[1] < front_y)
        assert all(hits) if covered else not any(hits), (frame, hits)
