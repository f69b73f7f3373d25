"""Festival voices built from real recordings, with exact phone timing.

Debian ships three US-English Festival voices made from recordings of real speakers:
``kal_diphone`` and ``ked_diphone`` (male, residual-excited LPC diphone concatenation;
packages ``festvox-kallpc16k`` and ``festvox-kdlpc16k``) and ``cmu_us_slt_arctic_hts`` (female,
an HTS statistical-parametric voice trained on the CMU ARCTIC "slt" recordings; package
``festvox-us-slt-hts``). Their acoustics differ from espeak-ng's formant synthesis, which is the
point: the corpus can mix them so a model does not learn one synthesiser's sound.

:func:`render` speaks one sentence through a persistent ``festival --pipe`` process (one per
Python process: start-up costs ~0.25 s, a diphone sentence ~0.03 s, an HTS sentence ~0.35 s)
and reads back the waveform and the ``Segment`` relation (each phone's end time — the times the
synthesiser itself placed the units at, so they describe the audio exactly). Phones are in
Festival's US "radio" phone set and are mapped to espeak-ng mnemonics through ARPAbet
(:func:`festival_phone`), so :mod:`evp_anim.synth.visemes` uses them unchanged.

Prosody (:class:`~evp_anim.synth.prosody.Prosody`, espeak units) is mapped as follows:

* rate — ``Duration_Stretch`` (diphone voices) or hts_engine's speed option ``-r`` (HTS; HTS
  ignores ``Duration_Stretch``), relative to espeak's default 175 wpm;
* pitch level and range — the diphone voices' linear-regression intonation targets
  (``int_lr_params`` ``target_f0_mean`` / ``target_f0_std``); the HTS voice generates its own F0
  and has no pitch option in Festival's hts_engine module, so its level moves with the warp
  below and its range stays the voice's own;
* warp — every voice is rendered, then read as if sampled ``warp`` times faster (resampled to
  16 kHz from ``warp × native rate``): pitch and formants rise by ``warp`` (a vocal-tract-length
  change, which gives three recorded voices many speakers), durations shrink by ``warp`` and
  are pre-compensated in the rate, and phone times are divided by ``warp``, so they stay exact;
* word gaps — not available (Festival places its own pauses).
"""

from __future__ import annotations

import atexit
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from ..audio.features import SAMPLE_RATE
from ..audio.phones import arpabet_to_espeak
from ..errors import EvpError
from .prosody import Prosody

SILENCE = "_"
ESPEAK_DEFAULT_WPM = 175.0        # the rate Prosody.rate is relative to (espeak-ng's default)
HTS_WARP_RANGE = (0.8, 1.25)      # HTS pitch moves only with the warp: keep formants plausible
_TIMEOUT_S = 120.0                # a sentence takes < 1 s; a hung festival is killed after this


@dataclass(frozen=True)
class FestivalVoice:
    """A Festival voice: ``name`` (its ``voice_<name>`` function), ``sex`` ("F"/"M"), ``kind``
    ("diphone" or "hts"), its intonation model's own F0 mean and standard deviation (Hz; the
    diphone voices' ``int_lr_params`` defaults) and the Debian package that installs it."""

    name: str
    sex: str
    kind: str
    f0_mean: float
    f0_std: float
    package: str


VOICES: dict[str, FestivalVoice] = {
    "kal_diphone": FestivalVoice("kal_diphone", "M", "diphone", 105.0, 14.0, "festvox-kallpc16k"),
    "ked_diphone": FestivalVoice("ked_diphone", "M", "diphone", 105.0, 15.0, "festvox-kdlpc16k"),
    "cmu_us_slt_arctic_hts": FestivalVoice("cmu_us_slt_arctic_hts", "F", "hts", 170.0, 34.0,
                                           "festvox-us-slt-hts"),
}
MALE_VOICES: tuple[str, ...] = tuple(v for v, d in VOICES.items() if d.sex == "M")
FEMALE_VOICES: tuple[str, ...] = tuple(v for v, d in VOICES.items() if d.sex == "F")

# Festival's radio phone set beyond plain lower-case ARPAbet: reduced and syllabic phones, the
# flap, and its silences. Syllabic /l m n/ keep the consonant (its mouth shape is the visible part).
_RADIO_TO_ARPABET = {
    "ax": "AH", "axr": "ER", "dx": "D", "el": "L", "em": "M", "en": "N", "hv": "HH", "nx": "N",
    "pau": "SIL", "h#": "SIL", "brth": "SIL", "ssil": "SIL", "sil": "SIL",
}


def festival_phone(name: str) -> str:
    """espeak-ng mnemonic of a Festival (US radio phone set) phone; silences → ``"_"``."""
    name = name.strip().lower()
    return arpabet_to_espeak(_RADIO_TO_ARPABET.get(name, name.upper()))


def pitch_factor(pitch: float) -> float:
    """F0 factor of an espeak-style pitch parameter (0–100, 50 = the voice's own): ×0.6 at 0,
    ×1.6 at 100, geometric in between (espeak's own approximate span)."""
    p = float(pitch)
    return 0.6 ** ((50.0 - p) / 50.0) if p < 50.0 else 1.6 ** ((p - 50.0) / 50.0)


def range_factor(pitch_range: float) -> float:
    """F0-range factor of an espeak-style range parameter: 0 = monotone, 50 = ×1, 100 = ×2."""
    return max(0.0, float(pitch_range)) / 50.0


def festival_available() -> bool:
    """True when a ``festival`` executable is on PATH (voices are checked by :func:`check_voices`)."""
    return shutil.which("festival") is not None


@dataclass
class FestivalRender:
    """One rendered sentence before the shared post-processing.

    ``audio``: (N,) float64 at 16000 Hz. ``segments``: [(start_s, end_s, symbol)] contiguous from
    0 to ``duration_s`` = N / 16000 (up to < 1 sample of resampling rounding), espeak-ng mnemonics,
    silences ``"_"``. ``words``: [(start_s, end_s, token)] with Festival's tokens (numbers spelled
    out; clitics such as "'s" are merged into their word).
    """

    audio: np.ndarray
    segments: list[tuple[float, float, str]]
    words: list[tuple[float, float, str]]
    duration_s: float


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Defined once per festival process: synthesise, write the wave and the phone/word times, then
# report on stderr (unbuffered, unlike stdout through a pipe).
_PRELUDE = r"""
(define (evp_run text wavfile segfile)
  (let ((utt (SynthText text)) (fd (fopen segfile "w")))
    (utt.save.wave utt wavfile 'riff)
    (mapcar (lambda (s) (format fd "S %s %f\n" (item.name s) (item.feat s "end")))
            (utt.relation.items utt 'Segment))
    (mapcar (lambda (w) (format fd "W %f %f %s\n"
                                (item.feat w "R:SylStructure.daughter1.daughter1.segment_start")
                                (item.feat w "R:SylStructure.daughtern.daughtern.end")
                                (item.name w)))
            (utt.relation.items utt 'Word))
    (fclose fd)
    (format stderr "EVP-DONE\n")))
(format stderr "EVP-READY\n")
"""


class FestivalServer:
    """One ``festival --pipe`` process fed Scheme commands; each result comes back through two
    temporary files, removed as soon as they are read (a worker killed by its pool leaves nothing
    behind but, at most, one call's files). Not thread-safe; one per process (:func:`server`)."""

    def __init__(self) -> None:
        if not festival_available():
            raise EvpError("festival is not installed: apt-get install festival festvox-kallpc16k "
                           "festvox-kdlpc16k festvox-us-slt-hts (or use --voices espeak)")
        self.pid = os.getpid()
        self.proc = subprocess.Popen(["festival", "--pipe"], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._buf = b""
        self._send(_PRELUDE, "EVP-READY")

    def _send(self, cmd: str, marker: str) -> None:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        try:
            self.proc.stdin.write(cmd.encode("utf-8") + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise EvpError("festival stopped unexpectedly") from None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + _TIMEOUT_S
        while True:
            lines = self._buf.split(b"\n")
            for i, line in enumerate(lines[:-1]):
                text = line.decode("utf-8", "replace")
                if "SIOD ERROR" in text:
                    self._buf = b""
                    raise EvpError(f"festival failed: {text.strip()}")
                if marker in text:
                    self._buf = b"\n".join(lines[i + 1:])
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise EvpError(f"festival did not answer within {_TIMEOUT_S:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EvpError("festival stopped unexpectedly")
                self._buf += chunk

    def say(self, setup: str, text: str) -> tuple[np.ndarray, int, list[str]]:
        """Run ``setup`` (Scheme) then synthesise ``text`` → (samples float32, native rate, result lines)."""
        from scipy.io import wavfile

        paths = []
        try:
            for suffix in (".wav", ".txt"):
                fd, name = tempfile.mkstemp(prefix="evp-festival-", suffix=suffix)
                os.close(fd)
                paths.append(Path(name))
            wav, seg = paths
            self._send(f"(begin {setup} (evp_run {_scheme_string(text)} {_scheme_string(str(wav))} "
                       f"{_scheme_string(str(seg))}))", "EVP-DONE")
            rate, pcm = wavfile.read(wav)
            lines = seg.read_text(encoding="utf-8").splitlines()
        finally:
            for path in paths:
                path.unlink(missing_ok=True)
        audio = pcm.astype(np.float32) / 32768.0 if pcm.dtype == np.int16 else pcm.astype(np.float32)
        return audio.reshape(len(audio), -1)[:, 0], int(rate), lines

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.proc.poll() is None

    def close(self) -> None:
        if self.pid != os.getpid():
            return                      # a forked child must not stop its parent's festival
        if self.proc.poll() is None:
            self.proc.stdin.close()     # festival exits at end of input (also when we are killed)
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


_SERVER: FestivalServer | None = None


def server() -> FestivalServer:
    """This process's festival (started on first use, restarted if it died)."""
    global _SERVER
    if _SERVER is None or not _SERVER.alive():
        _SERVER = FestivalServer()
    return _SERVER


@atexit.register
def _close_server() -> None:
    if _SERVER is not None:
        _SERVER.close()


def check_voices(voices=tuple(VOICES)) -> None:
    """Raise :class:`EvpError` (one line naming the package) unless festival and every voice in
    ``voices`` work: each says one word."""
    for name in voices:
        if name not in VOICES:
            raise EvpError(f"unknown festival voice {name!r}: expected one of {', '.join(VOICES)}")
        try:
            server().say(f"(voice_{name})", "yes")
        except EvpError as e:
            if "unbound variable" in str(e):
                raise EvpError(f"festival voice {name} is not installed: apt-get install "
                               f"{VOICES[name].package}") from None
            raise


def _setup_scheme(voice: FestivalVoice, prosody: Prosody, warp: float) -> str:
    """Scheme that selects ``voice`` and sets its rate and pitch for ``prosody`` at ``warp``."""
    speed = prosody.rate / ESPEAK_DEFAULT_WPM
    if voice.kind == "hts":
        # Duration_Stretch is ignored by hts_engine; its "-r" speed option scales durations
        # (and Festival writes the new times back into the Segment relation).
        return (f"(voice_{voice.name}) (Parameter.set 'Duration_Stretch 1.0) "
                f"(set! hts_engine_params (append hts_engine_params '((\"-r\" {speed / warp:.5f}))))")
    pf = pitch_factor(prosody.pitch)
    mean = voice.f0_mean * pf / warp
    std = voice.f0_std * pf * range_factor(prosody.pitch_range) / warp
    return (f"(voice_{voice.name}) (Parameter.set 'Duration_Stretch {warp / speed:.5f}) "
            f"(set! int_lr_params '((target_f0_mean {mean:.3f}) (target_f0_std {std:.3f}) "
            f"(model_f0_mean 170) (model_f0_std 34)))")


def effective_warp(voice: str, prosody: Prosody, warp: float = 1.0) -> float:
    """The resampling warp used for ``voice``: the speaker's ``warp`` for diphone voices; for the
    HTS voice also its whole pitch change (``pitch_factor``), within :data:`HTS_WARP_RANGE`."""
    if VOICES[voice].kind == "hts":
        lo, hi = HTS_WARP_RANGE
        return float(min(max(warp * pitch_factor(prosody.pitch), lo), hi))
    return float(warp)


def render(text: str, voice: str, prosody: Prosody, warp: float = 1.0) -> FestivalRender:
    """Speak ``text`` with Festival ``voice`` at ``prosody``'s rate and pitch, formants scaled by
    ``warp`` (~0.9–1.1) → :class:`FestivalRender` at 16 kHz with exact phone segments.

    Deterministic (the voices have no random parts). Raises :class:`EvpError` when festival or
    the voice is missing or synthesis fails.
    """
    if voice not in VOICES:
        raise EvpError(f"unknown festival voice {voice!r}: expected one of {', '.join(VOICES)}")
    v = VOICES[voice]
    k = effective_warp(voice, prosody, warp)
    srv = server()
    try:
        raw, rate, lines = srv.say(_setup_scheme(v, prosody, k), text)
    except EvpError as e:
        if "unbound variable" in str(e) and f"voice_{voice}" in str(e):
            raise EvpError(f"festival voice {voice} is not installed: apt-get install {v.package}") from None
        raise
    if len(raw) == 0:
        raise EvpError(f"festival produced no audio for {text[:40]!r}")
    # Read the native-rate samples as if sampled k times faster: everything (pitch, formants,
    # durations) scales by k; soxr compensates its filter delay, so times map by plain scaling.
    src_rate = rate * k
    y = soxr.resample(raw, src_rate, SAMPLE_RATE, quality="HQ").astype(np.float64)
    dur = len(raw) / src_rate

    segs: list[list] = []
    prev = 0.0
    words = []
    for line in lines:
        parts = line.split(maxsplit=3)
        if parts and parts[0] == "S" and len(parts) == 3:
            end = min(float(parts[2]) / k, dur)
            sym = festival_phone(parts[1])
            if end > prev:
                if segs and sym == SILENCE and segs[-1][2] == SILENCE:
                    segs[-1][1] = end
                else:
                    segs.append([prev, end, sym])
                prev = end
        elif parts and parts[0] == "W" and len(parts) == 4:
            s, e = float(parts[1]) / k, min(float(parts[2]) / k, dur)
            token = parts[3].strip(" .,;:!?\"'")
            if e > s and token:
                words.append((s, e, token))
    if not segs:
        raise EvpError(f"festival returned no phone times for {text[:40]!r}")
    if segs[-1][1] < dur:               # the wave runs on a little after the last phone
        if segs[-1][2] == SILENCE:
            segs[-1][1] = dur
        else:
            segs.append([segs[-1][1], dur, SILENCE])
    return FestivalRender(audio=y, segments=[(float(a), float(b), s) for a, b, s in segs],
                          words=words, duration_s=dur)
