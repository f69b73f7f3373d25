"""Benchmark the renderer's inference: frames per second at 256x256 and memory over a long video.

Runs the real pipeline of ``evp-anim render run`` (decode the footage, crop, guidance map,
generator, paste back, H.264 encode) over the target footage looped to ``--seconds`` of output
(default 300 s = 7500 frames at 25 fps: a 5-minute dub), with a generator of the shipped
architecture (weights do not change the speed; pass ``--model`` to use a trained one).
Prints frames per second, the ratio against real time at 25 fps, and the process's resident
memory at intervals (it must stay flat: frames are streamed).

    OMP_WAIT_POLICY=PASSIVE flock /tmp/evp_cpu.lock python benchmarks/bench_render.py \
        --target footage.mp4 --track footage.npz [--seconds 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def main() -> None:
    from evp_anim.tracks import load_track
    from render.data import video_fingerprint
    from render.inference import RenderModel, render_video
    from render.model_file import write_model
    from render.networks import Generator

    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=Path, required=True)
    ap.add_argument("--track", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    target = load_track(args.target if args.track is None else args.track)
    with tempfile.TemporaryDirectory() as tmp:
        mdir = args.model
        if mdir is None:
            mdir = Path(tmp) / "model"
            mdir.mkdir()
            write_model(mdir / "model.pt", Generator(), {
                "fingerprint": video_fingerprint(args.target), "size": args.size, "crop_margin": 1.9,
                "holdout_start": target.n_frames, "n_frames": target.n_frames,
                "target": {"image_size": list(target.image_size)}})
        model = RenderModel(mdir)
        n = int(round(args.seconds * target.fps))
        idx = np.arange(n) % target.n_frames
        aligned = target.copy()
        aligned.landmarks_2d = target.landmarks_2d[idx]
        aligned.info = {"target_frames": idx.tolist()}
        # only the landmark and frame-index fields matter to the renderer
        marks = {}
        t0 = time.perf_counter()
        start_rss = rss_mb()

        def progress(done):
            if done in (1, 100) or done % 1500 == 0 or done == n:
                marks[done] = (time.perf_counter() - t0, rss_mb())

        out = Path(tmp) / "bench.mp4"
        render_video(aligned, target, args.target, model, out, progress=progress)
        dt = time.perf_counter() - t0
    fps = n / dt
    print(f"renderer inference at {model.size}x{model.size}, {args.threads} threads, footage "
          f"{target.image_size[0]}x{target.image_size[1]}: {n} frames in {dt:.1f} s = {fps:.1f} fps "
          f"= {fps / 25.0:.2f}x real time at 25 fps (decode + guidance + generator + paste + encode)")
    for done, (t, r) in sorted(marks.items()):
        print(f"  after {done:5d} frames ({t:6.1f} s): RSS {r:7.1f} MiB")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RSS at start {start_rss:.1f} MiB, peak {peak:.1f} MiB")


if __name__ == "__main__":
    main()
