"""Speech content from a recogniser trained on real human speech: pocketsphinx's phones.

The models learn from the project's synthetic (espeak-ng) voices; what they learn from those
acoustics does not carry over to real voices. Pocketsphinx's bundled US-English acoustic model
was trained on real recordings, so the phones it hears are the project's bridge to real speech.

Two ways to get phones of 16 kHz mono audio, both as ARPAbet segments ``[(start_s, end_s, phone)]``
(stress digits removed, silence and noise as ``"SIL"``):

* :func:`recognize_phones` — audio only: pocketsphinx's allphone search (phone n-gram language
  model, no words). About 15–30× real time on one core; some phones are wrong.
* :func:`align_transcript` — audio plus what is said: forced alignment of the words (CMUdict
  pronunciations; words outside it get espeak-ng's letter-to-sound rules, with a warning). Sharper
  phones when the user has the line; a transcript that does not match the audio is detected
  from the alignment score and raises :class:`TranscriptMismatch`.

:func:`phone_posteriors` turns segments into per-frame phone features at the track frame rate:
(T, 40) float32, the share of each 25 fps frame's 40 ms that each phone covers (rows sum to 1);
:func:`viseme_posteriors` does the same over the 15 viseme classes the EMOTE generator reads.
:func:`speech_content` is the front end ``animate`` uses: transcript if given and matching, else
the recogniser.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import EvpError
from ..tracks import DEFAULT_FPS

PS_FRAME_S = 0.01            # pocketsphinx frames are 10 ms
PS_SAMPLE_RATE = 16000       # the acoustic model's sample rate

# The 39 CMUdict phones (ARPAbet, no stress) and silence: the columns of phone_posteriors.
PHONES: tuple[str, ...] = (
    "SIL",
    "AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW",
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH",
    "T", "TH", "V", "W", "Y", "Z", "ZH",
)
PHONE_INDEX = {p: i for i, p in enumerate(PHONES)}
NUM_PHONES = len(PHONES)

# Mean per-frame alignment score (pocketsphinx log units, 10 ms frames) below which a transcript
# is taken not to match the audio. On the development recordings a matching transcript scored
# -6 to -14 and a wrong one -35 to -41 (or no alignment at all).
MISMATCH_SCORE = -25.0

# ARPAbet (CMUdict / pocketsphinx en-us phone set) → a representative espeak-ng mnemonic that
# evp_anim.synth.visemes maps (diphthongs keep their two-part viseme sequence).
ARPABET_TO_ESPEAK: dict[str, str] = {
    "AA": "A:", "AE": "a", "AH": "V", "AO": "O:", "AW": "aU", "AY": "aI", "EH": "E", "ER": "3:",
    "EY": "eI", "IH": "I", "IY": "i:", "OW": "oU", "OY": "OI", "UH": "U", "UW": "u:",
    "B": "b", "CH": "tS", "D": "d", "DH": "D", "F": "f", "G": "g", "HH": "h", "JH": "dZ", "K": "k",
    "L": "l", "M": "m", "N": "n", "NG": "N", "P": "p", "R": "r", "S": "s", "SH": "S", "T": "t",
    "TH": "T", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "Z",
    "SIL": "_",
}


def arpabet_to_espeak(phone: str) -> str:
    """espeak-ng mnemonic for an ARPAbet phone (stress digits ignored); silence/noise → ``"_"``."""
    p = phone.strip().upper().rstrip("012")
    if p.startswith("+") or p.startswith("<") or p.startswith("["):   # +NSN+, <sil>, [NOISE]
        return "_"
    return ARPABET_TO_ESPEAK.get(p, "_")

# espeak-ng (en-us) phoneme mnemonics → ARPAbet, for the letter-to-sound fallback.
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    "a": ("AE",), "aa": ("AA",), "A:": ("AA",), "A@": ("AA", "R"), "A": ("AA",), "0": ("AA",),
    "V": ("AH",), "@": ("AH",), "@2": ("AH",), "@5": ("AH",), "a#": ("AH",), "I#": ("IH",), "I2": ("IH",),
    "O:": ("AO",), "O": ("AO",), "O@": ("AO", "R"), "o@": ("AO", "R"), "aU": ("AW",), "aI": ("AY",),
    "aI@": ("AY", "ER"), "aU@": ("AW", "ER"), "E": ("EH",), "e@": ("EH", "R"), "3:": ("ER",), "3": ("ER",),
    "@L": ("AH", "L"), "eI": ("EY",), "I": ("IH",), "i": ("IY",), "i:": ("IY",), "i@": ("IY", "ER"),
    "i@3": ("IY", "ER"), "oU": ("OW",), "OI": ("OY",), "U": ("UH",), "U@": ("UH", "R"), "u:": ("UW",),
    "b": ("B",), "tS": ("CH",), "d": ("D",), "D": ("DH",), "f": ("F",), "g": ("G",), "h": ("HH",),
    "dZ": ("JH",), "k": ("K",), "l": ("L",), "m": ("M",), "n": ("N",), "N": ("NG",), "p": ("P",),
    "r": ("R",), "r-": ("R",), "s": ("S",), "S": ("SH",), "t": ("T",), "t#": ("T",), "T": ("TH",),
    "v": ("V",), "w": ("W",), "j": ("Y",), "z": ("Z",), "Z": ("ZH",), "x": ("HH",), "?": ("T",),
}

Segment = tuple[float, float, str]


class TranscriptMismatch(EvpError):
    """The transcript does not match the audio (no alignment, or an alignment score too low)."""


def pocketsphinx_available() -> bool:
    """True when the pocketsphinx package can be imported."""
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


def _require_pocketsphinx(what: str) -> str:
    """pocketsphinx's model folder; one clear error when the package or its English model is missing."""
    if not pocketsphinx_available():
        raise EvpError(f"pocketsphinx is not installed: `pip install pocketsphinx` for {what}")
    from pocketsphinx import get_model_path
    model = get_model_path()
    if not os.path.isdir(os.path.join(model, "en-us", "en-us")):
        raise EvpError(f"pocketsphinx's English model is missing from {model}: reinstall pocketsphinx")
    return model


def _pcm16(audio: np.ndarray) -> bytes:
    a = np.asarray(audio, np.float32).reshape(-1)
    return (np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


def normalize_phone(phone: str) -> str:
    """ARPAbet phone without stress digits; silence, fillers and noise (``<sil>``, ``+SPN+``,
    ``[NOISE]``, unknown symbols) → ``"SIL"``."""
    p = phone.strip().upper().rstrip("012")
    return p if p in PHONE_INDEX else "SIL"


# ------------------------------------------------------------------------ audio only
def recognize_phones(audio: np.ndarray) -> list[Segment]:
    """ARPAbet phone segments ``[(start_s, end_s, phone)]`` of 16 kHz mono float audio.

    Pocketsphinx allphone search with its bundled US-English acoustic model and phone language
    model. A fresh decoder per call (~0.1 s): a decoder's results depend on what it heard before.
    """
    model = _require_pocketsphinx("the phone recogniser")
    from pocketsphinx import Decoder
    dec = Decoder(hmm=os.path.join(model, "en-us", "en-us"),
                  allphone=os.path.join(model, "en-us", "en-us-phone.lm.bin"),
                  loglevel="FATAL", samprate=PS_SAMPLE_RATE, backtrace=False,
                  beam=1e-20, pbeam=1e-20, lw=2.0)
    dec.start_utt()
    dec.process_raw(_pcm16(audio), full_utt=True)
    dec.end_utt()
    segs = [(s.start_frame * PS_FRAME_S, (s.end_frame + 1) * PS_FRAME_S, normalize_phone(s.word))
            for s in (dec.seg() or [])]
    return [(s, e, p) for s, e, p in segs if e > s]


# ------------------------------------------------------------------------ with a transcript
def transcript_words(text: str) -> list[str]:
    """Lower-case words of a transcript: punctuation dropped, apostrophes inside words kept
    (``"Don't stop!"`` → ``["don't", "stop"]``)."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def letter_to_sound(word: str) -> list[str]:
    """ARPAbet pronunciation of any word from espeak-ng's en-us letter-to-sound rules."""
    from ..synth.espeak import engine
    events = engine().synth(word, "en-us").phoneme_events()
    phones: list[str] = []
    for ev in events:
        sym = ev.phoneme
        if not sym or sym.startswith("_"):
            continue
        mapped = ESPEAK_TO_ARPABET.get(sym) or ESPEAK_TO_ARPABET.get(sym.rstrip(":#"))
        if mapped is None:                 # an unusual vowel variant: a schwa is the safe guess
            mapped = ("AH",)
        phones.extend(mapped)
    if not phones:
        raise EvpError(f"no pronunciation for {word!r}")
    return phones


def align_transcript(audio: np.ndarray, text: str,
                     warn: Callable[[str], None] | None = None) -> list[Segment]:
    """Phone segments of 16 kHz mono audio from forced alignment of its transcript.

    Words not in CMUdict get espeak-ng's pronunciation (``warn`` is told which; default: a
    :mod:`warnings` warning). Raises :class:`EvpError` on empty text and
    :class:`TranscriptMismatch` when the words cannot be aligned or align badly (mean score per
    10 ms frame below :data:`MISMATCH_SCORE`).
    """
    words = transcript_words(text)
    if not words:
        raise EvpError("the transcript is empty (no words to align)")
    model = _require_pocketsphinx("transcript alignment")
    from pocketsphinx import Decoder
    dec = Decoder(hmm=os.path.join(model, "en-us", "en-us"),
                  dict=os.path.join(model, "en-us", "cmudict-en-us.dict"),
                  loglevel="FATAL", samprate=PS_SAMPLE_RATE)
    unknown = [w for w in dict.fromkeys(words) if not dec.lookup_word(w)]
    for w in unknown:
        dec.add_word(w, " ".join(letter_to_sound(w)), True)
    if unknown:
        msg = (f"not in the pronunciation dictionary, pronounced by letter-to-sound rules: "
               f"{', '.join(unknown)}")
        (warn or (lambda m: warnings.warn(m, stacklevel=2)))(msg)
    pcm = _pcm16(audio)
    n_frames = max(1, len(pcm) // 2 // int(PS_SAMPLE_RATE * PS_FRAME_S))
    # Pass 1 aligns the words; pass 2 (set_alignment) aligns their phones inside them.
    try:
        dec.set_align_text(" ".join(words))
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
        if dec.hyp() is None:
            raise TranscriptMismatch("the transcript does not match the audio (no alignment found)")
        dec.set_alignment()
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
        alignment = dec.get_alignment()
    except RuntimeError as e:
        # pocketsphinx raises a bare RuntimeError ("Failed to stop utterance processing") when the
        # search finds no path through the words: a mismatch, as far as the user can act on it.
        raise TranscriptMismatch(f"the transcript does not match the audio (the aligner failed: "
                                 f"{str(e).splitlines()[0] if str(e) else 'no path'})") from None
    if alignment is None:
        raise TranscriptMismatch("the transcript does not match the audio (no alignment found)")
    segs: list[Segment] = []
    score = 0.0
    for word in alignment:
        for ph in word:
            score += ph.score
            start = ph.start * PS_FRAME_S
            segs.append((start, start + ph.duration * PS_FRAME_S, normalize_phone(ph.name)))
    mean = score / n_frames
    if mean < MISMATCH_SCORE:
        raise TranscriptMismatch(f"the transcript does not match the audio "
                                 f"(alignment score {mean:.1f} per frame, below {MISMATCH_SCORE:.0f})")
    return [s for s in segs if s[1] > s[0]]


# ------------------------------------------------------------------------ per-frame features
def phone_posteriors(segments: Sequence[Segment], n_frames: int, fps: float = DEFAULT_FPS) -> np.ndarray:
    """(n_frames, 40) float32: for each frame (centred on (i + 0.5) / fps, 1/fps long) the share of
    it that each phone of :data:`PHONES` covers; uncovered time counts as silence, so rows sum to 1."""
    cols = [(s, e, PHONE_INDEX.get(normalize_phone(p), 0)) for s, e, p in segments]
    return _frame_shares(cols, int(n_frames), NUM_PHONES, fps)


def _frame_shares(segments: Sequence[tuple[float, float, int]], n: int, width: int, fps: float) -> np.ndarray:
    """(n, width) float32: the share of each frame (1/fps long, from i/fps) that segments
    ``(start_s, end_s, column)`` cover, uncovered time in column 0 (silence), rows summing to 1."""
    out = np.zeros((n, width), np.float32)
    if n == 0:
        return out
    lo = np.arange(n) / fps
    hi = lo + 1.0 / fps
    for start, end, col in segments:
        overlap = np.clip(np.minimum(hi, end) - np.maximum(lo, start), 0.0, None) * fps
        out[:, col] += overlap.astype(np.float32)
    out[:, 0] += np.clip(1.0 - out.sum(axis=1), 0.0, None)
    out /= np.maximum(out.sum(axis=1, keepdims=True), 1e-6)
    return out


def phone_at_frames(segments: Sequence[Segment], n_frames: int, fps: float = DEFAULT_FPS) -> list[str]:
    """The phone at each frame centre (``"SIL"`` where no segment covers it)."""
    centres = (np.arange(int(n_frames)) + 0.5) / fps
    labels = ["SIL"] * int(n_frames)
    for start, end, phone in segments:
        for i in np.nonzero((centres >= start) & (centres < end))[0]:
            labels[int(i)] = normalize_phone(phone)
    return labels


def viseme_posteriors(segments: Sequence[Segment], n_frames: int, fps: float = DEFAULT_FPS) -> np.ndarray:
    """(n_frames, 15) float32: the share of each frame that each viseme class of
    :data:`~evp_anim.synth.visemes.VISEMES` covers, for ARPAbet segments (diphthongs split into their
    two visemes as the corpus does); rows sum to 1, uncovered time is silence. The EMOTE
    generator's content input when the phones come from the recogniser or a transcript."""
    from ..synth.visemes import VISEMES, viseme_sequence
    index = {v: i for i, v in enumerate(VISEMES)}
    segs = viseme_sequence([(s, e, arpabet_to_espeak(p)) for s, e, p in segments])
    return _frame_shares([(s, e, index[v]) for s, e, v in segs], int(n_frames), len(VISEMES), fps)


FRONT_ENDS = ("phones", "mfcc")


@dataclass
class SpeechContent:
    """What is said, for the animation models: ARPAbet ``phones`` and where they came from
    (``"transcript"``: forced alignment; ``"recogniser"``: audio only)."""

    phones: list[Segment]
    source: str


def speech_content(audio: np.ndarray, text: str | None = None,
                   warn: Callable[[str], None] | None = None) -> SpeechContent:
    """Phones of 16 kHz mono audio: from the transcript when ``text`` is given and matches the
    audio, else from the recogniser (a mismatching transcript is reported through ``warn`` and
    the audio alone is used)."""
    if text is not None:
        try:
            return SpeechContent(align_transcript(audio, text, warn=warn), "transcript")
        except TranscriptMismatch as e:
            (warn or (lambda m: warnings.warn(m, stacklevel=2)))(f"{e}; using the audio alone")
    return SpeechContent(recognize_phones(audio), "recogniser")
