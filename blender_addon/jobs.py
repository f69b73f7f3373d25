"""Run the evp-anim CLI in a subprocess and follow its JSON-lines progress (no bpy here).

The CLI's ``--machine-readable`` mode writes one JSON object per line on stderr
(``start`` / ``progress`` with a 0–1 fraction / ``success`` / ``failure``, see
:mod:`evp_anim.progress`). A reader thread moves those lines into a queue, so the Blender side
polls :meth:`CliJob.poll` from a timer without ever blocking the UI.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

DEFAULT_COMMAND = "evp-anim --machine-readable animate {audio} --emotion-keys {keys} -o {output}"


def build_argv(template: str, **values: str) -> list[str]:
    """Split ``template`` like a shell would, then fill ``{audio}``, ``{keys}``, ``{output}``,
    ``{python}`` per argument (so paths with spaces stay one argument).

    The path values are made absolute first: a file named ``-o.wav`` or ``--help.npz`` given as a
    relative path would otherwise be read by the CLI as an option. An absolute path starts with
    ``/`` (or a drive letter), so it is always an argument, whatever the template puts around it.
    """
    values = {k: os.path.abspath(os.fspath(v)) if str(v) else str(v) for k, v in values.items()}
    values["python"] = sys.executable
    try:
        parts = shlex.split(template)
    except ValueError as e:
        raise ValueError(f"bad command template {template!r}: {e}") from None
    if not parts:
        raise ValueError("the regenerate command is empty: set it in the add-on preferences")
    try:
        argv = [p.format(**values) for p in parts]
    except (KeyError, IndexError) as e:
        raise ValueError(f"unknown placeholder {e} in the regenerate command "
                         "(use {audio}, {keys}, {output}, {python})") from None
    exe = shutil.which(argv[0])
    if exe is None and not Path(argv[0]).is_file():
        raise ValueError(f"command {argv[0]!r} not found: install evp-anim or set its full path "
                         "in the add-on preferences")
    return argv


# Regenerate's files live in a per-user cache, never beside the artist's track or audio (a
# project folder under version control or on a shared drive must not fill with run files).
REGEN_KEEP_DAYS = 14.0


def regen_cache_dir() -> Path:
    """Folder for Regenerate's results and emotion-keys files: ``$EVP_ANIM_REGEN_DIR`` if set,
    else ``$XDG_CACHE_HOME/evp-anim/regen`` (default ``~/.cache/evp-anim/regen``), next to the
    add-on's rig cache. Created on demand."""
    env = os.environ.get("EVP_ANIM_REGEN_DIR", "").strip()
    if env:
        d = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME", "")
        d = (Path(base).expanduser() if base.strip() else Path.home() / ".cache") / "evp-anim" / "regen"
    d.mkdir(parents=True, exist_ok=True)
    return d


def regen_paths(stem: str, folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(result .npz, emotion-keys .toml) for a new Regenerate run of the clip named ``stem``, in
    ``folder`` (default :func:`regen_cache_dir`). Names: ``<stem>.regen-<time>-<random>.npz`` and
    the same with ``.keys.toml``; the random part keeps two runs in one second apart."""
    import time
    import uuid
    d = Path(folder) if folder is not None else regen_cache_dir()
    stem = stem.split(".regen")[0] or "evp"
    out = d / f"{stem}.regen-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.npz"
    return out, out.with_suffix(".keys.toml")


def prune_regen_cache(keep=(), max_age_days: float = REGEN_KEEP_DAYS,
                      folder: str | os.PathLike | None = None) -> list[Path]:
    """Delete Regenerate files in the cache older than ``max_age_days`` (results, keys files and
    atomic-write leftovers), except the paths in ``keep`` (the results open heads still export
    from). Emotion-keys files are only inputs of a run and go after an hour. Returns what was
    deleted; files that vanish or cannot be removed meanwhile are skipped."""
    import time
    d = Path(folder) if folder is not None else regen_cache_dir()
    keep = {os.path.abspath(os.fspath(k)) for k in keep if k}
    now = time.time()
    gone = []
    for p in d.glob("*.regen-*"):
        if not p.is_file() or os.path.abspath(p) in keep:
            continue
        limit = 3600.0 if p.name.endswith(".keys.toml") else max_age_days * 86400.0
        try:
            if now - p.stat().st_mtime > limit:
                p.unlink()
                gone.append(p)
        except OSError:
            continue
    for p in d.glob(".*.regen-*"):   # a killed CLI's temporaries (".<name>.*")
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > 3600.0:
                p.unlink()
                gone.append(p)
    return gone


class CliJob:
    """One CLI run. ``state`` is running → success | failure | cancelled.

    Attributes: progress (0–1), task (the CLI's current task name), error (one line on
    failure), log (last stderr lines that were not JSON, for diagnostics).
    """

    def __init__(self, argv: list[str], output: str | os.PathLike, env: dict | None = None):
        self.argv = list(argv)
        self.output = Path(output)
        self.env = env
        self.state = "idle"
        self.progress = 0.0
        self.task = ""
        self.error = ""
        self.log: list[str] = []
        self._success = False
        self._lines: queue.Queue = queue.Queue()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "CliJob":
        self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True, bufsize=1, env=self.env)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.state = "running"
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._lines.put(line)
        self._lines.put(None)  # end of stream

    def _handle(self, line: str) -> None:
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            ev = None
        if not isinstance(ev, dict) or "event" not in ev:
            if line.strip():
                self.log = (self.log + [line.rstrip()])[-20:]
            return
        kind = ev["event"]
        self.task = str(ev.get("task", self.task))
        if kind == "start":
            self.progress = 0.0
        elif kind == "progress":
            with contextlib.suppress(TypeError, ValueError):
                self.progress = min(max(float(ev.get("progress", 0.0)), 0.0), 1.0)
        elif kind == "success":
            self._success = True
        elif kind == "failure":
            self.error = str(ev.get("error", "failed"))

    def poll(self) -> str:
        """Handle the lines that arrived (never blocks); returns ``state``."""
        if self.state != "running":
            return self.state
        ended = False
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                ended = True
                break
            self._handle(line)
        if ended:
            rc = self._proc.wait()
            if rc == 0 and not self.error and self.output.is_file():
                self.state, self.progress = "success", 1.0
            else:
                self.state = "failure"
                if not self.error:
                    why = self.log[-1] if self.log else f"exit status {rc}"
                    self.error = (f"no output written ({why})" if rc == 0 else why)
                self._remove_output()
        return self.state

    def cancel(self) -> None:
        """Stop the subprocess (terminate, then kill) and delete any partial output."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._remove_output()
        self.state = "cancelled"

    def _remove_output(self) -> None:
        # the output itself and the CLI's atomic-write temporaries (".<name>.*" beside it)
        with contextlib.suppress(FileNotFoundError):
            self.output.unlink()
        if self.output.parent.is_dir():
            for p in self.output.parent.glob(f".{self.output.name}.*"):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
