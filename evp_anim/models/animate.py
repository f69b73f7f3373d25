"""``evp-anim animate``: speech → an emotional landmark Track with a trained EVP model.

The emotion comes from a label (the emotion cluster's mean code at an intensity), from a
reference clip (Ee of another recording), or from timecoded keys that blend emotions per frame.
The output Track (25 fps) carries pose-invariant 3D landmarks (mm), their frontal projection in
the 256×256 aligned crop, an identity pose, per-frame emotion weights and intensity.

Silence closes the mouth: where voice activity is off for a while, the mouth landmarks are
eased towards the model's own prediction for silent input with the same emotion, so noise in
pauses does not make the lips flutter.

Speech of any length goes through one path, in chunks of :data:`CHUNK_FRAMES` frames, so memory
does not grow with the recording (issue 15). The audio is read twice, block by block: once for
its per-frame levels (voice activity thresholds the whole clip's level percentiles: 4 bytes a
frame) and frame MFCC rows (the clip's speech mean, :func:`_speech_shift`: 48 bytes a frame, 4 MB
an hour), once for each chunk's MFCC windows plus the context the networks read beyond the chunk.
EVP carries its LSTM state from chunk to chunk (its content encoder sees ±2 frames of overlap);
EMOTE runs overlapping spans placed exactly where :meth:`EmoteModel.predict` places its own, so
both give what one whole-clip call gives. Each chunk becomes a Track of its frames (lifted to the
rig and lip-sealed per chunk: both are per frame), which :func:`animate_speech_to_file` appends
to a :class:`~evp_anim.tracks.TrackWriter` as it comes and the Track-returning functions
(:func:`animate`, :func:`animate_emote`, :func:`animate_speech_file`) concatenate.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import weakref
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from .. import __version__
from ..emotions import EMOTIONS, NUM_EMOTIONS, canonical_emotion, check_intensity
from ..errors import EvpError
from ..audio.features import MFCC_WINDOW, N_MFCC, SAMPLE_RATE
from ..tracks import DEFAULT_FPS, MOUTH, Track, TrackWriter, concat
from ..emotion_keys import EmotionKey, validate_keys
from .emotion_control import per_frame
from .evp_inference import EvpInference

FPS = DEFAULT_FPS
CROP = 256

# Frames per chunk: 120 s at 25 fps. A multiple of EvpModel.predict_lm3d's 500-frame steps and of
# energy()'s 1500-frame blocks, and EmoteModel.predict's own chunk, so chunked results are the
# whole-clip call's (EVP: to the LSTM rows' ~1e-4 mm, EvpModel.predict_frames). Memory per
# chunk: ~8 MB of samples, ~4 MB of windows, the network's activations.
CHUNK_FRAMES = 3000
_EMOTE_OVERLAP = 64          # EmoteModel.predict's overlap either side of a chunk (its receptive field < 2 s)
_PROJECT_BLOCK = 500        # frames per projection / rig evaluation block
_LIFT_BLOCK = 1500          # frames per rig solve in lift_to_rig (bounds the solver's temporaries)
_LEVEL_FRAMES = 1500         # frames per block of levels in the first pass: energy()'s own block
_ARRAY_BLOCK = 1 << 17       # samples per block when the speech is already in memory
_SAMPLES_PER_FRAME = int(SAMPLE_RATE // FPS)     # 640 at 16 kHz, 25 fps


@dataclasses.dataclass
class EmotionSpec:
    """Exactly one of: a label (+ intensity), a reference audio clip, or a keys file."""

    emotion: str | None = "neutral"
    intensity: float = 1.0
    reference_audio: Path | None = None
    keys: list[EmotionKey] | None = None


def default_model_path() -> Path:
    """The shipped default weights (assets/evp_default.pt in the source tree)."""
    return Path(__file__).resolve().parents[2] / "assets" / "evp_default.pt"


def _silence_gate(vad: np.ndarray, min_frames: int = 5, ramp: int = 3) -> np.ndarray:
    """(T,) in [0, 1]: 1 inside silences of at least ``min_frames`` frames, eased over ``ramp`` frames."""
    t = len(vad)
    gate = np.zeros(t, np.float32)
    i = 0
    while i < t:
        if not vad[i]:
            j = i
            while j < t and not vad[j]:
                j += 1
            if j - i >= min_frames:
                gate[i:j] = 1.0
            i = j
        else:
            i += 1
    if ramp > 0 and gate.any():
        kernel = np.ones(2 * ramp + 1, np.float32) / (2 * ramp + 1)
        # Only shrink the gate at its edges (erode then blur) so speech frames stay untouched.
        eroded = np.minimum.reduce([np.roll(gate, s) for s in range(-ramp, ramp + 1)])
        gate = np.convolve(np.pad(eroded, ramp, mode="edge"), kernel, mode="valid")
    return gate.astype(np.float32)


class _Speech:
    """16 kHz mono speech read in passes of blocks: ``passes(first)`` starts a pass (a file is
    decoded again for each; ``first`` says whether warnings should be given)."""

    def __init__(self, passes: Callable[[bool], Iterable[np.ndarray]]):
        self._passes = passes

    def blocks(self, first: bool = False) -> Iterator[np.ndarray]:
        return iter(self._passes(first))

    @classmethod
    def from_array(cls, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> "_Speech":
        """Samples already in memory, at any rate (converted to 16 kHz first, as :func:`mfcc` does)."""
        from ..audio.features import check_rate, check_waveform, to_16k
        a = check_waveform(audio)
        check_rate(sample_rate)
        a = to_16k(a, sample_rate)
        return cls(lambda first: (a[i:i + _ARRAY_BLOCK] for i in range(0, a.size, _ARRAY_BLOCK)))

    @classmethod
    def from_file(cls, path: str | Path, warn: Callable[[str], None] | None = None) -> "_Speech":
        """A file decoded block by block (:func:`~evp_anim.audio.io.iter_audio_blocks`)."""
        from ..audio.io import iter_audio_blocks
        return cls(lambda first: iter_audio_blocks(path, warn=warn if first else (lambda m: None)))


def _reblock(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The samples of ``blocks`` in blocks of exactly ``size`` (the last one shorter)."""
    pending: list[np.ndarray] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += block.size
        while held >= size:
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            # The remainder is copied so that the joined block is freed once the consumer is done.
            rest = joined[size:].copy()
            yield joined[:size]
            joined = None
            pending, held = ([rest] if rest.size else []), rest.size
    if held:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]


def _scan(speech: _Speech, with_rows: bool = False) -> tuple[int, np.ndarray, np.ndarray | None]:
    """First pass: (number of 16 kHz samples N, per-frame levels (T,) dBFS, and with
    ``with_rows`` the frames' centre MFCC rows (T, 12), else None), T = n_frames(N). Both are
    computed per block of :data:`_LEVEL_FRAMES` frames, the blocks energy() itself sums in, so
    the levels are the whole clip's to the bit; a frame's centre row reads only its own 40 ms, so
    the rows are too."""
    from ..audio.features import check_waveform, energy, frame_mfcc_rows, n_frames
    levels, rows, n = [], [], 0
    for block in _reblock(speech.blocks(first=True), _LEVEL_FRAMES * _SAMPLES_PER_FRAME):
        check_waveform(block)        # NaN / inf samples (a float WAV can hold them)
        levels.append(energy(block, n_frames=n_frames(block.size)))
        if with_rows:
            rows.append(frame_mfcc_rows(block))
        n += block.size
    if n == 0:
        raise EvpError("the audio has no samples; give at least one sample of audio")
    return n, np.concatenate(levels), np.concatenate(rows) if with_rows else None


def _shifts_mfcc(model, content) -> bool:
    """Whether :func:`_speech_shift` applies: a model that reads its MFCC content encoder (no
    phones, or phones it does not read: :func:`reads_visemes`) and stores its training speech mean."""
    return (content is None or not reads_visemes(model)) and model.meta.get("speech_mfcc_mean") is not None


def _speech_shift(model, levels: np.ndarray, rows: np.ndarray | None, info: dict) -> np.ndarray | None:
    """(12,) float32 to add to every MFCC row of the clip, or None: the model's training speech
    mean (``meta["speech_mfcc_mean"]``) minus the clip's own (its voiced frames' mean centre row),
    so that a microphone or voice brighter or darker than the corpus's reads like the corpus's
    voices to the content encoder (cepstral mean normalisation towards the training data). None
    without ``rows`` (:func:`_shifts_mfcc` false: a phone front end, or a model file without the
    mean) or for a clip with under 0.4 s of voice. Recorded in
    ``info["mfcc_speech_shift"]``."""
    from ..audio.features import speech_mfcc_mean, voice_activity_from_energy
    if rows is None:
        return None
    clip = speech_mfcc_mean(rows, voice_activity_from_energy(levels))
    if clip is None:
        return None
    shift = (np.asarray(model.meta["speech_mfcc_mean"], np.float32) - clip).astype(np.float32)
    info["mfcc_speech_shift"] = [round(float(x), 2) for x in shift]
    return shift


def _chunk_windows(speech: _Speech, n_samples: int, n: int, chunk: int,
                   span: Callable[[int, int], tuple[int, int]],
                   shift: np.ndarray | None = None, unread: bool = False) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """Second pass: for each chunk of frames [a, b) (``chunk`` frames, the last one shorter),
    ``(a, b, f0, windows)``: the MFCC windows (f1 - f0, 28, 12) of the frames [f0, f1) =
    ``span(a, b)`` the network reads for that chunk (the chunk and its context), equal to the whole
    clip's, plus ``shift`` (12,) if given (:func:`_speech_shift`). Holds only the samples those
    windows need. ``unread``: the model reads visemes instead, so the windows are zeros (a
    read-only view, no audio read) of the same shape."""
    from ..audio.features import mfcc_window_span, window_span_samples
    if unread:
        zeros = np.zeros((1, MFCC_WINDOW, N_MFCC), np.float32)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            f0, f1 = span(a, b)
            yield a, b, f0, np.broadcast_to(zeros, (f1 - f0,) + zeros.shape[1:])
        return
    blocks = speech.blocks()
    buf, buf_start = np.zeros(0, np.float32), 0
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        f0, f1 = span(a, b)
        s0, s1 = window_span_samples(f0, f1, n_samples)
        pieces, end = [buf[s0 - buf_start:]], buf_start + buf.size
        buf_start = s0
        while end < s1:
            block = next(blocks, None)
            if block is None:
                raise EvpError("the audio ended before its first reading did (did the file change?)")
            pieces.append(block)
            end += block.size
        if len(pieces) > 1:
            buf = np.concatenate(pieces)
        else:
            buf = pieces[0]
        pieces = block = None
        windows = mfcc_window_span(buf, buf_start, n_samples, f0, f1)
        if shift is not None:
            windows += shift
        # Keep only the samples the next span needs (spans only move forward), as a copy, so that
        # this chunk's buffer is freed before the network runs on its windows.
        # (Consecutive spans overlap: a frame's window reaches 14 MFCC rows either side.)
        end = buf_start + buf.size
        keep = min(window_span_samples(*span(b, min(b + chunk, n)), n_samples)[0], end) if b < n else end
        buf, buf_start = buf[keep - buf_start:].copy(), keep
        yield a, b, f0, windows
        del windows             # not held while the next chunk's samples are read


# The closed mouths rest_mouth has computed, per model: {(reference bytes, code bytes): (20, 3) mm}.
_REST_MOUTHS: "weakref.WeakKeyDictionary[EvpInference, dict]" = weakref.WeakKeyDictionary()
_REST_CACHE_SIZE = 128       # per model; one per distinct (reference, emotion code)


@functools.lru_cache(maxsize=1)
def _silent_windows() -> np.ndarray:
    """(15, 28, 12) MFCC windows of 0.6 s of digital silence, made once per process (writable:
    torch.from_numpy warns on read-only arrays; nothing writes to them)."""
    from ..audio.features import mfcc_windows
    return mfcc_windows(np.zeros(int(SAMPLE_RATE * 0.6), np.float32), SAMPLE_RATE)


def rest_mouth(model: EvpInference, reference: np.ndarray, code: np.ndarray, decimals: int = 4) -> np.ndarray:
    """(20, 3) mm: ``model``'s own closed mouth on the face ``reference`` (68, 3) mm for the
    emotion ``code`` (De,) rounded to ``decimals``: its last frame on 0.6 s of digital silence.
    Kept with the model (the oldest dropped past :data:`_REST_CACHE_SIZE`): the silence's LSTM run
    is ~3 ms, a few % of animating a minute of speech. Offline (:class:`_RestMouth`) and live
    (:class:`~evp_anim.live.engine.LiveEngine`) both read it."""
    code = np.round(np.asarray(code, np.float32), decimals) + np.float32(0.0)      # -0.0 → 0.0
    cache = _REST_MOUTHS.setdefault(model, {})
    key = (np.asarray(reference, np.float32).tobytes(), code.tobytes())
    if key not in cache:
        if len(cache) >= _REST_CACHE_SIZE:
            cache.pop(next(iter(cache)))                # the oldest
        cache[key] = model.predict_lm3d(_silent_windows(), reference, code)[-1][MOUTH]
    return cache[key]


class _RestMouth:
    """The model's own closed mouth (20, 3) mm for a frame's emotion code: its prediction on 0.6 s
    of digital silence. Each distinct code (rounded to 4 decimals) gets its own; when the clip has
    more than 64 (blended keys: a long cross-fade), the codes of a grid of 64 frames stand in.
    Which of the two is decided over the whole clip (``codes_of(a, b)`` gives frames [a, b)'s
    codes, chunk by chunk) and the poses are cached, so every chunk gets what the whole clip's
    frames would."""

    def __init__(self, model: EvpInference, reference: np.ndarray, codes_of: Callable[[int, int], np.ndarray],
                 n: int, chunk: int, decimals: int = 4, most: int = 64):
        self.model, self.reference, self.codes_of, self.decimals = model, reference, codes_of, decimals
        distinct: set[bytes] = set()
        for a in range(0, n, chunk):
            distinct.update(map(bytes, _unique_rows(self._round(codes_of(a, min(a + chunk, n))))[0]))
            if len(distinct) > most:
                break
        self.step = int(np.ceil(n / most)) if len(distinct) > most else None
        self.n_anchors = len(range(0, n, self.step)) if self.step else 0

    def _round(self, codes: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(codes, np.float32), self.decimals) + np.float32(0.0)   # -0.0 → 0.0

    def _mouth(self, code: np.ndarray) -> np.ndarray:
        return rest_mouth(self.model, self.reference, code, self.decimals)

    def __call__(self, frames: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(k, 20, 3) mm for frames (k,) of the clip with codes (k, De)."""
        if self.step is None:
            uniq, which = _unique_rows(self._round(codes))
            rest = np.stack([self._mouth(u) for u in uniq])
        else:
            anchor = np.minimum(np.round(np.asarray(frames) / self.step).astype(int), self.n_anchors - 1)
            uniq, which = np.unique(anchor, return_inverse=True)
            rest = np.stack([self._mouth(self._round(self.codes_of(i * self.step, i * self.step + 1)[0]))
                             for i in uniq])
        return rest[which.reshape(-1)]


def _unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(x, axis=0, return_inverse=True)`` of a (n, d) array: the distinct rows (u, d)
    in sorted order and each row's index (n,) into them. A label's codes are one row repeated
    (every frame of a chunk): that case is answered without np.unique's row sort, which costs
    ~10 ms for 1,500 rows of 32."""
    x = np.asarray(x)
    if len(x) and (x == x[:1]).all():
        return x[:1].copy(), np.zeros(len(x), np.intp)
    uniq, which = np.unique(x, axis=0, return_inverse=True)
    return uniq, which.reshape(-1)


def _project(lm3d: np.ndarray) -> np.ndarray:
    """(T, 68, 2) float32: the frontal projection of (T, 68, 3) mm landmarks into the aligned crop,
    in blocks of frames (the projection's float64 temporaries stay a few MB)."""
    from ..face.projection import aligned_landmarks
    out = np.empty((len(lm3d), lm3d.shape[1], 2), np.float32)
    for a in range(0, len(lm3d), _PROJECT_BLOCK):
        out[a:a + _PROJECT_BLOCK] = aligned_landmarks(lm3d[a:a + _PROJECT_BLOCK], CROP)
    return out


@functools.lru_cache(maxsize=None)
def _glibc():
    """The C library when it is glibc (it has malloc_trim / mallopt), else None."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt        # noqa: B018 - both must exist
        return libc
    except (OSError, AttributeError):
        return None


def limit_heap_growth() -> None:
    """For a process that streams a long clip (the ``animate`` command): keep allocations of 1 MB
    and more (a chunk's samples, windows, network activations) out of glibc's heap. glibc raises
    its mmap threshold to the largest block freed (up to 32 MB), after which such buffers are
    carved from the heap, and chunks of slightly different sizes fragment it: ~20 MB more peak
    memory over an hour than over one chunk. Fixing the mmap threshold also fixes glibc's trim
    threshold at its 128 kB default, so every free at the heap's top handed the pages back and the
    next block of the same size faulted them in again (the MFCC of 60 s took ~45 ms instead of
    ~11): the trim threshold is set to 4 MB (what a chunk leaves is still returned by the
    ``malloc_trim`` after each chunk). Process-wide, so a library caller decides; no-op without
    glibc."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-3, 1 << 20)            # M_MMAP_THRESHOLD = -3 (malloc.h); also fixes it
        libc.mallopt(-1, 4 << 20)            # M_TRIM_THRESHOLD = -1


def _run_chunks(windows: Iterator[tuple[int, int, int, np.ndarray]], one_chunk: Callable[..., Track],
                n: int, progress: Callable[[float], None] | None) -> Iterator[Track]:
    """The chunk Tracks ``one_chunk(a, b, f0, windows)`` of the chunks ``windows`` gives, telling
    ``progress`` the fraction of the ``n`` frames done. Holds nothing of a chunk once it is yielded
    (the next chunk's samples and windows are made while the consumer writes this one)."""
    for a, b, f0, win in windows:
        track = one_chunk(a, b, f0, win)
        del win
        if progress is not None:
            progress(b / n)
        yield track
        del track
        if _glibc() is not None:
            _glibc().malloc_trim(0)         # the chunk's freed buffers go back to the OS (see limit_heap_growth)


def model_provenance(model) -> dict:
    """The provenance every animated track records: model name and version, evp-anim version, command."""
    return {"model": model.name, "model_version": str(model.meta.get("evp_anim_version", "")),
            "evp_anim_version": __version__, "command": " ".join(["evp-anim"] + sys.argv[1:])}


def _chunk_size(chunk_frames: int | None) -> int:
    chunk = CHUNK_FRAMES if chunk_frames is None else chunk_frames
    if int(chunk) != chunk or chunk < 1:
        raise EvpError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    return int(chunk)


def _join(chunks: Iterable[Track]) -> Track:
    """The chunks of one clip as one Track."""
    chunks = list(chunks)
    return chunks[0] if len(chunks) == 1 else concat(chunks)


def _evp_chunks(speech: _Speech, model: EvpInference, spec: EmotionSpec, reference: np.ndarray | None,
                identity: np.ndarray | None, content, rig, chunk: int, provenance: dict, info: dict,
                progress: Callable[[float], None] | None = None) -> Iterator[Track]:
    """EVP on ``speech``: Tracks of consecutive chunks of ``chunk`` frames (see :func:`animate`).
    With a ``rig`` each chunk is lifted to it (:func:`lift_to_rig`) and, with ``content``, sealed
    on /p b m/; without one the tracks have no expression channels."""
    from ..audio.features import mfcc_windows, n_frames, voice_activity, voice_activity_from_energy
    from ..audio.io import load_audio
    from ..face.projection import aligned_crop_transform

    n_samples, levels, rows = _scan(speech, with_rows=_shifts_mfcc(model, content))
    n = n_frames(n_samples)
    duration = n / FPS
    shift = _speech_shift(model, levels, rows, info)
    del rows
    if reference is None:
        reference = model.mean_face()

    emotion_dim = model.cfg.emotion_dim
    if spec.keys is not None:
        validate_keys(spec.keys, duration)

        def emotion_of(a: int, b: int):
            return per_frame(spec.keys, b - a, FPS, model.label_code, start=a)
    elif spec.reference_audio is not None:
        ref_audio = load_audio(spec.reference_audio)
        if not voice_activity(ref_audio).any():
            raise EvpError(f"{spec.reference_audio}: the reference emotion clip is silent; "
                           "give a clip with speech in the wanted emotion")
        if not hasattr(model, "emotion_code"):
            raise EvpError("--emotion-audio needs the EVP model on torch (load it with engine='torch')")
        code = model.emotion_code(mfcc_windows(ref_audio))
        probs = model.emotion_probs(code)
        ref_intensity = float(1.0 - probs[0])

        def emotion_of(a: int, b: int):
            return (np.broadcast_to(code, (b - a, emotion_dim)), np.tile(probs, (b - a, 1)),
                    np.full(b - a, ref_intensity, np.float32))
    else:
        emo = canonical_emotion(spec.emotion or "neutral")
        inten = check_intensity(spec.intensity) if emo != "neutral" else 0.0
        label_code = model.label_code(emo, inten)
        onehot = np.eye(NUM_EMOTIONS, dtype=np.float32)[EMOTIONS.index(emo)]

        def emotion_of(a: int, b: int):
            return (np.broadcast_to(label_code, (b - a, emotion_dim)), np.tile(onehot, (b - a, 1)),
                    np.full(b - a, inten, np.float32))

    visemes = closure = None
    if content is not None:
        if reads_visemes(model):
            visemes = content.visemes(n, FPS)
        elif model.reads_phones:
            # A delayed (live) model's LSTM reads frame t - d's content; phones say nothing of what
            # comes after their own frame, so its phone path has no look-ahead at all (measured on
            # realspeech-dev: 0.36 correlation, 32 ms late, against 0.61 from its MFCC encoder).
            import warnings
            warnings.warn(f"this EVP model reads the content {model.cfg.content_delay} frames late (a "
                          "live model), which its phone encoder cannot make up for: its MFCC content "
                          "encoder is used; the phones only seal the lips", stacklevel=3)
        else:
            import warnings
            warnings.warn("this EVP model has no phone content encoder (an older model file): its "
                          "MFCC content encoder is used; the phones only seal the lips", stacklevel=3)
        if rig is not None:
            closure = content.closure(n, FPS)
    # Voice activity and the gate over the whole clip: a few bytes a frame, and the gate's edges
    # (np.roll in _silence_gate) reach across the clip's ends.
    gate = _silence_gate(voice_activity_from_energy(levels))
    rest = _RestMouth(model, reference, lambda a, b: emotion_of(a, b)[0], n, chunk) if gate.any() else None
    pad, left = model.context(visemes), model.left_context(visemes)
    lstm_state = None
    scale, trans = aligned_crop_transform(CROP)
    ident = np.zeros(0, np.float32) if identity is None else np.asarray(identity, np.float32)

    def span(a: int, b: int) -> tuple[int, int]:
        return max(0, a - left), min(n, b + pad)

    def one_chunk(a: int, b: int, f0: int, windows: np.ndarray) -> Track:
        nonlocal lstm_state
        codes, weights, intensity = emotion_of(a, b)
        # The LSTM state is carried from chunk to chunk: the frames come out as one call's would.
        lm3d, lstm_state = model.predict_frames(windows, f0, n, a, b, codes, reference, lstm_state, visemes)
        # Only the gated frames' mouth rows are blended (elsewhere g = 0 leaves them as they are).
        on = np.flatnonzero(gate[a:b])
        if on.size:
            g = gate[a + on, None, None]
            lm3d[on, MOUTH] = (1 - g) * lm3d[on, MOUTH] + g * rest(a + on, codes[on])
        track = Track.new(
            _project(lm3d), fps=FPS, image_size=(CROP, CROP),
            landmarks_3d=lm3d, pose_translation=np.tile(np.asarray(trans, np.float32), (b - a, 1)),
            pose_scale=np.full(b - a, scale, np.float32), identity=ident,
            emotion=weights, intensity=intensity, provenance=provenance, info=info)
        if rig is not None:
            lift_to_rig(track, rig, identity)
            if closure is not None:
                seal_track(track, rig, closure[a:b], identity)
        return track

    yield from _run_chunks(_chunk_windows(speech, n_samples, n, chunk, span, shift, unread=visemes is not None),
                           one_chunk, n, progress)


def animate(audio: np.ndarray, model: EvpInference, spec: EmotionSpec, reference: np.ndarray | None = None,
            identity: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE, content=None,
            chunk_frames: int | None = None) -> Track:
    """Animate ``audio`` (N,) float32 mono at ``sample_rate`` → Track at 25 fps.

    ``reference`` (68, 3) mm is the neutral face to animate (default: the SFM mean face, stored in
    the model as the mean training reference); ``identity`` (63,) is recorded in the track if given.
    ``content`` (:class:`~evp_anim.audio.phones.SpeechContent`) feeds the phones' visemes to the
    phone content encoder Ep in Ec's place (a model without Ep keeps Ec, with a warning).
    Audio at another rate is converted to 16 kHz first (features and voice activity read that).
    Runs in chunks of ``chunk_frames`` frames (default :data:`CHUNK_FRAMES`), carrying the LSTM
    state; the result depends on the chunking only within ~1e-4 mm (float rounding, and inside a
    long chunk the LSTM's side-by-side rows: :meth:`~evp_anim.models.evp.EvpModel.predict_frames`).
    """
    chunk = _chunk_size(chunk_frames)
    return _join(_evp_chunks(_Speech.from_array(audio, sample_rate), model, spec, reference, identity,
                             content, None, chunk, model_provenance(model), {}))


def lift_to_rig(track: Track, rig, identity: np.ndarray | None = None) -> Track:
    """Fill ``track``'s expression channels with the rig weights (T, K) in [0, 1] that best
    reproduce its 3D landmarks (box-constrained least squares), so the EVP landmarks drive the
    shape-key head, Blender and ARKit exports. Modifies and returns ``track``.

    Solved per frame, in blocks of :data:`_LIFT_BLOCK` frames: the solver holds each frame's
    inverted bound-set system, (frames, |B|, |B|) float64 with |B| ≈ 20 of K = 42 channels (6 MB
    per 1500 frames, at most 21 MB), so bigger blocks would set the peak memory of a whole
    ``animate`` run; smaller ones pay the solver's per-call set-up (~3 ms) more often."""
    from ..face.solve import weights_from_landmarks
    lm = track.landmarks_3d
    weights = np.empty((len(lm), len(rig.channels)), np.float32)
    for a in range(0, len(lm), _LIFT_BLOCK):
        weights[a:a + _LIFT_BLOCK] = weights_from_landmarks(rig, lm[a:a + _LIFT_BLOCK], identity)
    track.expression = weights
    track.expression_names = list(rig.channels)
    return track.validate()


def seal_track(track: Track, rig, closure: np.ndarray, identity: np.ndarray | None) -> None:
    """Seal the lips of a lifted EVP track (or chunk) where ``closure`` (T,) of its frames says so
    (:func:`~evp_anim.face.lip_contact.closure_curve` of the /p b m/): the rig weights change, and
    the landmarks move by the rig's displacement for that change (the rig is linear), so the
    network's own landmarks are kept everywhere else. Per frame, so chunks seal as the whole does."""
    from ..face.lip_contact import close_lips
    before = track.expression
    after = close_lips(rig, before, closure, identity).astype(np.float32)
    if np.array_equal(before, after):
        return
    shift = rig.landmarks_3d(identity, after) - rig.landmarks_3d(identity, before)
    track.landmarks_3d = (track.landmarks_3d + shift).astype(np.float32)
    track.landmarks_2d = _project(track.landmarks_3d)
    track.expression = after
    track.validate()


# ---------------------------------------------------------------------- the EMOTE path
def default_emote_path() -> Path:
    """The shipped EMOTE weights (assets/emote_default.pt in the source tree)."""
    return Path(__file__).resolve().parents[2] / "assets" / "emote_default.pt"


def default_live_path() -> Path:
    """The shipped live EVP weights (assets/evp_live.pt: its phone encoder reads no frame ahead and
    no content delay, so `evp-anim live`, whose default it is, runs it on the acoustic front end
    with 35.6 ms of look-ahead)."""
    return Path(__file__).resolve().parents[2] / "assets" / "evp_live.pt"


ENGINES = ("auto", "numpy", "torch")


def load_animation_model(path: Path | str | None, engine: str = "auto"):
    """The model for ``animate --model``: None → the shipped EVP model; ``emote`` → the shipped
    EMOTE model; a file → EVP or EMOTE according to its format tag. One-line EvpError otherwise.

    ``engine`` runs an EVP model: ``numpy`` (:class:`~evp_anim.models.evp_numpy.EvpArrays`,
    without importing torch: a cold process starts 1.3–2.2 s sooner), ``torch``
    (:class:`~evp_anim.models.evp.EvpModel`: needed for ``--emotion-audio``; its LSTM is faster,
    ~20 against ~33 ms per minute of speech here), or ``auto``: torch when this process has
    already imported it, else numpy. EMOTE always runs on torch."""
    import sys
    from .torch_file import read_torch_file
    if engine not in ENGINES:
        raise EvpError(f"unknown engine {engine!r}: choose from {', '.join(ENGINES)}")
    if str(path) == "emote":
        path, kind = default_emote_path(), "emote"
    elif path is None:
        path, kind = default_model_path(), "evp"
    else:
        path, kind = Path(path), None                 # EVP or EMOTE: its format tag says
    if not path.is_file():
        raise EvpError(f"model file not found: {path}")
    on_torch = engine == "torch" or (engine == "auto" and "torch" in sys.modules)
    blob = None
    if kind is None or (kind == "evp" and not on_torch):
        # read once without torch: for the tag of a file given by path, or as the numpy engine's weights
        blob = read_torch_file(path)
        kind = "emote" if isinstance(blob, dict) and blob.get("format") == "evp-anim-emote-model" else "evp"
    if kind == "emote":
        from .emote import EmoteModel
        return EmoteModel.load(path)
    if on_torch:
        from .evp import EvpModel
        return EvpModel.load(path)
    from .evp_numpy import EvpArrays
    return EvpArrays.from_contents(blob, path)


def _emote_chunks(speech: _Speech, model, spec: EmotionSpec, rig, identity: np.ndarray | None,
                  style: str | None, content, chunk: int, provenance: dict, info: dict,
                  progress: Callable[[float], None] | None = None) -> Iterator[Track]:
    """EMOTE on ``speech``: Tracks of consecutive chunks of ``chunk`` frames (see :func:`animate_emote`).

    Each chunk [a, b) runs on the span [a - 64, b + 64) (its start on the latent grid), which is
    what :meth:`EmoteModel.predict` does for its own chunks: with ``chunk`` equal to predict's
    (:data:`CHUNK_FRAMES`) the coefficients are those of one predict call on the whole clip. The
    generator's GroupNorm normalises over its input's frames, so a different chunk size gives
    slightly different (equally valid) coefficients."""
    from ..audio.features import n_frames
    from ..face.projection import aligned_crop_transform
    from .emote import RATE, label_condition

    if spec.reference_audio is not None:
        raise EvpError("--emotion-audio needs the EVP model (EMOTE takes the emotion from a label or keys)")
    if style is not None and style not in model.speakers:
        known = ", ".join(model.speakers[:6]) + (" ..." if len(model.speakers) > 6 else "")
        raise EvpError(f"unknown speaker style {style!r}: the model knows {known or 'none'}")
    n_samples, levels, rows = _scan(speech, with_rows=_shifts_mfcc(model, content))
    n = n_frames(n_samples)
    shift = _speech_shift(model, levels, rows, info)
    del rows
    if spec.keys is not None:
        validate_keys(spec.keys, n / FPS)

        def emotion_of(a: int, b: int):
            _, weights, intensity = per_frame(spec.keys, b - a, FPS, lambda e, i: np.zeros(1, np.float32), start=a)
            return weights, intensity
    else:
        onehot, inten = label_condition(spec.emotion or "neutral", spec.intensity)

        def emotion_of(a: int, b: int):
            return np.tile(onehot, (b - a, 1)), np.full(b - a, inten, np.float32)
    if list(model.channels) != list(rig.channels):
        raise EvpError("the EMOTE model's channels differ from this rig's; retrain it")
    ident = None if identity is None else np.asarray(identity, np.float32)
    visemes = closure = None
    if content is not None:
        visemes = content.visemes(n, FPS)
        closure = content.closure(n, FPS)
    speaker = model.speaker_id(style)
    scale, trans = aligned_crop_transform(CROP)

    def span(a: int, b: int) -> tuple[int, int]:
        lo = max(0, a - _EMOTE_OVERLAP)
        return lo - lo % RATE, min(n, b + _EMOTE_OVERLAP)     # the latent grid stays aligned

    def one_chunk(a: int, b: int, lo: int, windows: np.ndarray) -> Track:
        hi = lo + len(windows)
        weights, intensity = emotion_of(lo, hi)
        coeffs = model.predict(windows, weights, intensity, speaker, chunk=hi - lo,
                               visemes=None if visemes is None else visemes[lo:hi])[a - lo:b - lo]
        if closure is not None:
            from ..face.lip_contact import close_lips
            coeffs = close_lips(rig, coeffs, closure[a:b], ident)
        lm3d = np.empty((b - a, 68, 3), np.float32)
        for c0 in range(0, b - a, _PROJECT_BLOCK):     # float64 temporaries: a few MB at a time
            lm3d[c0:c0 + _PROJECT_BLOCK] = rig.landmarks_3d(ident, coeffs[c0:c0 + _PROJECT_BLOCK])
        return Track.new(
            _project(lm3d), fps=FPS, image_size=(CROP, CROP),
            landmarks_3d=lm3d, pose_translation=np.tile(np.asarray(trans, np.float32), (b - a, 1)),
            pose_scale=np.full(b - a, scale, np.float32),
            identity=np.zeros(0, np.float32) if ident is None else ident,
            expression=coeffs, expression_names=list(rig.channels),
            emotion=weights[a - lo:b - lo], intensity=intensity[a - lo:b - lo],
            provenance=provenance, info=info)

    yield from _run_chunks(_chunk_windows(speech, n_samples, n, chunk, span, shift, unread=visemes is not None),
                           one_chunk, n, progress)


def animate_emote(audio: np.ndarray, model, spec: EmotionSpec, rig, identity: np.ndarray | None = None,
                  style: str | None = None, sample_rate: int = SAMPLE_RATE, content=None,
                  chunk_frames: int | None = None) -> Track:
    """EMOTE: ``audio`` (N,) float32 mono at ``sample_rate`` → Track at 25 fps whose ``expression``
    holds the rig coefficients (T, 42) (RIG_CHANNELS names), with landmarks_3d (mm) from the rig for
    ``identity`` (63,) (default: the SFM mean face) and their frontal projection in the 256×256
    aligned crop. Emotion from a label + intensity or timecoded keys (cross-fading the emotion
    weights and intensity the generator is conditioned on); ``style`` is a training speaker's name
    for its style id (None / unseen = the "unknown" style). ``content``
    (:class:`~evp_anim.audio.phones.SpeechContent`, phones heard by the recogniser or aligned from a
    transcript) replaces the content encoder's visemes with the phones' (the front end for real
    speech) and seals the lips on /p b m/ (:func:`~evp_anim.face.lip_contact.close_lips`).
    Runs in chunks of ``chunk_frames`` frames (default :data:`CHUNK_FRAMES`, where the result is
    one :meth:`EmoteModel.predict` call's on the whole clip)."""
    chunk = _chunk_size(chunk_frames)
    return _join(_emote_chunks(_Speech.from_array(audio, sample_rate), model, spec, rig, identity, style,
                               content, chunk, model_provenance(model), {"style": style or "unknown"}))


def _speech_file_chunks(path: str | Path, model, spec: EmotionSpec, rig, identity: np.ndarray | None,
                        style: str | None, front_end: str, text: str | None, warn,
                        chunk_frames: int | None, progress: Callable[[float], None] | None,
                        life=None, content=None,
                        hearing: Callable[[float], None] | None = None) -> Iterator[Track]:
    """The Tracks of consecutive chunks of :func:`animate_speech_file`'s result."""
    chunks = _speech_model_chunks(path, model, spec, rig, identity, style, front_end, text, warn,
                                  chunk_frames, progress, content, hearing)
    if life is None or life.off:
        yield from chunks
        return
    from ..living import Life, apply_life
    # One Life for the clip: its state (head, blink, gaze) runs on across the chunks.
    alive = Life(FPS, life)
    ident = np.zeros(rig.num_identity, np.float32) if identity is None else np.asarray(identity, np.float32)
    for track in chunks:
        yield apply_life(track, alive, rig, ident)


def reads_visemes(model) -> bool:
    """Whether the model reads viseme posteriors (EMOTE always; EVP with its phone encoder Ep)."""
    return bool(model.reads_visemes)


def _speech_model_chunks(path: str | Path, model, spec: EmotionSpec, rig, identity: np.ndarray | None,
                         style: str | None, front_end: str, text: str | None, warn,
                         chunk_frames: int | None, progress: Callable[[float], None] | None,
                         content=None, hearing: Callable[[float], None] | None = None) -> Iterator[Track]:
    """The models' chunks of :func:`animate_speech_file`'s result, before the living face."""
    from ..audio.io import audio_sha256, check_audio_file, load_audio
    from ..audio.phones import FRONT_ENDS, speech_content

    chunk = _chunk_size(chunk_frames)
    check_audio_file(path)
    ident = np.zeros(rig.num_identity, np.float32) if identity is None else np.asarray(identity, np.float32)
    if front_end not in FRONT_ENDS:
        raise EvpError(f"unknown front end {front_end!r}: choose from {', '.join(FRONT_ENDS)}")
    if text is not None and front_end == "mfcc":
        raise EvpError("a transcript needs a phone front end (--front-end words or phones), not mfcc")
    x = None
    if content is None and front_end != "mfcc":
        # The recogniser and the aligner take the whole clip; the animation still runs in chunks.
        x = load_audio(path, warn=warn)
        if front_end == "acoustic":
            from ..audio.acoustic import acoustic_content
            content = speech_content(x, text, warn=warn, recogniser=acoustic_content)
        else:
            content = speech_content(x, text, warn=warn, recogniser=front_end, progress=hearing)
    if content is not None and content.wants_acoustic and reads_visemes(model):
        # Phones (heard or aligned) are blended with the acoustic model's own frames
        # (evp_anim.audio.acoustic.PHONE_BLEND): a fraction of a second for a minute of speech.
        from ..audio.acoustic import with_acoustic_frames
        x = load_audio(path, warn=warn) if x is None else x
        content = with_acoustic_frames(content, x)
    speech = _Speech.from_file(path, warn=warn) if x is None else _Speech.from_array(x)
    provenance = {**model_provenance(model), "source_audio_sha256": audio_sha256(path)}
    if content is None:
        front = "mfcc"
    elif not content.has_phones:
        front = "acoustic (pocketsphinx phone posteriors per frame)"
    elif content.viseme_frames is not None:
        front = f"phones ({content.source}) + acoustic frames ({content.acoustic_weight:g})"
    else:
        front = f"phones ({content.source})"
    info = {"front_end": front, "audio": str(Path(path).resolve())}
    if model.kind == "emote":
        yield from _emote_chunks(speech, model, spec, rig, ident, style, content, chunk, provenance,
                                 {"style": style or "unknown", **info}, progress)
    else:
        yield from _evp_chunks(speech, model, spec, rig.landmarks_3d(ident), ident, content, rig, chunk,
                               provenance, info, progress)


def animate_speech_file(path: str | Path, model, spec: EmotionSpec, rig, identity: np.ndarray | None = None,
                        style: str | None = None, front_end: str = "mfcc", text: str | None = None,
                        warn=None, chunk_frames: int | None = None, life=None, content=None) -> Track:
    """Animate the speech file at ``path`` with an EVP model (landmarks, lifted to the rig) or an
    EMOTE model (rig coefficients) on the face of ``identity`` (63,) (default: the SFM mean face,
    recorded as zero coefficients so that ``align`` can re-express it on a target's face). The
    track records the audio's sha256 and absolute path. 25 fps.

    ``front_end="words"`` or ``"phones"`` adds what is said, heard by pocketsphinx (trained on
    real voices; :func:`~evp_anim.audio.phones.recognize_words`, the command line's default, or
    :func:`~evp_anim.audio.phones.recognize_phones`) or aligned from ``text`` (a transcript; a
    mismatching one is reported through ``warn`` and that recogniser is used): EMOTE reads the
    phones' visemes instead of its MFCC content encoder's, EVP reads them through its phone content
    encoder Ep instead of Ec, and both models seal the lips on /p b m/. ``"mfcc"`` (this function's
    default): the models' own audio features only — 100× faster, but poorer on real voices.
    ``content`` (:class:`~evp_anim.audio.phones.SpeechContent`) gives phones already heard (several
    takes of one clip), in place of ``front_end`` and ``text``.

    ``life`` (:class:`~evp_anim.living.LifeSettings`) adds head motion, blinks and gaze
    (:mod:`evp_anim.living`); None: the models' output as it is (head still, no gaze).

    The whole Track is returned; :func:`animate_speech_to_file` writes the same track to a file
    with memory that does not grow with the recording."""
    return _join(_speech_file_chunks(path, model, spec, rig, identity, style, front_end, text, warn,
                                     chunk_frames, None, life, content))


def animate_speech_to_file(path: str | Path, output: str | Path, model, spec: EmotionSpec, rig,
                           identity: np.ndarray | None = None, style: str | None = None,
                           front_end: str = "mfcc", text: str | None = None, warn=None,
                           progress: Callable[[float], None] | None = None,
                           chunk_frames: int | None = None,
                           frame_progress: Callable[[int], None] | None = None, life=None,
                           hearing: Callable[[float], None] | None = None, content=None) -> int:
    """:func:`animate_speech_file` written straight to the track file ``output`` (.npz), chunk by
    chunk through a :class:`~evp_anim.tracks.TrackWriter`: with the MFCC front end, memory is
    bounded by a chunk (:data:`CHUNK_FRAMES` frames) whatever the recording's length (a
    recogniser front end holds the clip's samples). The file appears only when complete (nothing
    is left behind on an error or an interrupt). ``life`` as in :func:`animate_speech_file`;
    ``hearing(fraction)`` is told how far the word recogniser is (it runs first, ~3–5× real time).
    ``progress(fraction)`` is told after each chunk, and ``frame_progress(frames)`` the number of
    frames (25 fps) written so far (the clip's total is ``n_frames`` of its 16 kHz samples, which a
    caller can read from the file's header up front). ``content`` as in
    :func:`animate_speech_file` (phones already heard, e.g. by
    :class:`~evp_anim.audio.hearing.BackgroundHearing`): the file is then streamed whatever the
    front end. Returns the number of frames written."""
    with TrackWriter(output) as writer:
        for track in _speech_file_chunks(path, model, spec, rig, identity, style, front_end, text, warn,
                                         chunk_frames, progress, life, content=content, hearing=hearing):
            writer.append(track)
            del track       # spooled: not held while the next chunk is made
            if frame_progress is not None:
                frame_progress(writer.n_frames)
    return writer.n_frames
