"""EVP's pseudo training pairs: one sentence by one speaker in two emotions, aligned by DTW.

Cross-reconstruction compares clip A's frames with clip B's frame by frame, but the two
recordings differ in speech rate. Dynamic time warping on their MFCC finds a monotone path of
frame pairs ``(i, j)``; indexing both clips along it gives two equal-length sequences
(EVP, Sec. 3.2, "Build Pseudo Training Pairs").

All frames here are 25 fps video frames; a clip's features are its (T, 28, 12) MFCC windows
from :func:`evp_anim.audio.features.mfcc_windows`.

File format (``pairs.npz`` at the corpus root, no pickles):

* ``clip_a``, ``clip_b`` — (P,) str, clip ids of each pair (``clip_a < clip_b``)
* ``offsets`` — (P+1,) int64; pair ``p``'s path is ``paths[offsets[p]:offsets[p+1]]``
* ``paths`` — (sum L, 2) int32, frame indices into clip A and clip B, increasing
* ``frames_a``, ``frames_b`` — (P,) int32, frame counts the paths were computed on
* ``cost`` — (P,) float32, DTW cost per path step (mean euclidean distance of matched frames)
* ``version`` — () int, :data:`PAIRS_VERSION`
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import itertools
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..atomic import atomic_path
from ..errors import EvpError
from .manifest import ClipRow

PAIRS_FILE = "pairs.npz"
PAIRS_VERSION = 1

# EVP's constraint: every step advances at least one sequence by one frame, never skips a frame.
STEP_SIZES = np.array([[1, 1], [0, 1], [1, 0]], dtype=np.int64)
# Window rows 12..15 are the four 10 ms MFCC frames inside the video frame itself (its own 40 ms);
# aligning on them rather than the whole 280 ms window keeps neighbouring frames distinguishable.
_CENTRE_ROWS = slice(12, 16)


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous
class Pair:
    """One aligned pair: ``path`` is (L, 2) int, rows ``(i, j)`` = frame i of A matches frame j of B."""

    clip_a: str
    clip_b: str
    path: np.ndarray
    cost: float
    frames_a: int
    frames_b: int


def dtw_path(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Optimal DTW path between sequences ``a`` (Ta, D) and ``b`` (Tb, D): (L, 2) int64.

    Euclidean frame cost, steps (1,0), (0,1), (1,1) only, from (0, 0) to (Ta-1, Tb-1), rows in
    increasing order. ``max(Ta, Tb) <= L <= Ta + Tb - 1``.
    """
    path, _ = _dtw(a, b)
    return path


def _dtw(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    import librosa

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise EvpError(f"DTW needs two (T, D) sequences with the same D, got {a.shape} and {b.shape}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise EvpError(f"DTW needs non-empty sequences, got {a.shape[0]} and {b.shape[0]} frames")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise EvpError("DTW input contains NaN or infinite values; recompute the features")
    acc, wp = librosa.sequence.dtw(X=a.T, Y=b.T, metric="euclidean", step_sizes_sigma=STEP_SIZES)
    path = np.ascontiguousarray(wp[::-1], dtype=np.int64)  # librosa backtracks end → start
    return path, float(acc[-1, -1]) / len(path)


def _frame_features(windows: np.ndarray, what: str) -> np.ndarray:
    w = np.asarray(windows)
    if w.ndim != 3 or w.shape[1:] != (28, 12):
        raise EvpError(f"{what} must be MFCC windows of shape (T, 28, 12), got {w.shape}")
    return w[:, _CENTRE_ROWS, :].reshape(w.shape[0], -1)


def align_pair(windows_a: np.ndarray, windows_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align two clips' MFCC windows (Ta, 28, 12) and (Tb, 28, 12) by DTW.

    The per-frame DTW feature is the frame's own four MFCC rows (window rows 12–15, flattened to
    48 values). Returns ``(a_aligned, b_aligned, path)``: (L, 28, 12) each, taken from the inputs
    along ``path`` (L, 2) int64 from :func:`dtw_path`, so ``a_aligned[k] = windows_a[path[k, 0]]``.
    """
    path = dtw_path(_frame_features(windows_a, "windows_a"), _frame_features(windows_b, "windows_b"))
    return np.asarray(windows_a)[path[:, 0]], np.asarray(windows_b)[path[:, 1]], path


def _default_loader(corpus_root: Path) -> Callable[[ClipRow], np.ndarray]:
    from ..audio.features import mfcc_windows
    from ..audio.io import load_audio

    def load(row: ClipRow) -> np.ndarray:
        if not row.audio:
            raise EvpError(f"clip {row.clip_id} has no audio path in the manifest; fix the manifest row")
        return mfcc_windows(load_audio(corpus_root / row.audio))

    return load


def _group_rng(seed: int, key: tuple[str, str]) -> np.random.Generator:
    # Seeded per group from its key, so a group's sample does not change when others are added.
    digest = hashlib.sha256(f"{seed}\0{key[0]}\0{key[1]}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def plan_pairs(rows: Iterable[ClipRow], max_pairs_per_group: int | None = None,
               seed: int = 0) -> list[tuple[ClipRow, ClipRow]]:
    """Choose the clip pairs: same speaker and sentence, different emotions.

    Every unordered pair ``(a, b)`` with ``a.clip_id < b.clip_id``, or, with
    ``max_pairs_per_group``, a sample of that many per (speaker, sentence) group drawn with a
    generator seeded from ``seed`` and the group, so the choice is reproducible. Sorted by group
    then clip ids.
    """
    if max_pairs_per_group is not None and int(max_pairs_per_group) < 1:
        raise EvpError(f"max_pairs_per_group must be >= 1, got {max_pairs_per_group}")
    groups: dict[tuple[str, str], list[ClipRow]] = {}
    for row in rows:
        groups.setdefault((row.speaker, row.sentence_id), []).append(row)
    chosen: list[tuple[ClipRow, ClipRow]] = []
    for key in sorted(groups):
        clips = sorted(groups[key], key=lambda r: r.clip_id)
        cand = [(a, b) for a, b in itertools.combinations(clips, 2) if a.emotion != b.emotion]
        if max_pairs_per_group is not None and len(cand) > max_pairs_per_group:
            idx = np.sort(_group_rng(seed, key).choice(len(cand), int(max_pairs_per_group), replace=False))
            cand = [cand[i] for i in idx]
        chosen.extend(cand)
    return chosen


def build_pairs(corpus_root: str | os.PathLike, rows: Sequence[ClipRow],
                load_windows: Callable[[ClipRow], np.ndarray] | None = None,
                max_pairs_per_group: int | None = None, seed: int = 0,
                progress: Callable[[float], None] | None = None, workers: int = 1) -> Path:
    """Compute DTW paths for all pairs of ``rows`` (see :func:`plan_pairs`) and write ``pairs.npz``.

    ``load_windows(row)`` returns a clip's (T, 28, 12) MFCC windows; the default loads
    ``corpus_root / row.audio`` and runs :func:`~evp_anim.audio.features.mfcc_windows`. Clips are
    loaded group by group (one speaker × sentence at a time), so memory stays at one group's
    clips. ``workers`` > 1 processes groups in that many threads (decoding and FFTs release the
    GIL). ``progress`` receives the fraction of groups done. Writes
    ``corpus_root/pairs.npz`` atomically (format in the module docstring) and returns its path.

    Raises :class:`EvpError` when no two clips share a speaker and sentence in different emotions.
    """
    corpus_root = Path(corpus_root)
    plan = plan_pairs(rows, max_pairs_per_group, seed)
    if not plan:
        raise EvpError("no DTW pairs: no two clips share a speaker and sentence in different emotions; "
                       "check the manifest's speaker/sentence_id/emotion columns")
    loader = load_windows or _default_loader(corpus_root)

    by_group: dict[tuple[str, str], list[tuple[ClipRow, ClipRow]]] = {}
    for a, b in plan:
        by_group.setdefault((a.speaker, a.sentence_id), []).append((a, b))
    groups = list(by_group.values())

    def run_group(pairs: list[tuple[ClipRow, ClipRow]]) -> list[Pair]:
        feats: dict[str, np.ndarray] = {}
        for row in {r.clip_id: r for ab in pairs for r in ab}.values():
            feats[row.clip_id] = _frame_features(loader(row), f"windows of clip {row.clip_id}")
        out = []
        for a, b in pairs:
            path, cost = _dtw(feats[a.clip_id], feats[b.clip_id])
            out.append(Pair(a.clip_id, b.clip_id, path, cost,
                            feats[a.clip_id].shape[0], feats[b.clip_id].shape[0]))
        return out

    results: list[list[Pair]] = [[] for _ in groups]
    if progress is not None:
        progress(0.0)
    if workers <= 1:
        for gi, g in enumerate(groups):
            results[gi] = run_group(g)
            if progress is not None:
                progress((gi + 1) / len(groups))
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=int(workers)) as pool:
            futures = {pool.submit(run_group, g): gi for gi, g in enumerate(groups)}
            for done, fut in enumerate(concurrent.futures.as_completed(futures), start=1):
                results[futures[fut]] = fut.result()
                if progress is not None:
                    progress(done / len(groups))
    out_path = corpus_root / PAIRS_FILE
    _write_pairs(out_path, [p for group in results for p in group])
    return out_path


def _write_pairs(path: Path, pairs: list[Pair]) -> None:
    lengths = np.array([len(p.path) for p in pairs], dtype=np.int64)
    arrays = dict(
        version=np.array(PAIRS_VERSION),
        clip_a=np.array([p.clip_a for p in pairs], dtype=str),
        clip_b=np.array([p.clip_b for p in pairs], dtype=str),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        paths=(np.concatenate([p.path for p in pairs]) if pairs else np.zeros((0, 2))).astype(np.int32),
        frames_a=np.array([p.frames_a for p in pairs], dtype=np.int32),
        frames_b=np.array([p.frames_b for p in pairs], dtype=np.int32),
        cost=np.array([p.cost for p in pairs], dtype=np.float32),
    )
    with atomic_path(path, suffix=".npz") as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, **arrays)


def load_pairs(path: str | os.PathLike) -> list[Pair]:
    """Read ``pairs.npz`` (a file, or a corpus folder holding one) back into a list of :class:`Pair`."""
    path = Path(path)
    if path.is_dir():
        path = path / PAIRS_FILE
    if not path.is_file():
        raise EvpError(f"pairs file not found: {path}; run build_pairs (the pairs step of `evp-anim`) first")
    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["version"])
            if version != PAIRS_VERSION:
                raise EvpError(f"{path} has pairs format version {version}, this evp-anim reads "
                               f"{PAIRS_VERSION}; rebuild the pairs")
            clip_a, clip_b = z["clip_a"], z["clip_b"]
            offsets, paths = z["offsets"], z["paths"].astype(np.int64)
            frames_a, frames_b, cost = z["frames_a"], z["frames_b"], z["cost"]
    except EvpError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise EvpError(f"{path} is not a valid pairs file ({e}); rebuild the pairs") from None
    n = len(clip_a)
    if not (len(clip_b) == len(frames_a) == len(frames_b) == len(cost) == n and len(offsets) == n + 1
            and offsets[-1] == len(paths)):
        raise EvpError(f"{path} is inconsistent (array lengths disagree); rebuild the pairs")
    return [Pair(str(clip_a[i]), str(clip_b[i]), paths[offsets[i]:offsets[i + 1]], float(cost[i]),
                 int(frames_a[i]), int(frames_b[i])) for i in range(n)]
