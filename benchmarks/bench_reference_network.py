"""Ours against EVP's released audio-to-landmark network, side by side in one run (issue 17).

The reference network is built here with random weights from the published layer sizes
(../shared/docs/evp_reference_network.md: content encoder 27.8 M parameters, emotion encoder
8.1 M, landmark encoder 0.14 M, 3-layer LSTM decoder 2.2 M; 38.3 M in all), in eval mode, its
encoders run on all frames at once (batched: kinder to it than the release's frame-by-frame loop).
Ours: `animate` with the shipped EVP model (the rig solve included; on both engines: torch, and
numpy, which a cold `evp-anim animate` runs without importing torch) and the shipped EMOTE model,
on the same 60 s of speech (the bundled sample repeated). Prints seconds (best runs; ours also
the median), × real time and the reference / ours ratio (targets: EVP ≥ 400×, EMOTE ≥ 600× real
time, both ≥ 100× faster than the reference). ``BENCH_DEBUG=1`` prints every run's time.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_reference_network.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np
import torch
from torch import nn

SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "sample_speech.wav"
FPS = 25
REPEATS = 5                 # runs of ours per round (see main)

# The numpy engine timed as a cold `evp-anim animate` runs it: in a process that never imports torch.
NUMPY_CHILD = """
import json, sys, time
import evp_anim
import numpy as np
from evp_anim.assets import find_sfm_dir
from evp_anim.audio.io import load_audio
from evp_anim.face.rig import FaceRig
from evp_anim.models.animate import EmotionSpec, animate, lift_to_rig, load_animation_model
seconds, repeats, sample, sfm_dir = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] or None
model, rig = load_animation_model(None, "numpy"), FaceRig(find_sfm_dir(sfm_dir))
one = load_audio(sample)
speech = np.tile(one, int(np.ceil(seconds * 16000 / len(one))))[:int(seconds * 16000)]
spec = EmotionSpec("happy", 1.0)
animate(speech[:32000], model, spec)
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    lift_to_rig(animate(speech, model, spec), rig)
    times.append(time.perf_counter() - t0)
assert "torch" not in sys.modules, "the numpy engine imported torch"
print(json.dumps(times))
"""


def numpy_engine_times(seconds: float, repeats: int) -> list[float]:
    """Seconds per run of the numpy engine (+ rig solve) in a fresh process without torch."""
    p = subprocess.run([sys.executable, "-c", NUMPY_CHILD, str(seconds), str(repeats), str(SAMPLE),
                        os.environ.get("EVP_ANIM_SFM_DIR", "")], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"numpy engine run failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _block(cin: int, cout: int) -> nn.Sequential:
    """3×3 convolution (stride 1, padding 1, no bias) + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ReferenceAudioToLandmark(nn.Module):
    """EVP's released audio-to-landmark network, layer sizes only (random weights).

    ``forward(mfcc (T, 28, 12), example (16,) PCA coefficients)`` → (T, 106, 2) landmarks."""

    def __init__(self):
        super().__init__()
        self.content = nn.Sequential(
            _block(1, 64), _block(64, 128), nn.MaxPool2d(3, stride=(1, 2)),
            _block(128, 256), _block(256, 256), _block(256, 512), nn.MaxPool2d(3, stride=2),
            nn.Flatten(), nn.Linear(512 * 12 * 2, 2048), nn.ReLU(), nn.Linear(2048, 256), nn.ReLU())
        self.emotion = nn.Sequential(
            _block(1, 64), nn.MaxPool2d((1, 3), stride=(1, 2)), _block(64, 128), _block(128, 256),
            nn.MaxPool2d((12, 1)), _block(256, 512), nn.MaxPool2d((1, 2)),
            nn.Flatten(), nn.Linear(512 * 6, 2048), nn.ReLU(), nn.Linear(2048, 128), nn.ReLU())
        self.emotion_head = nn.Linear(128, 8)           # training only; counted, not run
        self.landmark = nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU())
        self.decoder = nn.LSTM(512 + 256 + 128, 256, num_layers=3, batch_first=True)
        self.to_pca = nn.Linear(256, 16)
        self.register_buffer("basis", torch.randn(16, 106 * 2) * 0.01)
        self.register_buffer("mean", torch.zeros(106 * 2))

    def forward(self, mfcc: torch.Tensor, example: torch.Tensor) -> torch.Tensor:
        x = mfcc[:, None]                                            # (T, 1, 28, 12)
        c = self.content(x)                                          # (T, 256)
        e = self.emotion(x.transpose(2, 3))                          # (T, 128)
        lm = self.landmark(example)[None].expand(len(c), -1)         # (T, 512)
        h, _ = self.decoder(torch.cat([lm, c, e], 1)[None])          # (1, T, 256)
        pca = self.to_pca(h[0])
        return (pca @ self.basis + self.mean).reshape(-1, 106, 2)


def peak_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from evp_anim.assets import find_sfm_dir
    from evp_anim.audio.features import SAMPLE_RATE
    from evp_anim.audio.io import load_audio
    from evp_anim.face.rig import FaceRig
    from evp_anim.models.animate import (EmotionSpec, animate, animate_emote, default_emote_path,
                                         default_model_path, lift_to_rig)
    from evp_anim.models.emote import EmoteModel
    from evp_anim.models.evp import EvpModel

    one = load_audio(SAMPLE)
    speech = np.tile(one, int(np.ceil(args.seconds * SAMPLE_RATE / len(one))))[:int(args.seconds * SAMPLE_RATE)]
    n = int(args.seconds * FPS)
    rig = FaceRig(find_sfm_dir(os.environ.get("EVP_ANIM_SFM_DIR")))
    evp, emote = EvpModel.load(default_model_path()), EmoteModel.load(default_emote_path())

    spec = EmotionSpec("happy", 1.0)

    ref = ReferenceAudioToLandmark().eval()
    params = sum(p.numel() for p in ref.parameters()) / 1e6
    mfcc = torch.randn(n, 28, 12)                    # its input: one 28×12 MFCC window per frame
    example = torch.randn(16)

    def run_ref():
        with torch.inference_mode():
            return ref(mfcc, example)

    def run_evp():
        return lift_to_rig(animate(speech, evp, spec), rig)

    def run_emote():
        return animate_emote(speech, emote, spec, rig)

    # warm-up on 2 s (allocations, lazy imports), then the timed runs interleaved twice: the
    # reference once per round (~10 s, its own noise averages out), ours REPEATS times per round
    # (~0.1 s each: one short run is at the mercy of a page fault storm or a neighbour's burst;
    # the best of several, as timeit takes, is the cost of the work; the median is printed too).
    with torch.inference_mode():
        ref(mfcc[:50], example)
    animate(speech[:2 * SAMPLE_RATE], evp, spec)
    animate_emote(speech[:2 * SAMPLE_RATE], emote, spec, rig)
    times = {"reference": [], "evp": [], "evp_numpy": [], "emote": []}
    for _ in range(2):
        for name, fn in (("reference", run_ref), ("evp", run_evp), ("emote", run_emote)):
            for _ in range(1 if name == "reference" else REPEATS):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        times["evp_numpy"] += numpy_engine_times(args.seconds, REPEATS)
    best = {k: min(v) for k, v in times.items()}
    if os.environ.get("BENCH_DEBUG"):
        print({k: [round(x, 3) for x in v] for k, v in times.items()})
    print(f"{args.seconds:.0f} s of speech ({n} frames at 25 fps), torch threads {torch.get_num_threads()}")
    print(f"reference EVP audio-to-landmark network ({params:.1f} M parameters, random weights, frames "
          f"batched): {best['reference']:.2f} s = {args.seconds / best['reference']:.1f}x real time")
    for name, label in (("evp", "ours, EVP model + rig solve (torch engine)"),
                        ("evp_numpy", "ours, EVP model + rig solve (numpy engine, in a process without torch: a cold `animate`)"),
                        ("emote", "ours, EMOTE model")):
        print(f"{label}: {best[name]:.3f} s = {args.seconds / best[name]:.0f}x real time, "
              f"{best['reference'] / best[name]:.0f}x faster than the reference "
              f"(median of {len(times[name])}: {np.median(times[name]):.3f} s)")
    print(f"peak RSS of this process (all three models): {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
