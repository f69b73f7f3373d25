"""Real emotional-speech corpora → manifest rows (:class:`~evp_anim.data.manifest.ClipRow`).

Each reader walks a corpus folder as the corpus ships it, turns every clip it recognises into a
row (``corpus`` = ``"mead"``, ``"ravdess"`` or ``"cremad"``; ``track`` empty until the clip is
preprocessed; ``n_frames``/``duration_s`` 0 = not measured yet) and lists every file it could not
use with the reason, so nothing disappears silently. Paths in rows are relative to ``root``.

Splits hold out whole speakers and whole sentences (see :mod:`evp_anim.data.manifest`):
``test_speakers`` and ``test_sentences`` name them in the corpus's own ids; a name that matches no
clip is an error (a typo would otherwise hold out nothing).

Files that resolve (through a symlink) to outside the corpus folder are skipped with that reason.

Levels and intensity follow MEAD: level 1/2/3 → intensity 1/3, 2/3, 1, and neutral is always
level 1 (MEAD records neutral at level 1 only).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, NamedTuple

from ..emotions import EMOTIONS, level_to_intensity
from ..errors import EvpError
from .manifest import ClipRow, split_for

CORPUS_KINDS: tuple[str, ...] = ("mead", "ravdess", "cremad")


class CorpusScan(NamedTuple):
    """What a reader found: ``rows`` (sorted by clip id) and ``skipped`` = ``(path, reason)`` for
    each file that is not in any row (path relative to the corpus root)."""

    rows: list[ClipRow]
    skipped: list[tuple[str, str]]


# ----------------------------------------------------------------------------------------- helpers

def _check_root(root: str | Path, name: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise EvpError(f"{name} corpus folder not found: {root}; give the folder you extracted the corpus into")
    return root


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# Reason given in ``skipped`` for a file that is (or sits under) a symlink leading out of the corpus.
OUTSIDE_REASON = "a symlink to outside the corpus folder: not imported"


def _outside(path: Path, real_root: Path) -> bool:
    """Whether ``path`` resolves, through any symlink (of the file or of a folder above it), to a
    place outside ``real_root`` (the corpus folder, resolved). A corpus copy may come from anyone;
    a link to e.g. a private recording elsewhere on disk must not become training data or be read
    by later stages under a corpus path. Links that stay inside the folder are fine."""
    try:
        path.resolve(strict=True).relative_to(real_root)
        return False
    except (ValueError, OSError, RuntimeError):   # outside, dangling, or a symlink loop
        return True


def _normalise(ids: Iterable[str | int], fix) -> set[str]:
    return {fix(str(i).strip()) for i in ids}


def _make_rows(clips: list[dict], corpus: str, test_speakers: set[str], test_sentences: set[str],
               root: Path) -> list[ClipRow]:
    speakers = {c["speaker"] for c in clips}
    sentences = {c["sentence_id"] for c in clips}
    for wanted, have, what in ((test_speakers, speakers, "speaker"), (test_sentences, sentences, "sentence")):
        unknown = sorted(wanted - have)
        if unknown:
            shown = ", ".join(sorted(have)[:12]) + (", …" if len(have) > 12 else "")
            raise EvpError(f"held-out {what} {', '.join(unknown)} not found in {corpus} corpus at {root}; "
                           f"its {what} ids are: {shown or 'none'}")
    rows = []
    for c in clips:
        split = split_for(c["speaker"] in test_speakers, c["sentence_id"] in test_sentences)
        rows.append(ClipRow(split=split, corpus=corpus, intensity=level_to_intensity(c["level"]), **c))
    rows.sort(key=lambda r: r.clip_id)
    return rows


# ----------------------------------------------------------------------------------------- MEAD

_MEAD_AUDIO_EXT = {".m4a", ".wav", ".aac", ".mp3", ".flac"}
_MEAD_VIDEO_EXT = {".mp4"}
_LEVEL_RE = re.compile(r"^level_(\d+)$")
_MEAD_NUM_RE = re.compile(r"^\d{3}$")


def _mead_sentence(s: str) -> str:
    return s.zfill(3) if s.isdigit() else s


def read_mead(root: str | Path, test_speakers: Iterable[str] = (),
              test_sentences: Iterable[str] = ()) -> CorpusScan:
    """Read MEAD: ``<id>/audio/<emotion>/level_<n>/<nnn>.m4a`` and
    ``<id>/video/front/<emotion>/level_<n>/<nnn>.mp4``.

    Audio and video of a clip are paired by (speaker, emotion, level, number); a clip with only
    one of them still gives a row (the other path empty). Only the frontal camera is read; the
    other views under ``video/`` are ignored. Speaker = the ``<id>`` folder (e.g. ``M003``);
    sentence_id = the 3-digit file number, i.e. clips are taken to share content when they share
    a number (held-out sentences may be given as ``"1"`` or ``"001"``). Still-packed
    ``audio.tar``/``video.tar`` archives are reported in ``skipped``.
    """
    root = _check_root(root, "MEAD")
    real_root = root.resolve()
    tests_spk = _normalise(test_speakers, lambda s: s.upper())
    tests_sen = _normalise(test_sentences, _mead_sentence)
    skipped: list[tuple[str, str]] = []
    clips: dict[tuple[str, str, int, str], dict] = {}

    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        speaker = spk_dir.name.upper()
        for tar in sorted(spk_dir.glob("*.tar")):
            if not (spk_dir / tar.stem).is_dir():
                skipped.append((_rel(tar, root), f"archive not extracted: run `tar -xf {tar.name}` in {spk_dir}"))
        sources = (("audio", spk_dir / "audio", _MEAD_AUDIO_EXT), ("video", spk_dir / "video" / "front", _MEAD_VIDEO_EXT))
        for kind, base, exts in sources:
            if not base.is_dir():
                continue
            for f in sorted(p for p in base.rglob("*") if p.is_file()):
                parts = f.relative_to(base).parts
                reason = None
                if _outside(f, real_root):
                    reason = OUTSIDE_REASON
                elif len(parts) != 3:
                    reason = f"not at {kind}/<emotion>/level_<n>/<nnn>{sorted(exts)[0]}"
                elif parts[0] not in EMOTIONS:
                    reason = f"unknown emotion folder {parts[0]!r} (expected one of {', '.join(EMOTIONS)})"
                elif not (m := _LEVEL_RE.match(parts[1])) or int(m.group(1)) not in (1, 2, 3):
                    reason = f"unknown level folder {parts[1]!r} (expected level_1, level_2 or level_3)"
                elif f.suffix.lower() not in exts or not _MEAD_NUM_RE.match(f.stem):
                    reason = f"not a MEAD {kind} clip name (<nnn>{'/'.join(sorted(exts))})"
                if reason:
                    skipped.append((_rel(f, root), reason))
                    continue
                emotion, level, num = parts[0], int(m.group(1)), f.stem
                if emotion == "neutral":
                    level = 1
                key = (speaker, emotion, level, num)
                clip = clips.setdefault(key, dict(
                    clip_id=f"mead_{speaker}_{emotion}_l{level}_{num}", speaker=speaker, sentence_id=num,
                    emotion=emotion, level=level, audio="", video=""))
                if clip[kind]:
                    skipped.append((_rel(f, root), f"duplicate {kind} for clip {clip['clip_id']} ({clip[kind]} used)"))
                else:
                    clip[kind] = _rel(f, root)
    rows = _make_rows(list(clips.values()), "mead", tests_spk, tests_sen, root)
    return CorpusScan(rows, sorted(skipped))


# ----------------------------------------------------------------------------------------- RAVDESS

RAVDESS_EMOTIONS = {1: "neutral", 2: None, 3: "happy", 4: "sad", 5: "angry", 6: "fear", 7: "disgusted",
                    8: "surprised"}  # 2 = calm: no MEAD class
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_RAVDESS_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_ACTOR_DIR_RE = re.compile(r"^Actor_(\d+)$")


def _ravdess_speaker(s: str) -> str:
    m = re.fullmatch(r"(?:actor_?)?(\d+)", s, flags=re.IGNORECASE)
    return f"Actor_{int(m.group(1)):02d}" if m else s


def _ravdess_sentence(s: str) -> str:
    return s.zfill(2) if s.isdigit() else s


def read_ravdess(root: str | Path, test_speakers: Iterable[str] = (),
                 test_sentences: Iterable[str] = ()) -> CorpusScan:
    """Read RAVDESS: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.{wav,mp4}`` (``Actor_XX`` may sit one or more
    folders below ``root``, as the per-actor zips extract).

    Fields: modality (01 audio-video .mp4, 02 video-only .mp4, 03 audio-only .wav), vocal channel
    (01 speech, 02 song), emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful,
    07 disgust, 08 surprised → MEAD names), intensity (01 normal → level 2, 02 strong → level 3;
    neutral → level 1), statement (01/02), repetition (01/02), actor (01–24).

    Skipped and listed in ``skipped`` with the reason: **calm** (no MEAD class), **song** (sung,
    not speech), and names that break the convention. Audio comes from the ``03`` wav, else from
    the ``01`` audio-video mp4; video from the ``01`` mp4, else the ``02`` one. Speaker =
    ``Actor_XX`` (held-out speakers may be given as ``"Actor_01"``, ``"01"`` or ``"1"``);
    sentence_id = the statement ``"01"``/``"02"``, with its text.
    """
    root = _check_root(root, "RAVDESS")
    real_root = root.resolve()
    tests_spk = _normalise(test_speakers, _ravdess_speaker)
    tests_sen = _normalise(test_sentences, _ravdess_sentence)
    skipped: list[tuple[str, str]] = []
    clips: dict[tuple[str, ...], dict] = {}
    sources: dict[tuple[str, ...], dict[str, str]] = {}

    files = sorted(p for p in root.rglob("*") if p.is_file() and _ACTOR_DIR_RE.match(p.parent.name))
    for f in files:
        rel = _rel(f, root)
        m = _RAVDESS_RE.match(f.stem)
        if _outside(f, real_root):
            skipped.append((rel, OUTSIDE_REASON))
            continue
        if not m:
            skipped.append((rel, "not a RAVDESS name (MM-VV-EE-II-SS-RR-AA.wav/.mp4)"))
            continue
        modality, channel, emo, inten, stmt, rep, actor = m.groups()
        ext = f.suffix.lower()
        reason = None
        if modality not in ("01", "02", "03") or (ext == ".wav") != (modality == "03") or ext not in (".wav", ".mp4"):
            reason = f"modality {modality} with extension {ext} (expected 01/02 .mp4 or 03 .wav)"
        elif channel == "02":
            reason = "song (vocal channel 02): sung, not speech"
        elif channel != "01":
            reason = f"unknown vocal channel {channel}"
        elif int(emo) not in RAVDESS_EMOTIONS:
            reason = f"unknown emotion code {emo}"
        elif RAVDESS_EMOTIONS[int(emo)] is None:
            reason = "calm (emotion 02) has no MEAD class"
        elif inten not in ("01", "02"):
            reason = f"unknown intensity code {inten}"
        elif stmt not in RAVDESS_STATEMENTS:
            reason = f"unknown statement code {stmt}"
        elif int(actor) != int(_ACTOR_DIR_RE.match(f.parent.name).group(1)):
            reason = f"actor {actor} in the name differs from the folder {f.parent.name}"
        if reason:
            skipped.append((rel, reason))
            continue
        emotion = RAVDESS_EMOTIONS[int(emo)]
        level = 1 if emotion == "neutral" else (2 if inten == "01" else 3)
        speaker = f"Actor_{actor}"
        key = (actor, emo, inten, stmt, rep)
        clips.setdefault(key, dict(
            clip_id=f"ravdess_{actor}_{emotion}_i{inten}_s{stmt}_r{rep}", speaker=speaker, sentence_id=stmt,
            emotion=emotion, level=level, text=RAVDESS_STATEMENTS[stmt]))
        srcs = sources.setdefault(key, {})
        if modality in srcs:
            skipped.append((rel, f"duplicate of {srcs[modality]}"))
        else:
            srcs[modality] = rel
    out = []
    for key, clip in clips.items():
        srcs = sources[key]
        clip["audio"] = srcs.get("03") or srcs.get("01", "")
        clip["video"] = srcs.get("01") or srcs.get("02", "")
        out.append(clip)
    rows = _make_rows(out, "ravdess", tests_spk, tests_sen, root)
    return CorpusScan(rows, sorted(skipped))


# ----------------------------------------------------------------------------------------- CREMA-D

CREMAD_EMOTIONS = {"ANG": "angry", "DIS": "disgusted", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
# XX = "unspecified" intensity: taken as the middle level.
CREMAD_LEVELS = {"LO": 1, "MD": 2, "HI": 3, "XX": 2}
CREMAD_SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
_CREMAD_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
# Video folders of the CREMA-D release (Flash video) and common MP4 conversions.
_CREMAD_VIDEO = (("VideoMP4", ".mp4"), ("VideoFlash", ".flv"))


def read_cremad(root: str | Path, test_speakers: Iterable[str] = (),
                test_sentences: Iterable[str] = ()) -> CorpusScan:
    """Read CREMA-D: ``AudioWAV/AAAA_SSS_EEE_LL.wav`` (actor_sentence_emotion_level).

    Emotions ANG DIS FEA HAP NEU SAD → angry, disgusted, fear, happy, neutral, sad. Levels LO, MD,
    HI → 1, 2, 3; XX ("unspecified") → 2, except neutral, which is always level 1. Speaker = the
    4-digit actor id; sentence_id = the 3-letter sentence code, with its text. The matching video
    ``VideoMP4/<name>.mp4`` or ``VideoFlash/<name>.flv`` is attached when present. Files that break
    the naming convention are listed in ``skipped``. ``root`` may also be the ``AudioWAV`` folder.
    """
    root = _check_root(root, "CREMA-D")
    real_root = root.resolve()
    audio_dir = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    tests_spk = _normalise(test_speakers, lambda s: s)
    tests_sen = _normalise(test_sentences, lambda s: s.upper())
    skipped: list[tuple[str, str]] = []
    clips = []
    for f in sorted(p for p in audio_dir.iterdir() if p.is_file()):
        rel = _rel(f, root)
        m = _CREMAD_RE.match(f.stem)
        reason = None
        if _outside(f, real_root):
            reason = OUTSIDE_REASON
        elif f.suffix.lower() != ".wav" or not m:
            reason = "not a CREMA-D name (AAAA_SSS_EEE_LL.wav)"
        else:
            actor, sent, emo, lvl = m.groups()
            if emo not in CREMAD_EMOTIONS:
                reason = f"unknown emotion code {emo} (expected {', '.join(CREMAD_EMOTIONS)})"
            elif lvl not in CREMAD_LEVELS:
                reason = f"unknown level code {lvl} (expected LO, MD, HI or XX)"
            elif sent not in CREMAD_SENTENCES:
                reason = f"unknown sentence code {sent}"
        if reason:
            skipped.append((rel, reason))
            continue
        emotion = CREMAD_EMOTIONS[emo]
        video = ""
        for folder, ext in _CREMAD_VIDEO:
            v = root / folder / (f.stem + ext)
            if v.is_file():
                if _outside(v, real_root):
                    skipped.append((_rel(v, root), OUTSIDE_REASON))
                    continue
                video = _rel(v, root)
                break
        clips.append(dict(
            clip_id=f"cremad_{f.stem}", speaker=actor, sentence_id=sent, emotion=emotion,
            level=1 if emotion == "neutral" else CREMAD_LEVELS[lvl], audio=rel, video=video,
            text=CREMAD_SENTENCES[sent]))
    rows = _make_rows(clips, "cremad", tests_spk, tests_sen, root)
    return CorpusScan(rows, sorted(skipped))


# ----------------------------------------------------------------------------------------- detection

_READERS = {"mead": read_mead, "ravdess": read_ravdess, "cremad": read_cremad}
_KIND_ALIASES = {"mead": "mead", "ravdess": "ravdess", "cremad": "cremad", "crema-d": "cremad",
                 "crema_d": "cremad", "crema": "cremad"}


def detect_corpus(root: str | Path) -> str:
    """Guess a corpus folder's kind from its layout: ``"mead"``, ``"ravdess"`` or ``"cremad"``.

    Raises :class:`EvpError` when the layout matches none of them.
    """
    root = _check_root(root, "corpus")
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    if (root / "AudioWAV").is_dir() or any(_CREMAD_RE.match(p.stem) and p.suffix.lower() == ".wav"
                                           for p in root.iterdir() if p.is_file()):
        return "cremad"
    if any(_ACTOR_DIR_RE.match(p.name) for p in subdirs) or any(
            _ACTOR_DIR_RE.match(q.name) for p in subdirs for q in p.iterdir() if q.is_dir()):
        return "ravdess"
    if any((p / "audio").is_dir() or (p / "video").is_dir() or (p / "audio.tar").is_file() for p in subdirs):
        return "mead"
    raise EvpError(f"{root}: unknown corpus layout; expected MEAD (<id>/audio/<emotion>/level_<n>/), "
                   "RAVDESS (Actor_XX/) or CREMA-D (AudioWAV/); pass the kind explicitly if it is one of them")


def read_corpus(root: str | Path, kind: str | None = None, test_speakers: Iterable[str] = (),
                test_sentences: Iterable[str] = ()) -> CorpusScan:
    """Read a real corpus of ``kind`` (``"mead"``, ``"ravdess"``, ``"cremad"``; auto-detected when None).

    Returns the reader's :class:`CorpusScan` (rows + skipped files with reasons).
    """
    if kind is None:
        kind = detect_corpus(root)
    key = _KIND_ALIASES.get(str(kind).strip().lower())
    if key is None:
        raise EvpError(f"unknown corpus kind {kind!r}: expected one of {', '.join(CORPUS_KINDS)}")
    return _READERS[key](root, test_speakers=test_speakers, test_sentences=test_sentences)
