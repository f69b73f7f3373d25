"""Speed of EVP's audio features: ``mfcc_windows`` (MFCC + 28×12 windows) on 60 s of 16 kHz audio.

Prints the best and median wall time over several repeats and the ratio to real time
(audio seconds per compute second); the target is ≥ 500×. Run:

    .venv/bin/python benchmarks/bench_mfcc.py [--seconds 60] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np

from evp_anim.audio.features import SAMPLE_RATE, mfcc, mfcc_windows, voice_activity

TARGET = 500.0


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * np.arange(n) / SAMPLE_RATE)  # 4 Hz syllable rhythm
    return (0.2 * rng.standard_normal(n) * env).astype(np.float32)


def _time(fn, audio, repeats):
    fn(audio)  # warm-up: imports, FFT plans, mel filter bank
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(audio)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    audio = _speechlike(args.seconds)
    print(f"audio: {args.seconds:g} s at {SAMPLE_RATE} Hz, {args.repeats} repeats")
    for name, fn in (("mfcc_windows", mfcc_windows), ("mfcc", mfcc), ("voice_activity", voice_activity)):
        best, median = _time(fn, audio, args.repeats)
        print(f"{name:15s} best {best * 1e3:7.1f} ms  median {median * 1e3:7.1f} ms  "
              f"→ {args.seconds / median:7.0f}× real time (median)")
        if name == "mfcc_windows":
            ratio = args.seconds / median
    print(f"mfcc_windows target ≥ {TARGET:.0f}× real time: {'PASS' if ratio >= TARGET else 'FAIL'} ({ratio:.0f}×)")


if __name__ == "__main__":
    main()
