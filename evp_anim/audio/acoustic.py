"""Speech content frame by frame from pocketsphinx's acoustic model: the fast real-speech front end.

The word front end (:func:`~evp_anim.audio.phones.recognize_words`) hears real voices well but
searches a language model at ~3× real time and needs whole utterances. This front end keeps what
made it work on real voices — pocketsphinx's US-English acoustic model, trained on real
recordings — and drops the search: every other 10 ms frame is scored against the model's
context-independent phone states, the scores become phone posteriors, and the posteriors of each
25 fps video frame become viseme posteriors (the models' content input) and a lip-closure curve.
No word, no language model, 36 ms of look-ahead (see Timing), hundreds of times faster than
real time.

The model files are read directly (the semi-continuous "PTM" layout pocketsphinx ships: one
codebook of 128 diagonal Gaussians per base phone and feature stream, 8-bit quantised mixture
weights per senone in ``sendump``, a binary ``mdef``); the features follow the model's
``feat.params``: Sphinx MFCC (pre-emphasis 0.97, 25.6 ms Hamming window, 512-point FFT, 25 mel
filters over 130–6800 Hz, orthonormal DCT-II, lifter 22, 13 coefficients), cepstral mean removal,
and the ``1s_c_d_dd`` streams (c, c[t+2]−c[t−2], and the difference of those deltas one frame
either side), 13 values each.

Timing: Sphinx frame ``m`` covers samples ``[160 m, 160 m + 410)`` (centre ``10 m + 12.8`` ms);
video frame ``t`` (``[40 t, 40 t + 40)`` ms at 25 fps) pools the frames whose centres lie in it,
``m = 4t − 1 … 4t + 2``, of which :data:`SCORE_STEP` 2 scores ``4t`` and ``4t + 2``. Frame t's
content is known once sample ``640 t + 1210`` has arrived (frame 4t + 2's features read cepstra up
to 4t + 5): 35.6 ms after the video frame's last sample.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import EvpError
from ..tracks import DEFAULT_FPS
from . import features
from .features import SAMPLE_RATE

HOP = 160                    # samples between Sphinx frames (10 ms)
WINDOW = 410                 # samples per analysis window (25.6 ms)
N_FFT = 512
N_FILTERS = 25
LOWER_HZ, UPPER_HZ = 130.0, 6800.0
N_CEP = 13
LIFTER = 22
PRE_EMPHASIS = 0.97
N_STATES = 3                 # emitting states per phone
LOG_MIXW_UNIT = 1024 * np.log(1.0001)   # natural-log value of one step of sendump's 8-bit weights

# Phone posteriors are the softmax of the frames' phone log-likelihoods times this scale: the
# Gaussians are far too sure of themselves frame by frame (frames overlap; streams are treated as
# independent). The constants below were chosen on synthetic held-out clips, never on real
# recordings (`scripts/eval_acoustic_synthetic.py CORPUS --set NAME=VALUE`: 40 test-speaker,
# test-sentence clips of the 24-speaker corpus, EVP, neutral, exact phones as the reference; exact
# phones themselves score 0.693). Openness correlation at scale 0.1 / 0.2 / 0.3 / 0.5 / 1.0:
# 0.531 / 0.539 / 0.565 / 0.562 / 0.542.
POSTERIOR_SCALE = 0.3
# The lip-closure curve reads the summed /p b m/ posterior of a frame's sharpest 10 ms frame
# (bilabial bursts and closures are short), rising from CLOSURE_FLOOR to fully closed at
# CLOSURE_FULL: the widest margin between closure on /p b m/ and at random speech positions —
# 0.15/0.3: 69.8% vs 41.7%; 0.2/0.4: 59.5% vs 27.0%; 0.3/0.55: 39.7% vs 16.4%.
CLOSURE_FLOOR, CLOSURE_FULL = 0.2, 0.4
# Only every SCORE_STEP-th Sphinx frame is scored (features still use every frame): the video
# frame pools frames 4t and 4t + 2 instead of 4t − 1 … 4t + 2, at half the cost (same clips:
# correlation 0.565 against 0.539 scoring every frame, closure margin 0.33 against 0.33).
SCORE_STEP = 2
# The phone front ends (words heard, a transcript, the phone recogniser) give the models this
# share of the acoustic frames' viseme posteriors beside their phones' (the lips still close on
# the phones' /p b m/): two independent estimates of the same thing, weighed equally, not tuned.
# Measured (EVP / EMOTE, neutral, openness correlation, words heard): realspeech-dev 0.740 / 0.687
# without, 0.769 / 0.695 with (0.758 / 0.697 at weight 0.3); 40 synthetic held-out clips, whose
# words pocketsphinx mostly mishears, 0.433 / 0.402 without, 0.494 / 0.446 with.
PHONE_BLEND = 0.5
_CEP_BLOCK = 1000             # Sphinx frames of cepstra computed at a time (10 s; ~8 MB of temporaries)
_CHUNK_FRAMES = 128          # Sphinx frames scored at a time: ~3 MB of float32 temporaries stay in cache
                             # (on 60 s: 0.13 s at 128, 0.18 s at 256, 0.4 s at 3000)


def model_folder() -> str:
    """pocketsphinx's bundled US-English acoustic model folder; one clear error when missing
    (:func:`~evp_anim.audio.phones.require_pocketsphinx`)."""
    from .phones import require_pocketsphinx
    return os.path.join(require_pocketsphinx("the acoustic front end"), "en-us", "en-us")


# ------------------------------------------------------------------------ model files
def _read_s3_gaussians(path: str) -> np.ndarray:
    """(codebooks, streams, densities, 13) float32 of a Sphinx-3 binary ``means``/``variances`` file
    (text header ending ``endhdr``, byte-order word 0x11223344, sizes, float32 data)."""
    raw = open(path, "rb").read()
    end = raw.find(b"endhdr\n")
    if end < 0:
        raise EvpError(f"{path}: not a Sphinx-3 parameter file (no header end)")
    at = end + len(b"endhdr\n")
    if struct.unpack("<I", raw[at:at + 4])[0] != 0x11223344:
        raise EvpError(f"{path}: unexpected byte order in a Sphinx-3 parameter file")
    at += 4
    n_cb, n_stream, n_dens = struct.unpack("<3i", raw[at:at + 12])
    at += 12
    lengths = struct.unpack(f"<{n_stream}i", raw[at:at + 4 * n_stream])
    at += 4 * n_stream
    n = struct.unpack("<i", raw[at:at + 4])[0]
    at += 4
    if set(lengths) != {N_CEP} or n != n_cb * n_stream * n_dens * N_CEP:
        raise EvpError(f"{path}: expected {N_CEP}-value feature streams, found {lengths}")
    return np.frombuffer(raw, "<f4", n, at).reshape(n_cb, n_stream, n_dens, N_CEP).astype(np.float32)


def _read_mdef_header(path: str) -> tuple[list[str], int, int]:
    """(base phone names, CI senone count, senone count) of a binary ``mdef`` ("BMDF")."""
    raw = open(path, "rb").read()
    if raw[:4] != b"BMDF":
        raise EvpError(f"{path}: not a binary model definition")
    key = b"END FILE FORMAT DESCRIPTION\n"
    at = raw.find(key)
    if at < 0:
        raise EvpError(f"{path}: model definition without its format description")
    at = (at + len(key) + 3) & ~3          # the counts start on a 4-byte boundary
    n_ci, _n_phone, n_emit, n_ci_sen, n_sen = struct.unpack("<5i", raw[at:at + 20])
    at += 40                                # ten counts
    names = []
    for _ in range(n_ci):
        end = raw.index(b"\0", at)
        names.append(raw[at:end].decode("ascii"))
        at = end + 1
    if n_emit != N_STATES or n_ci_sen != N_STATES * n_ci:
        raise EvpError(f"{path}: expected {N_STATES}-state phones with their own senones")
    return names, n_ci_sen, n_sen


def _read_sendump(path: str, n_streams: int, n_dens: int, n_sen: int, n_keep: int) -> np.ndarray:
    """(streams, densities, n_keep) float32 natural-log mixture weights of the first ``n_keep``
    senones from pocketsphinx's ``sendump`` (length-prefixed header strings ended by a zero
    length, then unclustered 8-bit weights, stream × density × senone; value q means
    log w = −q · LOG_MIXW_UNIT)."""
    raw = open(path, "rb").read()
    at, header = 0, []
    while True:
        n = struct.unpack("<i", raw[at:at + 4])[0]
        at += 4
        if n == 0:
            break
        header.append(raw[at:at + n - 1].decode("ascii", "replace"))
        at += n
    if "cluster_count 0" not in header:
        raise EvpError(f"{path}: clustered mixture weights are not supported")
    at += 8                                 # rows, columns
    size = n_streams * n_dens * n_sen
    if len(raw) - at != size:
        raise EvpError(f"{path}: {len(raw) - at} bytes of weights, expected {size}")
    q = np.frombuffer(raw, np.uint8, size, at).reshape(n_streams, n_dens, n_sen)[:, :, :n_keep]
    return (-q.astype(np.float32) * np.float32(LOG_MIXW_UNIT)).astype(np.float32)


@dataclass(frozen=True, eq=False)
class AcousticModel:
    """pocketsphinx's context-independent phone models: ``phones`` (base phone names, the
    model's order), per codebook (= base phone) and stream Gaussians ``means``/``inv_var``
    (P, 3, 128, 13) and ``log_norm`` (P, 3, 128), and ``weights`` (3, P, 128, 3) mixture
    weights of each phone's three state senones (linear, so a state's likelihood is one matrix
    product of the codebook's Gaussian likelihoods)."""

    phones: tuple[str, ...]
    means: np.ndarray
    inv_var: np.ndarray
    log_norm: np.ndarray
    weights: np.ndarray

    @classmethod
    def load(cls, folder: str | None = None) -> "AcousticModel":
        folder = folder or model_folder()
        try:
            names, n_ci_sen, n_sen = _read_mdef_header(os.path.join(folder, "mdef"))
            means = _read_s3_gaussians(os.path.join(folder, "means"))
            var = np.maximum(_read_s3_gaussians(os.path.join(folder, "variances")), 1e-4)
            n_cb, n_streams, n_dens, _ = means.shape
            logw = _read_sendump(os.path.join(folder, "sendump"), n_streams, n_dens, n_sen, n_ci_sen)
        except (OSError, struct.error, ValueError) as e:
            raise EvpError(f"cannot read pocketsphinx's acoustic model in {folder}: {e}") from None
        if n_cb != len(names):
            raise EvpError(f"{folder}: {n_cb} codebooks for {len(names)} phones — not a PTM model")
        # Senone 3p + j is state j of base phone p and uses codebook p.
        w = np.exp(logw).reshape(n_streams, n_dens, n_cb, N_STATES).transpose(0, 2, 1, 3)
        log_norm = -0.5 * (np.log(2 * np.pi * var).sum(-1) + (means * means / var).sum(-1))
        return cls(tuple(names), means, (1.0 / var).astype(np.float32),
                   log_norm.astype(np.float32), np.ascontiguousarray(w, np.float32))


@lru_cache(maxsize=1)
def default_model() -> AcousticModel:
    """The bundled model, read once per process (~0.05 s)."""
    return AcousticModel.load()


# ------------------------------------------------------------------------ features
@lru_cache(maxsize=1)
def _mel_filterbank() -> np.ndarray:
    """(257, 25) float32 triangular filters, centres equally spaced on the mel scale
    (2595 log10(1 + f/700)) between LOWER_HZ and UPPER_HZ, each of unit area."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)
    edges = 700.0 * (10 ** (np.linspace(mel(LOWER_HZ), mel(UPPER_HZ), N_FILTERS + 2) / 2595.0) - 1.0)
    freqs = np.arange(N_FFT // 2 + 1) * SAMPLE_RATE / N_FFT
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return (tri * 2.0 / (hi - lo)).T.astype(np.float32)


@lru_cache(maxsize=1)
def _dct_lifter() -> np.ndarray:
    """(25, 13) float32: orthonormal DCT-II rows 0–12 with the sinusoidal lifter folded in."""
    n = np.arange(N_FILTERS)
    k = np.arange(N_CEP)[:, None]
    basis = np.cos(np.pi * k * (n + 0.5) / N_FILTERS) * np.sqrt(2.0 / N_FILTERS)
    basis[0] /= np.sqrt(2.0)
    lifter = 1.0 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(N_CEP) / LIFTER)
    return (basis * lifter[:, None]).T.astype(np.float32)


def n_sphinx_frames(n_samples: int) -> int:
    """Sphinx frames of a clip: enough to cover every sample (the tail zero-padded)."""
    return max(1, int(np.ceil(max(0, n_samples - WINDOW) / HOP)) + 1)


def cepstra(audio: np.ndarray) -> np.ndarray:
    """(M, 13) float32 Sphinx MFCC of 16 kHz mono float audio in [-1, 1], 100 frames/s. Computed
    :data:`_CEP_BLOCK` frames at a time from the samples those frames read (no copy of the whole
    clip)."""
    from scipy.fft import rfft          # float32 in, complex64 out: twice numpy's speed here
    a = np.asarray(audio).reshape(-1)
    m = n_sphinx_frames(a.size)
    window = np.hamming(WINDOW).astype(np.float32)
    out = np.empty((m, N_CEP), np.float32)
    for f0 in range(0, m, _CEP_BLOCK):
        f1 = min(m, f0 + _CEP_BLOCK)
        s0, s1 = f0 * HOP, (f1 - 1) * HOP + WINDOW
        # Samples [s0 - 1, s1) at the model's 16-bit scale, zeros past the clip's end (and before
        # its start: the first sample is not pre-emphasised).
        x = np.zeros(s1 - s0 + 1, np.float32)
        piece = a[max(0, s0 - 1):min(a.size, s1)]
        x[1 - min(1, s0):1 - min(1, s0) + piece.size] = piece
        x *= np.float32(32768.0)
        y = x[1:] - np.float32(PRE_EMPHASIS) * x[:-1]
        frames = np.lib.stride_tricks.sliding_window_view(y, WINDOW)[::HOP][:f1 - f0]
        spec = rfft(frames * window, N_FFT)
        power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
        out[f0:f1] = np.log(np.maximum(power @ _mel_filterbank(), 1e-5)) @ _dct_lifter()
    return out


def stream_features(cep: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """(M, 39) float32 ``1s_c_d_dd`` features of (M, 13) cepstra: mean-removed c (the clip's mean
    unless ``mean`` is given), Δ = c[t+2] − c[t−2], ΔΔ = Δ[t+1] − Δ[t−1]; the clip's edges repeat."""
    c = cep - (cep.mean(axis=0) if mean is None else mean)
    m = len(c)
    p = np.concatenate([np.repeat(c[:1], 3, 0), c, np.repeat(c[-1:], 3, 0)])

    def shifted(k: int) -> np.ndarray:
        return p[3 + k:3 + k + m]
    delta = shifted(2) - shifted(-2)
    delta2 = (shifted(3) - shifted(-1)) - (shifted(1) - shifted(-3))
    return np.concatenate([c, delta, delta2], axis=1).astype(np.float32)


def phone_log_likelihoods(feats: np.ndarray, model: AcousticModel | None = None) -> np.ndarray:
    """(M, P) float32: each 10 ms frame's log-likelihood under each base phone (the log of the
    summed likelihoods of its three states; streams multiply), from (M, 39) features, computed
    ``_CHUNK_FRAMES`` frames at a time on one BLAS thread. (numpy, not torch: as fast here —
    60 s of speech 148–166 against 173–207 ms — and a cold ``animate`` never imports torch.)"""
    from ..threads import one_blas_thread
    model = model or default_model()
    weights = _score_weights(model)
    out = np.zeros((len(feats), len(model.phones)), np.float32)
    with one_blas_thread():
        for a in range(0, len(feats), _CHUNK_FRAMES):
            out[a:a + _CHUNK_FRAMES] = _score_chunk(np.asarray(feats[a:a + _CHUNK_FRAMES], np.float32), weights)
    return out


@lru_cache(maxsize=2)
def _score_weights(model: AcousticModel) -> list[tuple]:
    """Per stream: (26, P·128) [−½/σ² ; μ/σ²] so that [x², x] @ it + log_norm is every Gaussian's
    log density, (P·128,) log_norm, and (P, 128, 3) state mixture weights, float32."""
    n_cb, n_streams, n_dens, _ = model.means.shape
    out = []
    for s in range(n_streams):
        iv = model.inv_var[:, s].reshape(-1, N_CEP)
        mu_iv = (model.means[:, s] * model.inv_var[:, s]).reshape(-1, N_CEP)
        quad = np.ascontiguousarray(np.concatenate([-0.5 * iv.T, mu_iv.T]), np.float32)
        out.append((quad, model.log_norm[:, s].reshape(-1).astype(np.float32),
                    np.ascontiguousarray(model.weights[s], np.float32)))
    return out


def _score_chunk(feats: np.ndarray, weights: list[tuple]) -> np.ndarray:
    """(m, P) log-likelihoods of (m, 39) features (see :func:`phone_log_likelihoods`)."""
    m = feats.shape[0]
    n_cb = weights[0][2].shape[0]
    states = np.zeros((m, n_cb, N_STATES), np.float32)
    for s, (quad, log_norm, mix_w) in enumerate(weights):
        x = feats[:, N_CEP * s:N_CEP * (s + 1)]
        ll = (np.concatenate([x * x, x], 1) @ quad + log_norm).reshape(m, n_cb, -1)     # (m, P, 128)
        top = ll.max(axis=2, keepdims=True)
        # States' mixtures: per phone (m, 128) @ (128, 3), scaled by the codebook's best Gaussian.
        # (Clamped: exp below e^-80 would be a denormal float, which the CPU handles ~100× slower.)
        ll -= top
        np.exp(np.maximum(ll, -80.0, out=ll), out=ll)
        mix = np.matmul(ll.transpose(1, 0, 2), mix_w).transpose(1, 0, 2)                # (m, P, 3)
        states += top + np.log(np.maximum(mix, 1e-30))
    top = states.max(axis=2, keepdims=True)
    return (top[..., 0] + np.log(np.exp(states - top).sum(axis=2))).astype(np.float32)


# ------------------------------------------------------------------------ to the video clock
def phone_posteriors_10ms(loglik: np.ndarray, scale: float | None = None) -> np.ndarray:
    """(M, P) float32 rows summing to 1: softmax of ``scale`` (default :data:`POSTERIOR_SCALE`)
    × the phone log-likelihoods."""
    z = loglik * np.float32(POSTERIOR_SCALE if scale is None else scale)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def _video_frame_pool(values: np.ndarray, n_frames: int, reduce: str, step: int = 1) -> np.ndarray:
    """(n_frames, C): mean or max over the scored Sphinx frames among 4t−1 … 4t+2 of each 25 fps
    frame t; ``values`` (K, C) holds every ``step``-th Sphinx frame (clipped to the clip: a frame
    past the end repeats the last)."""
    offsets = np.array([o for o in range(-1, 3) if o % step == 0])
    idx = np.clip((4 * np.arange(n_frames)[:, None] + offsets[None]) // step, 0, len(values) - 1)
    pooled = values[idx]
    return pooled.mean(axis=1) if reduce == "mean" else pooled.max(axis=1)


@lru_cache(maxsize=4)
def _phone_to_viseme(phones: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(P, 15) viseme shares of each model phone (diphthongs half and half, fillers and noise as
    silence) and (P,) bool of /p b m/."""
    from .phones import normalize_phone, viseme_posteriors
    rows = np.stack([viseme_posteriors([(0.0, 1.0, normalize_phone(p))], 25).mean(axis=0) for p in phones])
    bilabial = np.array([normalize_phone(p) in ("P", "B", "M") for p in phones])
    return rows.astype(np.float32), bilabial


@dataclass
class AcousticFrames:
    """What the acoustic front end heard, per 25 fps video frame: ``visemes`` (T, 15) posteriors
    (rows sum to 1), ``closure`` (T,) in [0, 1], ``phones`` (T, P) posteriors over ``names``."""

    visemes: np.ndarray
    closure: np.ndarray
    phones: np.ndarray
    names: tuple[str, ...]


def acoustic_frames(audio: np.ndarray, n_frames: int | None = None, model: AcousticModel | None = None,
                    fps: float = DEFAULT_FPS) -> AcousticFrames:
    """Viseme posteriors and lip closure of 16 kHz mono float ``audio`` at 25 fps (``n_frames``:
    the track's length, by default the audio's, :func:`~evp_anim.audio.features.n_frames`)."""
    if abs(fps - DEFAULT_FPS) > 1e-6:
        raise EvpError(f"the acoustic front end runs at {DEFAULT_FPS:g} fps, not {fps:g}")
    a = features.check_waveform(np.asarray(audio), "audio")
    model = model or default_model()
    n = features.n_frames(a.size) if n_frames is None else int(n_frames)
    loglik = phone_log_likelihoods(stream_features(cepstra(a))[::SCORE_STEP], model)
    return frames_from_loglik(loglik, n, model.phones, SCORE_STEP)


def frames_from_loglik(loglik: np.ndarray, n_frames: int, names: tuple[str, ...], step: int = 1) -> AcousticFrames:
    """:class:`AcousticFrames` of (K, P) phone log-likelihoods of every ``step``-th Sphinx frame,
    for ``n_frames`` video frames."""
    to_viseme, bilabial = _phone_to_viseme(tuple(names))
    post = phone_posteriors_10ms(loglik)
    phones = _video_frame_pool(post, n_frames, "mean", step)
    visemes = phones @ to_viseme
    visemes /= np.maximum(visemes.sum(axis=1, keepdims=True), 1e-6)
    lips = _video_frame_pool(post[:, bilabial].sum(axis=1, keepdims=True), n_frames, "max", step)[:, 0]
    closure = np.clip((lips - CLOSURE_FLOOR) / (CLOSURE_FULL - CLOSURE_FLOOR), 0.0, 1.0)
    return AcousticFrames(visemes.astype(np.float32), closure.astype(np.float32),
                          phones.astype(np.float32), tuple(names))


def acoustic_content(audio: np.ndarray):
    """The acoustic front end's :class:`~evp_anim.audio.phones.SpeechContent` of 16 kHz mono
    ``audio``: per-frame viseme posteriors and lip closure, no phones."""
    from .phones import ACOUSTIC_SOURCE, SpeechContent
    heard = acoustic_frames(audio)
    return SpeechContent([], ACOUSTIC_SOURCE, heard.visemes, heard.closure)


def with_acoustic_frames(content, audio: np.ndarray, weight: float = PHONE_BLEND):
    """``content`` (a :class:`~evp_anim.audio.phones.SpeechContent` with phones) with this
    clip's acoustic frames blended in at ``weight`` (16 kHz mono ``audio``, the same clip)."""
    return blend_acoustic(content, acoustic_frames(audio), weight)


def blend_acoustic(content, heard: AcousticFrames, weight: float = PHONE_BLEND):
    """``content`` with the clip's acoustic frames ``heard`` (:func:`acoustic_frames`) blended in
    at ``weight``: :func:`with_acoustic_frames` for frames computed already."""
    return content.with_acoustic(heard.visemes, heard.closure, weight)


# ------------------------------------------------------------------------ streaming (live)
CMN_PRIOR_FRAMES = 100       # Sphinx frames (1 s) of weight the running cepstral mean's prior starts with
# The running mean's prior: the mean cepstrum of every Sphinx frame (pauses included, as offline's
# clip mean) of 200 train-split clips of the 24-speaker synthetic corpus the shipped models were
# trained on (`scripts/cepstral_prior.py CORPUS` prints it; 400 other clips give values within
# 1.9). Chosen on 40 synthetic held-out clips, each a cold start, the then shipped `evp_live.pt`,
# neutral (`scripts/eval_acoustic_synthetic.py CORPUS --live`): openness correlation 0.606 with it, 0.502
# with pocketsphinx's own live start (the first frame's cepstrum as the prior, 100 frames), 0.589
# to 0.554 with that prior weighed 0 to 30 frames, 0.605 with the corpus's speech frames' mean;
# offline (the clip's own mean) 0.620. A short clip's first second no longer hears its mean as
# that of its leading pause.
CMN_PRIOR = np.array([51.17, 3.74, -3.01, 9.46, -10.44, 0.06, -6.77, -5.34, -2.75, 1.58, -0.92, -1.15, 0.27], np.float32)


class StreamingAcoustic:
    """The acoustic front end on a stream of 16 kHz samples, for `evp-anim live`: :meth:`feed`
    samples, :meth:`frames` gives the (k, 15) viseme posteriors and (k,) lip closure of the 25 fps
    frames that became known (frame t once sample ``640 t + 1210`` has arrived: 35.6 ms after its last sample, see
    the module docstring), each computed once.

    Offline (:func:`acoustic_frames`) removes the whole clip's cepstral mean; a stream has no whole
    clip, so this removes the running mean of every Sphinx frame heard so far (look-ahead
    included), which starts from ``prior`` (13,) weighed as :data:`CMN_PRIOR_FRAMES` frames — by
    default :data:`CMN_PRIOR`, the training corpus's mean cepstrum; ``prior="first"`` takes the
    first frame's own cepstrum instead, as pocketsphinx's live decoding does.
    Everything else (cepstra, deltas with the edges repeated, every other frame scored, the
    posteriors pooled per video frame) is offline's, so with the same mean the frames are
    offline's to float precision (``fixed_mean``: remove that mean instead, e.g. the clip's own,
    which makes them offline's).
    """

    def __init__(self, model: AcousticModel | None = None, prior: np.ndarray | str | None = None,
                 fixed_mean: np.ndarray | None = None):
        self.model = model or default_model()
        self.names = self.model.phones
        self._to_viseme, self._bilabial = _phone_to_viseme(tuple(self.names))
        if isinstance(prior, str) and prior != "first":
            raise EvpError(f"prior must be a (13,) cepstrum or 'first', got {prior!r}")
        self._prior = (None if isinstance(prior, str) else
                       np.asarray(CMN_PRIOR if prior is None else prior, np.float64).reshape(N_CEP))
        self._fixed = None if fixed_mean is None else np.asarray(fixed_mean, np.float32).reshape(N_CEP)
        self._buf = np.zeros(0, np.float32)      # samples [buf0, n)
        self._buf0 = 0
        self.n_samples = 0
        self.eof = False
        self._cep = np.zeros((0, N_CEP), np.float32)  # cepstra of Sphinx frames [cep0, cep0 + len)
        self._cep0 = 0
        self._cep_sum, self._cep_n = np.zeros(N_CEP), 0
        self.next_frame = 0                        # next video frame to give out

    def feed(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, np.float32).reshape(-1)
        if x.size:
            self._buf = np.concatenate([self._buf, x]) if self._buf.size else x.copy()
            self.n_samples += x.size

    def finish(self) -> None:
        """The end of the stream: the last frames are computed as offline does at a clip's end."""
        self.eof = True

    def _mean(self) -> np.ndarray:
        if self._fixed is not None:
            return self._fixed
        if self._cep_n == 0:
            return np.zeros(N_CEP)
        prior = self._prior if self._prior is not None else self._first
        return (CMN_PRIOR_FRAMES * prior + self._cep_sum) / (CMN_PRIOR_FRAMES + self._cep_n)

    def _more_cepstra(self) -> int:
        """Compute the cepstra of the Sphinx frames whose samples have all arrived (at the end: all
        of the clip's frames, zeros past it); → the number of frames known."""
        n = self.n_samples
        total = n_sphinx_frames(n) if self.eof else (max(0, n - WINDOW) // HOP + 1 if n >= WINDOW else 0)
        have = self._cep0 + len(self._cep)
        if total > have:
            # From one frame before the first new one, so that its pre-emphasis reads the sample
            # before it (cepstra() starts a clip unemphasised); that frame is dropped.
            back = 1 if have > 0 else 0
            s0 = (have - back) * HOP
            piece = self._buf[s0 - self._buf0:min(n, (total - 1) * HOP + WINDOW) - self._buf0]
            need = (total - have + back - 1) * HOP + WINDOW
            if piece.size < need:                      # the clip's end: zeros, as offline
                piece = np.concatenate([piece, np.zeros(need - piece.size, np.float32)])
            new = cepstra(piece)[back:back + total - have]
            if have == 0:
                self._first = new[0].astype(np.float64)
            self._cep = np.concatenate([self._cep, new]) if len(self._cep) else new
            self._cep_sum += new.sum(axis=0)
            self._cep_n += len(new)
        return total

    def frames(self) -> tuple[np.ndarray, np.ndarray]:
        """(k, 15) float32 viseme posteriors and (k,) lip closure in [0, 1] of the video frames that
        became known since the last call (frames ``next_frame - k … next_frame - 1``); k may be 0."""
        known = self._more_cepstra()
        if self.eof:
            last = -(-self.n_samples // (HOP * 4))               # ceil(N / 640): the track's frames
        else:
            last = (known - 6) // 4 + 1 if known >= 6 else 0     # frame t needs cepstra up to 4t + 5
        if last <= self.next_frame:
            return np.zeros((0, len(self._to_viseme[0])), np.float32), np.zeros(0, np.float32)
        t0, t1 = self.next_frame, last
        scored = np.arange(4 * t0, 4 * (t1 - 1) + 3, SCORE_STEP)     # frames 4t, 4t + 2
        scored = np.minimum(scored, (known - 1) // SCORE_STEP * SCORE_STEP)  # past the end: the last
        lo, hi = max(0, int(scored.min()) - 3), min(known, int(scored.max()) + 4)
        feats = stream_features(self._cep[lo - self._cep0:hi - self._cep0], self._mean())
        loglik = phone_log_likelihoods(feats[scored - lo], self.model)
        post = phone_posteriors_10ms(loglik).reshape(t1 - t0, -1, len(self.names))   # (k, 2, P)
        vis = post.mean(axis=1) @ self._to_viseme
        vis /= np.maximum(vis.sum(axis=1, keepdims=True), 1e-6)
        lips = post[:, :, self._bilabial].sum(axis=2).max(axis=1)
        closure = np.clip((lips - CLOSURE_FLOOR) / (CLOSURE_FULL - CLOSURE_FLOOR), 0.0, 1.0)
        self.next_frame = t1
        # Keep what later frames read: cepstra from 4·next_frame − 3, samples for the next cepstrum.
        keep_c = max(0, 4 * t1 - 3 - self._cep0)
        if keep_c > 0:
            self._cep = self._cep[keep_c:]
            self._cep0 += keep_c
        keep_s = max(0, (self._cep0 + len(self._cep) - 1) * HOP - self._buf0)
        if keep_s > 0:
            self._buf = self._buf[keep_s:].copy()
            self._buf0 += keep_s
        return vis.astype(np.float32), closure.astype(np.float32)
