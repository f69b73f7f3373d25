"""Corpus generation speed: seconds of generated audio + tracks per wall-clock second.

Runs `synthesize_corpus` on a fresh temporary folder with all cores and prints the ratio to real
time (target: at least 20x on 2 cores; no video frames are rendered). Worker start-up is included.

    .venv/bin/python benchmarks/bench_synth.py [--speakers 2 --sentences 6]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from evp_anim.assets import find_sfm_dir
from evp_anim.synth.corpus import CorpusConfig, synthesize_corpus


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--speakers", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=6)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    sfm = find_sfm_dir(os.environ.get("EVP_ANIM_SFM_DIR"))
    config = CorpusConfig(n_speakers=args.speakers, n_sentences=args.sentences, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows = synthesize_corpus(Path(tmp) / "corpus", config, sfm, workers=args.workers)
        wall = time.perf_counter() - t0
    audio_s = sum(r.duration_s for r in rows)
    print(f"clips: {len(rows)}  audio: {audio_s:.1f} s  wall: {wall:.1f} s  workers: {args.workers}")
    print(f"corpus generation: {audio_s / wall:.1f}x real time (target >= 20x)")
    print(f"clips per second: {len(rows) / wall:.2f}")


if __name__ == "__main__":
    sys.exit(main())
