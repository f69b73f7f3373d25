"""Work shared with a forked copy of this process: the second core of a laptop, for work that
holds the GIL or is made of many small numpy calls (threads could not share it).

``os.fork`` itself, not :mod:`multiprocessing`: the work can run in ``animate``'s hearing child, a
daemon process, which multiprocessing does not let have children; and a fork shares the
process's loaded models and arrays with the copy until either writes to them, so nothing is sent
but the results. Used by the word front end (the later half of a clip's utterances,
:func:`evp_anim.audio.phones.recognize_words`: seconds of work an utterance). A worker that fails
leaves its work to the caller, which does it itself: the result never depends on whether the
worker ran.

It pays only for work much longer than a fork's cost. Measured (Xeon, 2 cores): EVP's network
and rig solve on the later half of 60 s of speech in a forked worker took 111 ms against 98 ms in
one process — every page either process writes is copied first, ~5,000 page faults each, and
both halves ran ~1.3x slower than alone.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Hashable, Iterable


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                  # not Linux
        return os.cpu_count() or 1


def can_fork_work() -> bool:
    """Whether sharing work with a forked copy can pay: two usable cores, ``os.fork``, and no
    other Python thread in this process (a fork copies only the calling thread: a lock another
    thread held, e.g. logging's, would stay held in the copy)."""
    import threading
    return usable_cores() >= 2 and hasattr(os, "fork") and threading.active_count() == 1


def end_with_parent() -> None:
    """Have the kernel end this (forked) process when its parent ends (Linux ``PR_SET_PDEATHSIG``):
    a parent killed outright (``animate``'s hearing child is ended by SIGTERM when the command is
    interrupted) runs no cleanup, and the worker would otherwise finish its work first."""
    try:
        import ctypes
        import signal
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)   # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):      # not Linux: the worker stops at its next item
        pass


class ForkedWorker:
    """A forked copy of this process that computes ``run(key)`` for each of ``keys``, in order, and
    sends each ``(key, result)`` back as it is done (:meth:`collect`). Results must pickle."""

    def __init__(self, run: Callable[[Hashable], Any], keys: Iterable[Hashable]):
        import multiprocessing
        import signal
        keys = list(keys)
        self.keys = set(keys)
        self._conn, child_end = multiprocessing.Pipe(duplex=False)
        parent = os.getpid()
        self._pid = os.fork()
        if self._pid == 0:                                  # the worker
            code = 1
            try:
                # Ctrl-C reaches the whole process group: the parent handles it and ends this one.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                end_with_parent()
                self._conn.close()
                for key in keys:
                    if os.getppid() != parent:              # the parent is gone: nobody to tell
                        break
                    child_end.send((key, run(key)))
                else:
                    code = 0
            except BaseException:  # noqa: BLE001 - any failure: the parent does this work itself
                pass
            finally:
                os._exit(code)                             # never the parent's cleanup or atexit
        child_end.close()

    @classmethod
    def start(cls, run: Callable[[Hashable], Any], keys: list, use: bool) -> "ForkedWorker | None":
        """A started worker for ``keys``, or None (nothing to share, ``use`` false, or the fork
        failed: the caller does everything itself)."""
        if not keys or not use:
            return None
        try:
            return cls(run, keys)
        except OSError:
            return None

    @property
    def pid(self) -> int:
        return self._pid

    def collect(self, into, wait: bool = False) -> bool:
        """Put the results that have arrived into ``into`` (``into[key] = result``; with ``wait``:
        wait for the next one, and only that). False when the worker has nothing more to send
        (done, or died: the caller does the rest itself)."""
        try:
            while wait or self._conn.poll():
                key, result = self._conn.recv()
                into[key] = result
                if wait:
                    break
        except (EOFError, OSError):
            return False
        return True

    def close(self) -> None:
        """End the worker if it is still running and reap it."""
        self._conn.close()
        try:
            if os.waitpid(self._pid, os.WNOHANG) == (0, 0):
                import signal
                os.kill(self._pid, signal.SIGTERM)
                os.waitpid(self._pid, 0)
        except ChildProcessError:
            pass
