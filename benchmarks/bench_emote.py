"""`animate --model emote` speed: seconds of speech animated per wall second, and peak memory.

Animates the bundled sample speech repeated to 60 s (target: >= 200x real time on 2 cores) and to
10 minutes (bounded memory), label control, the whole EMOTE path: MFCC windows, the generator,
the motion-prior decoder, and the rig's landmarks for the output Track. Peak memory is the
process's maximum resident set size.

    OMP_WAIT_POLICY=PASSIVE flock /tmp/evp_cpu.lock .venv/bin/python benchmarks/bench_emote.py [--model assets/emote_default.pt] [--threads 2]
"""

import argparse
import os
import resource
import time
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np
import torch

from evp_anim.assets import find_sfm_dir
from evp_anim.audio.features import SAMPLE_RATE
from evp_anim.audio.io import load_audio
from evp_anim.face.rig import FaceRig
from evp_anim.models.animate import EmotionSpec, animate_emote, default_emote_path
from evp_anim.models.emote import EmoteModel

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample_speech.wav"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=default_emote_path())
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = EmoteModel.load(args.model)
    rig = FaceRig(find_sfm_dir(os.environ.get("EVP_ANIM_SFM_DIR")))
    speech = load_audio(SAMPLE)
    spec = EmotionSpec("happy", 0.8)
    animate_emote(speech, model, spec, rig)  # warm-up
    print(f"torch threads {torch.get_num_threads()}; peak memory after loading: {peak_mb():.0f} MB")
    for seconds in (60, 600):
        audio = np.tile(speech, int(np.ceil(seconds * SAMPLE_RATE / len(speech))))[: seconds * SAMPLE_RATE]
        best = float("inf")
        for _ in range(3 if seconds == 60 else 1):
            t = time.perf_counter()
            track = animate_emote(audio, model, spec, rig)
            best = min(best, time.perf_counter() - t)
        print(f"{seconds:4d} s of speech ({track.n_frames} frames): {best:.2f} s -> {seconds / best:.0f}x real time; "
              f"peak memory so far {peak_mb():.0f} MB")
    print("target: >= 200x real time for 60 s")


if __name__ == "__main__":
    main()
