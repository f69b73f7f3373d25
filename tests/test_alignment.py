"""3D-aware keypoint alignment (EVP Eq. 8) and the footage length policies."""

import numpy as np
import pytest

from evp_anim.errors import EvpError
from evp_anim.face.projection import euler_to_matrix, project
from evp_anim.face.rig import FaceRig
from evp_anim.footage.alignment import align_tracks, target_frame_indices
from evp_anim.footage.fitting import fit_pose_expression
from evp_anim.tracks import Track


@pytest.fixture(scope="module")
def rig(sfm_dir):
    return FaceRig(sfm_dir)


def _pose(n, seed=0):
    rng = np.random.default_rng(seed)
    rot = rng.uniform(-0.4, 0.4, (n, 3))
    trans = rng.uniform(100, 300, (n, 2))
    scale = rng.uniform(0.8, 2.0, n)
    return rot, trans, scale


def _speech(rig, n, seed=1, emotion_col=3):
    rng = np.random.default_rng(seed)
    ident = rig.sample_identity(rng, 0.8)
    w = np.zeros((n, rig.num_channels), np.float32)
    w[:, rig.channel_index("jawOpen")] = np.linspace(0, 0.6, n)
    l3d = rig.landmarks_3d(ident, w)
    emo = np.zeros((n, 8), np.float32)
    emo[:, emotion_col] = 1
    return Track.new(np.zeros((n, 68, 2), np.float32), landmarks_3d=l3d, identity=ident, expression=w,
                     expression_names=list(rig.channels), emotion=emo, intensity=np.full(n, 0.7, np.float32),
                     phonemes=[(0.0, 0.1, "b")])


def _target(rig, n, seed=2, size=(640, 480)):
    rot, trans, scale = _pose(n, seed)
    ident = rig.sample_identity(np.random.default_rng(seed), 0.8)
    l3d = np.repeat(rig.landmarks_3d(ident)[None], n, 0)
    return Track.new(project(l3d, rot, trans, scale).astype(np.float32), image_size=size, landmarks_3d=l3d,
                     pose_rotation=rot, pose_translation=trans, pose_scale=scale, identity=ident,
                     info={"video": "target.mp4"})


def test_eq8_projection_equals_s_pr_r_l_plus_t_with_y_down():
    rot, trans, scale = _pose(4)
    pts = np.random.default_rng(3).normal(0, 50, (4, 68, 3))
    got = project(pts, rot, trans, scale)
    for i in range(4):
        rp = pts[i] @ euler_to_matrix(rot[i]).T
        want = np.stack([scale[i] * rp[:, 0] + trans[i, 0], trans[i, 1] - scale[i] * rp[:, 1]], 1)
        np.testing.assert_allclose(got[i], want, atol=1e-9)


def test_pose_fit_recovers_known_rotation_translation_scale(rig):
    rot, trans, scale = _pose(20)
    neutral = rig.landmarks_3d(rig.sample_identity(np.random.default_rng(5), 1.0)).astype(np.float64)
    lm2d = project(np.repeat(neutral[None], 20, 0), rot, trans, scale)
    r, t, s, w = fit_pose_expression(lm2d, neutral, np.zeros((0, 68, 3)))
    np.testing.assert_allclose(r, rot, atol=1e-6)
    np.testing.assert_allclose(t, trans, atol=1e-6)
    np.testing.assert_allclose(s, scale, rtol=1e-6)
    assert w.shape == (20, 0)


def test_pose_and_expression_round_trip_reproduces_landmarks(rig):
    rot, trans, scale = _pose(10, seed=7)
    neutral = rig.landmarks_3d().astype(np.float64)
    basis = np.asarray(rig.deltas[:6][:, rig.landmark_vertices], np.float64)
    w_true = np.zeros((10, 6))
    w_true[:, 3] = np.linspace(0, 0.8, 10)  # happiness
    lm3d = neutral[None] + np.einsum("tk,kpj->tpj", w_true, basis)
    lm2d = project(lm3d, rot, trans, scale)
    r, t, s, w = fit_pose_expression(lm2d, neutral, basis, iterations=10, lambda_expression=1.0, jaw_weight=1.0)
    fitted = neutral[None] + np.einsum("tk,kpj->tpj", w, basis)
    assert np.abs(project(fitted, r, t, s) - lm2d).max() < 0.05
    assert np.degrees(np.abs(r - rot)).max() < 0.2


def test_length_policy_loop_repeats_the_footage():
    assert target_frame_indices(7, 3, "loop").tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_length_policy_pingpong_plays_back_without_a_jump():
    assert target_frame_indices(9, 4, "pingpong").tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]


def test_length_policy_hold_freezes_the_last_frame():
    assert target_frame_indices(5, 3, "hold").tolist() == [0, 1, 2, 2, 2]


def test_length_policy_trim_cuts_the_longer_one():
    assert target_frame_indices(5, 3, "trim").tolist() == [0, 1, 2]
    assert target_frame_indices(2, 6, "trim").tolist() == [0, 1]


def test_short_speech_uses_the_first_footage_frames_for_every_policy():
    for policy in ("loop", "pingpong", "hold", "trim"):
        assert target_frame_indices(3, 10, policy).tolist() == [0, 1, 2]


def test_unknown_length_policy_is_a_user_error():
    with pytest.raises(EvpError, match="length policy"):
        target_frame_indices(3, 3, "stretch")


def test_aligned_track_has_target_pose_and_speech_expression(rig):
    sp, tg = _speech(rig, 12), _target(rig, 5)
    out = align_tracks(sp, tg, identity="speech", length_policy="pingpong")
    idx = target_frame_indices(12, 5, "pingpong")
    assert out.n_frames == 12 and out.image_size == (640, 480)
    np.testing.assert_allclose(out.pose_rotation, tg.pose_rotation[idx])
    np.testing.assert_allclose(out.landmarks_2d, project(sp.landmarks_3d, tg.pose_rotation[idx],
                                                         tg.pose_translation[idx], tg.pose_scale[idx]), atol=1e-3)
    np.testing.assert_array_equal(out.expression, sp.expression)
    np.testing.assert_array_equal(out.emotion, sp.emotion)
    assert out.phonemes == sp.phonemes and out.info["target_frames"] == idx.tolist()


def test_identity_target_puts_the_speech_expression_on_the_target_face(rig):
    sp, tg = _speech(rig, 6), _target(rig, 6)
    out = align_tracks(sp, tg, identity="target", rig=rig)
    target_neutral = rig.landmarks_3d(tg.identity)
    speech_neutral = rig.landmarks_3d(sp.identity)
    np.testing.assert_allclose(out.landmarks_3d, target_neutral[None] + sp.landmarks_3d - speech_neutral[None],
                               atol=1e-4)
    # frame 0 of the speech has no expression: the output is exactly the target's face there
    np.testing.assert_allclose(out.landmarks_2d[0], tg.landmarks_2d[0], atol=1e-3)
    np.testing.assert_array_equal(out.identity, tg.identity)


def test_align_needs_speech_3d_landmarks(rig):
    sp = _speech(rig, 4)
    sp.landmarks_3d = None
    with pytest.raises(EvpError, match="landmarks_3d"):
        align_tracks(sp, _target(rig, 4), identity="speech")


def test_align_resamples_speech_to_the_footage_rate(rig):
    sp = _speech(rig, 30).resample(30.0)
    out = align_tracks(sp, _target(rig, 40), identity="speech", length_policy="trim")
    assert out.fps == 25.0 and out.n_frames == 30
