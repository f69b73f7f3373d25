"""Emotional speech clips with exact phoneme timing.

:func:`synthesize_utterance` renders text with espeak-ng (in-process), takes phoneme boundaries
from espeak's own phoneme events (sample-exact at 22050 Hz), resamples to 16 kHz with soxr,
applies the emotion's voice-quality filters, sets the loudness and pads silence. The phoneme list
therefore describes the audio exactly: it tiles [0, duration] with no gaps. Speakers whose
``engine`` is ``"festival"`` are rendered by :mod:`evp_anim.synth.festival` instead and share the
same post-processing (:func:`finish_speech`).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import soxr

from ..audio.features import SAMPLE_RATE
from ..emotions import canonical_emotion, check_intensity
from ..errors import EvpError
from . import espeak, festival
from .prosody import Prosody, apply_voice_quality, emotion_prosody
from .speakers import Speaker

SILENCE = "_"
PEAK_LIMIT = 0.985          # float32(0.99) > 0.99, so stay clearly below the promised 0.99
_DITHER = 3e-5              # ≈ -90 dBFS noise floor: keeps log-spectra finite in silences


@dataclass
class Utterance:
    """One synthesized clip.

    ``audio``: (N,) float32 mono at ``sample_rate`` (16000) Hz, peak ≤ 0.99.
    ``phonemes``: [(start_s, end_s, symbol)] in seconds, contiguous from 0 to N / sample_rate,
    each non-empty; symbols are espeak-ng ASCII mnemonics, pauses and silences are ``"_"``.
    ``words``: [(start_s, end_s, word)] — the span of each word's phonemes (an entry may hold
    two words where espeak speaks a function word with its neighbour, e.g. ``"on the"``).
    """

    audio: np.ndarray
    sample_rate: int = SAMPLE_RATE
    phonemes: list[tuple[float, float, str]] = field(default_factory=list)
    words: list[tuple[float, float, str]] = field(default_factory=list)
    text: str = ""
    speaker_id: str = ""
    emotion: str = "neutral"
    intensity: float = 0.0
    prosody: Prosody | None = None

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.audio) / float(self.sample_rate)


def _is_pause(sym: str) -> bool:
    # espeak pauses: "_" (short), "_:" (clause), "_!" "_|" "_::" "_;_" "_^_"; "||" is a boundary.
    return sym.startswith("_") or sym == "||"


def _segments_from_events(events: list[espeak.Event], n_samples: int) -> list[tuple[int, int, str]]:
    """Phoneme events → contiguous [(start, end, symbol)] in engine samples covering [0, n_samples).

    Zero-length phonemes: espeak emits some post-vocalic liquids ("wall" → O: l) at the same
    sample as the following event because their sound is synthesised inside the preceding
    vowel's transition. Rather than lose the articulation we give such a phoneme the last third
    of the preceding non-pause segment (that is where it is audible); other empty ones are dropped.
    """
    marks = [(min(max(e.sample, 0), n_samples), SILENCE if _is_pause(e.phoneme) else e.phoneme)
             for e in events if e.type == espeak.EVENT_PHONEME and e.phoneme]
    segs: list[list] = []
    prev = 0
    if not marks or marks[0][0] > 0:
        segs.append([0, marks[0][0] if marks else n_samples, SILENCE])
    for i, (s, sym) in enumerate(marks):
        e = marks[i + 1][0] if i + 1 < len(marks) else n_samples
        s = max(s, prev)
        e = max(e, s)
        prev = e
        if e > s:
            segs.append([s, e, sym])
        elif sym != SILENCE and segs and segs[-1][2] != SILENCE:
            ps, pe, _ = segs[-1]
            cut = pe - max(1, (pe - ps) // 3)
            if cut > ps:
                segs[-1][1] = cut
                segs.append([cut, pe, sym])
    # Merge neighbouring silences; make sure the list reaches the end.
    out: list[tuple[int, int, str]] = []
    for s, e, sym in segs:
        if out and sym == SILENCE and out[-1][2] == SILENCE:
            out[-1] = (out[-1][0], e, SILENCE)
        else:
            out.append((s, e, sym))
    if out[-1][1] < n_samples:
        if out[-1][2] == SILENCE:
            out[-1] = (out[-1][0], n_samples, SILENCE)
        else:
            out.append((out[-1][1], n_samples, SILENCE))
    return out


def _words_from_events(events: list[espeak.Event], text: str,
                       segs: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """WORD events → [(start, end, words)] in engine samples.

    espeak sometimes speaks an unstressed function word together with its neighbour and emits
    one event for both ("on the" → one event), so an entry's text runs from its event's text
    position to the next event's: the entries' words, joined, are always the text's words. An
    entry ends at the next entry's start or at the first pause after it, whichever is first.
    """
    words = [e for e in events if e.type == espeak.EVENT_WORD]
    pauses = [s for s, _, sym in segs if sym == SILENCE]
    out = []
    for i, w in enumerate(words):
        # WORD events come a few samples before the word's first phoneme event: snap to it.
        start = next((s for s, _, sym in segs if s >= w.sample and sym != SILENCE), w.sample)
        end = words[i + 1].sample if i + 1 < len(words) else segs[-1][1]
        later = [p for p in pauses if p > start]
        if later:
            end = min(end, later[0])
        a = max(w.text_position - 1, 0)
        b = max(words[i + 1].text_position - 1, a) if i + 1 < len(words) else len(text)
        token = " ".join(text[a:b].split()).strip(" .,;:!?\"'")
        if end > start and token:
            out.append((start, end, token))
    return out


def active_level_db(x: np.ndarray, sr: int) -> float:
    """Active speech level in dBFS: mean power of 20 ms frames within 35 dB of the loudest."""
    hop = max(1, int(0.02 * sr))
    n = len(x) // hop
    if n == 0:
        return -120.0
    p = np.mean(x[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1)
    top = float(p.max())
    if top <= 0:
        return -120.0
    act = p[p > top * 10 ** (-35 / 10)]
    return 10.0 * math.log10(float(act.mean()))


def soft_limit(x: np.ndarray, ceiling: float = PEAK_LIMIT, knee: float = 0.8) -> np.ndarray:
    """Identity below ``knee``; above it a tanh curve that approaches but never passes ``ceiling``."""
    a = np.abs(x)
    over = a > knee
    if np.any(over):
        room = ceiling - knee
        y = x.copy()
        y[over] = np.sign(x[over]) * (knee + room * np.tanh((a[over] - knee) / room))
        return y
    return x


def clip_rng(speaker: Speaker, text: str, seed: int) -> np.random.Generator:
    """The generator behind one clip's variation: depends on the speaker, the text and ``seed``
    — not on the emotion, so emotions of the same clip share their random draws."""
    return np.random.default_rng([int(speaker.seed) % (1 << 64), zlib.crc32(text.encode("utf-8")),
                                  int(seed) % (1 << 64)])


def synthesize_utterance(text: str, speaker: Speaker, emotion: str = "neutral", intensity: float = 1.0,
                         seed: int = 0) -> Utterance:
    """Speak ``text`` as ``speaker`` in ``emotion`` at ``intensity`` ∈ [0, 1] → :class:`Utterance`.

    The speaker's ``engine`` picks the synthesiser: espeak-ng (in-process) or a Festival voice
    (:mod:`evp_anim.synth.festival`); both go through the same emotion prosody and
    :func:`finish_speech`. Deterministic: equal arguments give bit-identical audio and timings.
    Raises :class:`EvpError` for an unknown emotion, an intensity outside [0, 1], empty text, or a
    missing synthesiser.
    """
    emotion = canonical_emotion(emotion)
    intensity = check_intensity(intensity)
    text = " ".join(str(text).split())
    if not text:
        raise EvpError("cannot synthesise empty text: give at least one word")
    rng = clip_rng(speaker, text, seed)
    pros = emotion_prosody(speaker, emotion, intensity, rng)

    if speaker.engine == "festival":
        r = festival.render(text, speaker.voice, pros, speaker.warp)
        return finish_speech(r.audio, r.segments, r.words, r.duration_s, text, speaker, pros, rng)
    if speaker.engine != "espeak":
        raise EvpError(f"unknown speech engine {speaker.engine!r}: expected espeak or festival")

    eng = espeak.engine()
    res = eng.synth(text, pros.voice, rate=pros.rate, pitch=pros.pitch, pitch_range=pros.pitch_range,
                    word_gap=pros.word_gap)
    raw = res.samples.astype(np.float32) / 32768.0
    esr = res.sample_rate
    if len(raw) == 0:
        raise EvpError(f"espeak-ng produced no audio for {text[:40]!r}: check the text is English words")
    segs = _segments_from_events(res.events, len(raw))
    words = _words_from_events(res.events, text, segs)

    # 22050 → 16000. soxr compensates its filter delay, so sample k here is time k / 16000
    # of the original; event times map by plain scaling.
    y = soxr.resample(raw, esr, SAMPLE_RATE, quality="HQ").astype(np.float64)
    return finish_speech(y, [(s / esr, e / esr, sym) for s, e, sym in segs],
                         [(s / esr, e / esr, w) for s, e, w in words], len(raw) / esr,
                         text, speaker, pros, rng)


def finish_speech(y: np.ndarray, segments: list[tuple[float, float, str]],
                  words: list[tuple[float, float, str]], source_duration_s: float, text: str,
                  speaker: Speaker, pros: Prosody, rng: np.random.Generator) -> Utterance:
    """The post-processing every engine shares → :class:`Utterance`.

    ``y``: (N,) float audio at 16000 Hz as the engine made it; ``segments``: its phones
    [(start_s, end_s, symbol)] tiling [0, ``source_duration_s``] (the engine's own length,
    ≈ N / 16000), pauses ``"_"``; ``words``: [(start_s, end_s, word)] on the same clock.
    Applies the emotion's voice quality, sets the active level to ``pros.loudness_db``, pads
    silence to ``pros.lead_s`` / ``pros.trail_s``, adds the dither floor and soft-limits the
    peak; the phone times move with the padding and still tile the clip exactly.
    """
    y = apply_voice_quality(y, SAMPLE_RATE, pros, rng).astype(np.float64)

    gain_db = pros.loudness_db - active_level_db(y, SAMPLE_RATE)
    y *= 10.0 ** (gain_db / 20.0)

    # Silence padding: engines leave a little silence before the first phoneme and after the
    # last (espeak a few ms and ~0.1 s); top both up to the prosody's lead/trail silence.
    first_speech = next((s for s, _, sym in segments if sym != SILENCE), 0.0)
    last_speech = next((e for s, e, sym in reversed(segments) if sym != SILENCE), source_duration_s)
    pad_front = max(0, int(round((pros.lead_s - first_speech) * SAMPLE_RATE)))
    pad_back = max(0, int(round((pros.trail_s - (source_duration_s - last_speech)) * SAMPLE_RATE)))
    y = np.concatenate([np.zeros(pad_front), y, np.zeros(pad_back)])
    y += _DITHER * rng.standard_normal(len(y))
    y = soft_limit(y).astype(np.float32)

    n = len(y)
    dur = n / SAMPLE_RATE
    off = pad_front / SAMPLE_RATE

    phonemes = [[off + a, off + b, sym] for a, b, sym in segments]
    # Stretch the tiling over the padding: the edges become (or join) silence, and the last
    # boundary is the exact clip end (resampling rounds the length by < 1 sample).
    if phonemes[0][2] == SILENCE:
        phonemes[0][0] = 0.0
    elif phonemes[0][0] > 0:
        phonemes.insert(0, [0.0, phonemes[0][0], SILENCE])
    if phonemes[-1][2] == SILENCE or dur - phonemes[-1][1] < 0.5 / SAMPLE_RATE:
        phonemes[-1][1] = dur
    else:
        phonemes.append([phonemes[-1][1], dur, SILENCE])
    phonemes = [(float(a), float(b), sym) for a, b, sym in phonemes if b > a]
    word_times = [(off + a, min(off + b, dur), w) for a, b, w in words]
    return Utterance(audio=y, sample_rate=SAMPLE_RATE, phonemes=phonemes, words=word_times, text=text,
                     speaker_id=speaker.speaker_id, emotion=pros.emotion,
                     intensity=pros.intensity, prosody=pros)
