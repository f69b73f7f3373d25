"""Guidance maps: Canny edges outside the face + per-part landmark sketch on a stable face crop."""

import cv2
import numpy as np
import pytest

from evp_anim.errors import EvpError
from evp_anim.face.projection import aligned_landmarks
from render.guidance import (NUM_CHANNELS, crop_transforms, face_mask, guidance_map, guidance_preview,
                             paste_back)


@pytest.fixture(scope="module", autouse=True)
def _mean_face(sfm_dir):
    from evp_anim.face.rig import FaceRig
    _MEAN[0] = FaceRig(sfm_dir).landmarks_3d()


_MEAN = [None]


def _face_lm(centre=(320.0, 240.0), width=160.0):
    """(68, 2) px: the SFM mean face (frontal) scaled to ``width`` px of jaw, centred at ``centre``."""
    lm = aligned_landmarks(_MEAN[0][None], 256)[0]
    return (lm - lm.mean(0)) * (width / np.ptp(lm[:17, 0])) + np.asarray(centre)


def _frame(h=480, w=640):
    img = np.full((h, w, 3), 200, np.uint8)
    cv2.rectangle(img, (150, 100), (200, 400), (40, 40, 40), 3)          # background edges
    cv2.circle(img, (320, 240), 60, (30, 30, 30), 3)                   # an edge inside the face
    return img


def test_guidance_map_has_ten_uint8_channels_at_the_renderer_size():
    lm = _face_lm()
    crops = crop_transforms(np.repeat(lm[None], 3, 0), 256)
    g, crop = guidance_map(_frame(), lm, lm, crops, 0)
    assert g.shape == (256, 256, NUM_CHANNELS) == (256, 256, 10) and g.dtype == np.uint8
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    assert all(g[..., c].max() > 200 for c in range(1, 10))            # every sketch part is drawn


def test_512_crops_are_supported():
    lm = _face_lm()
    g, _ = guidance_map(_frame(), lm, lm, crop_transforms(lm[None], 512), 0)
    assert g.shape == (512, 512, 10)


def test_edges_are_kept_outside_the_face_and_erased_inside():
    lm = _face_lm()
    crops = crop_transforms(lm[None], 256)
    g, _ = guidance_map(_frame(), lm, lm, crops, 0)
    inside = face_mask(crops.to_crop(lm, 0), 256, dilate_px=0) > 0
    assert g[..., 0][inside].max() == 0
    assert (g[..., 0][~inside] > 0).sum() > 50                          # the rectangle's edges survive


def test_crop_inverse_maps_crop_pixels_back_to_the_frame():
    lm = np.repeat(_face_lm()[None], 2, 0)
    crops = crop_transforms(lm, 256)
    pts = np.array([[300.0, 200.0], [350.0, 260.0]])
    back = crops.to_crop(pts, 0) @ crops.inverse(0)[:, :2].T + crops.inverse(0)[:, 2]
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_crop_is_smoothed_over_time_against_landmark_jitter():
    rng = np.random.default_rng(1)
    lm = _face_lm()[None] + rng.normal(0, 2.0, (50, 1, 2))               # 2 px whole-face jitter
    crops = crop_transforms(lm, 256)
    raw = lm.mean(1)
    assert np.std(np.diff(crops.centre, axis=0)) < 0.3 * np.std(np.diff(raw, axis=0))


def test_crop_jumps_with_a_shot_cut_instead_of_trailing_across_it():
    lm = np.repeat(_face_lm()[None], 40, 0)
    lm[20:] += [150.0, 40.0]                                              # another framing after the cut
    trailing = crop_transforms(lm, 256)
    cut = crop_transforms(lm, 256, cuts=[20])
    target = cut.centre[25]
    assert np.linalg.norm(trailing.centre[20] - target) > 50              # smoothed across: lags behind
    assert np.linalg.norm(cut.centre[20] - target) < 1e-6                 # reset at the cut
    assert np.allclose(cut.centre[:20], crop_transforms(lm[:20], 256).centre)


def test_paste_back_of_the_unchanged_crop_returns_the_frame():
    lm = _face_lm()
    frame = _frame()
    crops = crop_transforms(lm[None], 256)
    _, crop = guidance_map(frame, lm, lm, crops, 0)
    out = paste_back(frame, crop, crops, 0, lm)
    assert out.shape == frame.shape and np.abs(out.astype(int) - frame).mean() < 1.0


def test_paste_back_changes_only_the_face_region():
    lm = _face_lm()
    frame = _frame()
    crops = crop_transforms(lm[None], 256)
    out = paste_back(frame, np.zeros((256, 256, 3), np.uint8), crops, 0, lm)
    assert out[240, 320].max() < 10 and (out[5, 5] == frame[5, 5]).all()


def test_preview_is_a_bgr_picture():
    lm = _face_lm()
    g, _ = guidance_map(_frame(), lm, lm, crop_transforms(lm[None], 256), 0)
    assert guidance_preview(g).shape == (256, 256, 3)


def test_bad_landmark_shape_is_a_user_error():
    with pytest.raises(EvpError, match="68, 2"):
        crop_transforms(np.zeros((3, 5, 2)))


def test_iter_guidance_follows_the_aligned_tracks_footage_frames(tmp_path):
    from evp_anim.tracks import Track
    from evp_anim.video_io import open_video_writer
    from render.guidance import iter_guidance

    video = tmp_path / "t.mp4"
    with open_video_writer(video, 25, (640, 480)) as w:
        for k in range(4):
            img = _frame()
            img[:, :] = np.clip(img.astype(int) - 40 * k, 0, 255).astype(np.uint8)  # frame k is darker
            w.write(img)
    lm = np.repeat(_face_lm()[None], 4, 0)
    target = Track.new(lm, image_size=(640, 480))
    aligned = Track.new(lm[[0, 1, 2, 3, 2, 1]], image_size=(640, 480), info={"target_frames": [0, 1, 2, 3, 2, 1]})
    got = [(i, j, float(crop.mean()), g.shape) for i, g, crop, _, j in iter_guidance(aligned, target, video)]
    assert [j for _, j, _, _ in got] == [0, 1, 2, 3, 2, 1]
    assert got[2][2] == pytest.approx(got[4][2], abs=1.0) and got[0][2] > got[1][2] + 20
    assert all(shape == (256, 256, 10) for *_, shape in got)


def test_no_edges_where_the_crop_reaches_past_the_frame():
    lm = _face_lm(centre=(320.0, 110.0))  # face near the top: the crop sticks out above the frame
    crops = crop_transforms(lm[None], 256)
    frame = _frame()
    cv2.line(frame, (250, 0), (250, 40), (0, 0, 0), 3)  # replicated upward, it would streak
    g, _ = guidance_map(frame, lm, lm, crops, 0)
    top = int(np.ceil(crops.to_crop(np.array([[320.0, 0.0]]), 0)[0, 1]))
    assert top > 10 and g[:top, :, 0].max() == 0
