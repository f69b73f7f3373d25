"""Cold start: `evp-anim animate` of a 2 s clip in a fresh process, beside `python -c "import torch"`
measured in the same run (issue 17's target: animate ≤ 2.5 s wall), with the default word front end
(pocketsphinx loads its language model and hears the clip) and with `--front-end mfcc`. The bare
torch import is the yardstick the issue set; `animate` itself no longer pays it (EVP runs on numpy
in a cold process: evp_anim/models/evp_numpy.py).

Each command runs ``--repeats`` times, alternating, each in a new process; the medians are printed.

    .venv/bin/python benchmarks/bench_startup.py [--repeats 5] [--model emote]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "assets" / "sample_speech.wav"


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default=None, help="passed to animate --model (default: the shipped EVP)")
    args = ap.parse_args()
    audio, sr = sf.read(SAMPLE, dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "two_seconds.wav"
        sf.write(clip, audio[:2 * sr], sr)
        exe = [sys.executable, "-m", "evp_anim"]
        animate = exe + ["animate", str(clip), "-o", str(Path(tmp) / "out.npz")]
        if args.model:
            animate += ["--model", args.model]
        runs = {"python -c 'import torch'": [sys.executable, "-c", "import torch"],
                "evp-anim --version": exe + ["--version"],
                "evp-anim animate (2 s clip)": animate,
                "  the same, --front-end mfcc": animate + ["--front-end", "mfcc"]}
        times: dict[str, list[float]] = {k: [] for k in runs}
        wall(animate)                                    # page cache warm, like a second click
        for _ in range(args.repeats):
            for name, cmd in runs.items():
                times[name].append(wall(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, v in times.items():
        print(f"{name:<30} median {med[name]:5.2f} s  (min {min(v):.2f}, max {max(v):.2f}, n={len(v)})")
    t = med["python -c 'import torch'"]
    for name, label in (("evp-anim animate (2 s clip)", "animate (words heard, the default)"),
                        ("  the same, --front-end mfcc", "animate --front-end mfcc")):
        a = med[name]
        print(f"{label}: {a:.2f} s against {t:.2f} s for `import torch` alone (animate of an EVP "
              f"model never imports it: its networks run on numpy); target <= 2.5 s: "
              f"{'met' if a <= 2.5 else 'NOT met'}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
