"""Thread limits for small numeric work on a 2-core machine.

numpy's BLAS and torch's OpenMP pools split even tiny products across threads; their idle workers
then spin, taking CPU from the other stage that needs the second core (the GL rasteriser and the
encoder of a preview, pocketsphinx in a child process). These contexts keep a block of such work on
one thread and restore the setting afterwards.
"""

from __future__ import annotations

import contextlib

_CONTROLLER: list = []        # threadpoolctl's ThreadpoolController, made on first use


def one_blas_thread():
    """Context that limits numpy's BLAS to one thread (a no-op context without threadpoolctl).

    One controller is kept: making one (what ``threadpool_limits`` does on every call) lists the
    process's loaded libraries, ~0.8 ms, more than a short track's rig solve."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:                                      # pragma: no cover - pinned dependency
        return contextlib.nullcontext()
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")
