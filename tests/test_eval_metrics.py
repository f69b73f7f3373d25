"""EVP's landmark metrics against hand-computed values."""

import numpy as np
import pytest

from evp_anim.errors import EvpError
from evp_anim.eval.metrics import (MOUTH, clip_metrics, dataset_metrics, landmark_distance,
                                   landmark_velocity_difference, mean_metrics)


def test_constant_shift_gives_ld_of_the_shift_and_zero_lvd():
    rng = np.random.default_rng(0)
    gt = rng.uniform(50, 200, size=(30, 68, 2))
    gen = gt + np.array([3.0, 0.0])
    m = clip_metrics(gen, gt)
    assert m["M-LD"] == pytest.approx(3.0) and m["F-LD"] == pytest.approx(3.0)
    assert m["M-LVD"] == pytest.approx(0.0, abs=1e-9) and m["F-LVD"] == pytest.approx(0.0, abs=1e-9)
    # a (3, 4) shift is 5 px away
    assert landmark_distance(gt + np.array([3.0, 4.0]), gt) == pytest.approx(5.0)


def test_hand_computed_mouth_pulse():
    # three frames; on the middle one the 20 mouth points move by (3, 4) = 5 px, nothing else moves
    gt = np.zeros((3, 68, 2))
    gen = np.zeros((3, 68, 2))
    gen[1, 48:68] = [3.0, 4.0]
    m = clip_metrics(gen, gt)
    assert m["M-LD"] == pytest.approx(5.0 / 3.0)               # 5 px on 1 of 3 frames
    assert m["F-LD"] == pytest.approx(20 * 5.0 / (3 * 68))      # 20 of 68 points on 1 of 3 frames
    assert m["M-LVD"] == pytest.approx(5.0)                      # +5 then -5 px/frame on every mouth point
    assert m["F-LVD"] == pytest.approx(2 * 20 * 5.0 / (2 * 68))
    assert np.arange(68)[MOUTH].tolist() == list(range(48, 68))


def test_velocity_difference_of_a_linear_drift():
    gt = np.zeros((5, 68, 2))
    gen = np.zeros((5, 68, 2))
    gen[:, :, 0] = np.arange(5)[:, None] * 2.0                  # moves 2 px per frame
    assert landmark_velocity_difference(gen, gt) == pytest.approx(2.0)
    assert landmark_distance(gen, gt) == pytest.approx(np.mean([0, 2, 4, 6, 8]))


def test_data_set_mean_weighs_clips_equally_and_skips_one_frame_lvd():
    a_gt = np.zeros((10, 68, 2))
    b_gt = np.zeros((2, 68, 2))
    one = np.zeros((1, 68, 2))
    res = dataset_metrics([(a_gt + 1.0, a_gt), (b_gt + [3.0, 4.0], b_gt), (one, one)])
    # per clip F-LD: sqrt(2), 5, 0 -> mean of the three, not weighted by frames
    assert res["F-LD"] == pytest.approx((np.sqrt(2) + 5.0 + 0.0) / 3)
    assert res["F-LVD"] == pytest.approx(0.0, abs=1e-12)        # the one-frame clip's NaN is skipped
    assert np.isnan(clip_metrics(one, one)["M-LVD"])
    assert np.isnan(mean_metrics([])["M-LD"])


def test_shape_errors_are_evp_errors():
    with pytest.raises(EvpError, match="differ in shape"):
        clip_metrics(np.zeros((5, 68, 2)), np.zeros((4, 68, 2)))
    with pytest.raises(EvpError, match=r"\(T, 68, 2\)"):
        clip_metrics(np.zeros((5, 68, 3)), np.zeros((5, 68, 3)))
    with pytest.raises(EvpError, match="empty"):
        clip_metrics(np.zeros((0, 68, 2)), np.zeros((0, 68, 2)))
