"""The Blender scene's bpy-free math (evp_anim.export.blender_math): axes, head-pose Euler angles,
landmark points, sketch edges, scene fps and emotion keys, checked against known values without bpy."""

import numpy as np
import pytest

from evp_anim.emotion_keys import validate_keys
from evp_anim.emotions import EMOTIONS
from evp_anim.export.blender_math import (IBUG_PARTS_LOCAL, emotion_keys_at, emotion_keys_from_track,
                                          emotion_of_curve_value, euler_xzy_to_pose, ibug_edges,
                                          landmark_points, pose_to_euler_xzy, scene_fps_settings, sfm_to_blender)
from evp_anim.face.projection import euler_to_matrix
from evp_anim.tracks import Track

# SFM (x right, y up, z to viewer) -> Blender (X, -z, y), as a matrix (without the mm -> m scale)
AXES = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64)


def rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def blender_xzy_matrix(euler):
    """Blender's rotation matrix for Euler mode 'XZY': X applied first, then Z, then Y."""
    x, y, z = euler
    return ry(y) @ rz(z) @ rx(x)


def test_sfm_point_maps_to_blender_metres():
    # 10 mm right, 20 mm up, 30 mm toward the viewer -> X = 0.01 m, Y = -0.03 m (toward the camera), Z = 0.02 m
    np.testing.assert_allclose(sfm_to_blender([10.0, 20.0, 30.0]), [0.010, -0.030, 0.020], atol=1e-7)
    pts = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    np.testing.assert_allclose(sfm_to_blender(pts), 0.001 * pts @ AXES.T, atol=1e-7)
    assert np.linalg.det(AXES) == pytest.approx(1.0)   # a proper rotation: the face keeps its handedness


def test_pose_euler_is_the_track_rotation_in_blender_axes():
    poses = np.array([[0.3, -0.2, 0.1], [-0.5, 0.7, -0.4], [0.0, 0.0, 0.0], [1.2, -1.0, 2.5]], np.float32)
    euler = pose_to_euler_xzy(poses)
    for pose, e in zip(poses, euler):
        r_blender = AXES @ euler_to_matrix(pose) @ AXES.T
        np.testing.assert_allclose(blender_xzy_matrix(e), r_blender, atol=1e-6)
    np.testing.assert_allclose(pose_to_euler_xzy([[0.1, 0.2, 0.3]]), [[0.1, -0.3, 0.2]], atol=1e-7)
    np.testing.assert_allclose(euler_xzy_to_pose(euler), poses, atol=1e-7)


def test_a_quarter_yaw_turns_the_nose_to_blender_plus_x():
    # yaw +90°: the nose tip (100 mm toward the viewer) goes to the subject's left, SFM +x = Blender +X
    e = pose_to_euler_xzy([[0.0, np.pi / 2, 0.0]])[0]
    nose = sfm_to_blender([0.0, 0.0, 100.0])
    np.testing.assert_allclose(nose, [0.0, -0.1, 0.0], atol=1e-7)
    np.testing.assert_allclose(blender_xzy_matrix(e) @ nose, [0.1, 0.0, 0.0], atol=1e-6)


def test_landmark_points_3d_and_flat_2d():
    lm3 = np.zeros((2, 68, 3), np.float32)
    lm3[1, 8] = [0.0, -60.0, 20.0]                       # the chin
    tr = Track.new(np.full((2, 68, 2), 128, np.float32), landmarks_3d=lm3)
    pts, parented = landmark_points(tr)
    assert parented and pts.shape == (2, 68, 3)
    np.testing.assert_allclose(pts[1, 8], [0.0, -0.020, -0.060], atol=1e-7)
    lm2 = np.full((1, 68, 2), 128, np.float32)
    lm2[0, 0] = [228, 28]                                 # 100 px right of and above the centre
    tr = Track.new(lm2, image_size=(256, 256), pose_scale=np.array([2.0], np.float32))   # 2 px per mm
    pts, parented = landmark_points(tr)
    assert not parented
    np.testing.assert_allclose(pts[0, 0], [0.250, 0.0, 0.050], atol=1e-7)   # 50 mm + 20 cm aside, 50 mm up
    np.testing.assert_allclose(pts[0, 1], [0.200, 0.0, 0.0], atol=1e-7)


def test_sketch_edges():
    edges = ibug_edges()
    assert edges.shape == (64, 2)              # 16 jaw + 2×4 brows + 3 + 5 nose + 2×6 eyes + 12 + 8 lips
    pairs = {tuple(e) for e in edges.tolist()}
    assert (41, 36) in pairs and (59, 48) in pairs and (67, 60) in pairs     # closed loops
    assert (16, 17) not in pairs and (26, 27) not in pairs                   # separate parts


def test_sketch_parts_match_the_renderers():
    from evp_anim.face.sketch import IBUG_PARTS   # a cv2 module, which Blender lacks
    assert [(idx[0], idx[-1] + 1, closed) for _, idx, closed in IBUG_PARTS] == list(IBUG_PARTS_LOCAL)


@pytest.mark.parametrize("fps,expected", [(25.0, (25, 1.0)), (30 / 1.001, (30, 1.001)), (24 / 1.001, (24, 1.001)),
                                          (12.5, (13, 1.04))])
def test_scene_fps_settings(fps, expected):
    whole, base = scene_fps_settings(fps)
    assert whole == expected[0] and base == pytest.approx(expected[1]) and whole / base == pytest.approx(fps)


def test_emotion_keys_from_track_keep_the_changes_only():
    emo = np.zeros((20, 8), np.float32)
    emo[:10, EMOTIONS.index("happy")] = 1.0
    emo[10:, EMOTIONS.index("sad")] = 0.7
    emo[10:, 0] = 0.3
    inten = np.linspace(0, 1, 20).astype(np.float32)
    tr = Track.new(np.zeros((20, 68, 2), np.float32), emotion=emo, intensity=inten)
    keys = emotion_keys_from_track(tr)
    assert [(i, e) for i, e, _ in keys] == [(0, 5), (10, 6)]
    assert [v for _, _, v in keys] == pytest.approx([0.0, inten[10]])


def test_emotion_keys_at_head_curve_frames():
    # scene frame 1 = track frame 0 at 25 fps; a key before the clip (frame -4) collapses onto 0 s
    curve = {-4.0: 6.0, 1.0: 5.2, 26.0: 6.0}
    keys = emotion_keys_at([26.0, -4.0, 26.0], frame_start=1, fps=25.0,
                           emotion_at=lambda f: emotion_of_curve_value(curve.get(f, 5.0)),
                           intensity_at=lambda f: 0.5 if f > 1 else 1.0)
    assert [(k.time, k.emotion, k.intensity) for k in keys] == [(0.0, "happy", 1.0), (1.0, "sad", 0.5)]
    validate_keys(keys)   # what the add-on writes is a valid keys file
    assert emotion_keys_at([], 1, 25.0, str, float) == []


def test_emotion_of_curve_value_rounds_and_clips():
    assert [emotion_of_curve_value(v) for v in (-2.0, 0.4, 5.6, 99.0)] == ["neutral", "neutral", "sad", "surprised"]
