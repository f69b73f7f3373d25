"""Peak memory of ``evp-anim animate`` against audio length (issue 15, row 9; issue 17).

Writes speech-like 16 kHz WAVs of 2 minutes and of ``--long`` minutes (default 60) by tiling
assets/sample_speech.wav, runs ``evp-anim animate`` on each in a fresh subprocess (one after the
other, in this one run), and prints each child's peak RSS (``ru_maxrss`` of that child alone, from
``os.wait4``) and the long/short ratio. The target is a ratio ≤ 1.10 (memory flat in length).

    .venv/bin/python benchmarks/bench_memory.py [--long 60] [--model emote] [--front-end words]

``animate`` runs with ``--front-end mfcc`` unless told otherwise: the MFCC front end is the one
that streams; the word and phone front ends (animate's default is words) hold the clip's samples
and take ~20 s per minute of speech, so an hour takes ~20 min.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "assets" / "sample_speech.wav"
TARGET_RATIO = 1.10


def write_tiled_wav(path: Path, minutes: float) -> None:
    """A PCM16 16 kHz mono WAV of ``minutes`` of speech: the sample clip tiled, written in blocks
    so that this process never holds the long signal."""
    import soundfile as sf

    clip, sr = sf.read(str(SAMPLE), dtype="int16")
    n_total = int(round(minutes * 60 * sr))
    reps_per_block = max(1, (60 * sr) // len(clip))        # about a minute per write
    block = np.tile(clip, reps_per_block)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=1, subtype="PCM_16", format="WAV") as f:
        written = 0
        while written < n_total:
            k = min(len(block), n_total - written)
            f.write(block[:k])
            written += k


def run_animate(wav: Path, out: Path, model: str | None, front_end: str = "mfcc") -> tuple[float, float]:
    """(peak RSS in MB, wall s) of one ``evp-anim animate`` child process."""
    cmd = [sys.executable, "-m", "evp_anim.cli", "--quiet", "animate", str(wav), "-o", str(out),
           "--front-end", front_end]
    if model:
        cmd += ["--model", model]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max over all children so far).
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"animate failed on {wav.name} (exit {proc.returncode}):\n{err}")
    return usage.ru_maxrss / 1024.0, wall   # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", type=float, default=2.0, help="minutes of the short clip")
    ap.add_argument("--long", type=float, default=60.0, help="minutes of the long clip")
    ap.add_argument("--model", default=None, help="animate --model (default: the EVP model)")
    ap.add_argument("--front-end", default="mfcc", help="animate --front-end (default: mfcc, which streams)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for minutes in (args.short, args.long):
            wav = tmp / f"speech_{minutes:g}min.wav"
            write_tiled_wav(wav, minutes)
            peak, wall = run_animate(wav, tmp / f"track_{minutes:g}min.npz", args.model, args.front_end)
            rows.append((minutes, peak, wall))
            print(f"{minutes:6g} min: peak RSS {peak:8.1f} MB   wall {wall:7.1f} s "
                  f"({minutes * 60 / wall:.0f}x real time)", flush=True)
            wav.unlink()
    ratio = rows[1][1] / rows[0][1]
    print(f"peak RSS ratio {args.long:g} min / {args.short:g} min: {ratio:.3f} "
          f"(target <= {TARGET_RATIO:.2f}: {'PASS' if ratio <= TARGET_RATIO else 'FAIL'})")


if __name__ == "__main__":
    main()
