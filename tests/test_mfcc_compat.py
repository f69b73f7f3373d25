"""The numpy MFCC front end (issue 17) against librosa's, which the shipped models were trained on.

librosa is imported here only, as the reference; ``evp_anim`` must not import it (nor numba) on
the animate path, which the subprocess tests at the bottom check.
"""

import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from evp_anim.audio import features as F

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def librosa_mfcc(y: np.ndarray) -> np.ndarray:
    """The features as evp_anim computed them before issue 17: (M, 12) float32, c1..c12."""
    mel = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=400, hop_length=160, win_length=400, window="hann", center=True,
        pad_mode="constant", power=2.0, n_mels=40, fmin=0.0, fmax=SR / 2)
    log_mel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    c = librosa.feature.mfcc(S=log_mel, n_mfcc=13, dct_type=2, norm="ortho")
    return np.ascontiguousarray(c[1:].T, dtype=np.float32)


def _speech() -> np.ndarray:
    y, sr = sf.read(str(REPO / "assets" / "sample_speech.wav"), dtype="float32")
    assert sr == SR
    return y


def _sweep_and_noise(seconds: float = 3.0) -> np.ndarray:
    """A 50 Hz → 7.9 kHz log sweep over pink-ish noise, with a stretch of digital silence."""
    t = np.arange(int(seconds * SR)) / SR
    f0, f1 = 50.0, 7900.0
    phase = 2 * np.pi * f0 * seconds / np.log(f1 / f0) * (np.exp(t / seconds * np.log(f1 / f0)) - 1)
    rng = np.random.default_rng(5)
    noise = np.cumsum(rng.standard_normal(t.size)) * 1e-3
    noise -= np.convolve(noise, np.ones(401) / 401, mode="same")             # keep it zero-mean
    y = 0.5 * np.sin(phase) + noise
    y[SR // 2: SR] = 0.0                                                     # floor (-100 dB) region
    return y.astype(np.float32)


@pytest.mark.filterwarnings("ignore:n_fft=400 is too large")   # librosa, on the 37-sample clip
@pytest.mark.parametrize("name", ["speech", "sweep_noise", "long_speech", "tiny"])
def test_mfcc_matches_librosa(name):
    y = {"speech": _speech, "sweep_noise": _sweep_and_noise,
         "long_speech": lambda: np.tile(_speech(), 11),     # 46 s: crosses the 4096-frame block edge
         "tiny": lambda: _speech()[8000:8037]}[name]()
    ref = librosa_mfcc(y)
    new = F.mfcc(y)
    assert new.shape == ref.shape and new.dtype == np.float32
    scale = np.abs(ref).max()
    assert scale > 5.0                                       # real features, not all zeros
    # Observed: ≤ 6e-5 on features of magnitude ~100 (float32 rounding in the mel sum).
    assert np.abs(new - ref).max() < 1e-3
    assert np.abs(new - ref).max() < 1e-5 * scale


def test_windows_match_librosa_windows():
    y = _speech()
    ref = librosa_mfcc(y)
    w = F.mfcc_windows(y)
    assert w.shape == (105, 28, 12)
    t = 50
    np.testing.assert_allclose(w[t], ref[4 * t - 12: 4 * t + 16], atol=1e-3, rtol=0)
    view = F.mfcc_window_view(F.mfcc(y), w.shape[0])
    assert view.shape == w.shape and np.array_equal(view, w)


def test_resampled_input_matches_librosa_on_the_same_16k_signal():
    # Audio at 44.1 kHz goes through soxr first (no librosa); the features of the result match
    # librosa's features of that same 16 kHz signal.
    import soxr
    y44 = soxr.resample(_speech(), SR, 44100, quality="HQ").astype(np.float32)
    y16 = soxr.resample(y44, 44100, SR, quality="HQ").astype(np.float32)
    np.testing.assert_allclose(F.mfcc(y44, 44100), librosa_mfcc(y16), atol=1e-3, rtol=0)


def test_mel_filters_are_librosa_slaney_filters():
    ref = librosa.filters.mel(sr=SR, n_fft=400, n_mels=40, fmin=0.0, fmax=SR / 2, htk=False, norm="slaney")
    mine = F.mel_filters()
    assert mine.shape == (40, 201) and mine.dtype == np.float32
    np.testing.assert_allclose(mine, ref, atol=1e-8, rtol=0)
    # Slaney normalisation: each triangle has unit area over Hz (height 2/base); the sum over
    # 40 Hz bins approximates it where a filter spans many bins (the upper half of the bands).
    np.testing.assert_allclose(mine[20:].sum(1) * (SR / 400), 1.0, atol=0.02)


def test_blocked_energy_equals_one_pass_energy():
    y = np.tile(_speech(), 20)                                # 84 s: two 60 s blocks
    n = F.n_frames(y.size)
    csum = np.concatenate([[0.0], np.cumsum(np.square(y, dtype=np.float64))])
    bounds = np.minimum(np.arange(n + 1) * 640, y.size)
    mean_sq = (csum[bounds[1:]] - csum[bounds[:-1]]) / np.diff(bounds)
    one_pass = (10 * np.log10(np.maximum(mean_sq, 1e-12))).astype(np.float32)
    e = F.energy(y)
    assert e.shape == (n,) and e.max() > -30
    np.testing.assert_allclose(e, one_pass, atol=1e-4, rtol=0)


def _wav(tmp_path, seconds=1.0) -> Path:
    p = tmp_path / "one_second.wav"
    sf.write(str(p), _speech()[: int(seconds * SR)], SR, subtype="PCM_16")
    return p


def _imported(stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` output."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_animate_imports_no_librosa_or_numba(tmp_path):
    out = tmp_path / "t.npz"
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "evp_anim.cli", "--quiet", "animate",
                        str(_wav(tmp_path)), "-o", str(out)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.is_file()
    mods = _imported(r.stderr)
    assert "numpy" in mods and "evp_anim.audio.features" in mods      # the check itself works
    # nor torch: the EVP networks run on numpy in a cold process (evp_anim/models/evp_numpy.py)
    assert not {m for m in mods if m.split(".")[0] in ("librosa", "numba", "torch")}


def test_help_imports_nothing_heavy():
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "evp_anim.cli", "--help"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and "animate" in r.stdout
    mods = _imported(r.stderr)
    assert "typer" in mods
    heavy = {m for m in mods if m.split(".")[0] in ("torch", "numpy", "scipy", "librosa", "numba", "av", "soxr")}
    assert not heavy
