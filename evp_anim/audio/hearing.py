"""Hear a clip in a child process while the parent starts up (issue 17: `animate` of a short clip
in a cold process).

``evp-anim animate`` with a recogniser front end does two long things before its first frame:
import torch and load the model (~1.7 s), and run pocketsphinx (~1.3 s for a 2 s clip: the
language model and the 130,000-word dictionary loaded twice, once for the search and once for
the aligner, then the search). Pocketsphinx holds the GIL throughout, so a thread cannot overlap
the two; a process forked before torch is imported can, and on two cores the start-up then costs
the longer of the two instead of their sum.

A batch (``animate DIR -o OUT/``) uses the same child to hear the next clip while this one is heard
(``_Hearings`` in :mod:`evp_anim.models.commands`): two clips at once on two cores.

:class:`BackgroundHearing` forks that process: it reads the file and calls
:func:`~evp_anim.audio.phones.speech_content` exactly as ``animate`` would in-process, and sends
back the :class:`~evp_anim.audio.phones.SpeechContent`, its warnings and its progress.
:meth:`BackgroundHearing.result` gives the content, or None when the child could not (no ``fork``
on this platform, the file unreadable, the recogniser failing, the child killed): the caller then
hears the clip itself, which gives the user the very error or result the in-process path gives.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Callable


class BackgroundHearing:
    """``speech_content(load_audio(path), text, recogniser=recogniser)`` computed in a forked child.

    Start it before anything heavy is imported (the child is a copy of this process: forking a
    process that has imported torch or started threads is slower and less safe). ``recogniser``
    is ``"words"`` or ``"phones"``; ``text`` a transcript or None.
    """

    def __init__(self, path: str | os.PathLike, text: str | None, recogniser: str):
        self.path = Path(path)
        # The child flushes its copies of stdout / stderr when it ends: whatever this process
        # still holds in them would be written twice (JSON lines to a pipe are block-buffered).
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        ctx = multiprocessing.get_context("fork")
        self._conn, child_end = ctx.Pipe(duplex=False)
        # daemon: the child is ended with this process (an error before its result is read).
        self._proc = ctx.Process(target=_hear_in_child, args=(child_end, str(self.path), text, recogniser),
                                 daemon=True, name="evp-anim-hearing")
        self._proc.start()
        child_end.close()           # only the child writes; EOF here when it is gone

    @classmethod
    def start(cls, path: str | os.PathLike, text: str | None, recogniser: str) -> "BackgroundHearing | None":
        """A started :class:`BackgroundHearing`, or None where processes cannot be forked
        (Windows) or the fork fails (no memory, a process limit): the caller hears in-process."""
        if "fork" not in multiprocessing.get_all_start_methods():
            return None
        try:
            return cls(path, text, recogniser)
        except OSError:
            return None

    def result(self, warn: Callable[[str], None] | None = None,
               progress: Callable[[float], None] | None = None):
        """The child's :class:`~evp_anim.audio.phones.SpeechContent`, or None if it has none.

        Waits for the child; ``progress(fraction)`` is told the recogniser's progress as it comes
        (``speech_content``'s ``progress``) and, on success only, ``warn`` gets the warnings the
        recogniser or the aligner gave (default: :mod:`warnings`), so that a failed child followed
        by the caller's own run does not warn twice. Call it once."""
        told: list[str] = []
        content = None
        try:
            while True:
                kind, value = self._conn.recv()
                if kind == "progress":
                    if progress is not None:
                        progress(value)
                elif kind == "warn":
                    told.append(value)
                else:
                    content = value if kind == "done" else None
                    break
        except (EOFError, OSError):          # the child died without a word (killed, out of memory)
            content = None
        finally:
            self.close()
        if content is not None:
            for message in told:
                (warn or (lambda m: warnings.warn(m, stacklevel=3)))(message)
        return content

    def close(self) -> None:
        """Stop waiting: close the pipe and end the child if it is still running."""
        self._conn.close()
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()


def _hear_in_child(conn, path: str, text: str | None, recogniser: str) -> None:
    """The child: what ``animate`` does in-process for a recogniser front end, each outcome sent
    as ``(kind, value)``: ``("progress", fraction)``, ``("warn", message)``, then
    ``("done", SpeechContent)`` or ``("failed", None)``."""
    # Ctrl-C goes to the whole process group: the parent handles it and ends this child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from .io import load_audio
        from .phones import speech_content
        # The parent reads the file again as it animates and gives its warnings (a truncated
        # WAV) itself: dropped here so they are not given twice.
        audio = load_audio(path, warn=lambda m: None)
        content = speech_content(audio, text, warn=lambda m: conn.send(("warn", m)),
                                 recogniser=recogniser, progress=lambda f: conn.send(("progress", f)))
        conn.send(("done", content))
    except BaseException:  # noqa: BLE001 - any failure: the parent hears in-process and reports it
        try:
            conn.send(("failed", None))
        except (OSError, ValueError):
            pass
    finally:
        conn.close()
