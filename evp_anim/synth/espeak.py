"""In-process ctypes binding to libespeak-ng: int16 speech at 22050 Hz plus sample-exact events.

One :class:`Engine` per process, created lazily by :func:`engine`. espeak-ng keeps all its state
in globals (current voice, parameters, output buffers) and is not thread safe, so every call that
touches the library holds :data:`_LOCK`. The library is initialised in
``AUDIO_OUTPUT_SYNCHRONOUS`` mode, so :meth:`Engine.synth` returns only when the whole text has
been rendered through our callback — no audio device, no background thread, no subprocess.

Struct layouts follow ``/usr/include/espeak-ng/speak_lib.h`` (API revision 12) on x86_64::

    typedef struct {                       offset size
        espeak_EVENT_TYPE type;                0    4   (C enum = int)
        unsigned int unique_identifier;        4    4
        int text_position;                     8    4   (characters, 1-based)
        int length;                           12    4   (word length, WORD events)
        int audio_position;                   16    4   (ms from the start of this synth call)
        int sample;                           20    4   (sample index at the engine's rate)
        void* user_data;                      24    8
        union { int number; const char *name; char string[8]; } id;   32    8
    } espeak_EVENT;                        sizeof == 40

Phoneme events carry espeak's ASCII phoneme mnemonic in ``id.string`` (not zero terminated
when it uses all 8 bytes). ``sample`` is the exact output-sample index at which the event's
phoneme starts (espeak computes ``audio_position`` from the same count, truncated to ms), so
timings derived from it are sample accurate.

Determinism. espeak-ng carries state from one synthesis to the next, so by default the same
call gives slightly different samples (and final-vowel lengths) depending on what was spoken
before. Measured causes and what we do about each (see ``Engine.synth``):

* pitch "flutter" and "roughness" run off counters that never reset (function-level statics in
  wavegen.c) — we run espeak on a private data folder whose voice variants append
  ``flutter 0`` and ``roughness 8`` (= off); the lost micro-variation of pitch is added back
  deterministically by the post-filters (see ``prosody.apply_voice_quality``);
* breathy variants draw noise from libc ``rand()`` — ``srand`` is reseeded before each call;
* the phoneme buffers keep entries from longer earlier clauses, which the length rules look
  ahead into — before each call ``espeak_TextToPhonemes`` translates a fixed long text with the
  same voice (no audio, ~1 ms), so the stale entries are always the same;
* the automatic gain control lowers a static gain after clipping — we synthesise at volume
  25, which keeps int16 peaks far from full scale (loudness is set afterwards anyway);
* the voice (echo buffers etc.) is re-selected on every call.

With these, equal calls return bit-identical samples and events whatever came before
(checked by the tests with shuffled call histories).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EvpError

# ---- constants from speak_lib.h -------------------------------------------------------------

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000
CHARS_UTF8 = 1
POS_CHARACTER = 1
EE_OK = 0

EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_SENTENCE = 2
EVENT_MARK = 3
EVENT_PLAY = 4
EVENT_END = 5
EVENT_MSG_TERMINATED = 6
EVENT_PHONEME = 7
EVENT_SAMPLERATE = 8

PARAM_RATE = 1
PARAM_VOLUME = 2
PARAM_PITCH = 3
PARAM_RANGE = 4
PARAM_WORDGAP = 7

RATE_MIN, RATE_MAX = 80, 450        # words per minute accepted by espeak-ng

_INSTALL_HINT = "espeak-ng not found: install it with `apt-get install espeak-ng`"

# Where the shared library is looked for, in order. Tests monkeypatch this (and reset
# ``_ENGINE``) to check the missing-library error. ``EVP_ANIM_ESPEAK_LIB`` overrides it.
LIBRARY_PATHS: tuple[str, ...] = (
    "libespeak-ng.so.1",
    "/usr/lib/x86_64-linux-gnu/libespeak-ng.so.1",
    "/usr/lib/libespeak-ng.so.1",
    "/usr/local/lib/libespeak-ng.so.1",
    "libespeak-ng.so",
)
_DEFAULT_PATHS = LIBRARY_PATHS


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


assert ctypes.sizeof(_Event) == 40 or ctypes.sizeof(ctypes.c_void_p) != 8, "espeak_EVENT layout"

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Event:
    """One espeak event. ``sample`` is at :attr:`Engine.sample_rate` (22050 Hz); ``ms`` is espeak's
    own millisecond stamp; ``text_position`` is 1-based in characters. For phoneme events
    ``phoneme`` is the ASCII mnemonic (e.g. ``"aI"``, ``"_:"``); for word/sentence events
    ``number`` is the running word/sentence number and ``length`` the word length in characters."""

    type: int
    sample: int
    ms: int
    text_position: int
    length: int
    phoneme: str = ""
    number: int = 0


@dataclass
class SynthResult:
    """Output of one :meth:`Engine.synth` call: ``samples`` (N,) int16 at ``sample_rate`` Hz and
    the events in the order espeak emitted them."""

    samples: np.ndarray
    sample_rate: int
    events: list[Event] = field(default_factory=list)

    def phoneme_events(self) -> list[Event]:
        return [e for e in self.events if e.type == EVENT_PHONEME]

    def word_events(self) -> list[Event]:
        return [e for e in self.events if e.type == EVENT_WORD]


_LOCK = threading.RLock()
_ENGINE: "Engine | None" = None


def _load_library() -> ctypes.CDLL:
    """Open libespeak-ng from :data:`LIBRARY_PATHS` (or ``$EVP_ANIM_ESPEAK_LIB``)."""
    env = os.environ.get("EVP_ANIM_ESPEAK_LIB")
    candidates: list[str] = [env] if env else list(LIBRARY_PATHS)
    if not env and LIBRARY_PATHS == _DEFAULT_PATHS:
        found = ctypes.util.find_library("espeak-ng")
        if found:
            candidates.append(found)
    for cand in candidates:
        try:
            return ctypes.CDLL(cand)
        except OSError:
            continue
    raise EvpError(_INSTALL_HINT)


# A fixed, punctuation-free text longer than espeak's longest clause (it splits clauses at
# ~700 characters), so translating it overwrites the phoneme buffers at least as far as any
# later clause can reach. Written for this purpose; its content is irrelevant.
_PRIME_TEXT = " ".join([
    "a quiet morning passed slowly over the small town while people walked to work and children",
    "carried bags to school past the bakery the library the old mill and the river bridge where",
    "boats moved along the water under grey clouds that gathered above the hills in the distance",
    "a postman sorted letters a farmer checked the fences a teacher wrote numbers on the board",
    "and a painter mixed colours for the long wall behind the station while the clock on the",
    "tower marked each hour and the shops opened their doors to visitors who wanted bread fruit",
    "paper and tea before the afternoon rain began to fall over the roofs and the gardens",
])

# Appended to every voice variant in the private data folder: no state-dependent pitch flutter
# and no amplitude roughness (whose phase depends on a never-reset cycle counter).
_VARIANT_OVERRIDES = "\n// evp-anim: deterministic output\nflutter 0\nroughness 8\n"
# Volume 25: int16 peaks stay below ~23k for every variant we use, so espeak's sticky AGC
# never engages (a call that still comes near full scale is redone quieter).
_SYNTH_VOLUME = 25
_NEAR_CLIP = 30000
_RAND_SEED = 20240501


def _system_data_dir(lib: ctypes.CDLL) -> Path | None:
    """The espeak-ng-data folder the library would use by itself ($ESPEAK_DATA_PATH or built-in)."""
    lib.espeak_ng_InitializePath.argtypes = [ctypes.c_char_p]
    lib.espeak_ng_InitializePath.restype = None
    lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_ng_InitializePath(None)
    p = ctypes.c_char_p()
    lib.espeak_Info(ctypes.byref(p))
    if not p.value:
        return None
    d = Path(p.value.decode())
    return d if (d / "phontab").is_file() else None


def _cache_root() -> Path:
    env = os.environ.get("EVP_ANIM_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "evp_anim"


def _build_private_data(system: Path, version: str) -> Path | None:
    """Folder ``P`` with ``P/espeak-ng-data`` = the system data (symlinked) except that every voice
    variant gets :data:`_VARIANT_OVERRIDES`. Built once per (data folder, version) and reused;
    creation is atomic (build beside, then rename) so parallel workers can race safely.
    Returns None if no writable location works (the caller then uses the system data)."""
    key = hashlib.sha1(f"{system.resolve()}|{version}|{_VARIANT_OVERRIDES}".encode()).hexdigest()[:10]
    for root in (_cache_root(), Path(tempfile.gettempdir()) / f"evp_anim-{os.getuid()}"):
        final = root / f"espeak-{key}"
        # espeak keeps the data path in a fixed 160-byte buffer; leave room for file names.
        if len(str(final)) > 100:
            continue
        if (final / "espeak-ng-data" / "voices" / "!v").is_dir():
            return final
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".espeak-", dir=root))
            data = tmp / "espeak-ng-data"
            data.mkdir()
            for entry in system.iterdir():
                if entry.name != "voices":
                    (data / entry.name).symlink_to(entry.resolve())
            voices = data / "voices"
            voices.mkdir()
            for entry in (system / "voices").iterdir():
                if entry.name != "!v":
                    (voices / entry.name).symlink_to(entry.resolve())
            variants = voices / "!v"
            variants.mkdir()
            src = system / "voices" / "!v"
            if src.is_dir():
                for f in src.iterdir():
                    if f.is_file():
                        (variants / f.name).write_bytes(f.read_bytes() + _VARIANT_OVERRIDES.encode())
            try:
                os.rename(tmp, final)
            except OSError:          # another process won the race: use theirs
                shutil.rmtree(tmp, ignore_errors=True)
            if (final / "espeak-ng-data" / "voices" / "!v").is_dir():
                return final
        except OSError:
            continue
    return None


class Engine:
    """The process's espeak-ng instance (use :func:`engine`; don't construct twice).

    ``data_path`` is the folder containing ``espeak-ng-data`` (None: espeak's default); by default
    :func:`engine` passes the private, deterministic copy built by ``_build_private_data``.
    """

    def __init__(self, lib: ctypes.CDLL, data_path: str | os.PathLike | None = None):
        self._lib = lib
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_Initialize.restype = ctypes.c_int
            lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
            lib.espeak_SetSynthCallback.restype = None
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetVoiceByName.restype = ctypes.c_int
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_SetParameter.restype = ctypes.c_int
            lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                         ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint),
                                         ctypes.c_void_p]
            lib.espeak_Synth.restype = ctypes.c_int
            lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
            lib.espeak_Info.restype = ctypes.c_char_p
            lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
            lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        except AttributeError as exc:  # a library of that name without the espeak API
            raise EvpError(f"{_INSTALL_HINT} (the library found lacks {exc.args[0]!s:.60})") from None
        libc = ctypes.CDLL(None)      # the process's libc: the rand() espeak calls
        self._srand = libc.srand
        self._srand.argtypes = [ctypes.c_uint]
        self._srand.restype = None
        # DONT_EXIT: without it espeak calls exit() when its data folder is missing.
        # buflength 1000 ms: fewer Python callbacks per clip.
        path = os.fspath(data_path).encode() if data_path else None
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 1000, path,
                                     INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EvpError("espeak-ng could not start (its espeak-ng-data folder is missing): "
                           "reinstall it with `apt-get install --reinstall espeak-ng-data`")
        self.sample_rate = int(rate)
        self.data_path = Path(os.fspath(data_path)) if data_path else None
        self._chunks: list[bytes] = []
        self._events: list[Event] = []
        # Keep a reference: ctypes frees the C thunk when the Python object dies.
        self._callback = _SynthCallback(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)
        self._prime = ctypes.create_string_buffer(_PRIME_TEXT.encode("ascii"))

    # The callback runs inside espeak_Synth on this thread, with the lock held by synth().
    def _on_synth(self, wav, n: int, events) -> int:
        if wav and n > 0:
            self._chunks.append(ctypes.string_at(wav, n * 2))
        if events:
            i = 0
            while True:
                ev = events[i]
                t = ev.type
                if t == EVENT_LIST_TERMINATED:
                    break
                if t == EVENT_PHONEME:
                    name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                    self._events.append(Event(t, ev.sample, ev.audio_position, ev.text_position, 0,
                                              phoneme=name))
                elif t in (EVENT_WORD, EVENT_SENTENCE, EVENT_END, EVENT_MSG_TERMINATED):
                    self._events.append(Event(t, ev.sample, ev.audio_position, ev.text_position,
                                              ev.length, number=ev.id.number))
                i += 1
        return 0

    @property
    def version(self) -> str:
        with _LOCK:
            return (self._lib.espeak_Info(None) or b"?").decode()

    @property
    def deterministic(self) -> bool:
        """True when running on the private data folder (bit-exact repeatable output)."""
        return self.data_path is not None

    def set_voice(self, name: str) -> None:
        """Select ``name`` (a voice file or language name, optionally ``+variant``, e.g. ``en-us+f3``)."""
        with _LOCK:
            if self._lib.espeak_SetVoiceByName(name.encode()) != EE_OK:
                raise EvpError(f"espeak-ng has no voice {name!r}: list voices with `espeak-ng --voices=en`")

    def has_voice(self, name: str) -> bool:
        """True if ``name`` can be selected."""
        with _LOCK:
            return self._lib.espeak_SetVoiceByName(name.encode()) == EE_OK

    def _reset_translation_buffers(self) -> None:
        # Translate the long fixed text clause by clause (no audio): afterwards the phoneme
        # buffers hold the same leftovers whatever was spoken before.
        ptr = ctypes.c_void_p(ctypes.addressof(self._prime))
        for _ in range(64):          # a handful of clauses; the bound only guards a misbehaving lib
            if not ptr.value:
                break
            self._lib.espeak_TextToPhonemes(ctypes.byref(ptr), CHARS_UTF8, 0)

    def synth(self, text: str, voice: str, *, rate: float = 175, pitch: float = 50,
              pitch_range: float = 50, word_gap: float = 0, volume: float = _SYNTH_VOLUME) -> SynthResult:
        """Render ``text`` with ``voice``.

        ``rate`` in words per minute (80–450), ``pitch`` and ``pitch_range`` 0–100 (50 normal,
        relative to the voice's own base pitch and range), ``word_gap`` extra pause between
        words in units of 10 ms, ``volume`` 0–200 (keep the default for repeatable output).
        Returns int16 samples at :attr:`sample_rate` and all events, with sample positions
        counted from this call's start. Equal arguments give identical results.
        """
        params = ((PARAM_RATE, int(np.clip(round(rate), RATE_MIN, RATE_MAX))),
                  (PARAM_VOLUME, int(np.clip(round(volume), 0, 200))),
                  (PARAM_PITCH, int(np.clip(round(pitch), 0, 100))),
                  (PARAM_RANGE, int(np.clip(round(pitch_range), 0, 100))),
                  (PARAM_WORDGAP, int(max(0, round(word_gap)))))
        data = text.encode("utf-8") + b"\0"
        with _LOCK:
            self.set_voice(voice)            # every call: also resets echo and wave state
            for key, value in params:
                self._lib.espeak_SetParameter(key, value, 0)
            self._reset_translation_buffers()
            self._srand(_RAND_SEED)
            self._chunks, self._events = [], []
            err = self._lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            chunks, events = self._chunks, self._events
            self._chunks, self._events = [], []
        if err != EE_OK:
            raise EvpError(f"espeak-ng failed to synthesise {text[:40]!r} (error {err})")
        samples = np.frombuffer(b"".join(chunks), dtype=np.int16).copy()
        if len(samples) and int(np.abs(samples.astype(np.int32)).max()) >= _NEAR_CLIP and volume > 4:
            # Near full scale espeak's AGC may have engaged (and would colour the next call):
            # redo quieter. The decision depends only on the arguments, so this stays repeatable.
            return self.synth(text, voice, rate=rate, pitch=pitch, pitch_range=pitch_range,
                              word_gap=word_gap, volume=volume / 2)
        return SynthResult(samples, self.sample_rate, events)


def engine() -> Engine:
    """The process-wide :class:`Engine`, loading and initialising libespeak-ng on first use.

    Raises :class:`EvpError` if the library is missing."""
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            lib = _load_library()
            try:
                system = _system_data_dir(lib)
            except AttributeError:
                system = None
            private = _build_private_data(system, _library_version(lib)) if system else None
            if private is None:
                warnings.warn("espeak-ng runs on its own data folder (no writable cache for the "
                              "deterministic copy): repeated clips may differ slightly; set "
                              "EVP_ANIM_CACHE_DIR to a writable folder", RuntimeWarning, stacklevel=2)
            _ENGINE = Engine(lib, private)
        return _ENGINE


def _library_version(lib: ctypes.CDLL) -> str:
    try:
        lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
        lib.espeak_Info.restype = ctypes.c_char_p
        return (lib.espeak_Info(None) or b"?").decode()
    except AttributeError:
        return "?"


def data_dir() -> Path | None:
    """The espeak-ng-data folder in use (the private copy when deterministic), or None if the
    library is unavailable."""
    try:
        eng = engine()
    except EvpError:
        return None
    path = ctypes.c_char_p()
    with _LOCK:
        eng._lib.espeak_Info(ctypes.byref(path))
    return Path(path.value.decode()) if path.value else None


def mbrola_voices() -> list[str]:
    """Names of mbrola voices whose diphone databases are actually installed (usually none).

    espeak-ng ships voice *definitions* for mbrola (``voices/mb/mb-*``) even when the mbrola
    program and databases are absent; selecting one then fails, so we list only voices whose
    database folder exists."""
    base = data_dir()
    if base is None:
        return []
    out = []
    for db_root in (Path("/usr/share/mbrola"), Path("/usr/local/share/mbrola"), base / "mbrola"):
        if not db_root.is_dir():
            continue
        for vfile in sorted((base / "voices" / "mb").glob("mb-*")):
            db = vfile.name[3:].split("-")[0]       # mb-us1 -> us1, mb-de1-en -> de1
            if (db_root / db).exists() and vfile.name not in out:
                out.append(vfile.name)
    return out
