"""The no-training dubbing path (render.warp_dub) on real synthetic footage, tracked by dlib:
self-reenactment quality against the real held-out frames, the choice of footage frames, the
piecewise-affine warp, the lip-convention correction, the still-photo fallback, frames without
the face left untouched, and `dub --renderer warp` end to end with its bad inputs."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from evp_anim.footage.fitting import track_footage
from evp_anim.footage.synthetic import SyntheticFootageConfig, make_photo_footage, make_synthetic_footage
from evp_anim.footage.video import iter_frames
from evp_anim.tracks import save_track
from render.video_metrics import evaluate_warp_holdout
from render.warp_dub import (MouthLibrary, WarpDubber, choose_frames, driving_landmarks, iter_warped, lip_gap,
                             piecewise_affine_maps, present_frames)

REPO = Path(__file__).resolve().parents[1]
N = 100


@pytest.fixture(scope="module")
def footage(tmp_path_factory, sfm_dir):
    d = tmp_path_factory.mktemp("warp")
    video = d / "actor.mp4"
    cfg = SyntheticFootageConfig(n_frames=N, width=256, height=256, face_px=120, seed=4, expression_style="rich")
    make_synthetic_footage(video, sfm_dir, cfg)
    track = track_footage(video, sfm_dir)
    save_track(track, d / "actor.npz")
    return {"dir": d, "video": video, "track": track, "track_path": d / "actor.npz"}


def test_self_reenactment_matches_the_real_held_out_frames(footage):
    res = evaluate_warp_holdout(footage["track"], footage["video"], holdout=0.2)
    assert res["frames"] == 20 and res["renderer"] == "warp" and res["mode"].startswith("footage")
    assert res["library_frames"] == 80          # only frames before the held-out ones
    assert res["psnr_face_db"] >= 26.0 and res["ssim_face"] >= 0.85
    assert res["mouth_ld_px"] is not None and res["mouth_ld_px"] < 3.0
    assert res["frames_without_face"] == 0


def test_choice_takes_an_exact_match_and_prefers_continuity(footage):
    lib = MouthLibrary.build(footage["video"], footage["track"])
    want = lib.landmarks[10:30]
    rows = choose_frames(lib, want, lib.pose[10:30], switch_cost=0.0)
    assert np.array_equal(lib.frames[rows], lib.frames[10:30])
    # a held frame repeated: with a switch cost the path stays on footage neighbours, never jumps
    rows = choose_frames(lib, np.repeat(lib.landmarks[40:41], 12, 0), np.repeat(lib.pose[40:41], 12, 0),
                         switch_cost=1.0)
    steps = np.diff(lib.frames[rows])
    assert set(steps.tolist()) <= {0, 1}


def test_piecewise_affine_maps_follow_the_points():
    pts = np.array([[10, 10], [60, 12], [35, 55], [5, 70], [70, 70]], np.float64)
    tri = np.array([[0, 1, 2], [0, 2, 3], [1, 2, 4], [2, 3, 4]], np.int32)
    mx, my, inside = piecewise_affine_maps(pts, pts + [3.0, -2.0], tri, (0, 0, 80, 80))
    yy, xx = np.mgrid[0:80, 0:80]
    assert inside[40, 35] and not inside[0, 79]
    assert np.allclose(mx[inside], xx[inside] + 3.0, atol=1e-4) and np.allclose(my[inside], yy[inside] - 2.0, atol=1e-4)
    assert np.allclose(mx[~inside], xx[~inside])        # outside every triangle: identity


def test_driving_landmarks_keep_the_footage_convention(footage, sfm_dir):
    from evp_anim.face.rig import FaceRig
    from evp_anim.footage.alignment import align_tracks
    tr = footage["track"]
    # the footage aligned onto itself asks for no change: the drive is exactly the tracked shape
    same = align_tracks(tr, tr, identity="target", length_policy="trim", rig=FaceRig(sfm_dir))
    drive = driving_landmarks(same, tr)
    assert np.allclose(drive, tr.landmarks_2d, atol=1e-3)
    assert not np.allclose(same.landmarks_2d, tr.landmarks_2d, atol=0.5)   # the model's own convention
    # another expression: the drive moves by the projected change of the 3D landmarks only
    other = same.copy()
    other.landmarks_3d = other.landmarks_3d.copy()
    other.landmarks_3d[:, 57, 1] -= 4.0          # lower lip 4 mm down (model y up)
    moved = driving_landmarks(other, tr) - drive
    assert np.abs(moved[:, :57]).max() < 1e-3 and np.abs(moved[:, 58:]).max() < 1e-3
    assert np.allclose(np.linalg.norm(moved[:, 57], axis=1), 4.0 * tr.pose_scale * np.abs(np.cos(tr.pose_rotation[:, 0])) ,
                       rtol=0.2)
    assert np.array_equal(driving_landmarks(other, tr, model_shapes=False), other.landmarks_2d)


def test_frames_without_the_face_are_left_untouched(footage):
    tr = footage["track"].copy()
    tr.info["missing_ranges"] = [[30, 40]]
    lib = MouthLibrary.build(footage["video"], tr)
    assert not set(range(30, 40)) & set(lib.frames.tolist())
    aligned = tr.slice(25, 45)
    aligned.info["target_frames"] = list(range(25, 45))
    aligned.landmarks_2d[:] = tr.landmarks_2d[25:45]
    aligned.landmarks_2d[:, 57, 1] += 6.0       # a lower lip the footage does not have
    real = list(iter_frames(footage["video"]))[25:45]
    for i, frame, j, src in iter_warped(aligned, tr, footage["video"], WarpDubber(lib), with_source=True,
                                        model_shapes=False):
        assert j == 25 + i and np.array_equal(src, real[i])
        changed = np.abs(frame.astype(int) - src.astype(int)).max() > 0
        assert changed == (not 30 <= j < 40)
    assert not present_frames(tr)[30:40].any()


def test_still_photo_gets_a_synthesised_open_mouth(tmp_path, footage):
    first = next(iter(iter_frames(footage["video"])))
    still = tmp_path / "still.mp4"
    make_photo_footage(first, still, n_frames=30)
    from evp_anim.assets import find_sfm_dir
    tr = track_footage(still, find_sfm_dir())
    lib = MouthLibrary.build(still, tr)
    dubber = WarpDubber(lib)
    assert lib.still and dubber.mode.startswith("photo")
    frame = next(iter(iter_frames(still)))
    want = tr.landmarks_2d[0].astype(np.float64).copy()
    w = float(np.linalg.norm(want[16] - want[0]))
    want[[65, 66, 67, 55, 56, 57, 58, 59]] += [0.0, 0.08 * w]
    want[5:12, 1] += 0.05 * w
    out = dubber.compose(frame, want, None, own=tr.landmarks_2d[0])
    assert lip_gap(want) > lip_gap(tr.landmarks_2d[0]) + 0.05
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(want[60:68]).astype(np.int32)], 255)
    inner = cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0
    grey_new = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)[inner].astype(float)
    grey_old = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[inner].astype(float)
    assert inner.sum() > 20
    # a dark cavity and a band of teeth, where the photo had lips
    assert (grey_new < 70).mean() > 0.2 and (grey_old < 70).mean() < 0.05
    assert (grey_new > 160).mean() > 0.1 and (grey_old > 160).mean() < 0.05


def _dub(*args):
    return subprocess.run([sys.executable, "-m", "evp_anim", "dub", *map(str, args)], capture_output=True, text=True)


def test_dub_cli_warp_end_to_end_and_bad_inputs(footage, tmp_path):
    from evp_anim.video_io import probe_video
    speech = REPO / "assets" / "sample_speech.wav"
    out = tmp_path / "dub.mp4"
    r = _dub(speech, footage["video"], "-o", out, "--track", footage["track_path"], "--emotion", "happy",
             "--front-end", "mfcc", "--cache-dir", tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "renderer: warp — no trained GAN renderer" in r.stderr
    info = probe_video(out)
    assert info["frames"] == 105 and info["has_audio"]
    assert not list((tmp_path / "cache").glob("*/renderer"))     # nothing trained
    # bad inputs: one line each, nothing written
    other = tmp_path / "other.mp4"
    make_photo_footage(np.full((128, 128, 3), 90, np.uint8), other, n_frames=10)
    for args, msg in [((other,), "track of 256x256 footage"),
                      ((footage["video"], "--renderer", "fast"), "--renderer must be one of"),
                      ((footage["video"], "--renderer", "warp", "--model", tmp_path), "--model is a GAN renderer"),
                      ((footage["video"], "--face", "1"), "--face chooses whom to track")]:
        bad = tmp_path / "bad.mp4"
        r = _dub(speech, *args[:1], "-o", bad, "--track", footage["track_path"], *args[1:],
                 "--cache-dir", tmp_path / "cache")
        err = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(err) == 1 and msg in err[0], r.stderr
        assert not bad.exists()


def test_eval_video_warp_cli_reports_and_writes_json(footage, tmp_path):
    import json
    out = tmp_path / "warp.json"
    r = subprocess.run([sys.executable, "-m", "evp_anim", "eval-video", "--warp", "--target", str(footage["video"]),
                        "--target-track", str(footage["track_path"]), "--holdout", "0.2", "--json", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "warp path, 80 earlier frames" in r.stderr and "face region only" in r.stderr
    res = json.loads(out.read_text())
    assert res["frames"] == 20 and res["psnr_face_db"] > 26
    r = subprocess.run([sys.executable, "-m", "evp_anim", "eval-video", "--warp", "--target", str(footage["video"])],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "error: --warp needs --target-track (the footage's track from `evp-anim track`)"


def test_lips_asked_shut_show_lip_against_lip(footage):
    lib = MouthLibrary.build(footage["video"], footage["track"])
    k = int(np.argmax(lip_gap(lib.landmarks)))
    assert lip_gap(lib.landmarks[k]) > 0.04
    src = lib.landmarks[k]
    want = src.copy()
    up, lo = want[[61, 62, 63]].copy(), want[[67, 66, 65]].copy()
    want[[61, 62, 63]] = want[[67, 66, 65]] = 0.5 * (up + lo)        # inner lips meet
    frame = list(iter_frames(footage["video"]))[int(lib.frames[k])]
    out = WarpDubber(lib).compose(frame, want, k, own=src)
    grey_out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).astype(float)
    grey_in = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(float)
    line = np.round(want[60:65]).astype(int)            # along the closed inner lip line
    xs = np.arange(line[0, 0] + 2, line[-1, 0] - 1)
    ys = np.round(np.interp(xs, line[:, 0], line[:, 1])).astype(int)
    mouth_in = np.round(0.5 * (src[[61, 62, 63]] + src[[67, 66, 65]])).astype(int)
    assert grey_in[mouth_in[:, 1], mouth_in[:, 0]].mean() < 60          # the source shows its dark interior
    assert grey_out[ys, xs].min() > 70                                    # shut: no dark line left
