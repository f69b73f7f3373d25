"""Where the live acoustic front end's running cepstral mean starts: a corpus's mean cepstrum.

    .venv/bin/python scripts/cepstral_prior.py CORPUS [--clips 200] [--seed 1]

Prints the mean Sphinx cepstrum (13 values, evp_anim.audio.acoustic.cepstra) of every frame of
``--clips`` clips of the corpus's train split (a fixed shuffle), pauses included as in offline's
clip mean: ``acoustic.CMN_PRIOR`` is this on the 24-speaker corpus of the shipped models
(``evp-anim synth corpus --speakers 24 --sentences 20 --seed 0 --voices espeak,festival --augment 0.5``).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evp_anim.audio.acoustic import N_CEP, cepstra  # noqa: E402
from evp_anim.audio.io import load_audio  # noqa: E402
from evp_anim.data.manifest import read_manifest  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rows = [r for r in read_manifest(args.corpus / "manifest.csv") if r.split == "train" and r.audio]
    random.Random(args.seed).shuffle(rows)
    total, n = np.zeros(N_CEP), 0
    for r in rows[:args.clips]:
        c = cepstra(load_audio(args.corpus / r.audio))
        total += c.sum(axis=0)
        n += len(c)
    print(f"{min(args.clips, len(rows))} train clips, {n} Sphinx frames; mean cepstrum:")
    print(", ".join(f"{v:.2f}" for v in total / n))


if __name__ == "__main__":
    main()
