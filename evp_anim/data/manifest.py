"""The corpus manifest: one row per clip, the same for the synthetic corpus and real corpora.

Written as ``manifest.csv`` at the corpus root. Paths are relative to that root, so a corpus
folder can be moved. Splits hold out whole speakers and whole sentences:

* ``train``          — training speaker, training sentence
* ``test_speaker``   — held-out speaker, training sentence
* ``test_sentence``  — training speaker, held-out sentence
* ``test_both``      — held-out speaker and held-out sentence
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Iterable

from ..atomic import write_text_atomic
from ..emotions import EMOTIONS
from ..errors import EvpError

SPLITS: tuple[str, ...] = ("train", "test_speaker", "test_sentence", "test_both")


@dataclasses.dataclass(frozen=True)
class ClipRow:
    """One clip of a corpus.

    ``audio``/``video``/``track`` are paths relative to the corpus root ('' when absent);
    ``intensity`` is in [0, 1] (MEAD level / 3); ``n_frames`` at 25 fps (0 when unknown).
    """

    clip_id: str
    speaker: str
    sentence_id: str
    emotion: str
    level: int
    intensity: float
    split: str
    audio: str = ""
    video: str = ""
    track: str = ""
    text: str = ""
    n_frames: int = 0
    duration_s: float = 0.0
    corpus: str = "synthetic"


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ClipRow))


def split_for(speaker_held_out: bool, sentence_held_out: bool) -> str:
    """Split name for a clip whose speaker and/or sentence is held out."""
    if speaker_held_out and sentence_held_out:
        return "test_both"
    if speaker_held_out:
        return "test_speaker"
    if sentence_held_out:
        return "test_sentence"
    return "train"


def write_manifest(path: str | Path, rows: Iterable[ClipRow]) -> None:
    """Write rows to ``path`` as CSV (atomically), sorted by clip id."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for r in sorted(rows, key=lambda r: r.clip_id):
        w.writerow(dataclasses.asdict(r))
    write_text_atomic(path, buf.getvalue())


def read_manifest(path: str | Path) -> list[ClipRow]:
    """Read a manifest CSV, validating columns, emotions and splits."""
    path = Path(path)
    if not path.is_file():
        raise EvpError(f"manifest not found: {path} (make a corpus with `evp-anim synth` first)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(FIELDS) - set(reader.fieldnames or ())
        if missing:
            raise EvpError(f"{path}: manifest lacks columns {sorted(missing)}")
        rows = []
        for i, d in enumerate(reader, start=2):
            try:
                row = ClipRow(
                    clip_id=d["clip_id"], speaker=d["speaker"], sentence_id=d["sentence_id"],
                    emotion=d["emotion"], level=int(d["level"]), intensity=float(d["intensity"]),
                    split=d["split"], audio=d["audio"], video=d["video"], track=d["track"],
                    text=d["text"], n_frames=int(d["n_frames"] or 0),
                    duration_s=float(d["duration_s"] or 0.0), corpus=d["corpus"],
                )
            except ValueError as e:
                raise EvpError(f"{path}:{i}: bad value in manifest row ({e})") from None
            if row.emotion not in EMOTIONS:
                raise EvpError(f"{path}:{i}: unknown emotion {row.emotion!r}")
            if row.split not in SPLITS:
                raise EvpError(f"{path}:{i}: unknown split {row.split!r}; expected one of {SPLITS}")
            rows.append(row)
    return rows
