"""Shot-cut detection (evp_anim.footage.shots): exact cuts, none for motion, blinks or light changes."""

import cv2
import numpy as np
import pytest

from evp_anim.errors import EvpError
from evp_anim.footage.shots import CutDetector, CutOptions, detect_cuts, shot_bounds

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def photos():
    """Real photographs (BGR), enlarged so a 360 x 270 window can pan across them."""
    big = lambda img, w, h: cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), (w, h))  # noqa: E731
    return {"astronaut": big(skimage_data.astronaut(), 1400, 1400), "coffee": big(skimage_data.coffee(), 1400, 1050),
            "chelsea": big(skimage_data.chelsea(), 1200, 900)}


def _pan(img, n, speed_px, x0=0, y0=200, size=(360, 270)):
    """n frames of a window moving right by speed_px per frame (a camera pan)."""
    return [img[y0:y0 + size[1], x0 + int(i * speed_px):x0 + int(i * speed_px) + size[0]].copy() for i in range(n)]


def test_hard_cuts_are_found_exactly(photos):
    a, c, k = photos["astronaut"], photos["coffee"], photos["chelsea"]
    close = cv2.resize(a[0:700, 300:1230], (360, 270))   # the same set, closer: a cut too
    frames = _pan(a, 10, 3) + _pan(c, 10, 4, y0=300) + _pan(k, 8, 2, y0=100) + [close] * 6
    assert detect_cuts(frames) == [10, 20, 28]
    # the same on grey frames (structure only)
    assert detect_cuts([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]) == [10, 20, 28]


def test_fast_pans_shake_and_zoom_are_not_cuts(photos):
    a, c = photos["astronaut"], photos["coffee"]
    # a whip pan of 14 % of the picture per frame, starting from rest; camera shake; a zoom
    assert detect_cuts(_pan(a, 6, 0) + _pan(a, 14, 50)) == []
    assert detect_cuts(_pan(c, 20, 30, y0=300)) == []
    shake = [a[200 + int(15 * np.sin(i * 1.7)):470 + int(15 * np.sin(i * 1.7)),
               300 + int(20 * np.cos(i * 2.3)):660 + int(20 * np.cos(i * 2.3))] for i in range(20)]
    assert detect_cuts(shake) == []
    zoom = [cv2.resize(a[10 * i:1400 - 10 * i, 10 * i:1400 - 10 * i], (360, 360)) for i in range(20)]
    assert detect_cuts(zoom) == []


def test_sudden_brightness_change_is_not_a_cut(photos):
    f = cv2.resize(photos["astronaut"], (360, 360))
    brighter = np.clip(f.astype(np.float32) * 1.1, 0, 255).astype(np.uint8)
    darker = np.clip(f.astype(np.float32) * 0.85, 0, 255).astype(np.uint8)
    assert detect_cuts([f] * 5 + [brighter] * 5 + [darker] * 5 + [f] * 3) == []


def test_head_turn_and_blink_are_not_cuts(sfm_dir):
    from evp_anim.footage.synthetic import SyntheticFootageConfig, render_synthetic_frames

    # 16 frames of a rendered head turning +-40 degrees while it blinks and talks (small frames: fast)
    cfg = SyntheticFootageConfig(n_frames=16, width=160, height=160, face_px=80, yaw_deg=40, seed=2)
    det = CutDetector()
    cuts = [i for f, i in render_synthetic_frames(cfg, sfm_dir) if det.step(f)]
    assert cuts == []


def test_frame_0_is_never_a_cut_but_frame_1_can_be(photos):
    a, c = photos["astronaut"], photos["coffee"]
    assert detect_cuts([a[:270, :360]]) == []
    # the clip starts on the last frame of another shot
    assert detect_cuts([c[:270, :360]] + _pan(a, 8, 3)) == [1]
    det = CutDetector()
    assert det.step(a[:270, :360]) is False


def test_4k_and_vertical_frames(photos):
    a, c = photos["astronaut"], photos["coffee"]
    uhd = [cv2.resize(a[:700, :1244], (3840, 2160))] * 3 + [cv2.resize(c[:700, :1244], (3840, 2160))] * 2
    assert detect_cuts(uhd) == [3]
    tall = [cv2.resize(a[:1400, :788], (1080, 1920))] * 3 + [cv2.resize(c[:1050, :590], (1080, 1920))] * 2
    assert detect_cuts(tall) == [3]


def test_bad_input_and_options():
    with pytest.raises(EvpError, match="frames"):
        CutDetector().step(np.zeros((4, 4, 3, 2), np.uint8))
    with pytest.raises(EvpError, match="threshold"):
        CutDetector(CutOptions(threshold=0.0))
    assert shot_bounds([0, 5, 5, 12, 20], 12) == [(0, 5), (5, 12)]
    assert shot_bounds([], 3) == [(0, 3)]


def test_a_jump_within_the_same_picture_is_only_suspected(photos):
    a = photos["astronaut"]
    frames = _pan(a, 8, 2) + _pan(a, 6, 2, x0=86)   # the same set, 70 px (a fifth of the picture) further right
    det = CutDetector()
    flags = [(det.step(f), det.suspect) for f in frames]
    assert [i for i, (c, _) in enumerate(flags) if c] == []
    assert [i for i, (_, s) in enumerate(flags) if s] == [8]
