"""Progress reporting for long jobs: rich bars for people, JSON lines for programs.

With ``machine_readable=True`` every event is one JSON object per line on stderr, so the Blender
add-on (or any tool) can drive the CLI::

    {"event": "start", "task": "synth", "total": 3520}
    {"event": "progress", "task": "synth", "progress": 0.25, "done": 880, "total": 3520}
    {"event": "success", "task": "synth", "output": "corpus/"}
    {"event": "failure", "task": "synth", "error": "espeak-ng not found: ..."}

``progress`` is a fraction in [0, 1]; ``done`` and ``total`` count the task's steps (``animate``:
frames at 25 fps; ``total`` is null when unknown). Progress lines are rate-limited (at most ~10
per second; the line that reaches the total is always sent). Fields given to :meth:`Reporter.start`
(e.g. ``animate`` over several files: ``input``, ``index``, ``count``) are repeated in every line
of that task, so a program can tell the files' lines apart::

    {"event": "start", "task": "animate", "total": 105, "input": "in/a.wav", "index": 1, "count": 20}
    {"event": "progress", "task": "animate", "progress": 1.0, "done": 105, "total": 105, "input": "in/a.wav", ...}
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class Reporter:
    """Reports start / progress / success / failure of named tasks."""

    def __init__(self, machine_readable: bool = False, quiet: bool = False, stream: TextIO | None = None):
        self.machine_readable = machine_readable
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._bar = None
        self._task_id = None
        self._last = 0.0
        self._task = ""
        self._total: int | None = None
        self._fields: dict[str, Any] = {}     # the current task's extra fields (see start)

    # -- JSON lines -----------------------------------------------------------------
    def _emit(self, **obj: Any) -> None:
        self.stream.write(json.dumps(obj) + "\n")
        self.stream.flush()

    # -- API ------------------------------------------------------------------------
    def start(self, task: str, total: int | None = None, description: str | None = None,
              **fields: Any) -> None:
        """Begin a task of ``total`` steps (None when unknown). ``fields`` (JSON values, e.g.
        ``input=path``) go into this line and every later line of the task."""
        self._stop_bar()          # a previous task's bar that was never closed
        self._task, self._total, self._last, self._fields = task, total, 0.0, dict(fields)
        if self.machine_readable:
            self._emit(event="start", task=task, total=total, **self._fields)
        elif not self.quiet:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            from rich.console import Console
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
                                 console=Console(file=self.stream))
            self._bar.start()
            self._task_id = self._bar.add_task(description or task, total=total)

    def update(self, done: int, total: int | None = None, **extra: Any) -> None:
        """Report ``done`` steps finished so far; ``total`` replaces the task's total when given
        (a total estimated up front and corrected once known exactly). ``extra`` (JSON values, e.g.
        ``steps_per_s``, ``eta_s``) goes into this progress line only (machine-readable mode)."""
        if total is not None:
            self._total = total
        if self.machine_readable:
            now = time.monotonic()
            if now - self._last >= 0.1 or (self._total is not None and done >= self._total):
                self._last = now
                frac = done / self._total if self._total else 0.0
                self._emit(event="progress", task=self._task, progress=round(min(frac, 1.0), 4),
                           done=done, total=self._total, **{**self._fields, **extra})
        elif self._bar is not None:
            if total is not None:
                self._bar.update(self._task_id, completed=done, total=total)
            else:
                self._bar.update(self._task_id, completed=done)

    def fraction(self, frac: float, **extra: Any) -> None:
        """Report progress as a fraction in [0, 1] (for tasks without a step count); ``extra`` as
        in :meth:`update`."""
        if self._total is None:
            self._total = 1000
            if self._bar is not None:
                self._bar.update(self._task_id, total=1000)
        self.update(int(round(frac * self._total)), **extra)

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def success(self, **fields: Any) -> None:
        """The task finished; ``fields`` (e.g. output=path) go into the JSON line."""
        self._stop_bar()
        if self.machine_readable:
            self._emit(event="success", task=self._task, **{**self._fields, **fields})
        self._fields = {}

    def failure(self, error: str, task: str | None = None, **fields: Any) -> None:
        """The task failed with a one-line ``error`` (``task`` names it when none was started;
        ``fields`` go into the line, after the task's own)."""
        self._stop_bar()
        if self.machine_readable:
            self._emit(event="failure", task=self._task or task or "", error=error, **{**self._fields, **fields})
        self._fields = {}

    def info(self, message: str) -> None:
        """A human-readable note (suppressed in machine-readable and quiet modes). While a bar is
        shown the note goes through the bar's console, which prints it above the bar instead of
        through it."""
        if not self.machine_readable and not self.quiet:
            if self._bar is not None:
                self._bar.console.print(message, markup=False, highlight=False, soft_wrap=True)
                return
            self.stream.write(message + "\n")
            self.stream.flush()

    def warning(self, message: str) -> None:
        """A warning: the line ``warning: <message>`` for people (also in quiet mode: it asks for
        action), ``{"event": "warning", "task": ..., "message": ...}`` in machine-readable mode
        (readers that do not know the event skip it)."""
        if self.machine_readable:
            self._emit(event="warning", task=self._task, message=message, **self._fields)
            return
        if self._bar is not None:
            self._bar.console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
            return
        self.stream.write(f"warning: {message}\n")
        self.stream.flush()
