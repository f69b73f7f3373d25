"""Warm starts of per-target training: a generic face renderer's generator as the starting weights.

Trained from random weights, the per-target renderer spends its first few hundred steps (all a
2-core CPU gives in 20 minutes at 256 px) learning what a face is, and shows a blob. A *generic*
renderer, pre-trained on many synthetic targets (:mod:`render.pretrain`, ``evp-anim render
pretrain``), already paints a face from a guidance map; per-target training starts from its
generator and only has to learn this face.

* ``evp-anim render train VIDEO --track T -o DIR --init PATH``: start from the generator of PATH
  (a model folder or its ``model.pt``: a generic renderer, or another target's renderer);
* ``--init auto`` (the default; also what ``dub --renderer gan`` gets when it trains a renderer):
  the shipped ``assets/render_warmstart.pt`` (:func:`default_warmstart_path`) when it exists and
  was made for the same crop size, else a cold start;
* ``--init none`` / ``--cold``: random weights, as before.

Only the generator's weights travel: the warm-start file holds no discriminators and no optimiser
state. The per-target run creates its discriminators fresh (they join after ``gan_start`` of
the budget and learn *this* target's real-vs-fake; a discriminator tuned to other faces would
start out judging the wrong face) and its Adam moments fresh. The warm start must have the same
crop size and generator widths as the run (``GeneratorConfig``): one line otherwise. A run that
resumes its own checkpoint ignores any init (the checkpoint's weights win; it is said).
The init is recorded in the model's meta (``meta["init"]``: kind warm/cold, path, sha256, what the
warm start was trained on, ``shrink``).

Shrink and perturb (``--init-shrink s``, default :data:`DEFAULT_INIT_SHRINK`): the run starts from
``s × warm + (1 − s) × its own random init``, layer by layer (Ash & Adams, "On warm-starting neural
network training", 2020: warm-started networks fit their training data as well but generalise
worse; shrinking towards a fresh init closes the gap). Measured here on held-out frames: from the
warm weights as they are, per-target training led a cold start early but stalled below it by
20 minutes; mixed half and half it ends 0.4-1.0 dB higher than that, above the cold start on one
synthetic target and below it on another (README, "Renderer: warm start").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Union

from evp_anim.errors import EvpError

WARMSTART_ASSET = "render_warmstart.pt"
# --init-shrink's default: a run starts from 0.5 × the warm weights + 0.5 × its own random ones
# (shrink and perturb, Ash & Adams 2020). From the warm weights as they are (1.0), held-out face
# PSNR after 20 min stalled at 27.5 dB against a cold start's 28.2; with 0.5 it reached 28.5. On a
# second target 0.5 also beat 1.0 (25.5 against 25.2 dB) but not the cold start (26.2) (README,
# "Renderer: warm start"; only 0.5 and 1.0 tried, on two synthetic targets).
DEFAULT_INIT_SHRINK = 0.5


def checked_shrink(shrink: Optional[float]) -> float:
    """``--init-shrink`` as a float in (0, 1] (None: :data:`DEFAULT_INIT_SHRINK`); else one EvpError line."""
    s = DEFAULT_INIT_SHRINK if shrink is None else float(shrink)
    if not 0.0 < s <= 1.0:
        raise EvpError(f"--init-shrink must be in (0, 1] (1: the warm weights as they are), got {s:g}")
    return s


# the one documented command that makes the shipped asset (then: cp /tmp/warm/model.pt assets/render_warmstart.pt)
REPRODUCE_COMMAND = ("evp-anim render pretrain -o /tmp/warm --minutes 20 --targets 4 --frames 300 --size 256 "
                     "--seed 0")


def default_warmstart_path() -> Path:
    """The shipped generic renderer (``assets/render_warmstart.pt`` in the source tree; it may be absent)."""
    return Path(__file__).resolve().parents[1] / "assets" / WARMSTART_ASSET


def _shown(path: Path) -> str:
    """``path`` relative to the source tree when inside it (``assets/render_warmstart.pt``), else as given."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


@dataclasses.dataclass
class WarmStart:
    """A generator to start training from (:func:`load_warmstart`)."""

    path: Path
    state: dict                 # the generator's state dict
    generator_config: dict
    meta: dict
    sha256: str

    @property
    def generic(self) -> bool:
        return bool(self.meta.get("generic"))

    def describe(self) -> str:
        """E.g. ``assets/render_warmstart.pt (generic renderer, 3,400 steps on 6 synthetic targets)``."""
        steps = int(self.meta.get("steps", 0))
        if self.generic:
            what = f"generic renderer, {steps:,} steps on {int(self.meta.get('n_targets', 0))} synthetic targets"
        else:
            what = f"renderer of {self.meta.get('target', {}).get('video', 'another video')}, {steps:,} steps"
        return f"{_shown(self.path)} ({what}, {self.meta.get('size')} px)"

    def record(self) -> dict:
        """What the model's meta keeps of its init."""
        return {"kind": "warm", "path": str(self.path), "sha256": self.sha256, "generic": self.generic,
                "steps": int(self.meta.get("steps", 0)), "n_targets": self.meta.get("n_targets"),
                "size": self.meta.get("size"),
                "video": None if self.generic else self.meta.get("target", {}).get("video")}


def _mismatch(meta: dict, gcfg: dict, size: int, generator_config: dict) -> Optional[str]:
    """Why a warm start of ``meta`` / ``gcfg`` cannot start a run of ``size`` px and ``generator_config``, or None."""
    if meta.get("size") != size:
        return f"is a {meta.get('size')} px renderer but this run trains {size} px crops"
    if gcfg != generator_config:
        return f"has another generator (widths {gcfg}) than this run ({generator_config})"
    return None


def _read(path: Path, what: str) -> tuple[Path, dict, dict, dict]:
    """(model file, meta, generator state dict, generator config) of a model folder or file."""
    from .model_file import MODEL_FILE, load_blob   # torch: not at import (the CLI's --help reads this module)
    f = path / MODEL_FILE if path.is_dir() else path
    if not f.is_file():
        raise EvpError(f"{what} {path}: no renderer there (give a model folder from `evp-anim render pretrain` "
                       f"or `render train`, or its {MODEL_FILE}; `--init none` starts from random weights)")
    blob = load_blob(f, "model")
    meta, state, gcfg = blob.get("meta"), blob.get("generator"), blob.get("generator_config")
    if not isinstance(meta, dict) or not isinstance(state, dict) or not isinstance(gcfg, dict):
        raise EvpError(f"{f}: corrupt model (no generator); {what} needs a model file from `evp-anim render pretrain`")
    return f, meta, state, gcfg


def load_warmstart(path: Union[str, Path], size: int, generator_config: dict, what: str = "--init") -> WarmStart:
    """The generator of the model file (or folder) at ``path``, checked for a run of ``size`` px
    crops and ``generator_config`` (:meth:`GeneratorConfig.to_dict`); any problem is one EvpError line."""
    from evp_anim.assets import sha256_file

    f, meta, state, gcfg = _read(Path(path), what)
    why = _mismatch(meta, gcfg, size, generator_config)
    if why:
        fix = (f"give --size {meta.get('size')}, or a {size} px warm start (`evp-anim render pretrain --size {size}`)"
               if meta.get("size") != size else "give a warm start made with the same generator")
        raise EvpError(f"{what} {_shown(f)} {why}: {fix}, or --init none")
    return WarmStart(f, state, gcfg, meta, sha256_file(f))


InitSpec = Optional[Union[str, Path]]


def resolve_init(init: InitSpec, size: int, generator_config: dict) -> tuple[Optional[WarmStart], str]:
    """(the warm start or None for random weights, one line saying which and why) for ``--init``:
    ``"auto"``/None (the shipped asset if present and of this size, else cold), ``"none"`` (cold),
    or a path (must load: one EvpError line otherwise)."""
    spec = "auto" if init is None else str(init)
    if spec.lower() in ("none", "cold", "random"):
        return None, "cold start: random weights (--init none)"
    if spec.lower() == "auto":
        asset = default_warmstart_path()
        if not asset.is_file():
            return None, (f"cold start: random weights (no shipped warm start {_shown(asset)}; make one with "
                          f"`{REPRODUCE_COMMAND}` and pass --init /tmp/warm)")
        try:
            _, meta, _, gcfg = _read(asset, "the shipped warm start")
        except EvpError as e:
            return None, f"cold start: random weights (the shipped warm start is unusable: {e})"
        why = _mismatch(meta, gcfg, size, generator_config)
        if why:
            return None, (f"cold start: random weights (the shipped warm start {_shown(asset)} {why}; "
                          f"`evp-anim render pretrain --size {size}` makes one for --init)")
        ws = load_warmstart(asset, size, generator_config, what="the shipped warm start")
        return ws, f"warm start: {ws.describe()}"
    ws = load_warmstart(Path(spec), size, generator_config)
    return ws, f"warm start: {ws.describe()}"
