"""Synthetic face dynamics: emotion envelopes, blinks, head motion."""

import numpy as np
import pytest

from evp_anim.synth import dynamics

FPS = 25.0


def test_emotion_envelope_rises_to_apex_and_relaxes():
    rng = np.random.default_rng(1)
    env = dynamics.emotion_envelope(100, FPS, rng)  # 4 s
    assert env.shape == (100,) and env.dtype == np.float32
    assert 0.3 < env[0] < 0.65          # partly formed at the start
    assert env.max() == pytest.approx(1.0, abs=0.02)  # reaches the apex
    assert 0.65 < env[-1] < 0.95        # relaxes towards the end
    assert np.abs(np.diff(env)).max() < 0.12  # smooth: no jumps between frames


def test_blink_rate_matches_requested_rate_over_a_long_clip():
    rng = np.random.default_rng(2)
    n = int(600 * FPS)  # 10 minutes
    curve = dynamics.blink_curve(n, FPS, rng, rate_per_min=18.0)
    closed = curve > 0.5
    onsets = np.flatnonzero(closed[1:] & ~closed[:-1])
    per_min = len(onsets) / 10.0
    assert 13 <= per_min <= 23
    assert curve.min() >= 0 and curve.max() <= 1
    # Each blink is brief: under 0.4 s of closure above half.
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, closed.astype(int), 0])))[::2]
    assert runs.max() / FPS < 0.4


def test_blinks_close_faster_than_they_open():
    rng = np.random.default_rng(3)
    curve = dynamics.blink_curve(int(120 * FPS), 100.0, rng, rate_per_min=20.0)  # fine time grid
    peak = int(np.argmax(curve))
    rise = np.flatnonzero(curve[:peak] < 0.1)[-1]
    fall = peak + np.flatnonzero(curve[peak:] < 0.1)[0]
    assert (peak - rise) < (fall - peak)


def test_head_motion_is_small_smooth_and_seeded():
    rot = dynamics.head_motion(250, FPS, np.random.default_rng(4), amplitude_deg=4.0)
    assert rot.shape == (250, 3)
    assert np.degrees(np.abs(rot)).max() < 8.0
    assert np.degrees(np.abs(np.diff(rot, axis=0))).max() < 0.6  # < 0.6° per frame
    assert np.degrees(rot[:, 1]).std() > 0.3  # it does move
    again = dynamics.head_motion(250, FPS, np.random.default_rng(4), amplitude_deg=4.0)
    np.testing.assert_array_equal(rot, again)


def test_translation_jitter_is_bounded():
    tr = dynamics.translation_jitter(500, FPS, np.random.default_rng(5), amplitude_px=2.0)
    assert tr.shape == (500, 2) and np.abs(tr).max() <= 2.0 + 1e-5
