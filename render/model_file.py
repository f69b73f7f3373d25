"""The renderer's files on disk: reading and writing a trained generator (``model.pt``).

A model file holds ``{"format": FORMAT, "generator": state dict, "generator_config": dict,
"meta": facts about the target}`` (:func:`write_model`, written atomically); the trainer's
``checkpoint.pt`` carries the same ``format`` tag. :func:`load_blob` reads either kind and turns
every failure into one :class:`~evp_anim.errors.EvpError` line. Training
(:mod:`render.trainer`) writes these files, rendering (:mod:`render.inference`) reads them;
this module sits beside the networks so that neither has to import the other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from evp_anim.atomic import atomic_path
from evp_anim.errors import EvpError
from evp_anim.train.loop import read_checkpoint

from .networks import Generator

MODEL_FILE = "model.pt"
FORMAT = "evp-anim-renderer-1"


def load_blob(path: Path, what: str) -> dict:
    """torch.load a checkpoint/model, turning any failure into a one-line EvpError."""
    blob = read_checkpoint(path, f"corrupt {what}", hint="; delete it and train again")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise EvpError(f"{path}: not an evp-anim renderer {what}")
    return blob


def write_model(path: Path, gen: Generator, meta: dict) -> None:
    """Write the generator weights and ``meta`` atomically to ``path``."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "generator": gen.state_dict(), "generator_config": gen.cfg.to_dict(),
                    "meta": meta}, tmp)
