"""SFM fitting speed (fits per second) and, with --accuracy, pose accuracy on synthetic footage.

    .venv/bin/python benchmarks/bench_fitting.py [--accuracy]

Speed, measured side by side in one run:
* fast path: per-frame pose + expression with the identity fixed (batched numpy), 1500 frames;
* eos-py ``fit_shape_and_pose`` per frame (shape, blendshapes, camera, contour; 5 iterations),
  which the stage runs on 12 frames per clip for the identity;
* the whole fit of a 250-frame clip (eos identity + joint identity refinement + fast path).

--accuracy renders 4 synthetic clips (seeds 0, 3, 5, 11; 50 frames each, yaw +-25, pitch +-10,
roll +-8 degrees; ``--face-px`` 256 px faces, jaw width, in 512x512 frames), tracks them with dlib,
fits them as ``evp-anim track`` does and prints the median pose errors (pitch/yaw/roll, degrees,
against the rendered pose) and the median reprojection error.

Reprojection error (px), as eos defines it: for every frame and each of the 68 points, the
distance between the landmark the fit was given (dlib's, tracked on the video) and the model
point matched to it, projected with the fitted pose, identity and expression. The matched model
point is the SFM landmark vertex plus dlib's landmark offset (``DLIB_LANDMARK_OFFSETS``, a fixed
per-point 3D offset in the model frame, learnt by ``--calibrate`` on clips 21-24 only, never on
the measured clips). Also printed: the same distance to the bare landmark vertices
(``project(landmarks_3d)``, the track's 3D landmarks) and the figures for fitting the true 2D
landmarks (the projected vertices, no offsets).

--calibrate renders clips 21-24, tracks them and prints the least-squares offsets table.
--cache DIR keeps the rendered clips and tracked landmarks between runs.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np

from evp_anim.assets import find_sfm_dir
from evp_anim.face.projection import project
from evp_anim.face.rig import FaceRig
from evp_anim.footage.fitting import LandmarkModel, _eos_setup, fit_landmarks, fit_pose_expression
from evp_anim.tracks import DEFAULT_FPS


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
          f"= {250 / whole / DEFAULT_FPS:.1f}x real time")


def _clips(sfm_dir, seeds, face_px, cache):
    """Rendered + dlib-tracked synthetic clips: dict per seed (tracked, truth)."""
    from evp_anim.footage.synthetic import SyntheticFootageConfig, make_synthetic_footage
    from evp_anim.footage.tracking import track_video

    size = 2 * int(round(face_px))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(cache or tmp)
        d.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            f = d / f"clip_{int(face_px)}px_s{seed}.npz"
            if not f.is_file():
                v = d / f"s{seed}.mp4"
                cfg = SyntheticFootageConfig(n_frames=50, seed=seed, face_px=face_px, width=size, height=size)
                gt = make_synthetic_footage(v, sfm_dir, cfg)
                res = track_video(v)
                np.savez(f, trk=res.landmarks, gt2d=gt.landmarks_2d, rot=gt.pose_rotation, trans=gt.pose_translation,
                         scale=gt.pose_scale, ident=gt.identity, w=gt.expression, size=np.array(gt.image_size))
            out.append((seed, dict(np.load(f))))
    return out


def calibrate(sfm_dir, face_px, cache) -> np.ndarray:
    """dlib-to-SFM landmark offsets (68, 3) mm from clips 21-24, with their true pose/identity/expression."""
    from evp_anim.face.projection import euler_to_matrix

    rig = FaceRig(sfm_dir)
    lhs, rhs = np.zeros((68, 3, 3)), np.zeros((68, 3))
    for _seed, c in _clips(sfm_dir, (21, 22, 23, 24), face_px, cache):
        rmat = euler_to_matrix(c["rot"].astype(np.float64))
        lm3d = rig.landmarks_3d(c["ident"], c["w"]).astype(np.float64)
        res = (c["trk"] - project(lm3d, c["rot"], c["trans"], c["scale"])) * np.array([1.0, -1.0])  # y up
        m = c["scale"][:, None, None] * rmat[:, :2]                                              # (T, 2, 3)
        lhs += np.einsum("tai,taj->ij", m, m)[None]
        rhs += np.einsum("tai,tpa->pi", m, res)
    off = np.linalg.solve(lhs + 20.0 * np.eye(3), rhs[..., None])[..., 0]
    off = np.round(off - off.mean(0), 1)
    print("DLIB_LANDMARK_OFFSETS = np.array([")
    print(",\n".join("    " + ", ".join(f"[{a:.1f}, {b:.1f}, {c:.1f}]" for a, b, c in off[i:i + 4])
                      for i in range(0, 68, 4)) + "])")
    return off


def accuracy(sfm_dir, face_px, cache) -> None:
    from evp_anim.footage.fitting import FitOptions

    rig = FaceRig(sfm_dir)
    errs, errs_gt, rep, rep_fixed, rep_gt, trk = [], [], [], [], [], []
    for seed, c in _clips(sfm_dir, (0, 3, 5, 11), face_px, cache):
        size = tuple(int(v) for v in c["size"])
        trk.append(np.linalg.norm(c["trk"] - c["gt2d"], axis=2))
        f = fit_landmarks(c["trk"], size, sfm_dir, rig=rig)
        errs.append(np.degrees(np.abs(f.rotation - c["rot"])))
        rep.append(f.reprojection)
        rep_fixed.append(f.reprojection_fixed)
        g = fit_landmarks(c["gt2d"], size, sfm_dir, FitOptions(landmark_offsets=None), rig=rig)
        errs_gt.append(np.degrees(np.abs(g.rotation - c["rot"])))
        rep_gt.append(g.reprojection)
        print(f"  clip seed {seed}: tracked pose median p/y/r {np.round(np.median(errs[-1], 0), 2)} deg, "
              f"reprojection {np.median(rep[-1]):.2f} px")
    t = np.concatenate(trk)
    print(f"{face_px:.0f} px faces, {len(t)} frames")
    print(f"dlib tracking error vs truth (SFM vertices): median {np.median(t):.2f} px "
          f"(without jawline {np.median(t[:, 17:]):.2f} px)")
    e, eg, r = np.concatenate(errs), np.concatenate(errs_gt), np.concatenate(rep)
    print(f"pose error from tracked landmarks, median pitch/yaw/roll: {np.round(np.median(e, 0), 2)} deg")
    print(f"reprojection error (tracked landmarks vs fitted model points): median {np.median(r):.2f} px; "
          f"without jawline {np.median(r[:, 17:]):.2f} px; jawline {np.median(r[:, :17]):.2f} px")
    print(f"  vs bare landmark vertices (project(landmarks_3d)): median {np.median(np.concatenate(rep_fixed)):.2f} px")
    print(f"pose error from true 2D landmarks, median pitch/yaw/roll: {np.round(np.median(eg, 0), 2)} deg; "
          f"reprojection median {np.median(np.concatenate(rep_gt)):.2f} px")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accuracy", action="store_true", help="also measure pose accuracy (renders 200 frames)")
    ap.add_argument("--face-px", type=float, default=256.0, help="face size (jaw width) of the synthetic clips")
    ap.add_argument("--calibrate", action="store_true", help="learn dlib's landmark offsets (clips 21-24) and stop")
    ap.add_argument("--cache", help="folder keeping rendered and tracked clips between runs")
    args = ap.parse_args()
    sfm_dir = find_sfm_dir(os.environ.get("EVP_ANIM_SFM_DIR"))
    if args.calibrate:
        calibrate(sfm_dir, args.face_px, args.cache)
        return
    speed(sfm_dir)
    if args.accuracy:
        accuracy(sfm_dir, args.face_px, args.cache)


if __name__ == "__main__":
    main()
