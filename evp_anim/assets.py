"""The Surrey Face Model (SFM) files: where to find them, how to download and verify them.

The files are never shipped with evp-anim (the model's licence forbids redistribution for
commercial use). They come unchanged from ``share/`` of github.com/patrikhuber/eos at a pinned
commit; their sha256 sums are embedded below, so a download is checked byte for byte.

Lookup order (:func:`find_sfm_dir`): an explicit ``--sfm-dir`` → the environment variable
``EVP_ANIM_SFM_DIR`` → the per-user cache ``$XDG_CACHE_HOME/evp-anim/sfm`` (default
``~/.cache/evp-anim/sfm``), which is where ``evp-anim assets download`` puts them.

The download treats both the server and the destination folder as not its own (issue 15): it
reads at most each file's pinned size, writes to a unique temporary file that any failure or
interrupt removes, and never deletes or replaces a file in ``--dest`` that it did not create
(see :func:`download_sfm`).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from .atomic import write_error
from .errors import EvpError

SFM_LICENCE = (
    "The Surrey Face Model (sfm_shape_3448.bin and the files derived from it) is free for "
    "non-commercial use only; commercial use needs a licence from cvssp.org/facemodel."
)

EOS_REPO = "patrikhuber/eos"
EOS_COMMIT = "ce984207a51c2edd2e7568a64fec9b98ef61aeed"  # eos 1.5.0
SFM_URL_PATTERN = "https://raw.githubusercontent.com/patrikhuber/eos/{commit}/share/{file}"
DEFAULT_BASE_URL = SFM_URL_PATTERN.format(commit=EOS_COMMIT, file="").rstrip("/")

ENV_VAR = "EVP_ANIM_SFM_DIR"

# sha256 and size in bytes of every file of share/ at EOS_COMMIT that evp-anim uses.
# The size lets progress be reported in bytes before a download starts.
SFM_FILES: dict[str, tuple[str, int]] = {
    "expression_blendshapes_3448.bin": ("a77c81712fc5e8b08a1be4cd2824d51514e5bde6578109ae5240dfb3489efd43", 248400),
    "ibug_to_sfm.txt": ("810810c457184526c7d54305ecbc5da764e2431b5e66025d921a7d424aebfac9", 3166),
    "readme.txt": ("57742d6348d04faf051e0066d93df7f2499d874068f8aab89fb8bb051cd02105", 2129),
    "sfm_3448_edge_topology.json": ("5934e5ec34dd6779fda06d28a1f8d02ca9a238bff882e5ccd6da5af9fffe61d5", 1861240),
    "sfm_model_contours.json": ("c9e69bfa995ab19ac6b27abb07729eb0520a00bb192be12426ca6bce76f3fded", 679),
    "sfm_reference.obj": ("1ac929fc7db5a2ec5a1bc9160b92cf8478a360866422a35105717dbc5992ca56", 45107),
    "sfm_reference_annotated.obj": ("f4b016f7f9442658c81855695ba591affab79066cbf0de937a3802ae27fdb9cf", 47564),
    "sfm_reference_symmetry.txt": ("d26e02dbb2cf72bfa88bc6bf6f175bf261bae7aff00509cc0ff277675f2fff47", 3447),
    "sfm_shape_3448.bin": ("43750338ae533e7fb981e924b6f67ebde3d292f15ec4fc886ae5af14308ad980", 2784392),
}

# The files the fitting and rig code cannot work without; the others (readme, reference meshes)
# are downloaded too but a folder without them is still usable.
REQUIRED_FILES: tuple[str, ...] = (
    "sfm_shape_3448.bin",
    "expression_blendshapes_3448.bin",
    "ibug_to_sfm.txt",
    "sfm_model_contours.json",
    "sfm_reference_symmetry.txt",
    "sfm_3448_edge_topology.json",
)

_FIX = "run `evp-anim assets download`, or pass --sfm-dir / set EVP_ANIM_SFM_DIR to a folder holding them"
_CHUNK = 1 << 16
_TIMEOUT_S = 60.0


def default_cache_dir() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/evp-anim/sfm`` (default ``~/.cache/evp-anim/sfm``)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base).expanduser() if base.strip() else Path.home() / ".cache"
    return root / "evp-anim" / "sfm"


def _missing_required(path: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if not (path / name).is_file()]


def find_sfm_dir(sfm_dir: str | os.PathLike | None = None) -> Path:
    """Return the folder holding the SFM files.

    Looks, in order, at ``sfm_dir`` (the CLI's ``--sfm-dir``), ``$EVP_ANIM_SFM_DIR``, then the
    per-user cache. An explicit argument or a set environment variable is taken as the user's
    choice: if it lacks a required file the search stops there with an error rather than falling
    back silently to another copy. Only checks that :data:`REQUIRED_FILES` exist (cheap); use
    :func:`verify_sfm_dir` to check their sums.

    Raises :class:`EvpError` (one line naming where it looked and the fix) when none is usable.
    """
    if sfm_dir is not None and str(sfm_dir).strip():
        path, origin = Path(sfm_dir).expanduser(), "--sfm-dir"
    elif os.environ.get(ENV_VAR, "").strip():
        path, origin = Path(os.environ[ENV_VAR]).expanduser(), ENV_VAR
    else:
        path, origin = default_cache_dir(), "the per-user cache"
    if not path.is_dir():
        raise EvpError(f"SFM files not found: {path} ({origin}) does not exist; {_FIX}")
    missing = _missing_required(path)
    if missing:
        raise EvpError(f"SFM files not found: {path} ({origin}) lacks {', '.join(missing)}; {_FIX}")
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sfm_dir(path: str | os.PathLike) -> list[str]:
    """Check a folder of SFM files; return the problems found (empty list = all good).

    Every required file must exist; every known file that exists must have its pinned sha256
    (a missing optional file is not a problem). Each problem is one human-readable line.
    """
    path = Path(path)
    if not path.is_dir():
        return [f"{path} is not a folder"]
    problems = [f"{name}: missing" for name in _missing_required(path)]
    for name, (digest, _size) in SFM_FILES.items():
        f = path / name
        if f.is_file():
            got = sha256_file(f)
            if got != digest:
                problems.append(f"{name}: sha256 {got} differs from the pinned {digest}")
    return problems


def _file_url(base_url: str, name: str) -> str:
    return base_url.rstrip("/") + "/" + name


# Temporary download files: ``.<name>.<pid>.<random>.evp-part`` in the destination folder. The pid
# lets a later run tell a leftover of a killed download (SIGKILL cannot be caught) from the
# temporary file of a download still running in another process.
_PART_SUFFIX = ".evp-part"
_PART_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+" + re.escape(_PART_SUFFIX) + "$")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:          # EPERM: the process exists but belongs to someone else
        return True
    return True


def _remove_stale_parts(dest: Path) -> None:
    """Remove temporary files that a killed earlier download left in ``dest``: only names this module
    makes (one of :data:`SFM_FILES`, then the pid of a process that no longer runs), never anything
    else in the folder."""
    for p in dest.glob("." + "*" + _PART_SUFFIX):
        m = _PART_RE.match(p.name)
        if m and m["name"] in SFM_FILES and not _pid_alive(int(m["pid"])) and p.is_file() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()


def _one_line(reason: object) -> str:
    text = str(reason).strip()
    return text.splitlines()[0] if text else type(reason).__name__


def _install(tmp: Path, target: Path) -> None:
    """Move the verified ``tmp`` to ``target`` without ever replacing a file: a hard link fails if
    ``target`` appeared meanwhile (another process, the user); where the filesystem has no hard
    links, a check then a rename (the race window is tiny, and the file was absent a moment ago)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise EvpError(f"{target} appeared while it was being downloaded; it was left as it is: "
                       "check it, then retry `evp-anim assets download`") from None
    except OSError:
        if target.exists() or target.is_symlink():
            raise EvpError(f"{target} appeared while it was being downloaded; it was left as it is: "
                           "check it, then retry `evp-anim assets download`") from None
        os.rename(tmp, target)
        return
    tmp.unlink()


def _fetch(url: str, target: Path, digest: str, size: int, on_bytes: Callable[[int], None]) -> None:
    """Download ``url`` into a unique temporary file beside ``target``, reading at most ``size`` bytes
    (one more is an error: a server that keeps streaming cannot fill the disk), check the sha256,
    then move it to ``target``. On any failure or interrupt (KeyboardInterrupt, which is also how
    the CLI delivers SIGTERM) the temporary file is removed; ``target`` is never written otherwise."""
    tmp: Path | None = None
    try:
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=_PART_SUFFIX,
                                            dir=target.parent)
        except OSError as e:
            raise write_error(target, e) from None
        tmp = Path(tmp_name)
        h = hashlib.sha256()
        got = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            declared = (resp.headers.get("Content-Length") or "").strip()
            if declared.isdigit() and int(declared) > size:
                raise EvpError(f"download of {url} announces {int(declared)} bytes, more than the {size} "
                               f"bytes of the pinned file; refused (pass --base-url pointing at eos commit "
                               f"{EOS_COMMIT})")
            while True:
                chunk = resp.read(min(_CHUNK, size + 1 - got))
                if not chunk:
                    break
                got += len(chunk)
                if got > size:
                    raise EvpError(f"download of {url} sent more than the {size} bytes of the pinned file; "
                                   f"stopped and removed it (pass --base-url pointing at eos commit {EOS_COMMIT})")
                h.update(chunk)
                try:
                    out.write(chunk)
                except OSError as e:
                    raise write_error(target, e) from None
                on_bytes(len(chunk))
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as e:
                raise write_error(target, e) from None
        if h.hexdigest() != digest:   # also a short (incomplete) transfer
            raise EvpError(
                f"download of {url} has sha256 {h.hexdigest()} ({got} bytes), not the pinned {digest} "
                f"({size} bytes); the server sent a different or incomplete file: retry, or pass "
                f"--base-url pointing at eos commit {EOS_COMMIT}")
        try:
            os.chmod(tmp, 0o666 & ~_umask())
            _install(tmp, target)
        except OSError as e:
            raise write_error(target, e) from None
        tmp = None
        with contextlib.suppress(OSError):
            dfd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except EvpError:
        raise
    except urllib.error.HTTPError as e:
        raise EvpError(f"download of {url} failed: HTTP {e.code} {_one_line(e.reason)}; check --base-url "
                       "and your connection, then retry `evp-anim assets download`") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = _one_line(getattr(e, "reason", None) or e)
        raise EvpError(f"download of {url} failed: {reason}; check --base-url and your connection, "
                       "then retry `evp-anim assets download`") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def download_sfm(dest: str | os.PathLike | None = None, base_url: str | None = None,
                 progress: Callable[[float], None] | None = None) -> Path:
    """Download every SFM file into ``dest``, verify its sha256 and return ``dest``.

    ``dest`` defaults to ``$EVP_ANIM_SFM_DIR`` if set, else the per-user cache (so that
    :func:`find_sfm_dir` then finds the files). ``base_url`` is the folder URL the file names are
    appended to (``https://``, ``http://`` or ``file://``); it defaults to the pinned commit's raw
    GitHub URL. ``progress`` receives the fraction of bytes done, in [0, 1].

    ``dest`` may be any folder, so the download never touches a file it did not create: files
    already present with the right sum are skipped, and a file under one of the SFM names with
    another content is the user's (or a damaged copy): that is an error before anything is fetched,
    naming the file, never a deletion. Each file goes to a unique temporary name (removed on any
    failure or interrupt; a leftover of a killed run is removed by the next one), at most its
    pinned size is read, and it is moved into place only after its sum matched, without replacing
    anything that appeared meanwhile.

    Raises :class:`EvpError` (one line) on the first failure; files completed before it stay.
    """
    if dest is None or not str(dest).strip():
        env = os.environ.get(ENV_VAR, "").strip()
        dest = Path(env).expanduser() if env else default_cache_dir()
    dest = Path(dest).expanduser()
    base_url = (base_url or DEFAULT_BASE_URL).strip()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvpError(f"cannot create the SFM folder {dest}: {e.strerror}; choose another with --sfm-dir") from None
    if not dest.is_dir():
        raise EvpError(f"{dest} is not a folder; choose another with --dest")
    _remove_stale_parts(dest)

    present = set()
    for name, (digest, _size) in SFM_FILES.items():
        target = dest / name
        if not (target.exists() or target.is_symlink()):
            continue
        if target.is_file() and sha256_file(target) == digest:
            present.add(name)
            continue
        raise EvpError(f"{target} exists and is not the pinned {name}; evp-anim does not overwrite files "
                       "it did not create: move or delete it, or choose another --dest")

    total = sum(size for _, size in SFM_FILES.values())
    done = 0

    def report(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(min(1.0, done / total))

    if progress is not None:
        progress(0.0)
    for name, (digest, size) in SFM_FILES.items():
        if name in present:
            report(size)
            continue
        start = done
        _fetch(_file_url(base_url, name), dest / name, digest, size, report)
        done = start + size
    if progress is not None:
        progress(1.0)
    return dest
