"""Landmark tracking speed on 720p footage, as a ratio to real time (25 fps), measured in one run.

    .venv/bin/python benchmarks/bench_tracking.py [--frames 100]

The clip is synthetic target footage (the rendered SFM head) upscaled into a 1280x720 H.264
video. Three figures: decoding alone (BGR, as ``track_video`` decodes), decode + tracking (shot-cut
detection, follow with the shape predictor, HOG re-detection only when needed, a face-descriptor
identity check every 12 frames), and decode + HOG detection on every frame (what following saves).
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import cv2
import numpy as np

from evp_anim.assets import find_sfm_dir
from evp_anim.footage.synthetic import SyntheticFootageConfig, render_synthetic_frames
from evp_anim.footage.tracking import FaceTracker, track_frames
from evp_anim.footage.video import iter_frames
from evp_anim.tracks import DEFAULT_FPS
from evp_anim.video_io import open_video_writer


def make_720p(path: Path, n: int, sfm_dir) -> None:
    gen = render_synthetic_frames(SyntheticFootageConfig(n_frames=n, seed=0), sfm_dir)
    with open_video_writer(path, DEFAULT_FPS, (1280, 720)) as w:
        for frame, _ in gen:
            big = cv2.resize(frame, (720, 720), interpolation=cv2.INTER_LINEAR)
            canvas = np.full((720, 1280, 3), 128, np.uint8)
            canvas[:, 280:1000] = big
            w.write(canvas)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=100)
    args = ap.parse_args()
    sfm_dir = find_sfm_dir(os.environ.get("EVP_ANIM_SFM_DIR"))
    with tempfile.TemporaryDirectory() as d:
        video = Path(d) / "720p.mp4"
        make_720p(video, args.frames, sfm_dir)
        print(f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}; clip: {args.frames} frames 1280x720")

        t = time.perf_counter()
        n = sum(1 for _ in iter_frames(video, DEFAULT_FPS, "bgr24"))
        dec = time.perf_counter() - t
        print(f"decode only:             {n / dec:7.1f} fps = {n / dec / DEFAULT_FPS:5.2f}x real time")

        FaceTracker()  # load the dlib models (~100 MB) outside the timings
        t = time.perf_counter()
        res = track_frames(iter_frames(video, DEFAULT_FPS, "bgr24"), DEFAULT_FPS)
        trk = time.perf_counter() - t
        print(f"decode + track (follow): {n / trk:7.1f} fps = {n / trk / DEFAULT_FPS:5.2f}x real time "
              f"(detector runs {res.info['detector_runs']}, re-detections {res.info['redetections']}, "
              f"face descriptors {res.info['identity']['descriptors']})")

        tracker = FaceTracker()
        t = time.perf_counter()
        for gray in iter_frames(video, DEFAULT_FPS, "gray"):
            box = tracker._detect(gray)
            if box is not None:
                tracker._predict(gray, box)
        det = time.perf_counter() - t
        print(f"decode + detect each:    {n / det:7.1f} fps = {n / det / DEFAULT_FPS:5.2f}x real time "
              f"(following is {det / trk:.1f}x faster)")


if __name__ == "__main__":
    main()
