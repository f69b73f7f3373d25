"""Atomic file writes: write to a temporary file beside the target, fsync, then rename.

A killed process therefore never leaves a half-written output under the final name, and two
writers of the same target never share a temporary name (each gets a unique one from
:func:`tempfile.mkstemp`). On any exception the temporary file is removed.

* :func:`atomic_path` — the low-level writer: yields a temporary path, renames it onto the target;
  OS errors pass through unchanged (callers such as the downloader handle them themselves).
* :func:`atomic_output` — the same for user-facing outputs: an :class:`OSError` (disk full,
  permission denied, the folder is a file, ...) becomes a one-line
  :class:`~evp_anim.errors.EvpError`.
* :func:`atomic_output_files` — for writers that make several files named after the target
  (glTF's ``.gltf`` + ``.bin``): a unique hidden folder beside the target, moved into place
  file by file, the target itself last.
* :func:`check_writable` — fail before long work when the output folder cannot take a file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import EvpError


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # makes the rename itself durable; some filesystems refuse a directory fsync, which is harmless
    with contextlib.suppress(OSError):
        _fsync_file(path)


def _plain_mode(path: Path) -> None:
    # mkstemp creates 0600; give the file the mode a plain open() would (0666 minus the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success fsync it and rename it onto ``path``.

    ``suffix`` defaults to the target's own suffix, so writers that pick a format from the
    extension (soundfile, PyAV, numpy) behave the same. The temporary name is unique
    (``.<name>.<random><suffix>``), so concurrent writers of one target do not collide; the last
    rename wins. On any exception the temporary file is removed and the target is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        _plain_mode(tmp_path)
        yield tmp_path
        if fsync:
            _fsync_file(tmp_path)
        os.replace(tmp_path, path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_error(path: str | os.PathLike, err: OSError) -> EvpError:
    """A one-line :class:`EvpError` for an OS error while writing ``path`` (names the fix)."""
    reason = err.strerror or type(err).__name__
    hint = {errno.ENOSPC: "free some space or write elsewhere",
            errno.EDQUOT: "free some space or write elsewhere",
            errno.EACCES: "choose a folder you can write to",
            errno.EPERM: "choose a folder you can write to",
            errno.EROFS: "choose a folder on a writable disk",
            errno.ENOTDIR: "a part of the path is a file, not a folder",
            errno.EEXIST: "a part of the path is a file, not a folder"}.get(err.errno, "")
    return EvpError(f"cannot write {path}: {reason}" + (f" ({hint})" if hint else ""))


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """:func:`atomic_path` for user-facing outputs: any :class:`OSError` (in making the temporary
    file, in the caller's writing, in the rename) becomes a one-line :class:`EvpError`; nothing is
    left behind, neither a partial target nor the temporary file."""
    try:
        with atomic_path(path, suffix=suffix) as tmp:
            yield tmp
    except OSError as e:
        raise write_error(path, e) from None


@contextlib.contextmanager
def atomic_output_files(path: str | os.PathLike, companions: bool = True) -> Iterator[Path]:
    """Yield ``<unique hidden folder beside path>/<path's name>`` for a writer that makes several
    files named after its target (glTF ``.gltf`` + ``.bin``, which refer to each other by name).

    On success every file written in the folder is fsynced and renamed into ``path``'s folder,
    companions first and ``path`` itself last, so the main file never names a missing companion;
    with ``companions=False`` only ``path`` is kept (a writer's by-products are dropped). The
    folder is then removed. On any exception the folder and everything in it are removed.
    OS errors become a one-line :class:`EvpError`, as in :func:`atomic_output`.
    """
    path = Path(path)
    tmp_dir = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        inner = tmp_dir / path.name
        yield inner
        if not inner.is_file():
            raise EvpError(f"the writer of {path} produced no file")
        made = sorted(p for p in tmp_dir.iterdir() if p.is_file() and p.name != path.name) if companions else []
        for p in [*made, inner]:
            _plain_mode(p)
            _fsync_file(p)
        for p in [*made, inner]:
            os.replace(p, path.parent / p.name)
        _fsync_dir(path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def check_writable(path: str | os.PathLike) -> None:
    """EvpError (one line) unless a new file can be created in ``path``'s folder.

    Creates the folder if needed, then creates and removes a probe file, so a read-only folder, a
    parent that is a file, or a full disk's refusal to create files is reported before the work,
    not after it. (Running as root, permission bits do not stop the probe, as they would not stop
    the real write.)
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file name")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise write_error(path, e) from None


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))
