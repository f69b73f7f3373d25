"""Add the training corpus's speech MFCC mean to model files trained before `train` stored it.

    .venv/bin/python scripts/add_speech_mean.py CORPUS MODEL.pt [MODEL.pt ...]

`evp-anim train` / `train-emote` now store ``meta["speech_mfcc_mean"]`` themselves
(:func:`evp_anim.train.features.corpus_speech_mfcc_mean` over the training split); this gives an
older model file the same value from the corpus it was trained on, so that `animate`'s MFCC
front end moves a clip's MFCCs towards the corpus's speech (see `_speech_shift` in
evp_anim/models/animate.py). The weights are not touched.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evp_anim.data.manifest import read_manifest  # noqa: E402
from evp_anim.errors import EvpError  # noqa: E402
from evp_anim.models.animate import load_animation_model  # noqa: E402
from evp_anim.train.features import corpus_speech_mfcc_mean  # noqa: E402


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    corpus = Path(sys.argv[1])
    try:
        rows = [r for r in read_manifest(corpus / "manifest.csv") if r.split == "train" and r.track]
        mean = corpus_speech_mfcc_mean(corpus, rows)
        for path in sys.argv[2:]:
            model = load_animation_model(path)
            model.meta["speech_mfcc_mean"] = mean
            model.save(path)
            print(f"{path}: speech_mfcc_mean = {mean}")
    except EvpError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
