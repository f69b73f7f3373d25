"""SFM fitting speed (fits per second) and, with --accuracy, pose accuracy on synthetic footage.

    .venv/bin/python benchmarks/bench_fitting.py [--accuracy]

Speed, measured side by side in one run:
* fast path: per-frame pose + expression with the identity fixed (batched numpy), 1500 frames;
* eos-py ``fit_shape_and_pose`` per frame (shape, blendshapes, camera, contour; 5 iterations),
  which the stage runs on 12 frames per clip for the identity;
* the whole fit of a 250-frame clip (eos identity + joint identity refinement + fast path).

--accuracy renders 4 synthetic clips (50 frames each, yaw +-25, pitch +-10, roll +-8 degrees,
170 px faces), tracks them with dlib and reports the pose error medians and reprojection.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from evp_anim.assets import find_sfm_dir
from evp_anim.face.projection import project
from evp_anim.face.rig import FaceRig
from evp_anim.footage.fitting import LandmarkModel, _eos_setup, fit_landmarks, fit_pose_expression


def clip(rig, n, seed=0):
    rng = np.random.default_rng(seed)
    ident = rig.sample_identity(rng, 0.7)
    w = np.zeros((n, rig.num_channels), np.float32)
    w[:, :6] = rng.uniform(0, 0.4, (n, 6))
    rot = rng.uniform(-0.35, 0.35, (n, 3))
    trans = rng.uniform(150, 250, (n, 2))
    scale = rng.uniform(1.0, 1.3, n)
    lm3d = rig.landmarks_3d(ident, w)
    return project(lm3d, rot, trans, scale) + rng.normal(0, 1.0, (n, 68, 2)), ident


def speed(sfm_dir) -> None:
    rig = FaceRig(sfm_dir)
    model = LandmarkModel(rig)
    lm, ident = clip(rig, 1500)
    neutral = model.neutral(ident)
    fit_pose_expression(lm[:10], neutral, model.expression_basis)
    t = time.perf_counter()
    fit_pose_expression(lm, neutral, model.expression_basis)
    fast = time.perf_counter() - t
    print(f"fast path (identity fixed, batched): {len(lm) / fast:8.0f} fits/s")

    eos, mm, mapper, edges, contour_lm, model_contour = _eos_setup(Path(sfm_dir))
    k = 20
    t = time.perf_counter()
    for i in range(k):
        pts = [eos.core.Landmark(str(j + 1), lm[i, j].astype(np.float32).reshape(2, 1)) for j in range(68)]
        eos.fitting.fit_shape_and_pose(mm, pts, mapper, 400, 400, edges, contour_lm, model_contour, num_iterations=5)
    per = (time.perf_counter() - t) / k
    print(f"eos fit_shape_and_pose per frame:    {1.0 / per:8.1f} fits/s "
          f"(fast path is {per * len(lm) / fast:.0f}x faster)")

    t = time.perf_counter()
    fit_landmarks(lm[:250], (400, 400), sfm_dir, rig=rig)
    whole = time.perf_counter() - t
    print(f"whole fit of a 250-frame clip:       {whole:8.2f} s = {250 / whole:.0f} frames/s "
          f"= {250 / whole / 25:.1f}x real time")


def accuracy(sfm_dir) -> None:
    from evp_anim.footage.synthetic import SyntheticFootageConfig, make_synthetic_footage
    from evp_anim.footage.tracking import track_video

    errs, errs_gt, rep, rep_gt, trk = [], [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        for seed in (0, 3, 5, 11):
            v = Path(d) / f"s{seed}.mp4"
            gt = make_synthetic_footage(v, sfm_dir, SyntheticFootageConfig(n_frames=50, seed=seed))
            res = track_video(v)
            trk.append(np.linalg.norm(res.landmarks - gt.landmarks_2d, axis=2))
            for lm, e_out, r_out in ((res.landmarks, errs, rep), (gt.landmarks_2d, errs_gt, rep_gt)):
                f = fit_landmarks(lm, gt.image_size, sfm_dir)
                e = np.degrees(np.abs(f.rotation - gt.pose_rotation))
                e_out.append(e)
                r_out.append(f.reprojection)
            print(f"  clip seed {seed}: tracked pose median p/y/r {np.round(np.median(errs[-1], 0), 2)} deg, "
                  f"reprojection {np.median(rep[-1]):.2f} px")
    print(f"dlib tracking error vs truth: median {np.median(np.concatenate(trk)):.2f} px "
          f"(without jawline {np.median(np.concatenate(trk)[:, 17:]):.2f} px)")
    e, eg = np.concatenate(errs), np.concatenate(errs_gt)
    print(f"pose error from tracked landmarks, median pitch/yaw/roll: {np.round(np.median(e, 0), 2)} deg; "
          f"reprojection median {np.median(np.concatenate(rep)):.2f} px")
    print(f"pose error from true 2D landmarks, median pitch/yaw/roll: {np.round(np.median(eg, 0), 2)} deg; "
          f"reprojection median {np.median(np.concatenate(rep_gt)):.2f} px")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accuracy", action="store_true", help="also measure pose accuracy (renders 200 frames)")
    args = ap.parse_args()
    sfm_dir = find_sfm_dir(os.environ.get("EVP_ANIM_SFM_DIR"))
    speed(sfm_dir)
    if args.accuracy:
        accuracy(sfm_dir)


if __name__ == "__main__":
    main()
