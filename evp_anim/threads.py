"""Thread limits for small numeric work on a 2-core machine.

numpy's BLAS and torch's OpenMP pools split even tiny products across threads; their idle workers
then spin, taking CPU from the other stage that needs the second core (the GL rasteriser and the
encoder of a preview, pocketsphinx in a child process). These contexts keep a block of such work on
one thread (:func:`one_blas_thread`, :func:`torch_threads`) and restore the setting afterwards.
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


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run the enclosed torch ops on at most ``n`` CPU threads, then restore this thread's setting
    (left alone when it is already ``n`` or fewer). Small networks and step-by-step recurrences
    gain nothing from more: the EVP LSTM's 500 small steps a call cost 16 ms on two threads against
    11.5 ms on one (each step wakes a sleeping OpenMP worker, ``OMP_WAIT_POLICY=PASSIVE``), with
    outputs the same to the bit (tests/test_speed_paths.py); extra threads only fight other jobs."""
    import torch
    before = torch.get_num_threads()
    if before <= n:
        yield
        return
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
