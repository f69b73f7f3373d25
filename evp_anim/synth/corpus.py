"""The synthetic MEAD-like corpus: speakers × sentences × 8 emotions × 3 levels (neutral once).

Layout (MEAD's, with tracks in place of video)::

    <root>/corpus.json                                   settings; a resumed run must match them
    <root>/clips.jsonl                                   size + sha256 of each clip's files (below)
    <root>/manifest.csv                                  one row per clip (evp_anim.data.manifest)
    <root>/<speaker>/audio/<emotion>/level_<n>/<sid>.wav     16 kHz mono PCM16
    <root>/<speaker>/tracks/<emotion>/level_<n>/<sid>.npz    ground-truth Track, 25 fps

Each clip is made from its own seed (derived from the corpus seed and the clip's speaker,
sentence, emotion and level), so the result does not depend on worker count or order, and a
killed run resumes. A rerun reuses only what it can verify: when a clip is written, the size and
sha256 of its wav and track are appended to ``clips.jsonl`` (one JSON line per clip, flushed as
clips finish, so a killed run keeps the records of its finished clips; a line torn by the kill is
ignored). A clip is reused only if both files still have the recorded size and sum; a missing,
truncated or corrupted file (a disk that filled up, a copy that broke, a hand edit) makes the
clip be remade, which gives the same samples and arrays since generation is seeded. A clip with
files but no record (killed between writing and recording, or a corpus from before the log) is
reused only if its track loads and validates (the zip's CRCs cover every array) and its wav
has the sha256 the track's provenance recorded at write time; it is then recorded.

Ground truth per clip: the speaker's SFM identity; mouth articulation from the exact phoneme
timing with coarticulation; the emotion's rig weights (scaled by intensity) with an
onset/apex/offset envelope; blinks; head motion independent of the audio; landmarks from the
rig (pose-invariant 3D, and 2D projected with the pose into a 256×256 aligned crop).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .. import __version__
from ..assets import sha256_file
from ..atomic import write_text_atomic
from ..data.manifest import ClipRow, split_for, write_manifest
from ..emotions import EMOTIONS, level_to_intensity
from ..errors import EvpError
from ..face.channels import RIG_CHANNELS, SPEECH_CHANNELS
from ..tracks import DEFAULT_FPS, Track, save_track
from . import dynamics

CROP_SIZE = 256

# How strongly each emotion drives articulation: angry and surprised speech is more
# exaggerated, sad and contemptuous speech less (hypo-articulated).
ARTICULATION_GAIN = {
    "neutral": 1.0, "angry": 1.2, "contempt": 0.85, "disgusted": 0.9,
    "fear": 1.05, "happy": 1.1, "sad": 0.8, "surprised": 1.2,
}


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Settings of a synthetic corpus (stored in corpus.json)."""

    n_speakers: int = 8
    n_sentences: int = 20
    seed: int = 0
    test_speakers: int | None = None   # default: a quarter of the speakers (at least 1 when ≥ 2)
    test_sentences: int | None = None  # default: a fifth of the sentences (at least 1 when ≥ 2)
    emotions: tuple[str, ...] = EMOTIONS
    head_motion_deg: float = 4.0
    voices: tuple[str, ...] = ("espeak",)   # speech engines: "espeak" and/or "festival" (speakers.py)
    augment: float = 0.0                    # share of clips through the augmentation chain (augment.py)

    def held_out_counts(self) -> tuple[int, int]:
        ts = self.test_speakers if self.test_speakers is not None else (
            max(1, round(self.n_speakers / 4)) if self.n_speakers >= 2 else 0)
        tq = self.test_sentences if self.test_sentences is not None else (
            max(1, round(self.n_sentences / 5)) if self.n_sentences >= 2 else 0)
        return ts, tq

    def validate(self) -> None:
        from .sentences import SENTENCES
        if not 1 <= self.n_speakers <= 1000:
            raise EvpError(f"--speakers must be between 1 and 1000, got {self.n_speakers}")
        if not 1 <= self.n_sentences <= len(SENTENCES):
            raise EvpError(f"--sentences must be between 1 and {len(SENTENCES)} (the built-in list), "
                           f"got {self.n_sentences}")
        ts, tq = self.held_out_counts()
        if not 0 <= ts < self.n_speakers or (self.n_speakers > 1 and ts == self.n_speakers):
            raise EvpError(f"held-out speakers ({ts}) must be fewer than speakers ({self.n_speakers})")
        if not 0 <= tq < self.n_sentences:
            raise EvpError(f"held-out sentences ({tq}) must be fewer than sentences ({self.n_sentences})")
        for e in self.emotions:
            if e not in EMOTIONS:
                raise EvpError(f"unknown emotion {e!r}: expected one of {', '.join(EMOTIONS)}")
        from .speakers import check_voices
        if tuple(self.voices) != check_voices(self.voices):
            raise EvpError(f"--voices must be distinct names from espeak, festival in that order, "
                           f"got {','.join(self.voices)}")
        if not 0.0 <= float(self.augment) <= 1.0:
            raise EvpError(f"--augment must be a share between 0 and 1, got {self.augment}")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["emotions"] = list(self.emotions)
        d["test_speakers"], d["test_sentences"] = self.held_out_counts()
        # Left out at their defaults, so corpora made before these options resume unchanged.
        d["voices"] = list(self.voices)
        if d["voices"] == ["espeak"]:
            del d["voices"]
        if not self.augment:
            del d["augment"]
        return d


@dataclasses.dataclass(frozen=True)
class ClipJob:
    """Everything a worker needs to make one clip."""

    speaker_index: int
    sentence_index: int
    emotion: str
    level: int
    split: str

    @property
    def speaker(self) -> str:
        return f"S{self.speaker_index + 1:03d}"

    @property
    def sentence_id(self) -> str:
        return f"{self.sentence_index:03d}"

    @property
    def clip_id(self) -> str:
        return f"{self.speaker}_{self.emotion}_{self.level}_{self.sentence_id}"

    def audio_rel(self) -> str:
        return f"{self.speaker}/audio/{self.emotion}/level_{self.level}/{self.sentence_id}.wav"

    def track_rel(self) -> str:
        return f"{self.speaker}/tracks/{self.emotion}/level_{self.level}/{self.sentence_id}.npz"


def plan_jobs(config: CorpusConfig) -> list[ClipJob]:
    """All clips of the corpus, with splits holding out whole speakers and whole sentences."""
    config.validate()
    ts, tq = config.held_out_counts()
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 7]))
    test_spk = set(rng.permutation(config.n_speakers)[:ts].tolist())
    test_sent = set(rng.permutation(config.n_sentences)[:tq].tolist())
    jobs = []
    for s in range(config.n_speakers):
        for q in range(config.n_sentences):
            for emo in config.emotions:
                for level in ((1,) if emo == "neutral" else (1, 2, 3)):
                    jobs.append(ClipJob(s, q, emo, level, split_for(s in test_spk, q in test_sent)))
    return jobs


def speech_and_face_seeds(ss: np.random.SeedSequence) -> tuple[int, int]:
    """Two independent integer seeds (speech synthesis, face dynamics) from a clip's SeedSequence."""
    speech, face = (int(s.generate_state(1)[0]) for s in ss.spawn(2))
    return speech, face


def _clip_seed(config: CorpusConfig, job: ClipJob) -> np.random.SeedSequence:
    return np.random.SeedSequence([config.seed, job.speaker_index, job.sentence_index,
                                   EMOTIONS.index(job.emotion), job.level])


class ClipMaker:
    """Makes clips; holds the per-process face rig and speaker list (built once per worker)."""

    def __init__(self, config: CorpusConfig, sfm_dir: Path):
        from ..face.projection import aligned_crop_transform
        from ..face.rig import FaceRig
        from .speakers import make_speakers

        self.config = config
        self.rig = FaceRig(sfm_dir)
        self.speakers = make_speakers(config.n_speakers, config.seed, voices=config.voices)
        self.identities = [
            self.rig.sample_identity(np.random.default_rng(np.random.SeedSequence([config.seed, i, 99])))
            for i in range(config.n_speakers)]
        self.crop_scale, self.crop_translation = aligned_crop_transform(CROP_SIZE)
        self._speech_cols = [RIG_CHANNELS.index(c) for c in SPEECH_CHANNELS]
        self._blink_cols = [RIG_CHANNELS.index(c) for c in ("eyeBlinkLeft", "eyeBlinkRight")]

    def clip(self, text: str, speaker_index: int, emotion: str, intensity: float, speech_seed: int,
             face_seed: int):
        """Synthesise speech and its ground-truth track; returns (Utterance, Track without provenance).

        ``intensity`` in [0, 1] (ignored for neutral). The track is at 25 fps in a 256×256 crop.
        """
        from ..audio.features import n_frames as count_frames
        from ..face.projection import project
        from .speech import synthesize_utterance
        from ..face.lip_contact import close_lips, closure_curve, compose_emotion
        from .visemes import articulation_curves, viseme_sequence

        rng = np.random.default_rng(face_seed)
        intensity = 0.0 if emotion == "neutral" else float(intensity)
        speaker = self.speakers[speaker_index]
        utt = synthesize_utterance(text, speaker, emotion, intensity, speech_seed)
        augmented = None
        if self.config.augment > 0:
            # Recording conditions: a seeded share of clips; audio only (length and timing kept).
            from .augment import augment
            arng = np.random.default_rng([speech_seed, 0xA06])
            if arng.random() < self.config.augment:
                audio, augmented = augment(utt.audio, utt.sample_rate, arng)
                utt = dataclasses.replace(utt, audio=audio)
        n = count_frames(len(utt.audio), utt.sample_rate, DEFAULT_FPS)

        weights = np.zeros((n, len(RIG_CHANNELS)), np.float32)
        # Speech: coarticulated visemes, exaggerated or reduced by the emotion and the speaker's style.
        style = rng.uniform(0.85, 1.15)
        gain = 1.0 + (ARTICULATION_GAIN[emotion] - 1.0) * intensity
        weights[:, self._speech_cols] = articulation_curves(utt.phonemes, n, DEFAULT_FPS) * style * gain
        weights = np.clip(weights, 0.0, 1.0)
        identity = self.identities[speaker_index]
        # Emotion: the rig's table at this intensity, varied a little per clip, under an envelope;
        # its opening of the mouth follows the phones (compose_emotion).
        if emotion != "neutral" and intensity > 0:
            target = self.rig.emotion_weights(emotion, intensity)
            target = target * rng.uniform(0.85, 1.15, target.shape).astype(np.float32)
            shown = dynamics.emotion_envelope(n, DEFAULT_FPS, rng)[:, None] * target[None, :]
            weights = compose_emotion(self.rig, weights, shown, identity)
        blink = dynamics.blink_curve(n, DEFAULT_FPS, rng, dynamics.BLINK_RATE_PER_MIN[emotion])
        for c in self._blink_cols:
            weights[:, c] = np.maximum(weights[:, c], blink)
        weights = np.clip(weights, 0.0, 1.0)
        # /p b m/ seal the lips whatever the emotion (and the articulation never pushes them through
        # each other): emotion may widen or raise the mouth, never hold it open through a bilabial.
        # The frame either side is sealed half-way, as the lips approach and leave.
        bilabial = [(s, e) for s, e, v in viseme_sequence(utt.phonemes) if v == "PP"]
        weights = close_lips(self.rig, weights, closure_curve(bilabial, n, DEFAULT_FPS, approach=0.5),
                             identity)

        lm3d = self.rig.landmarks_3d(identity, weights)
        rotation = dynamics.head_motion(n, DEFAULT_FPS, rng, self.config.head_motion_deg)
        translation = (np.asarray(self.crop_translation, np.float32)[None, :]
                       + dynamics.translation_jitter(n, DEFAULT_FPS, rng))
        scale = np.full(n, self.crop_scale, np.float32) * np.float32(rng.uniform(0.97, 1.03))
        lm2d = project(lm3d, rotation, translation, scale)
        track = Track.new(
            lm2d, fps=DEFAULT_FPS, image_size=(CROP_SIZE, CROP_SIZE), landmarks_3d=lm3d,
            pose_rotation=rotation, pose_translation=translation, pose_scale=scale,
            identity=identity, expression=weights, expression_names=list(RIG_CHANNELS),
            emotion=np.tile(np.eye(len(EMOTIONS), dtype=np.float32)[EMOTIONS.index(emotion)], (n, 1)),
            intensity=np.full(n, intensity, np.float32),
            phonemes=list(utt.phonemes),
            info={"speaker": f"S{speaker_index + 1:03d}", "text": text, "emotion": emotion,
                  "voice": speaker.voice_label, "duration_s": round(len(utt.audio) / utt.sample_rate, 4)},
        )
        if self.config.augment > 0:
            track.info["augment"] = augmented or {}
        return utt, track

    def make(self, job: ClipJob, root: Path) -> ClipRow:
        """Make one corpus clip, write its wav and track under ``root``; return its manifest row."""
        from ..audio.io import audio_sha256, save_wav
        from .sentences import SENTENCES

        speech_seed, face_seed = speech_and_face_seeds(_clip_seed(self.config, job))
        intensity = 0.0 if job.emotion == "neutral" else level_to_intensity(job.level)
        utt, track = self.clip(SENTENCES[job.sentence_index], job.speaker_index, job.emotion, intensity,
                               speech_seed, face_seed)
        audio_path, track_path = root / job.audio_rel(), root / job.track_rel()
        save_wav(audio_path, utt.audio, utt.sample_rate)
        track.provenance = {"source_audio_sha256": audio_sha256(audio_path), "model": "synthetic-corpus",
                            "model_version": __version__, "command": "evp-anim synth",
                            "corpus_seed": self.config.seed}
        track.info.update({"corpus": "synthetic", "sentence_id": job.sentence_id, "level": job.level,
                           "split": job.split, "audio": job.audio_rel()})
        save_track(track, track_path)
        return clip_row(job, track.n_frames, track.info["duration_s"])


def clip_row(job: ClipJob, n_frames: int, duration_s: float) -> ClipRow:
    """The manifest row of a made clip."""
    from .sentences import SENTENCES
    return ClipRow(
        clip_id=job.clip_id, speaker=job.speaker, sentence_id=job.sentence_id, emotion=job.emotion,
        level=job.level, intensity=0.0 if job.emotion == "neutral" else level_to_intensity(job.level),
        split=job.split, audio=job.audio_rel(), track=job.track_rel(),
        text=SENTENCES[job.sentence_index], n_frames=n_frames, duration_s=round(duration_s, 4))


CLIP_LOG = "clips.jsonl"


def _file_record(path: Path) -> dict:
    """Size and sha256 of a file just written (what a rerun checks before reusing it)."""
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def clip_record(job: ClipJob, root: Path, row: ClipRow) -> dict:
    """The ``clips.jsonl`` line of a made clip: its files' sizes and sums plus its manifest facts."""
    return {"clip": job.clip_id, "audio": _file_record(root / job.audio_rel()),
            "track": _file_record(root / job.track_rel()), "n_frames": row.n_frames,
            "duration_s": row.duration_s}


def _file_matches(path: Path, rec: object) -> bool:
    """Whether ``path`` is a file of the recorded size and sha256 (size first: a truncated file is
    refused without reading it)."""
    try:
        if not isinstance(rec, dict) or not path.is_file() or path.stat().st_size != rec["size"]:
            return False
        return sha256_file(path) == rec["sha256"]
    except (OSError, KeyError, TypeError):
        return False


def _recorded_row(job: ClipJob, root: Path, rec: dict) -> ClipRow | None:
    """The row of a clip whose files match its record, else None (the clip is remade)."""
    if not (_file_matches(root / job.audio_rel(), rec.get("audio"))
            and _file_matches(root / job.track_rel(), rec.get("track"))):
        return None
    try:
        return clip_row(job, int(rec["n_frames"]), float(rec["duration_s"]))
    except (KeyError, TypeError, ValueError):
        return None


def _adopted_row(job: ClipJob, root: Path) -> ClipRow | None:
    """The row of a clip with files but no record, if they verify without one: the track loads and
    validates (every array is CRC-checked as it is read) and is this clip's, and the wav has the
    sha256 the track recorded when the clip was made. Else None (the clip is remade)."""
    from ..tracks import load_track

    track_path, audio_path = root / job.track_rel(), root / job.audio_rel()
    if not (track_path.is_file() and audio_path.is_file()):
        return None
    try:
        track = load_track(track_path)
        want = track.provenance.get("source_audio_sha256")
        if track.info.get("audio") != job.audio_rel() or not isinstance(want, str):
            return None
        if sha256_file(audio_path) != want:
            return None
        return clip_row(job, track.n_frames, float(track.info["duration_s"]))
    except (EvpError, OSError, KeyError, TypeError, ValueError):
        return None


def read_clip_log(path: Path) -> dict[str, dict]:
    """The records of ``clips.jsonl`` by clip id (the last line of a clip wins); lines that are not
    a JSON object with a clip id (one torn by a kill) are skipped."""
    records: dict[str, dict] = {}
    if not path.is_file():
        return records
    with path.open("rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict) and isinstance(rec.get("clip"), str):
                records[rec["clip"]] = rec
    return records


class _ClipLog:
    """Appends records to ``clips.jsonl``, one flushed line per clip, so a killed run keeps what it
    finished; a torn last line from an earlier kill is closed first, so it spoils only itself."""

    def __init__(self, path: Path):
        self.path = path
        self._f = None

    def append(self, rec: dict) -> None:
        if self._f is None:
            torn = False
            if self.path.is_file() and self.path.stat().st_size:
                with self.path.open("rb") as f:
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
            self._f = self.path.open("ab")
            if torn:
                self._f.write(b"\n")
        self._f.write((json.dumps(rec, sort_keys=True) + "\n").encode("utf-8"))
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


# ---------------------------------------------------------------------- worker plumbing
_MAKER: ClipMaker | None = None


def _init_worker(config: CorpusConfig, sfm_dir: str) -> None:
    global _MAKER
    # One BLAS thread per worker: the workers already use every core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _MAKER = ClipMaker(config, Path(sfm_dir))


def _work(args: tuple[ClipJob, str]) -> tuple[ClipRow, dict]:
    job, root = args
    assert _MAKER is not None
    row = _MAKER.make(job, Path(root))
    return row, clip_record(job, Path(root), row)   # hashed right after writing, in the worker


def synthesize_corpus(root: str | Path, config: CorpusConfig, sfm_dir: Path, workers: int | None = None,
                      progress: Callable[[int, int], None] | None = None) -> list[ClipRow]:
    """Make (or finish) the corpus in ``root``; returns the manifest rows, also written to manifest.csv.

    ``workers`` defaults to the number of cores. ``progress(done, total)`` is called as clips finish.
    """
    root = Path(root)
    config.validate()
    from .espeak import engine  # fail fast (one-line error) before any worker starts
    engine()
    if "festival" in config.voices:
        from .festival import check_voices
        check_voices()
    settings = root / "corpus.json"
    wanted = {"format": "evp-anim-synthetic-corpus", "version": 1, **config.to_json()}
    if settings.is_file():
        try:
            have = json.loads(settings.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, OSError):
            raise EvpError(f"{settings} is damaged (not readable JSON); use a new folder, or delete it to "
                           "resume with the same options") from None
        if have != wanted:
            raise EvpError(f"{root} holds a corpus made with other settings ({settings}); "
                           "use a new folder or the same options to resume")
    elif root.exists() and any(root.iterdir()):
        raise EvpError(f"{root} exists and is not an evp-anim corpus; choose an empty or new folder")
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(settings, json.dumps(wanted, indent=2) + "\n")

    jobs = plan_jobs(config)
    total = len(jobs)
    # Clips made by an earlier (killed) run are reused only when their files verify (module docstring).
    log_path = root / CLIP_LOG
    recorded = read_clip_log(log_path)
    records: dict[str, dict] = {}
    rows: list[ClipRow] = []
    todo: list[ClipJob] = []
    log = _ClipLog(log_path)
    try:
        for job in jobs:
            rec = recorded.get(job.clip_id)
            if rec is not None:
                r = _recorded_row(job, root, rec)
            else:
                r = _adopted_row(job, root)
                if r is not None:
                    rec = clip_record(job, root, r)
                    log.append(rec)
            if r is None:
                todo.append(job)
            else:
                rows.append(r)
                records[job.clip_id] = rec
        if progress:
            progress(len(rows), total)

        workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
        if todo:
            for row, rec in _run(todo, root, config, sfm_dir, workers):
                log.append(rec)
                rows.append(row)
                records[row.clip_id] = rec
                if progress:
                    progress(len(rows), total)
    finally:
        log.close()
    # Compact the appended log to one line per clip of this corpus.
    write_text_atomic(log_path, "".join(json.dumps(records[k], sort_keys=True) + "\n" for k in sorted(records)))
    write_manifest(root / "manifest.csv", rows)
    return sorted(rows, key=lambda r: r.clip_id)


def _run(todo: list[ClipJob], root: Path, config: CorpusConfig, sfm_dir: Path,
         workers: int) -> Iterator[tuple[ClipRow, dict]]:
    if workers == 1:
        _init_worker(config, str(sfm_dir))
        for job in todo:
            yield _work((job, str(root)))
        return
    # spawn, not fork: each worker initialises its own espeak-ng and rig, never a copy of ours.
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(config, str(sfm_dir))) as pool:
        yield from pool.imap_unordered(_work, [(j, str(root)) for j in todo], chunksize=4)
