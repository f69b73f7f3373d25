"""Speech synthesis speed on one core: seconds of audio produced per wall-clock second.

Run: ``.venv/bin/python benchmarks/bench_speech.py [--sentences 12] [--speakers 4]``.
Synthesises every emotion at intensity 1 (neutral at 0) for each sentence/speaker pair, pinned
to one CPU with single-threaded BLAS, and reports the ratio to real time (target ≥ 50×).
"""

from __future__ import annotations

import os

# Single-threaded numeric libraries: must be set before numpy/scipy load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import time

from evp_anim.emotions import EMOTIONS
from evp_anim.synth import espeak
from evp_anim.synth.sentences import SENTENCES
from evp_anim.synth.speakers import make_speakers
from evp_anim.synth.speech import synthesize_utterance
from evp_anim.synth.visemes import articulation_curves, frames_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=12)
    ap.add_argument("--speakers", type=int, default=4)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    speakers = make_speakers(args.speakers, seed=0)
    espeak.engine()                                   # load + initialise outside the timing
    synthesize_utterance(SENTENCES[0], speakers[0], "neutral", 0.0)

    audio_s = 0.0
    n_clips = 0
    t_curves = 0.0
    t0 = time.perf_counter()
    for k in range(args.sentences):
        for spk in speakers:
            for emo in EMOTIONS:
                u = synthesize_utterance(SENTENCES[k % len(SENTENCES)], spk, emo,
                                         0.0 if emo == "neutral" else 1.0, seed=k)
                audio_s += u.duration
                n_clips += 1
                tc = time.perf_counter()
                articulation_curves(u.phonemes, frames_for(u.duration))
                t_curves += time.perf_counter() - tc
    wall = time.perf_counter() - t0
    synth_wall = wall - t_curves
    print(f"clips: {n_clips} ({args.sentences} sentences x {len(speakers)} speakers x {len(EMOTIONS)} emotions)")
    print(f"audio synthesised: {audio_s:.1f} s in {synth_wall:.2f} s wall (one core)")
    print(f"speech synthesis: {audio_s / synth_wall:.0f}x real time "
          f"({1000 * synth_wall / n_clips:.1f} ms per clip)")
    print(f"viseme curves: {1000 * t_curves / n_clips:.2f} ms per clip "
          f"({audio_s / max(t_curves, 1e-9):.0f}x real time)")


if __name__ == "__main__":
    main()
