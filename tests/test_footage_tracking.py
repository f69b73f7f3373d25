"""Tracking and fitting target footage, measured on synthetic SFM-head footage with known pose."""

import cv2
import numpy as np
import pytest

from evp_anim.cli import main
from evp_anim.errors import EvpError
from evp_anim.face.projection import project
from evp_anim.footage.fitting import FitOptions, fit_landmarks
from evp_anim.footage.smoothing import interpolate_missing, one_euro
from evp_anim.footage.synthetic import SyntheticFootageConfig, make_synthetic_footage
from evp_anim.footage.tracking import track_frames
from evp_anim.footage.video import read_frames
from evp_anim.tracks import load_track
from evp_anim.video_io import open_video_writer


@pytest.fixture(scope="module")
def footage(tmp_path_factory, sfm_dir):
    """40 frames of a rendered SFM head (yaw +-25, pitch +-10, roll +-8 deg) and its ground truth."""
    d = tmp_path_factory.mktemp("footage")
    video = d / "target.mp4"
    truth = make_synthetic_footage(video, sfm_dir, SyntheticFootageConfig(n_frames=40, seed=0))
    return video, truth, read_frames(video)


@pytest.fixture(scope="module")
def tracked(footage):
    return track_frames(footage[2])


def _angle_err_deg(a, b):
    return np.degrees(np.abs(np.asarray(a) - np.asarray(b)))


def test_synthetic_ground_truth_is_the_projection_of_its_3d_landmarks(footage):
    _, truth, frames = footage
    assert frames.shape == (40, 384, 384, 3)
    lm = project(truth.landmarks_3d, truth.pose_rotation, truth.pose_translation, truth.pose_scale)
    np.testing.assert_allclose(lm, truth.landmarks_2d, atol=1e-3)


def test_tracker_finds_the_rendered_face_in_every_frame(footage, tracked):
    _, truth, _ = footage
    assert tracked.valid.all() and tracked.info["frames_without_face"] == 0
    err = np.linalg.norm(tracked.landmarks - truth.landmarks_2d, axis=2)
    # dlib's landmark convention differs from the SFM vertices (jawline most): a few px on a 170 px face
    assert np.median(err[:, 17:]) < 4.5
    assert np.median(err) < 5.0


def test_fit_of_tracked_landmarks_recovers_head_pose_within_3_degrees(footage, tracked, sfm_dir):
    _, truth, _ = footage
    fit = fit_landmarks(tracked.landmarks, tracked.image_size, sfm_dir)
    med = np.median(_angle_err_deg(fit.rotation, truth.pose_rotation), axis=0)
    assert (med <= 3.0).all(), med
    # eos's reprojection error: dlib's points against the model points the fit matched to them
    assert np.median(fit.reprojection) <= 2.0
    assert fit.reprojection_fixed.shape == fit.reprojection.shape


def test_fit_of_true_landmarks_reprojects_within_2_px(footage, sfm_dir):
    _, truth, _ = footage
    # the true landmarks are the SFM vertices themselves: no dlib landmark offsets
    fit = fit_landmarks(truth.landmarks_2d, truth.image_size, sfm_dir, FitOptions(landmark_offsets=None))
    assert np.median(fit.reprojection) <= 2.0
    assert (np.median(_angle_err_deg(fit.rotation, truth.pose_rotation), axis=0) <= 2.0).all()
    np.testing.assert_allclose(fit.scale, truth.pose_scale, rtol=0.06)
    # project(landmarks_3d, pose) is the reprojection the track promises
    lm = project(fit.landmarks_3d, fit.rotation, fit.translation, fit.scale)
    np.testing.assert_allclose(np.linalg.norm(lm - truth.landmarks_2d, axis=2), fit.reprojection, atol=1e-3)


def test_cli_track_writes_a_fitted_track(footage, tmp_path, sfm_dir):
    video, truth, _ = footage
    out = tmp_path / "target.npz"
    main(["-q", "track", str(video), "-o", str(out), "--sfm-dir", str(sfm_dir)])
    tr = load_track(out)
    assert tr.n_frames == 40 and tr.image_size == (384, 384) and tr.fps == 25.0
    assert tr.identity.shape == (63,) and tr.expression_names[0] == "sfm_anger"
    assert tr.info["frames_without_face"] == 0 and tr.info["video"] == "target.mp4"
    assert tr.info["reprojection_px_median"] <= 2.0
    # the bare landmark vertices re-posed with the fitted pose stay near dlib's points (dlib's
    # landmark convention differs from the vertices by a few mm: DLIB_LANDMARK_OFFSETS)
    reproj = np.linalg.norm(project(tr.landmarks_3d, tr.pose_rotation, tr.pose_translation, tr.pose_scale)
                            - tr.landmarks_2d, axis=2)
    assert np.median(reproj) < 5.0
    assert abs(np.median(reproj) - tr.info["reprojection_px_median_fixed_jaw"]) < 0.05


def test_frames_without_a_face_are_marked_interpolated_and_counted(footage):
    _, truth, frames = footage
    frames = frames.copy()
    frames[12:16] = frames[0, :, :10].mean(axis=(0, 1)).astype(np.uint8)  # plain wall, no face
    res = track_frames(frames)
    assert res.valid[12:16].tolist() == [False] * 4 and res.valid[:12].all() and res.valid[16:].all()
    assert res.info["frames_without_face"] == 4 and res.info["missing_ranges"] == [[12, 16]]
    # the gap is bridged by interpolation between its neighbours
    mid = 0.5 * (res.landmarks[11] + res.landmarks[16])
    assert np.abs(res.landmarks[13] - mid).max() < 0.6 * np.abs(res.landmarks[16] - res.landmarks[11]).max() + 1


def test_video_without_any_face_fails_with_one_line_and_writes_nothing(tmp_path, capsys, sfm_dir):
    video = tmp_path / "wall.mp4"
    with open_video_writer(video, 25, (160, 120)) as w:
        for k in range(10):
            w.write(np.full((120, 160, 3), 100 + k, np.uint8))
    out = tmp_path / "t.npz"
    with pytest.raises(SystemExit) as ex:
        main(["track", str(video), "-o", str(out), "--sfm-dir", str(sfm_dir)])
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "no face found" in err
    assert not out.exists()


def test_face_leaving_the_frame_for_most_of_the_clip_is_an_error(footage):
    _, _, frames = footage
    moved = []
    for k, f in enumerate(frames[:20]):
        shift = 0 if k < 6 else 400  # the face leaves to the right after frame 5
        m = np.float32([[1, 0, shift], [0, 1, 0]])
        moved.append(cv2.warpAffine(f, m, (384, 384), borderMode=cv2.BORDER_REPLICATE))
    with pytest.raises(EvpError, match="no face in 14 of 20 frames"):
        track_frames(moved)


def test_face_leaving_the_frame_briefly_is_interpolated(footage):
    _, _, frames = footage
    moved = []
    for k, f in enumerate(frames[:20]):
        shift = 400 if 8 <= k < 11 else 0
        m = np.float32([[1, 0, shift], [0, 1, 0]])
        moved.append(cv2.warpAffine(f, m, (384, 384), borderMode=cv2.BORDER_REPLICATE))
    res = track_frames(moved)
    assert res.info["frames_without_face"] == 3 and not res.valid[8:11].any()


def test_4k_footage_is_detected_on_a_small_copy_with_full_resolution_landmarks(footage, tmp_path):
    _, truth, frames = footage
    video = tmp_path / "uhd.mp4"
    k, off = 3.0, np.array([1200.0, 500.0])
    with open_video_writer(video, 25, (3840, 2160)) as w:
        for f in frames[:3]:
            canvas = np.full((2160, 3840, 3), 120, np.uint8)
            big = cv2.resize(f, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR)
            canvas[500:500 + big.shape[0], 1200:1200 + big.shape[1]] = big
            w.write(canvas)
    from evp_anim.footage.tracking import track_video
    res = track_video(video)
    assert res.image_size == (3840, 2160) and res.valid.all()
    # pixel centres scale about -0.5: (x + 0.5) * k - 0.5
    want = (truth.landmarks_2d[:3] + 0.5) * k - 0.5 + off
    err = np.linalg.norm(res.landmarks - want, axis=2)
    assert np.median(err[:, 17:]) < 4.5 * k


def test_one_euro_zero_phase_removes_jitter_without_lag():
    rng = np.random.default_rng(0)
    t = np.arange(100) / 25.0
    ramp = 40.0 * t  # steady motion, 40 px/s
    noisy = ramp + rng.normal(0, 1.0, 100)
    causal = one_euro(noisy, 25, min_cutoff=2.0, beta=0.0)
    both = one_euro(noisy, 25, min_cutoff=2.0, beta=0.0, zero_phase=True)
    mid = slice(20, 80)
    assert np.abs(both[mid] - ramp[mid]).mean() < 0.4               # no lag, jitter reduced
    assert np.abs(causal[mid] - ramp[mid]).mean() > 2.0             # the causal filter lags
    assert np.std(np.diff(both[mid], 2)) < 0.2 * np.std(np.diff(noisy[mid], 2))


def test_interpolate_missing_holds_the_ends_and_fills_gaps_linearly():
    x = np.array([0.0, 0.0, 2.0, 0.0, 6.0, 0.0])
    valid = np.array([False, True, True, False, True, False])
    np.testing.assert_allclose(interpolate_missing(x, valid), [0, 0, 2, 4, 6, 6])


def test_cli_align_and_overlay_put_new_speech_on_the_footage(footage, tmp_path, sfm_dir):
    from evp_anim.face.rig import FaceRig
    from evp_anim.tracks import Track, save_track
    from evp_anim.video_io import probe_video

    video, truth, _ = footage
    target = tmp_path / "target.npz"
    main(["-q", "track", str(video), "-o", str(target), "--sfm-dir", str(sfm_dir)])
    rig = FaceRig(sfm_dir)
    n = 55  # longer than the 40-frame footage: ping-pong
    w = np.zeros((n, rig.num_channels), np.float32)
    w[:, rig.channel_index("jawOpen")] = 0.5 * (1 + np.sin(np.arange(n) / 2.0))
    ident = rig.sample_identity(np.random.default_rng(9), 0.5)
    emo = np.zeros((n, 8), np.float32)
    emo[:, 5] = 1.0
    speech = tmp_path / "speech.npz"
    save_track(Track.new(np.zeros((n, 68, 2)), landmarks_3d=rig.landmarks_3d(ident, w), identity=ident,
                         expression=w, expression_names=list(rig.channels), emotion=emo,
                         intensity=np.ones(n, np.float32)), speech)
    aligned = tmp_path / "aligned.npz"
    main(["-q", "align", str(speech), str(target), "-o", str(aligned), "--length-policy", "pingpong",
          "--sfm-dir", str(sfm_dir)])
    al = load_track(aligned)
    assert al.n_frames == n and al.image_size == (384, 384) and al.emotion[:, 5].min() == 1.0
    assert al.info["target_frames"][39:42] == [39, 38, 37]
    # the new mouth opens and closes while the head follows the footage
    gap = al.landmarks_2d[:, 66, 1] - al.landmarks_2d[:, 62, 1]
    assert np.ptp(gap) > 5.0
    np.testing.assert_allclose(al.pose_rotation[:40], load_track(target).pose_rotation)
    out = tmp_path / "overlay.mp4"
    main(["-q", "overlay", str(aligned), "--video", str(video), "-o", str(out)])
    info = probe_video(out)
    assert info["frames"] == n and (info["width"], info["height"]) == (384, 384) and not info["has_audio"]


def test_cli_track_on_a_corrupt_file_exits_nonzero_with_one_line(tmp_path, capsys, sfm_dir):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    out = tmp_path / "t.npz"
    with pytest.raises(SystemExit) as ex:
        main(["track", str(bad), "-o", str(out), "--sfm-dir", str(sfm_dir)])
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and not out.exists()


def test_cli_footage_synth_writes_video_and_ground_truth(tmp_path, sfm_dir):
    from evp_anim.video_io import probe_video

    out = tmp_path / "syn.mp4"
    main(["-q", "footage-synth", "-o", str(out), "--frames", "4", "--width", "160", "--height", "128",
          "--face-px", "70", "--sfm-dir", str(sfm_dir)])
    info = probe_video(out)
    assert (info["frames"], info["width"], info["height"]) == (4, 160, 128)
    tr = load_track(tmp_path / "syn.npz")
    assert tr.n_frames == 4 and tr.image_size == (160, 128) and tr.landmarks_3d is not None


def test_vertical_footage_is_tracked_upright_at_full_resolution(footage, tmp_path):
    _, truth, frames = footage
    video = tmp_path / "tall.mp4"
    with open_video_writer(video, 25, (384, 684)) as w:   # a phone held upright: 9:16
        for f in frames[:3]:
            canvas = np.full((684, 384, 3), 90, np.uint8)
            canvas[150:534] = f
            w.write(canvas)
    from evp_anim.footage.tracking import track_video
    res = track_video(video)
    assert res.image_size == (384, 684) and res.valid.all() and res.info["cuts"] == []
    err = np.linalg.norm(res.landmarks - (truth.landmarks_2d[:3] + np.array([0.0, 150.0])), axis=2)
    assert np.median(err[:, 17:]) < 4.5


def test_a_cut_to_another_framing_of_the_same_face_is_not_smoothed_across(footage):
    _, truth, frames = footage
    # frames 0-19 as shot; from frame 20 a closer framing of the same person (a cut, x1.5 and 50 px
    # to the right); from frame 25 the same framing 70 px further right (a jump cut: only suspected)
    z, dx = 1.5, np.array([(1 - 1.5) * 192 + 50, (1 - 1.5) * 176])
    close = np.float32([[z, 0, dx[0]], [0, z, dx[1]]])
    right = close + np.float32([[0, 0, 70], [0, 0, 0]])
    clip = (list(frames[:20]) + [cv2.warpAffine(f, close, (384, 384), borderMode=cv2.BORDER_REFLECT) for f in frames[20:25]]
            + [cv2.warpAffine(f, right, (384, 384), borderMode=cv2.BORDER_REFLECT) for f in frames[25:30]])
    want = np.concatenate([truth.landmarks_2d[:20], z * truth.landmarks_2d[20:25] + dx,
                           z * truth.landmarks_2d[25:30] + dx + np.array([70.0, 0.0])])
    res = track_frames(clip)
    assert res.info["cuts"] == [20] and res.info["suspected_cuts"] == [25] and res.valid.all()
    assert res.info["identity"]["accepted_max"] < 0.35   # the same person, found again after the cut
    err = np.linalg.norm(res.landmarks - want, axis=2)[:, 17:].mean(1)
    # dlib's few-px landmark offsets grow with the face; smoothing across the cut or the jump
    # would pull these frames by tens of px
    limit = np.where(np.arange(30) < 20, 4.5, 4.5 * z)
    assert (err[17:28] < limit[17:28]).all(), err[17:28]
