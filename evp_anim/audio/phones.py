"""Speech content from a recogniser trained on real human speech: pocketsphinx's phones.

The models learn from the project's synthetic (espeak-ng) voices; what they learn from those
acoustics does not carry over to real voices. Pocketsphinx's bundled US-English acoustic model
was trained on real recordings, so the phones it hears are the project's bridge to real speech.

Three ways to get phones of 16 kHz mono audio, all as ARPAbet segments ``[(start_s, end_s, phone)]``
(stress digits removed, silence and noise as ``"SIL"``):

* :func:`recognize_words` — audio only: pocketsphinx's word search (general English trigram
  model; CMUdict cut to the model's 20,000 most probable words, :data:`SEARCH_VOCABULARY`), then
  phone alignment of the words heard. About 7× real time on one core, 12× with a second process
  hearing half of the utterances (60 s of real speech; 3.7× on one core searching all of CMUdict).
* :func:`recognize_phones` — audio only: pocketsphinx's allphone search (phone n-gram language
  model, no words). About 15–30× real time on one core; many phones are wrong.
* :func:`align_transcript` — audio plus what is said: forced alignment of the words (CMUdict
  pronunciations; words outside it get espeak-ng's letter-to-sound rules, with a warning). Sharper
  phones when the user has the line; a transcript that does not match the audio is detected
  from the alignment score and raises :class:`TranscriptMismatch`.

:func:`phone_posteriors` turns segments into per-frame phone features at the track frame rate:
(T, 40) float32, the share of each 25 fps frame's 40 ms that each phone covers (rows sum to 1);
:func:`viseme_posteriors` does the same over the 15 viseme classes the EMOTE generator reads.
:func:`speech_content` is the front end ``animate`` uses: transcript if given and matching, else
a recogniser. The fourth front end, frame by frame without a search, is
:mod:`evp_anim.audio.acoustic`; :class:`SpeechContent` carries either, or phones with its frames
blended in.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
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


def espeak_segments_to_arpabet(phonemes: Sequence[tuple[float, float, str]]) -> list[Segment]:
    """A synthetic clip's espeak-ng phoneme segments (its track's ``phonemes``) as ARPAbet
    segments: a two-phone symbol (``A@`` → AA R) split in half, pauses and unknown symbols SIL."""
    out = []
    for s, e, p in phonemes:
        q = ESPEAK_TO_ARPABET.get(p) or ("SIL",)
        for i, x in enumerate(q):
            out.append((s + (e - s) * i / len(q), s + (e - s) * (i + 1) / len(q), x))
    return out


class TranscriptMismatch(EvpError):
    """The transcript does not match the audio (no alignment, or an alignment score too low)."""


def pocketsphinx_available() -> bool:
    """True when the pocketsphinx package can be imported."""
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


def require_pocketsphinx(what: str, alternative: str = "animate with --front-end mfcc, which does not need it") -> str:
    """pocketsphinx's model folder; one clear error (naming ``alternative``) when the package or
    its English model is missing."""
    if not pocketsphinx_available():
        raise EvpError(f"pocketsphinx is not installed: `pip install pocketsphinx` for {what} "
                       f"(or {alternative})")
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
    model = require_pocketsphinx("the phone recogniser")
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


# Utterances the word recogniser decodes one at a time: pocketsphinx's language-model search
# is made for sentence-long utterances (its n-gram model expects <s> … </s> around each); one
# search over minutes of audio is slower and drifts. A clip is cut in the middle of pauses
# (frames the voice-activity detector marks silent) into pieces of at most UTTERANCE_MAX_S.
UTTERANCE_MAX_S = 20.0
UTTERANCE_PAUSE_S = 0.2      # a pause must be at least this long to cut in
# Words the word search can hear: the language model's this many most probable words (with all
# their CMUdict pronunciations, ~23,000 entries) instead of all 126,000 CMUdict words. The
# search's cost grows with its lexicon: on the six realspeech-dev recordings the search took
# half the time (6.35 → 3.14 s for 12 clips) and heard the same words; on 24 synthetic corpus
# clips (espeak-ng and Festival voices) 18.1 → 12.3 s, word error 0.570 → 0.578. 10,000 lost
# "spades"; a bigram model instead of the trigram one heard "clothes" for "clubs". 3 of the
# corpus sentences' 594 words are outside the 20,000 (beige, cushions, postman). Rare words
# are heard as a similar common one (their phones mostly alike); a transcript is aligned with
# the whole dictionary.
SEARCH_VOCABULARY = 20_000


@dataclass
class WordRecognition:
    """What :func:`recognize_words` heard: the ``text`` (recognised words, lower case), ARPAbet
    ``phones`` segments aligned to those words, and ``utterances`` (start_s, end_s, text)."""

    text: str
    phones: list[Segment]
    utterances: list[tuple[float, float, str]]


def utterance_cuts(audio: np.ndarray, max_s: float = UTTERANCE_MAX_S, pause_s: float = UTTERANCE_PAUSE_S,
                   vad: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Sample ranges ``[(a, b)]`` tiling 16 kHz ``audio``, each at most ``max_s`` long, cut in the
    middle of the longest pause (≥ ``pause_s`` of frames without voice activity) that keeps a
    piece within ``max_s``; without such a pause, cut at ``max_s``. ``vad``: the clip's
    :func:`~evp_anim.audio.features.voice_activity` (25 fps) if already computed."""
    from .features import voice_activity
    n = int(audio.size)
    if n <= max_s * PS_SAMPLE_RATE:
        return [(0, n)]
    fps = DEFAULT_FPS
    vad = voice_activity(audio, PS_SAMPLE_RATE) if vad is None else vad
    # Pause midpoints (in samples) and lengths (s): runs of silent frames.
    quiet = np.concatenate([[False], ~vad, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if (b - a) / fps >= pause_s]
    mids = np.array([int((a + b) / 2 / fps * PS_SAMPLE_RATE) for a, b in runs], dtype=np.int64)
    lengths = np.array([(b - a) / fps for a, b in runs])
    cuts, start, step = [], 0, int(max_s * PS_SAMPLE_RATE)
    while n - start > step:
        ok = (mids > start + PS_SAMPLE_RATE) & (mids <= start + step)   # pieces of at least 1 s
        cut = int(mids[ok][np.argmax(lengths[ok])]) if ok.any() else start + step
        cuts.append((start, cut))
        start = cut
    cuts.append((start, n))
    return cuts


@lru_cache(maxsize=2)
def _search_dictionary(model: str, vocabulary: int) -> str:
    """CMUdict's entries (text, one per line) for the ``vocabulary`` most probable words of the
    word search's language model (ties by spelling; words the model lacks never), every
    pronunciation of each. ~0.3 s (the binary model is memory-mapped, not read)."""
    from pocketsphinx import Config, LogMath, NGramModel
    lm = NGramModel(Config(), LogMath(), os.path.join(model, "en-us", "en-us.lm.bin"))
    with open(os.path.join(model, "en-us", "cmudict-en-us.dict"), encoding="utf-8") as f:
        lines = f.readlines()
    words = [line.partition(" ")[0].partition("(")[0] for line in lines]     # "read(2)" → "read"
    probs = {w: lm.prob([w]) for w in set(words) if w}
    # prob() of a word the model lacks is its floor (a huge negative log value): such words never count.
    floor = min(probs.values())
    keep = set(sorted((w for w, p in probs.items() if p > floor), key=lambda w: (-probs[w], w))[:vocabulary])
    return "".join(line for line, w in zip(lines, words) if w in keep)


def _search_dictionary_file(model: str, vocabulary: int) -> tuple[str, bool]:
    """A file holding :func:`_search_dictionary`'s entries, and whether it is a temporary one the
    caller deletes. Kept in the per-user cache (``~/.cache/evp-anim/pocketsphinx``, named after
    the vocabulary and the model files' sizes and times) so that a fresh process reads it instead
    of ranking 126,000 words again (~0.3 s of every `animate`'s start); a temporary file where the
    cache cannot be written."""
    import tempfile
    from ..assets import default_cache_dir
    from ..atomic import write_text_atomic
    sources = [os.path.join(model, "en-us", name) for name in ("en-us.lm.bin", "cmudict-en-us.dict")]
    stamp = "-".join(f"{st.st_size}-{st.st_mtime_ns}" for st in map(os.stat, sources))
    cached = default_cache_dir().parent / "pocketsphinx" / f"search-{vocabulary}-{stamp}.dict"
    if cached.is_file():
        return str(cached), False
    text = _search_dictionary(model, vocabulary)
    try:
        write_text_atomic(cached, text)         # whole or not at all: another process may read it
        return str(cached), False
    except OSError:
        with tempfile.NamedTemporaryFile("w", suffix=".dict", delete=False, encoding="utf-8") as f:
            f.write(text)
        return f.name, True


def _word_decoder(model: str, vocabulary: int | None):
    """pocketsphinx's language-model decoder (bundled acoustic model, general English trigram
    model) over the :data:`SEARCH_VOCABULARY`-word dictionary (:func:`_search_dictionary`), or
    the whole of CMUdict when ``vocabulary`` is None or 0."""
    from pocketsphinx import Decoder
    args = dict(hmm=os.path.join(model, "en-us", "en-us"), lm=os.path.join(model, "en-us", "en-us.lm.bin"),
                loglevel="FATAL", samprate=PS_SAMPLE_RATE)
    if not vocabulary:
        return Decoder(dict=os.path.join(model, "en-us", "cmudict-en-us.dict"), **args)
    path, temporary = _search_dictionary_file(model, int(vocabulary))
    try:
        return Decoder(dict=path, **args)
    finally:
        if temporary:
            os.unlink(path)


def recognize_words(audio: np.ndarray, progress: Callable[[float], None] | None = None,
                    max_utterance_s: float = UTTERANCE_MAX_S, workers: int | None = None,
                    vocabulary: int | None = SEARCH_VOCABULARY) -> WordRecognition:
    """Words and their phones from 16 kHz mono float audio alone: pocketsphinx's language-model
    search (bundled US-English acoustic model, its general English trigram model and CMUdict),
    then phone alignment of the words it heard, utterance by utterance (:func:`utterance_cuts`, at
    most ``max_utterance_s`` long).

    Sharper phones than :func:`recognize_phones`: a phone must belong to a word, and the words to
    likely English. A misheard word usually still shares most phones with the right one ("for" /
    "four"). About 7× real time on one core, 12× on two (the search dominates), so long
    clips take a while: ``progress(fraction)`` is told after each utterance.

    ``vocabulary``: the words the search can hear, the language model's most probable ones
    (:data:`SEARCH_VOCABULARY`); None or 0 searches all of CMUdict (half the speed, the same
    words on the real development recordings). A rarer word is heard as a common one with
    similar phones; give the transcript (:func:`align_transcript`) for such lines. An utterance whose words cannot be
    aligned gets :func:`recognize_phones`'s phones instead.

    ``workers``: 2 hears the later half of the utterances in a forked process (:class:`~evp_anim.forked.ForkedWorker`),
    1 all here; default 2 where this process may use two cores (:func:`_parallel_hearing`). Each process's decoders start
    fresh, as the first utterance's do, so the words of an utterance do not depend on the split.
    """
    model = require_pocketsphinx("the word recogniser")
    a = np.asarray(audio, np.float32).reshape(-1)
    dec = _word_decoder(model, vocabulary)
    # Its own aligner: the recognising decoder's language-model search settings (filler and
    # silence penalties) align phones differently from how a transcript is aligned. It knows only
    # the words heard (:func:`_heard_aligner`), made when the first words are heard.
    aligner = None

    def aligner_for(words: list[str]):
        nonlocal aligner
        aligner = _heard_aligner(model, dec, words, aligner)
        return aligner
    from .features import voice_activity
    vad = voice_activity(a, PS_SAMPLE_RATE) if a.size else np.zeros(0, bool)
    cuts = utterance_cuts(a, max_s=max_utterance_s, vad=vad)
    heard: list[tuple[str, list[Segment]] | None] = [None] * len(cuts)
    voiced = []
    for i, (s0, s1) in enumerate(cuts):
        if vad[int(s0 / PS_SAMPLE_RATE * DEFAULT_FPS):int(np.ceil(s1 / PS_SAMPLE_RATE * DEFAULT_FPS))].any():
            voiced.append(i)
        else:
            heard[i] = ("", [])

    def hear(i: int) -> tuple[str, list[Segment]]:
        s0, s1 = cuts[i]
        return _hear(dec, aligner_for, a[s0:s1], s0 / PS_SAMPLE_RATE)

    told = 0

    def tell() -> None:                  # once per utterance done (several at once from the worker)
        nonlocal told
        done = sum(h is not None for h in heard)
        if progress is not None:
            for k in range(told + 1, done + 1):
                progress(k / len(cuts))
        told = done
    # The later utterances go to a second process when there is a second core: pocketsphinx
    # holds the GIL, so only a process can share the work (60 s: ~1.8x sooner on two cores).
    from ..forked import ForkedWorker
    worker = ForkedWorker.start(hear, _later_half(voiced, cuts), _parallel_hearing(workers))
    try:
        for i in voiced:
            if worker is not None and i in worker.keys:
                continue
            heard[i] = hear(i)
            if worker is not None:
                worker.collect(heard)
            tell()
        if worker is not None:
            while worker.collect(heard, wait=True):
                tell()
    finally:
        if worker is not None:
            worker.close()
    for i in voiced:                # what the worker could not give (it died): heard here
        if heard[i] is None:
            heard[i] = hear(i)
            tell()
    utterances = [(s0 / PS_SAMPLE_RATE, s1 / PS_SAMPLE_RATE, h[0]) for (s0, s1), h in zip(cuts, heard)]
    phones = [seg for h in heard for seg in h[1]]
    return WordRecognition(" ".join(t for _, _, t in utterances if t), phones, utterances)


def _parallel_hearing(workers: int | None) -> bool:
    """Whether :func:`recognize_words` hears in two processes: ``workers`` (1 or 2) if given,
    else when a forked worker can pay (:func:`~evp_anim.forked.can_fork_work`)."""
    from ..forked import can_fork_work
    if workers is not None:
        return workers >= 2
    return can_fork_work()


def _later_half(voiced: list[int], cuts: list[tuple[int, int]]) -> list[int]:
    """The later voiced utterances, about half of the voiced audio (none with fewer than two)."""
    if len(voiced) < 2:
        return []
    sizes = np.array([cuts[i][1] - cuts[i][0] for i in voiced], np.float64)
    before = np.cumsum(sizes) - sizes                      # audio before each utterance
    first_later = max(1, int(np.argmin(np.abs(before - sizes.sum() / 2))))
    return voiced[first_later:]


def _hear(dec, aligner_for: Callable[[list[str]], object], piece: np.ndarray,
          offset: float) -> tuple[str, list[Segment]]:
    """The words the language-model decoder ``dec`` hears in one voiced ``piece`` of a clip and
    their phones (times + ``offset`` s), aligned by ``aligner_for(words)``, a decoder that knows
    the words. A piece without voice activity is never searched: the
    language model finds words in digital silence or a hum (it heard "dog" in two seconds of
    zeros)."""
    pcm = _pcm16(piece)
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    hyp = dec.hyp()
    text = hyp.hypstr.strip() if hyp is not None else ""
    if not text:
        return "", []
    # The words heard are aligned as a transcript would be (their score is not checked: they
    # came from this audio); without a path through them, the phone recogniser's phones.
    try:
        return text, _align_words(aligner_for(text.split()), pcm, text.split(), offset)[0]
    except TranscriptMismatch:
        return text, [(offset + s, offset + e, p) for s, e, p in recognize_phones(piece)]


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
    dec = _aligner(require_pocketsphinx("transcript alignment"))
    unknown = [w for w in dict.fromkeys(words) if not dec.lookup_word(w)]
    for w in unknown:
        dec.add_word(w, " ".join(letter_to_sound(w)), True)
    if unknown:
        msg = (f"not in the pronunciation dictionary, pronounced by letter-to-sound rules: "
               f"{', '.join(unknown)}")
        (warn or (lambda m: warnings.warn(m, stacklevel=2)))(msg)
    segs, mean = _align_words(dec, _pcm16(audio), words)
    if mean < MISMATCH_SCORE:
        raise TranscriptMismatch(f"the transcript does not match the audio "
                                 f"(alignment score {mean:.1f} per frame, below {MISMATCH_SCORE:.0f})")
    return segs


def _aligner(model: str, dictionary: str | None = None):
    """A pocketsphinx decoder for forced alignment: the acoustic model and a pronunciation
    dictionary (default CMUdict), no language model."""
    from pocketsphinx import Decoder
    return Decoder(hmm=os.path.join(model, "en-us", "en-us"),
                   dict=dictionary or os.path.join(model, "en-us", "cmudict-en-us.dict"),
                   loglevel="FATAL", samprate=PS_SAMPLE_RATE)


def _heard_aligner(model: str, dec, words: Sequence[str], aligner=None):
    """A forced aligner that knows ``words`` (and every word it knew before: ``aligner``, None for
    a new one) with all their pronunciations ("read", "read(2)", ...), as the recogniser ``dec``'s
    dictionary has them. Only the words heard: building an aligner on the whole 130,000-word
    CMUdict took 0.28 s of a 2 s clip's cold start here, one on a few words 0.11 s; the phones
    are the same (tests/test_hearing.py)."""
    entries = []
    for word in dict.fromkeys(words):
        name, k = word, 1
        while (phones := dec.lookup_word(name)) is not None:
            entries.append((name, phones))
            k += 1
            name = f"{word}({k})"
    if aligner is None:
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".dict", delete=False) as f:
            f.write("".join(f"{name} {phones}\n" for name, phones in entries))
        try:
            return _aligner(model, f.name)
        finally:
            os.unlink(f.name)
    new = [(name, phones) for name, phones in entries if aligner.lookup_word(name) is None]
    for i, (name, phones) in enumerate(new):
        aligner.add_word(name, phones, i == len(new) - 1)      # the search is rebuilt once, at the last
    return aligner


def _align_words(dec, pcm: bytes, words: Sequence[str], offset: float = 0.0) -> tuple[list[Segment], float]:
    """Phone segments of the 16-bit ``pcm`` from forced alignment of ``words`` (all known to the
    decoder ``dec``'s dictionary), times shifted by ``offset`` s, and the alignment's mean score
    per 10 ms frame. Pass 1 aligns the words (optional silences between them); pass 2
    (set_alignment) aligns their phones inside them. :class:`TranscriptMismatch` when there is
    no path through the words."""
    n_frames = max(1, len(pcm) // 2 // int(PS_SAMPLE_RATE * PS_FRAME_S))
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
            start = offset + ph.start * PS_FRAME_S
            segs.append((start, start + ph.duration * PS_FRAME_S, normalize_phone(ph.name)))
    return [x for x in segs if x[1] > x[0]], score / n_frames


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


# animate's --front-end choices: "words" (word recogniser, the default of the command line),
# "acoustic" (pocketsphinx's acoustic model frame by frame, no search: fast, 36 ms look-ahead),
# "phones" (phone recogniser), "mfcc" (the models' own audio features: fast, streamable).
FRONT_ENDS = ("words", "acoustic", "phones", "mfcc")
RECOGNISERS = {"words": "words heard", "phones": "phones heard"}
ACOUSTIC_SOURCE = "acoustic model frames"   # SpeechContent.source of the acoustic front end (no phones)


@dataclass
class SpeechContent:
    """What is said, for the animation models: ARPAbet ``phones`` and where they came from
    (``"transcript"``: forced alignment; ``"words heard"`` / ``"phones heard"``: the recognisers,
    audio only; ``"acoustic model frames"``: no phones, per-frame posteriors only).

    ``viseme_frames`` (T, 15) / ``closure_frames`` (T,) at ``fps``: what the acoustic front end
    (:mod:`evp_anim.audio.acoustic`) heard frame by frame. With phones as well, the models read
    the blend ``(1 − acoustic_weight) · phones' visemes + acoustic_weight · viseme_frames`` and the
    lips close on the phones' /p b m/; without phones, the frames alone. ``acoustic_weight`` 0
    asks for the phones alone (``animate`` otherwise blends the frames in at
    :data:`~evp_anim.audio.acoustic.PHONE_BLEND`).
    """

    phones: list[Segment]
    source: str
    viseme_frames: np.ndarray | None = None
    closure_frames: np.ndarray | None = None
    fps: float = DEFAULT_FPS
    acoustic_weight: float | None = None

    @property
    def wants_acoustic(self) -> bool:
        """Phones that ``animate`` should blend the acoustic frames into (none given yet, weight not 0)."""
        return self.has_phones and self.viseme_frames is None and self.acoustic_weight != 0

    def with_acoustic(self, visemes: np.ndarray, closure: np.ndarray, weight: float) -> "SpeechContent":
        """These phones with the acoustic front end's frames blended in at ``weight``."""
        return dataclasses.replace(self, viseme_frames=visemes, closure_frames=closure, acoustic_weight=float(weight))

    @property
    def has_phones(self) -> bool:
        """False for the acoustic front end's content (frames only); True for phone sources, even
        when no phone was heard (a silent clip's phones are an empty list)."""
        return self.source != ACOUSTIC_SOURCE

    def visemes(self, n_frames: int, fps: float = DEFAULT_FPS) -> np.ndarray:
        """(n_frames, 15) float32 viseme posteriors at ``fps``, rows summing to 1: the phones'
        (:func:`viseme_posteriors`), the acoustic frames' (cut, or padded with silence, to
        ``n_frames``), or their blend (see the class)."""
        if self.viseme_frames is None:
            return viseme_posteriors(self.phones, n_frames, fps)
        frames = _fit_frames(self.viseme_frames, n_frames, fps, self.fps, pad_column=0)
        if not self.has_phones:
            return frames
        w = np.float32(1.0 if self.acoustic_weight is None else self.acoustic_weight)
        return ((1 - w) * viseme_posteriors(self.phones, n_frames, fps) + w * frames).astype(np.float32)

    def closure(self, n_frames: int, fps: float = DEFAULT_FPS) -> np.ndarray:
        """(n_frames,) float32 in [0, 1]: how closed the lips must be (1 on /p b m/): the phones'
        bilabials when there are phones, else the acoustic frames' closure."""
        if self.has_phones or self.closure_frames is None:
            from ..face.lip_contact import bilabial_intervals, closure_curve
            return closure_curve(bilabial_intervals(self.phones), n_frames, fps)
        return _fit_frames(self.closure_frames[:, None], n_frames, fps, self.fps)[:, 0]


def _fit_frames(values: np.ndarray, n_frames: int, fps: float, own_fps: float,
                pad_column: int | None = None) -> np.ndarray:
    """(n_frames, C) float32 of per-frame ``values`` (T, C): the same frame rate only (the front
    ends all give 25 fps), cut to ``n_frames`` or padded with zeros (a one in ``pad_column``)."""
    if abs(fps - own_fps) > 1e-6:
        raise EvpError(f"speech content at {own_fps:g} fps cannot feed a {fps:g} fps track")
    n = int(n_frames)
    out = np.zeros((n, values.shape[1]), np.float32)
    m = min(n, len(values))
    out[:m] = values[:m]
    if pad_column is not None:
        out[m:, pad_column] = 1.0
    return out


def speech_content(audio: np.ndarray, text: str | None = None,
                   warn: Callable[[str], None] | None = None,
                   recogniser: str | Callable[[np.ndarray], SpeechContent] = "words",
                   progress: Callable[[float], None] | None = None) -> SpeechContent:
    """What 16 kHz mono audio says: the transcript's phones when ``text`` is given and matches the
    audio, else the ``recogniser``'s — ``"words"`` (:func:`recognize_words`, ``progress`` told its
    fraction done), ``"phones"`` (:func:`recognize_phones`) or a function of the audio (the
    acoustic front end, :func:`~evp_anim.audio.acoustic.acoustic_content`). A mismatching
    transcript is reported through ``warn`` and the audio alone is used."""
    if not callable(recogniser) and recogniser not in RECOGNISERS:
        raise EvpError(f"unknown recogniser {recogniser!r}: choose from {', '.join(RECOGNISERS)}")
    if text is not None:
        try:
            return SpeechContent(align_transcript(audio, text, warn=warn), "transcript")
        except TranscriptMismatch as e:
            (warn or (lambda m: warnings.warn(m, stacklevel=2)))(f"{e}; using the audio alone")
    if callable(recogniser):
        return recogniser(audio)
    if recogniser == "words":
        return SpeechContent(recognize_words(audio, progress).phones, RECOGNISERS["words"])
    return SpeechContent(recognize_phones(audio), RECOGNISERS["phones"])
