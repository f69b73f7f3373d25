"""The per-frame SFM fit's landmark matching: jawline silhouette candidates and dlib's offsets."""

import numpy as np
import pytest

from evp_anim.face.channels import SFM_EMOTION_CHANNELS
from evp_anim.face.projection import euler_to_matrix, project
from evp_anim.face.rig import FaceRig
from evp_anim.footage.fitting import (DLIB_LANDMARK_OFFSETS, ContourCandidates, FitOptions, LandmarkModel,
                                      _fit_pose_expression)


@pytest.fixture(scope="module")
def rig(sfm_dir):
    return FaceRig(sfm_dir)


def test_contour_candidates_follow_the_silhouette_as_the_head_turns(rig):
    cc = ContourCandidates(rig, SFM_EMOTION_CHANNELS).for_identity(None)
    jaw = np.asarray(rig.mean[rig.landmark_vertices[:17]], np.float64)
    w = np.zeros((1, len(SFM_EMOTION_CHANNELS)))
    front, _ = cc.select(euler_to_matrix(np.zeros((1, 3))), w)
    # frontal: the jawline vertices are on the outline (within a mesh edge or so)
    assert np.linalg.norm(front[0, :, :2] - jaw[:, :2], axis=1).max() < 6.0
    # yaw 30 deg (projection.euler_to_matrix convention): one side's silhouette moves forward
    # onto the cheek (towards the camera, +z), the other side stays on the mesh edge
    turned, _ = cc.select(euler_to_matrix(np.radians([[0.0, 30.0, 0.0]])), w)
    dz = turned[0, :, 2] - jaw[:, 2]
    near, far = sorted([dz[:6].mean(), dz[11:].mean()])
    assert far > 10.0 and abs(near) < 6.0


def test_dlib_offsets_are_small_and_centred():
    off = np.asarray(DLIB_LANDMARK_OFFSETS)
    assert off.shape == (68, 3)
    assert np.abs(off.mean(0)).max() < 0.1
    assert np.abs(off).max() < 20.0  # mm: a landmark convention, not a different face


def test_fit_with_offsets_recovers_pose_of_landmarks_drawn_with_those_offsets(rig):
    """Landmarks made from vertices + offsets are fitted exactly when the fit uses the same offsets."""
    model = LandmarkModel(rig)
    rng = np.random.default_rng(3)
    ident = rig.sample_identity(rng, 0.7)
    neutral = model.neutral(ident)
    n = 30
    rot = rng.uniform(-0.4, 0.4, (n, 3))
    trans, scale = rng.uniform(150, 250, (n, 2)), rng.uniform(1.5, 2.0, n)
    off = DLIB_LANDMARK_OFFSETS - DLIB_LANDMARK_OFFSETS.mean(0)
    lm = project(np.broadcast_to(neutral + off, (n, 68, 3)), rot, trans, scale)
    r, t, s, w, matched = _fit_pose_expression(lm, neutral + off, model.expression_basis, 4, 20.0, 0.1)
    assert np.degrees(np.abs(r - rot)).max() < 0.2
    assert np.linalg.norm(project(matched, r, t, s) - lm, axis=2).max() < 0.05
    # without the offsets the same landmarks need a different pose
    r0, *_ = _fit_pose_expression(lm, neutral, model.expression_basis, 4, 20.0, 0.1)
    assert np.degrees(np.abs(r0 - rot)).max() > 1.0
    assert FitOptions().landmark_offsets is not None and FitOptions(landmark_offsets=None).landmark_offsets is None
