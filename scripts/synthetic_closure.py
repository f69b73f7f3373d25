"""Lip closure on /p b m/ of models on a synthetic corpus's held-out speakers, per emotion at full
intensity (neutral: its only level), against the corpus's exact phoneme timing.

    .venv/bin/python scripts/synthetic_closure.py CORPUS NAME=MODEL.pt [NAME=MODEL.pt ...] [--clips 12]

Prints, per emotion, the ground truth's closure and each model's (the share of /p b m/ during
which the lips close, evp_anim.eval.lipsync) with its chance rate; the first clips of the split
in manifest order are used.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evp_anim.assets import find_sfm_dir  # noqa: E402
from evp_anim.data.manifest import read_manifest  # noqa: E402
from evp_anim.eval.lipsync import score_lipsync  # noqa: E402
from evp_anim.face.rig import FaceRig  # noqa: E402
from evp_anim.models.animate import EmotionSpec, animate_speech_file, load_animation_model  # noqa: E402
from evp_anim.tracks import load_track  # noqa: E402

ESPEAK_BILABIAL = {"p": "P", "b": "B", "m": "M"}


def as_scored_phones(phonemes) -> list[tuple[float, float, str]]:
    """espeak-ng phoneme segments → what the closure score needs: /p b m/ as ARPAbet, pauses as
    silence, every other phone as speech."""
    return [(s, e, ESPEAK_BILABIAL.get(p, "SIL" if p.startswith("_") else "AH")) for s, e, p in phonemes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("models", nargs="+", help="NAME=MODEL.pt")
    ap.add_argument("--clips", type=int, default=12, help="clips per emotion")
    ap.add_argument("--split", default="test_speaker")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    rig = FaceRig(find_sfm_dir())
    models = {name: load_animation_model(path) for name, _, path in (m.partition("=") for m in args.models)}
    rows = [r for r in read_manifest(corpus / "manifest.csv")
            if r.split == args.split and (r.level == 3 or r.emotion == "neutral")]
    for emo in ("neutral", "happy", "surprised", "angry"):
        chosen = [r for r in rows if r.emotion == emo][: args.clips]
        for name, model in [("ground truth", None)] + list(models.items()):
            lms, phones, offset = [], [], 0.0
            for r in chosen:
                tr = load_track(corpus / r.track)
                if model is None:
                    lm = tr.landmarks_3d
                else:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        lm = animate_speech_file(corpus / r.audio, model, EmotionSpec(emotion=emo, intensity=1.0),
                                                 rig).landmarks_3d[: tr.n_frames]
                lms.append(lm)
                phones += [(s + offset, e + offset, p) for s, e, p in as_scored_phones(tr.phonemes)]
                offset += len(lm) / tr.fps
            sc = score_lipsync(np.concatenate(lms), phones, 25.0)
            print(f"{emo:9s} {name:14s} closure {sc.closure:4.0%} of {sc.n_bilabials} "
                  f"(chance {sc.closure_chance:4.0%})", flush=True)


if __name__ == "__main__":
    main()
