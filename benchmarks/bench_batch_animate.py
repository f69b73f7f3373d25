"""`animate` over a folder against one process per clip: wall seconds per clip, side by side.

Makes 20 short clips with the project's own speech synthesis (espeak-ng speakers S001-S004, the
first 20 sentences of the built-in list, emotions in turn; about 2-4 s each), then, in this one
run, times

* one cold process: ``evp-anim --quiet animate CLIPS/ -o batch/`` (the model and rig loaded once),
* one cold process per clip: ``evp-anim --quiet animate CLIPS/x.wav -o single/x.npz``
  (start-up, imports and model loading paid every time, as a shell loop or a Regenerate click pays),

and prints both per-clip times and their ratio, and checks that the batch wrote the same tracks.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_batch_animate.py [--clips 20] [--singles 20]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np

from evp_anim.audio.io import save_wav
from evp_anim.emotions import EMOTIONS
from evp_anim.synth.sentences import sentence_text
from evp_anim.synth.speakers import make_speakers
from evp_anim.synth.speech import synthesize_utterance
from evp_anim.tracks import load_track

EXE = [sys.executable, "-m", "evp_anim.cli", "--quiet", "animate"]


def make_clips(folder: Path, n: int) -> list[Path]:
    """``n`` synthetic speech clips (16 kHz WAV) in ``folder``; returns their paths."""
    speakers = make_speakers(4, seed=0)
    paths = []
    for i in range(n):
        utt = synthesize_utterance(sentence_text(i), speakers[i % 4], EMOTIONS[i % len(EMOTIONS)], 0.7, seed=i)
        paths.append(folder / f"clip{i:02d}.wav")
        save_wav(paths[-1], utt.audio, utt.sample_rate)
    return paths


def clip_seconds(path: Path) -> float:
    import soundfile as sf
    return sf.info(str(path)).duration


def timed(cmd: list[str]) -> float:
    """Wall seconds of ``cmd`` (which must succeed)."""
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=20, help="clips to make and animate in one batch")
    ap.add_argument("--singles", type=int, default=20, help="of them, how many to also run one process each")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        root = Path(tmp)
        (root / "clips").mkdir()
        clips = make_clips(root / "clips", args.clips)
        seconds = sum(clip_seconds(c) for c in clips)
        print(f"{len(clips)} clips, {seconds:.1f} s of speech ({seconds / len(clips):.2f} s each); "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")

        t_batch = timed(EXE + [str(root / "clips"), "-o", str(root / "batch") + "/"])
        singles = []
        for c in clips[:args.singles]:
            singles.append(timed(EXE + [str(c), "-o", str(root / "single" / f"{c.stem}.npz")]))

        worst = 0.0
        for c in clips[:args.singles]:
            a, b = load_track(root / "batch" / f"{c.stem}.npz"), load_track(root / "single" / f"{c.stem}.npz")
            assert a.n_frames == b.n_frames
            worst = max(worst, float(np.abs(a.landmarks_3d - b.landmarks_3d).max()))
        per_batch = t_batch / len(clips)
        per_single = float(np.mean(singles))
        print(f"batch: one process, {t_batch:.1f} s for {len(clips)} clips -> {per_batch:.2f} s per clip")
        print(f"single: {len(singles)} cold processes, {per_single:.2f} s per clip "
              f"(min {min(singles):.2f}, max {max(singles):.2f})")
        print(f"ratio single/batch per clip: {per_single / per_batch:.1f}x")
        print(f"batch tracks vs single-run tracks: max |landmarks_3d difference| {worst:.2e} mm")


if __name__ == "__main__":
    main()
