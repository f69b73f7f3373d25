"""The training loop shared by the EVP, EMOTE and renderer trainers.

- ``StepLog`` — a run's ``log.csv`` (one row per step; a resumed run keeps the header and the rows
  its checkpoint covers, and appends);
- ``read_checkpoint`` / ``restore_run_state`` — load a checkpoint (``weights_only=True``: tensors and
  plain data only, never code) with a one-line error for a damaged or refused file, and put a
  trainer back where its checkpoint stopped;
- ``train_stage_steps`` — the step loop of one stage: batch, forward, backward, optimiser step,
  log, periodic checkpoint;
- ``dist_info`` / ``barrier`` / ``wrap_ddp`` — torch.distributed under ``torchrun`` (gloo on CPU,
  nccl on GPU); all three are no-ops in a single process.

A trainer using these provides ``cfg`` (with ``to_dict()``, ``seed`` and ``checkpoint_every``),
``net``, ``rank``, ``optim``, ``progress``, ``step``, ``stage``, ``elapsed``, ``ckpt``, ``rng``,
``sampler`` and the methods ``_batch()``, ``_save()`` and ``_make_optim()``.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path
from ..errors import EvpError


# ---------------------------------------------------------------------- the step loop
class StepLog:
    """``log.csv`` of a training run: a header, then one row per step with the stage, step, loss and
    the loss terms as JSON. A resumed run keeps the header and the rows of the steps its checkpoint
    covers, and appends after them.

    A killed run may leave rows for steps after its last checkpoint (the resumed run redoes those
    steps), a half-written last line, or only an empty file; so the first :meth:`write` of a process
    tidies the file once: it keeps the header (writing it if missing) and the earlier rows up to the
    first old row of the step being written now, drops the rest, then appends. Every row is flushed,
    so what a kill leaves on disk is complete up to the step it interrupted."""

    HEADER = ["stage", "step", "loss", "terms"]

    def __init__(self, path: Path):
        self.path = path
        self._fh = None
        self._writer = None

    def _kept_rows(self, stage: str, step: int) -> tuple[list[list[str]], bool]:
        """(rows of the existing file before the row ``(stage, step)``, whether the file needs
        rewriting: no header, a broken line, or rows from that step on to drop)."""
        if not self.path.is_file():
            return [], True
        with open(self.path, newline="") as fh:
            text = fh.read()
        lines = list(csv.reader(text.splitlines()))
        rewrite = not text.endswith("\n") or not lines or lines[0] != self.HEADER
        kept: list[list[str]] = []
        for row in lines[1:] if lines and lines[0] == self.HEADER else lines:
            ok = len(row) == 4 and row[1].isdigit()
            if not ok:                      # a half-written line of a killed run
                rewrite = True
                continue
            if row[0] == stage and int(row[1]) >= step:
                return kept, True           # this step and later ones are being redone
            kept.append(row)
        return kept, rewrite

    def write(self, stage: str, step: int, loss: float, terms: dict) -> None:
        if self._writer is None:
            kept, rewrite = self._kept_rows(stage, step)
            if rewrite:
                with atomic_path(self.path) as tmp:
                    with open(tmp, "w", newline="") as fh:
                        w = csv.writer(fh)
                        w.writerow(self.HEADER)
                        w.writerows(kept)
            self._fh = open(self.path, "a", newline="")
            self._writer = csv.writer(self._fh)
        self._writer.writerow([stage, step, f"{loss:.5f}", json.dumps(terms)])
        self._fh.flush()

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = self._writer = None


def read_checkpoint(path: Path, problem: str = "corrupt checkpoint",
                    hint: str = "; delete it to start over") -> Any:
    """``torch.load`` a training checkpoint or model on the CPU with ``weights_only=True``: a ``.pt``
    file is a pickle, and a crafted one would otherwise run code while it loads. Checkpoints hold only
    tensors and plain data (dicts, lists, ints, floats, strings; the numpy RNG state is a dict of ints),
    so nothing of ours is refused. Any failure (truncated zip, pickle garbage, an object the safe
    unpickler refuses, ...) becomes the one-line error ``"<path>: <problem> (<exception type>)<hint>"``
    — raised before any object of the file has been built."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = ("holds objects other than tensors and plain data; not loaded" if "weights_only" in str(e).lower()
               or "weights only" in str(e).lower() else type(e).__name__)
        raise EvpError(f"{path}: {problem} ({why}){hint}") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for damaged files
        raise EvpError(f"{path}: {problem} ({type(e).__name__}){hint}") from None


def restore_run_state(trainer, blob: dict, n_stages: int) -> None:
    """Put an EVP or EMOTE trainer back where its checkpoint ``blob`` stopped: the same training
    options (else a one-line error), the networks, stage/step/elapsed, the optimiser of an unfinished
    stage (``stage < n_stages``) and the random states."""
    if blob.get("config") != trainer.cfg.to_dict():
        raise EvpError(f"{trainer.ckpt} was written with other training options; use them again or a new --run-dir")
    trainer.net.load_state_dict(blob["net"])
    trainer.stage, trainer.step, trainer.elapsed = blob["stage"], blob["step"], blob.get("elapsed", 0.0)
    if trainer.stage < n_stages:
        trainer.optim = trainer._make_optim()
        if blob.get("optim"):
            trainer.optim.load_state_dict(blob["optim"])
    if trainer.rank == 0:
        trainer.rng.bit_generator.state = blob["rng"]
    else:
        # Only rank 0's state is saved; the others restart from their own stream at this point
        # rather than all copying rank 0's (which would give every rank the same batches).
        trainer.rng = trainer.sampler.rng = np.random.default_rng(
            [trainer.cfg.seed, trainer.rank, trainer.stage, trainer.step])
    torch.set_rng_state(blob["torch_rng"])


def train_stage_steps(trainer, module: nn.Module, stage: str, total: int, log: StepLog,
                      before_step: Callable[[], None] | None = None,
                      terms: Callable[[dict], dict] = lambda logs: logs) -> None:
    """Run ``trainer`` (step, rank, optim, progress, cfg.checkpoint_every, elapsed, _batch, _save)
    from its current step to ``total`` in one stage: forward ``module`` on a batch, step the
    optimiser, log (rank 0), checkpoint every ``checkpoint_every`` steps, and add the time spent to
    ``trainer.elapsed``. ``before_step`` runs first in every step (e.g. a learning-rate schedule)."""
    t0 = time.perf_counter()
    while trainer.step < total:
        if before_step is not None:
            before_step()
        loss, logs = module(*trainer._batch())
        trainer.optim.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optim.step()
        trainer.step += 1
        if trainer.rank == 0:
            log.write(stage, trainer.step, loss.item(), terms(logs))
            if trainer.progress:
                trainer.progress(stage, trainer.step, total, logs)
        if trainer.step % trainer.cfg.checkpoint_every == 0 and trainer.step < total:
            trainer.elapsed += time.perf_counter() - t0
            t0 = time.perf_counter()
            log.flush()
            trainer._save()
    trainer.elapsed += time.perf_counter() - t0


# ---------------------------------------------------------------------- distributed helpers
def dist_info() -> tuple[int, int]:
    """(rank, world size), initialising torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def barrier(world: int) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if world > 1:
        import torch.distributed as dist
        dist.barrier()


def wrap_ddp(module: nn.Module, world: int) -> nn.Module:
    """``module`` itself in a single process, else wrapped in DistributedDataParallel (gradients
    averaged over the ranks)."""
    if world <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel
    # Ablations leave some parameters without gradients (e.g. D without L_cross and L_self).
    return DistributedDataParallel(module, find_unused_parameters=True)
