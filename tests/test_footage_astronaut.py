"""A real photograph moved by a known smooth warp: the recovered translation and scale follow it."""

import cv2
import numpy as np
import pytest

from evp_anim.footage.fitting import fit_landmarks
from evp_anim.footage.tracking import track_frames

skimage_data = pytest.importorskip("skimage.data")

N = 50
CENTRE = 256.0


def _warps():
    """Per frame: zoom a (1 -> 1.2 -> 1 about the image centre) and shift b (px), smooth in time."""
    t = np.arange(N) / (N - 1)
    a = 1.0 + 0.2 * np.sin(np.pi * t)
    b = np.stack([30 * np.sin(2 * np.pi * t), -20 * t], 1)
    mats = np.stack([[[a[i], 0, (1 - a[i]) * CENTRE + b[i, 0]], [0, a[i], (1 - a[i]) * CENTRE + b[i, 1]]]
                     for i in range(N)])
    return a, mats


@pytest.fixture(scope="module")
def clip():
    img = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    a, mats = _warps()
    frames = [cv2.warpAffine(img, m, (512, 512), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
              for m in mats]
    return frames, a, mats[:, :, 2]


def test_tracked_landmarks_follow_the_warp(clip):
    frames, a, off = clip
    res = track_frames(frames)
    assert res.valid.all()
    # landmarks of frame i = a_i * (face in the unwarped photo) + offset_i; estimate that face robustly
    base = np.median((res.landmarks - off[:, None]) / a[:, None, None], axis=0)
    err = np.linalg.norm(res.landmarks - (a[:, None, None] * base + off[:, None]), axis=2)
    assert np.median(err) < 1.0       # px, on a ~90 px wide face


def test_fitted_translation_and_scale_follow_the_warp(clip, sfm_dir):
    frames, a, off = clip
    res = track_frames(frames)
    fit = fit_landmarks(res.landmarks, res.image_size, sfm_dir, valid=res.valid)
    # a similarity warp maps the pose as t_i = a_i * t0 + offset_i and s_i = a_i * s0
    t0 = np.median((fit.translation - off) / a[:, None], axis=0)
    s0 = np.median(fit.scale / a)
    t_err = np.linalg.norm(fit.translation - (a[:, None] * t0 + off), axis=1)
    s_err = np.abs(fit.scale / (a * s0) - 1)
    assert np.median(t_err) < 2.0 and t_err.max() < 5.0
    assert np.median(s_err) < 0.01 and s_err.max() < 0.04
    # and the head does not appear to turn: rotation stays put while the picture zooms and pans
    assert np.degrees(np.ptp(fit.rotation, axis=0)).max() < 4.0


def test_every_frame_of_the_encoded_clip_locks_on_the_face_not_the_badge(clip, tmp_path):
    # in H.264 the HOG detector also fires (weakly) on the round mission badge: the most
    # confident detection must win, and no frame may be smoothed toward the wrong one
    from evp_anim.footage.tracking import track_video
    from evp_anim.video_io import open_video_writer

    frames, a, off = clip
    video = tmp_path / "astro.mp4"
    with open_video_writer(video, 25, (512, 512)) as w:
        for f in frames:
            w.write(f)
    res = track_video(video)
    base = np.median((res.landmarks - off[:, None]) / a[:, None, None], axis=0)
    err = np.linalg.norm(res.landmarks - (a[:, None, None] * base + off[:, None]), axis=2)
    assert err.mean(axis=1).max() < 3.0
