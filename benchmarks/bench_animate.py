"""`animate` speed and memory: seconds of speech animated per wall second, and peak memory.

Animates the bundled sample speech repeated to 60 s (target: >= 200x real time on 2 cores) and
to 10 minutes (must work with bounded memory), label control, with and without lifting the
landmarks onto the rig. Peak memory is the process's maximum resident set size.

    .venv/bin/python benchmarks/bench_animate.py [--model assets/evp_default.pt] [--engine torch]

``--engine numpy`` (the default: what a cold ``evp-anim animate`` runs, torch never imported) or
``torch`` (the training code's modules; what a process that has imported torch runs).
"""

import argparse
import os
import resource
import time
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np

from evp_anim.assets import find_sfm_dir
from evp_anim.audio.features import SAMPLE_RATE
from evp_anim.audio.io import load_audio
from evp_anim.face.rig import FaceRig
from evp_anim.models.animate import EmotionSpec, animate, default_model_path, lift_to_rig, load_animation_model

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample_speech.wav"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--engine", choices=("numpy", "torch"), default="numpy")
    args = ap.parse_args()
    model = load_animation_model(args.model, args.engine)
    print(f"engine: {args.engine} ({type(model).__name__})")
    rig = FaceRig(find_sfm_dir(os.environ.get("EVP_ANIM_SFM_DIR")))
    speech = load_audio(SAMPLE)
    spec = EmotionSpec("happy", 0.8)
    animate(speech, model, spec)  # warm-up
    print(f"peak memory after loading: {peak_mb():.0f} MB")
    for seconds in (60, 600):
        audio = np.tile(speech, int(np.ceil(seconds * SAMPLE_RATE / len(speech))))[: seconds * SAMPLE_RATE]
        t = time.perf_counter()
        track = animate(audio, model, spec)
        t_anim = time.perf_counter() - t
        t = time.perf_counter()
        lift_to_rig(track, rig)
        t_lift = time.perf_counter() - t
        print(f"{seconds:4d} s of speech: animate {t_anim:.2f} s -> {seconds / t_anim:.0f}x real time; "
              f"with rig lifting {t_anim + t_lift:.2f} s -> {seconds / (t_anim + t_lift):.0f}x; "
              f"peak memory so far {peak_mb():.0f} MB")
    print("target: >= 200x real time for 60 s")


if __name__ == "__main__":
    main()
