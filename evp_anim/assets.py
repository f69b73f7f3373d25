"""The Surrey Face Model (SFM) files: where to find them, how to download and verify them.

The files are never shipped with evp-anim (the model's licence forbids redistribution for
commercial use). They come unchanged from ``share/`` of github.com/patrikhuber/eos at a pinned
commit; their sha256 sums are embedded below, so a download is checked byte for byte.

Lookup order (:func:`find_sfm_dir`): an explicit ``--sfm-dir`` → the environment variable
``EVP_ANIM_SFM_DIR`` → the per-user cache ``$XDG_CACHE_HOME/evp-anim/sfm`` (default
``~/.cache/evp-anim/sfm``), which is where ``evp-anim assets download`` puts them.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from .atomic import atomic_path
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


def _fetch(url: str, target: Path, digest: str, on_bytes: Callable[[int], None]) -> None:
    """Download ``url`` to ``target`` atomically, failing (and leaving nothing) on a bad sum."""
    try:
        with atomic_path(target) as tmp:
            h = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp, tmp.open("wb") as out:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
                    on_bytes(len(chunk))
            if h.hexdigest() != digest:
                raise EvpError(
                    f"download of {url} has sha256 {h.hexdigest()}, not the pinned {digest}; "
                    "the server sent a different file: retry, or pass --base-url pointing at eos "
                    f"commit {EOS_COMMIT}")
    except EvpError:
        raise
    except urllib.error.HTTPError as e:
        raise EvpError(f"download of {url} failed: HTTP {e.code} {e.reason}; check --base-url "
                       "and your connection, then retry `evp-anim assets download`") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise EvpError(f"download of {url} failed: {reason}; check --base-url and your connection, "
                       "then retry `evp-anim assets download`") from None


def download_sfm(dest: str | os.PathLike | None = None, base_url: str | None = None,
                 progress: Callable[[float], None] | None = None) -> Path:
    """Download every SFM file into ``dest``, verify its sha256 and return ``dest``.

    ``dest`` defaults to ``$EVP_ANIM_SFM_DIR`` if set, else the per-user cache (so that
    :func:`find_sfm_dir` then finds the files). ``base_url`` is the folder URL the file names are
    appended to (``https://``, ``http://`` or ``file://``); it defaults to the pinned commit's raw
    GitHub URL. Files already present with the right sum are skipped. Each file is written to a
    temporary name and renamed only after its sum matched, so a failure (HTTP error, refused
    connection, wrong sum) never leaves a partial or wrong file under a final name; a file that was
    already present but wrong is removed before it is fetched again. ``progress`` receives the
    fraction of bytes done, in [0, 1].

    Raises :class:`EvpError` on the first failure; files completed before it stay.
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
        target = dest / name
        if target.is_file():
            if sha256_file(target) == digest:
                report(size)
                continue
            try:
                target.unlink()  # a wrong copy must not survive a failed re-download
            except OSError as e:
                raise EvpError(f"cannot replace the wrong file {target}: {e.strerror}; delete it and retry") from None
        start = done
        _fetch(_file_url(base_url, name), target, digest, report)
        done = start + size  # the real byte count may differ only if the sum failed (raised above)
    if progress is not None:
        progress(1.0)
    return dest
