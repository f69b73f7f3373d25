"""Property-based tests (hypothesis) for the three readers of untrusted files (issue 15): the Track
loader, the audio loader and the emotion-keys parser. Whatever bytes they are given, each returns a
valid result or raises :class:`EvpError` with a one-line message, never another exception.

Inputs are random bytes, structured-but-random files (npz members with random names, shapes, dtypes
and meta JSON; WAV headers with random fields; TOML-ish text built from the keys file's own
vocabulary) and valid files with bytes flipped or cut off. Example counts are kept small so the
file runs in seconds; a failure prints the smallest input hypothesis found.
"""

import io
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from evp_anim.audio.io import load_audio, save_wav
from evp_anim.emotion_keys import EmotionKeys, read_emotion_keys
from evp_anim.emotions import EMOTIONS
from evp_anim.errors import EvpError
from evp_anim.tracks import FORMAT, Track, load_track, save_track

# 150 examples each, the same ones every run (derandomize); EVP_PROPERTY_EXAMPLES=5000 searches
# longer and with fresh random examples.
_EXAMPLES = int(os.environ.get("EVP_PROPERTY_EXAMPLES", "0") or 0)
FAST = settings(max_examples=_EXAMPLES or 150, deadline=None, derandomize=not _EXAMPLES, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_DIR = Path(tempfile.mkdtemp(prefix="evp-prop-"))
_count = [0]


@pytest.fixture(scope="module", autouse=True)
def _remove_the_files():
    yield
    shutil.rmtree(_DIR, ignore_errors=True)


def _file(data: bytes, suffix: str) -> Path:
    """A fresh file holding ``data`` (hypothesis cannot use pytest's per-test tmp_path)."""
    _count[0] += 1
    p = _DIR / f"f{_count[0]}{suffix}"
    p.write_bytes(data)
    return p


def _one_line_error(call):
    """Run ``call``; return its result, or None after checking the EvpError is one non-empty line.
    Any other exception propagates and fails the test."""
    try:
        return call()
    except EvpError as e:
        msg = str(e)
        assert msg and "\n" not in msg, repr(msg)
        return None


# ---------------------------------------------------------------------- JSON values
_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
                     st.sampled_from([10 ** 400, -(10 ** 400), 2 ** 63, 0, 1, 25, 256]),   # 10**400: no float
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                     max_leaves=12)


# ---------------------------------------------------------------------- the Track loader
_KNOWN = ["landmarks_2d", "landmarks_3d", "pose_rotation", "pose_translation", "pose_scale", "expression",
          "emotion", "intensity", "identity"]
_DTYPES = st.sampled_from(["<f4", "<f8", "<f2", "<i4", "<i8", "|u1", "|b1", "<c8", "|S3", "<U2", ">f4"])


@st.composite
def _arrays(draw):
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    dtype = np.dtype(draw(_DTYPES))
    n = int(np.prod(shape)) if shape else 1
    if dtype.kind in "SU":
        words = draw(st.lists(st.text(alphabet="ab", max_size=2), min_size=n, max_size=n))
        return np.array(words, dtype=dtype).reshape(shape)
    raw = draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    return np.frombuffer(raw, dtype).reshape(shape)


@st.composite
def _metas(draw):
    """Mostly plausible meta dicts (so the checks past the format tag are reached), with any field
    replaced by a random JSON value."""
    t = draw(st.integers(1, 4))
    k = draw(st.integers(0, 3))
    meta = {"format": FORMAT, "schema_version": 1, "fps": 25.0, "n_frames": t, "image_size": [256, 256],
            "expression_names": [f"c{i}" for i in range(k)], "emotion_names": list(EMOTIONS),
            "phonemes": [[0.0, 0.1, "a"]], "provenance": {}, "info": {}}
    for key in draw(st.lists(st.sampled_from(sorted(meta)), max_size=3, unique=True)):
        if draw(st.booleans()):
            meta[key] = draw(_json)
        else:
            del meta[key]
    return meta


def _plausible_arrays(t: int, k: int) -> dict[str, np.ndarray]:
    emo = np.zeros((t, 8), np.float32)
    emo[:, 0] = 1
    return {"landmarks_2d": np.zeros((t, 68, 2), np.float32), "pose_rotation": np.zeros((t, 3), np.float32),
            "pose_translation": np.zeros((t, 2), np.float32), "pose_scale": np.ones(t, np.float32),
            "expression": np.zeros((t, k), np.float32), "emotion": emo, "intensity": np.zeros(t, np.float32)}


@st.composite
def _npz_files(draw):
    meta = draw(_metas())
    t = meta.get("n_frames") if isinstance(meta.get("n_frames"), int) and 1 <= meta.get("n_frames") <= 4 else 2
    names = meta.get("expression_names")
    k = len(names) if isinstance(names, list) and len(names) <= 4 else 0
    members: dict[str, object] = _plausible_arrays(t, k)
    for name in draw(st.lists(st.sampled_from(_KNOWN + ["extra", "meta"]), max_size=4)):
        if draw(st.booleans()):
            members[name] = draw(_arrays())
        else:
            members.pop(name, None)
    meta_bytes = json.dumps(meta).encode() if draw(st.integers(0, 9)) else draw(st.binary(max_size=40))
    members.setdefault("meta", np.frombuffer(meta_bytes, np.uint8))
    buf = io.BytesIO()
    np.savez(buf, **members) if draw(st.booleans()) else np.savez_compressed(buf, **members)
    return buf.getvalue()


def _valid_track_bytes() -> bytes:
    emo = np.zeros((3, 8), np.float32)
    emo[:, 2] = 1
    tr = Track.new(np.random.default_rng(0).uniform(10, 200, (3, 68, 2)).astype(np.float32), fps=25,
                   expression=np.zeros((3, 2), np.float32), expression_names=["a", "b"], emotion=emo,
                   intensity=np.full(3, 0.5, np.float32), phonemes=[(0.0, 0.04, "p")],
                   provenance={"model": "x"}, info={"k": 1})
    p = _DIR / "valid.npz"
    save_track(tr, p)
    return p.read_bytes()


_VALID_TRACK = _valid_track_bytes()


def _check_track(path: Path) -> None:
    tr = _one_line_error(lambda: load_track(path))
    if tr is not None:        # a valid result is a validated track
        assert isinstance(tr, Track) and tr.n_frames >= 1
        assert tr.landmarks_2d.dtype == np.float32 and np.isfinite(tr.landmarks_2d).all()
        assert tr.emotion.shape == (tr.n_frames, 8)


@FAST
@given(st.binary(max_size=600))
def test_track_loader_random_bytes(data):
    _check_track(_file(data, ".npz"))


@FAST
@given(_npz_files())
def test_track_loader_random_npz(data):
    _check_track(_file(data, ".npz"))


@FAST
@given(st.integers(0, len(_VALID_TRACK) - 1), st.integers(1, 255), st.booleans())
def test_track_loader_damaged_valid_file(pos, flip, cut):
    data = bytearray(_VALID_TRACK)
    if cut:
        data = data[:pos]
    else:
        data[pos] ^= flip
    _check_track(_file(bytes(data), ".npz"))


def test_track_loader_accepts_the_valid_file():
    tr = load_track(_file(_VALID_TRACK, ".npz"))
    assert tr.n_frames == 3 and tr.expression_names == ["a", "b"] and tr.phonemes == [(0.0, 0.04, "p")]


# ---------------------------------------------------------------------- the audio loader
def _wav_bytes(fmt_tag: int, channels: int, rate: int, bits: int, data: bytes, declared: int | None = None,
               block_align: int | None = None) -> bytes:
    block = (block_align if block_align is not None else max(1, channels * bits // 8)) & 0xFFFF
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    size = len(data) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body) & 0xFFFFFFFF) + body


@st.composite
def _wavs(draw):
    fmt_tag = draw(st.sampled_from([1, 3, 6, 7, 0xFFFE, 0, 2, draw(st.integers(0, 0xFFFF))]))
    channels = draw(st.sampled_from([1, 2, 0, 3, draw(st.integers(0, 0xFFFF))]))
    rate = draw(st.sampled_from([16000, 44100, 8000, 1, 0, 999, 4_000_000_000, draw(st.integers(0, 2 ** 32 - 1))]))
    bits = draw(st.sampled_from([8, 16, 24, 32, 64, 0, 12, draw(st.integers(0, 0xFFFF))]))
    data = draw(st.binary(max_size=400))
    declared = draw(st.one_of(st.none(), st.integers(0, 2 ** 32 - 1)))
    block = draw(st.one_of(st.none(), st.integers(0, 0xFFFF)))
    return _wav_bytes(fmt_tag, channels, rate, bits, data, declared, block)


def _check_audio(path: Path) -> None:
    audio = _one_line_error(lambda: load_audio(path, warn=lambda m: None))
    if audio is not None:
        assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 0
        assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0


@FAST
@given(st.binary(max_size=400), st.sampled_from([".wav", ".mp3", ".flac", ".m4a", ".ogg"]))
def test_audio_loader_random_bytes(data, suffix):
    assume(data)
    _check_audio(_file(data, suffix))


@FAST
@given(_wavs())
def test_audio_loader_random_wav_headers(data):
    _check_audio(_file(data, ".wav"))


def _valid_wav_bytes() -> bytes:
    p = _DIR / "valid.wav"
    save_wav(p, (0.3 * np.sin(np.arange(800) / 5.0)).astype(np.float32))
    return p.read_bytes()


_VALID_WAV = _valid_wav_bytes()


@FAST
@given(st.integers(0, len(_VALID_WAV) - 1), st.integers(1, 255), st.booleans())
def test_audio_loader_damaged_valid_wav(pos, flip, cut):
    data = bytearray(_VALID_WAV)
    if cut:
        data = data[:pos]
    else:
        data[pos] ^= flip
    assume(data)
    _check_audio(_file(bytes(data), ".wav"))


# ---------------------------------------------------------------------- the emotion-keys parser
_tokens = st.sampled_from([
    "[[key]]", "[adjust]", "[adjust.multipliers]", "[key]", "key = 1", "time = ", "emotion = ", "intensity = ",
    "strength = ", "smoothing = ", "jawOpen = ", '"happy"', '"sad"', '"Joy"', "0.0", "1.5", "-1", "1e400",
    "inf", "nan", "-inf", "9999999999999999999", "true", "[1, 2]", "{a = 1}", '"x"', "[[[[[[", "]]]]", "=",
    "\n", "\n", "\n", " ", "#", '"""', "'", "1979-05-27", "0x10", "[[adjust]]", "multipliers = 3",
    "adjust = 5", "key = []", "key = [1]", "\t", "\\", "é", "\x00"])


@st.composite
def _toml_texts(draw):
    return "".join(draw(st.lists(_tokens, max_size=40)))


def _plausible_keys(values: list) -> str:
    t, emo, inten, strength, smoothing, mult = values
    return (f"[[key]]\ntime = {t}\nemotion = {emo}\nintensity = {inten}\n\n"
            f"[[key]]\ntime = 2.0\nemotion = \"sad\"\n\n"
            f"[adjust]\nstrength = {strength}\nsmoothing = {smoothing}\n[adjust.multipliers]\njawOpen = {mult}\n")


_values = st.sampled_from(["0.0", "1", "-1", "inf", "nan", "-inf", "1e308", "9223372036854775807", '"x"', "[1]",
                           "{a = 1}", "true", '"happy"', "0.5", "1979-05-27", '""', "[]"])


def _check_keys(path: Path) -> None:
    keys = _one_line_error(lambda: read_emotion_keys(path))
    if keys is not None:
        assert isinstance(keys, EmotionKeys) and keys.keys
        times = [k.time for k in keys.keys]
        assert all(np.isfinite(times)) and times == sorted(set(times)) and times[0] >= 0
        assert all(k.emotion in EMOTIONS and 0 <= k.intensity <= 1 for k in keys.keys)
        assert np.isfinite(keys.strength) and keys.strength >= 0 and keys.smoothing >= 0
        assert all(np.isfinite(v) for v in keys.multipliers.values())


@FAST
@given(_toml_texts())
def test_emotion_keys_random_toml_ish_text(text):
    _check_keys(_file(text.encode("utf-8"), ".toml"))


@FAST
@given(st.lists(_values, min_size=6, max_size=6))
def test_emotion_keys_random_values_in_a_plausible_file(values):
    _check_keys(_file(_plausible_keys(values).encode("utf-8"), ".toml"))


@FAST
@given(st.binary(max_size=300))
def test_emotion_keys_random_bytes(data):
    _check_keys(_file(data, ".toml"))


@pytest.mark.parametrize("text", [_plausible_keys(["0.0", '"happy"', "0.5", "1.0", "0", "1.2"])])
def test_emotion_keys_accepts_a_plausible_file(text):
    keys = read_emotion_keys(_file(text.encode(), ".toml"))
    assert [(k.time, k.emotion, k.intensity) for k in keys.keys] == [(0.0, "happy", 0.5), (2.0, "sad", 1.0)]
    assert keys.multipliers == {"jawOpen": 1.2}
