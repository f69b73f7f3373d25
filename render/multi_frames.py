"""Training pairs of several targets at once, for the generic (warm-start) renderer.

:class:`MultiTargetFrames` wraps a list of :class:`~render.data.TargetFrames` (same crop size)
behind TargetFrames' interface (``size``, ``n_train``, ``len``, ``crop(i)``, ``sample(i)`` over
one global index: target 0's frames, then target 1's, ...), plus :meth:`train_ranges`, the
global index range of each target's training frames. :class:`~render.trainer.RenderTrainer`
takes either: with several ranges it draws a target (uniformly) then a clip inside that target's
training frames, so a clip never spans two targets. A plain TargetFrames is one range,
``(0, n_train)``.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from evp_anim.errors import EvpError

from .data import TargetFrames


class MultiTargetFrames:
    """Several targets' frames behind one index (see the module docstring)."""

    generic = True

    def __init__(self, targets: list[TargetFrames], names: list[str] | None = None):
        if not targets:
            raise EvpError("no targets to train on")
        sizes = {t.size for t in targets}
        if len(sizes) != 1:
            raise EvpError(f"all targets must have the same crop size, got {sorted(sizes)}")
        self.targets = list(targets)
        self.names = list(names) if names is not None else [f"target_{k}" for k in range(len(targets))]
        self.size = targets[0].size
        self.offsets = np.cumsum([0] + [len(t) for t in targets]).tolist()   # global index of each target's frame 0
        self.n_train = sum(t.n_train for t in targets)                       # training frames of all targets

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, i: int) -> tuple[int, int]:
        """(target k, its frame j) of global index ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect_right(self.offsets, i) - 1
        return k, i - self.offsets[k]

    def crop(self, i: int) -> np.ndarray:
        k, j = self.locate(i)
        return self.targets[k].crop(j)

    def sample(self, i: int) -> dict[str, np.ndarray]:
        k, j = self.locate(i)
        return self.targets[k].sample(j)

    def train_ranges(self) -> list[tuple[int, int]]:
        """[(first, end) global indices of each target's training frames]."""
        return [(o, o + t.n_train) for o, t in zip(self.offsets, self.targets)]

    def preview_indices(self) -> tuple[int, int]:
        """(a training frame of the first target, a held-out frame of the last)."""
        first, last = self.targets[0], self.targets[-1]
        o = self.offsets[-2]
        held = o + min(len(last) - 1, last.n_train + (len(last) - last.n_train) // 2)
        return first.n_train // 2, held
