"""The batched rig solve (issue 17): landmarks → rig weights, exact box-constrained least squares.

The reference is a per-frame solve with scipy's bounded-variable least squares on the same
ridge problem; the track is real EVP output (the shipped model on assets/sample_speech.wav).
"""

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import lsq_linear

from evp_anim.face.rig import FaceRig
from evp_anim.face.solve import box_qp, weights_from_landmarks

REPO = Path(__file__).resolve().parents[1]
RIDGE = 1e-2


@pytest.fixture(scope="module")
def rig(sfm_dir):
    return FaceRig(sfm_dir)


@pytest.fixture(scope="module")
def evp_landmarks():
    """(T, 68, 3) mm from ``animate`` (EVP, happy 0.7) on the sample speech: 105 frames."""
    from evp_anim.audio.io import load_audio
    from evp_anim.models.animate import EmotionSpec, animate, default_model_path
    from evp_anim.models.evp import EvpModel
    x = load_audio(REPO / "assets" / "sample_speech.wav")
    return animate(x, EvpModel.load(default_model_path()), EmotionSpec("happy", 0.7)).landmarks_3d


def _problem(rig, lm, identity=None):
    base = np.asarray(rig.landmarks_3d(identity), np.float64).reshape(-1)
    a = np.asarray(rig.deltas, np.float64)[:, rig.landmark_vertices].reshape(len(rig.channels), -1).T
    return a, lm.reshape(len(lm), -1).astype(np.float64) - base


def _per_frame_reference(a, b):
    """(T, K) exact minimisers of ||a w - b_t||² + RIDGE ||w||², 0 ≤ w ≤ 1, one frame at a time."""
    k = a.shape[1]
    aug = np.vstack([a, np.sqrt(RIDGE) * np.eye(k)])
    return np.stack([lsq_linear(aug, np.concatenate([bt, np.zeros(k)]), bounds=(0, 1),
                                method="bvls", tol=1e-14).x for bt in b])


def _objective(a, b, w):
    return ((w @ a.T - b) ** 2).sum(1) + RIDGE * (w ** 2).sum(1)


def test_batched_solve_equals_per_frame_solution_on_a_real_track(rig, evp_landmarks):
    lm = evp_landmarks
    a, b = _problem(rig, lm)
    ref = _per_frame_reference(a, b)
    w = weights_from_landmarks(rig, lm)
    assert w.shape == (105, rig.num_channels) and w.dtype == np.float32
    # The box is active on real tracks (else the test would only check a linear solve).
    assert ((ref < 1e-9) | (ref > 1 - 1e-9)).sum(1).mean() > 3
    np.testing.assert_allclose(w, ref, atol=1e-5, rtol=0)        # float32 output of the exact answer
    # Never worse than the per-frame optimum (beyond rounding): 1e-6 mm² on objectives of ~0.1 mm².
    assert (_objective(a, b, w.astype(np.float64)) - _objective(a, b, ref)).max() < 1e-6
    # The landmarks the weights reproduce: within the fit's own residual of the EVP landmarks.
    fit = rig.landmarks_3d(None, w)
    assert np.abs(fit - lm).mean() < 1.0                          # mm


def test_noisy_landmarks_on_a_random_face(rig, evp_landmarks):
    rng = np.random.default_rng(7)
    ident = rig.sample_identity(rng, 0.7)
    lm = evp_landmarks - rig.landmarks_3d(None) + rig.landmarks_3d(ident) + rng.normal(0, 1.0, evp_landmarks.shape)
    a, b = _problem(rig, lm, ident)
    w = weights_from_landmarks(rig, lm, ident)
    np.testing.assert_allclose(w, _per_frame_reference(a, b), atol=1e-5, rtol=0)


def test_fallback_for_rows_that_do_not_settle_gives_the_same_answer(rig, evp_landmarks):
    # max_sweeps=0 sends every row with an active bound to the per-row primal active-set method.
    a, b = _problem(rig, evp_landmarks[:30])
    q = a.T @ a + RIDGE * np.eye(a.shape[1])
    batched = box_qp(q, b @ a)
    per_row = box_qp(q, b @ a, max_sweeps=0)
    ref = _per_frame_reference(a, b)
    np.testing.assert_allclose(batched, ref, atol=1e-7, rtol=0)
    np.testing.assert_allclose(per_row, ref, atol=1e-7, rtol=0)


def test_long_tracks_solve_in_blocks_like_short_ones(rig, evp_landmarks, monkeypatch):
    import evp_anim.face.solve as solve
    lm = np.concatenate([evp_landmarks] * 3)                         # 315 frames
    whole = weights_from_landmarks(rig, lm)
    monkeypatch.setattr(solve, "_BLOCK", 64)
    blocked = weights_from_landmarks(rig, lm)
    np.testing.assert_allclose(blocked, whole, atol=1e-6, rtol=0)
    # the same frames give the same weights wherever a block boundary falls (up to BLAS rounding)
    np.testing.assert_allclose(blocked[:105], blocked[105:210], atol=1e-12, rtol=0)


def test_unconstrained_rows_are_the_plain_ridge_solution():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((30, 6))
    q = m.T @ m + 0.1 * np.eye(6)
    w_true = rng.uniform(0.2, 0.8, (5, 6))                            # strictly inside the box
    np.testing.assert_allclose(box_qp(q, w_true @ q), w_true, atol=1e-12)


def test_a_row_going_round_a_cycle_of_bound_sets_goes_to_the_primal_method_at_once(monkeypatch):
    """The primal-dual sweeps can cycle: this 3-channel problem goes round four bound sets
    forever. It is caught when it first comes round (not after max_sweeps), solved by the
    primal method, and the answer satisfies the KKT conditions of the box problem."""
    import evp_anim.face.solve as solve
    q = np.array([[0.747, -1.655, -1.053], [-1.655, 3.834, 2.207], [-1.053, 2.207, 1.755]])
    c = np.array([[-0.925, 0.133, 1.155]])
    sweeps, primal = [], []
    unique, real_primal = np.unique, solve._primal_active_set
    monkeypatch.setattr(np, "unique", lambda *a, **k: sweeps.append(1) or unique(*a, **k))
    monkeypatch.setattr(solve, "_primal_active_set", lambda *a: primal.append(1) or real_primal(*a))
    w = box_qp(q, c, max_sweeps=100)[0]
    assert primal == [1] and len(sweeps) <= 5
    grad = q @ w - c[0]
    assert np.all((w >= 0) & (w <= 1))
    inside = (w > 1e-9) & (w < 1 - 1e-9)
    assert np.allclose(grad[inside], 0, atol=1e-9)
    assert np.all(grad[w <= 1e-9] >= -1e-9) and np.all(grad[w >= 1 - 1e-9] <= 1e-9)
    # the same problem with the sweeps cut short gives the same answer
    assert np.allclose(box_qp(q, c, max_sweeps=0)[0], w, atol=1e-12)
