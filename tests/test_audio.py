"""Audio loading (every format → 16 kHz mono) and EVP features (MFCC windows, energy, voice activity)."""

import fractions

import av
import librosa
import numpy as np
import pytest
import soundfile as sf

from evp_anim.audio import features as F
from evp_anim.audio.io import audio_sha256, load_audio, save_wav, write_features
from evp_anim.errors import EvpError

SR = 16000


def tone(freq=440.0, dur=1.5, sr=SR, amp=0.5):
    t = np.arange(int(round(dur * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(y, sr=SR):
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.argmax(spec) * sr / len(y)


def encode_pyav(path, audio, sr, codec, channels=2):
    """Encode (N,) float audio with PyAV, with sample-accurate pts so the muxer records the priming."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=sr)
        s.layout = "stereo" if channels == 2 else "mono"
        planes = np.stack([audio] * channels).astype(np.float32)
        for i in range(0, planes.shape[1], 4096):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes[:, i:i + 4096]), format="fltp",
                                            layout=s.layout.name)
            fr.sample_rate, fr.pts, fr.time_base = sr, i, fractions.Fraction(1, sr)
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def speechlike(rng, segments, sr=SR, noise_db=-65.0):
    """Syllable-like noise bursts: (start_s, end_s) segments of 4 Hz-modulated, low-passed noise over a
    faint noise floor. Returns (audio, n_samples)."""
    n = int(max(e for _, e in segments) * sr + 0.5 * sr)
    y = rng.standard_normal(n) * 10 ** (noise_db / 20)
    for s, e in segments:
        i, j = int(s * sr), int(e * sr)
        burst = np.convolve(rng.standard_normal(j - i), np.ones(8) / 8, mode="same")
        env = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * np.arange(j - i) / sr)
        y[i:j] += 0.3 * burst * env
    return y.astype(np.float32)


# ------------------------------------------------------------------------------------------ loading

def test_stereo_44k_wav_is_averaged_and_resampled(tmp_path):
    left, right = tone(amp=0.6, sr=44100), tone(amp=0.2, sr=44100)
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    y = load_audio(tmp_path / "st.wav")
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) / SR - 1.5) < 0.02
    assert peak_hz(y) == pytest.approx(440, abs=2)
    assert np.abs(y[SR // 2:SR]).max() == pytest.approx(0.4, abs=0.01)  # mean of 0.6 and 0.2


@pytest.mark.parametrize("name,rate,subtype", [
    ("u8.wav", 16000, "PCM_U8"), ("s24.flac", 44100, "PCM_24"), ("f32.wav", 48000, "FLOAT"),
    ("s16_8k.wav", 8000, "PCM_16"),
])
def test_bit_depths_and_rates(tmp_path, name, rate, subtype):
    sf.write(tmp_path / name, tone(amp=0.5, sr=rate), rate, subtype=subtype)
    y = load_audio(tmp_path / name)
    assert abs(len(y) / SR - 1.5) < 0.02
    assert peak_hz(y) == pytest.approx(440, abs=2)
    assert np.abs(y).max() == pytest.approx(0.5, abs=0.03)
    assert np.abs(y).max() <= 1.0


@pytest.mark.parametrize("name,codec", [("a.mp3", "libmp3lame"), ("a.m4a", "aac")])
def test_compressed_formats_via_pyav(tmp_path, name, codec):
    encode_pyav(tmp_path / name, tone(sr=44100), 44100, codec)
    y = load_audio(tmp_path / name)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) / SR - 1.5) < 0.02
    assert peak_hz(y) == pytest.approx(440, abs=2)


def test_target_rate_is_honoured(tmp_path):
    sf.write(tmp_path / "a.wav", tone(sr=48000), 48000)
    y = load_audio(tmp_path / "a.wav", sr=22050)
    assert abs(len(y) - 1.5 * 22050) <= 1
    assert peak_hz(y, 22050) == pytest.approx(440, abs=2)


def test_missing_file(tmp_path):
    with pytest.raises(EvpError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(EvpError, match="empty"):
        load_audio(tmp_path / "empty.wav")


def test_wav_without_samples(tmp_path):
    sf.write(tmp_path / "none.wav", np.zeros(0, np.float32), SR)
    with pytest.raises(EvpError, match="no audio samples"):
        load_audio(tmp_path / "none.wav")


@pytest.mark.parametrize("name", ["junk.wav", "junk.mp3", "junk.m4a"])
def test_random_bytes_are_reported_as_undecodable(tmp_path, name):
    (tmp_path / name).write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(EvpError) as err:
        load_audio(tmp_path / name)
    assert "\n" not in str(err.value)
    assert "cannot decode" in str(err.value) or "no audio" in str(err.value)


def test_video_without_audio_stream(tmp_path):
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * i, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    with pytest.raises(EvpError, match="no audio stream"):
        load_audio(path)


def test_save_wav_round_trip_and_hash(tmp_path):
    y = tone(dur=0.5)
    save_wav(tmp_path / "out.wav", y)
    info = sf.info(tmp_path / "out.wav")
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    back = load_audio(tmp_path / "out.wav")
    assert np.abs(back - y).max() < 1e-4
    h = audio_sha256(tmp_path / "out.wav")
    assert len(h) == 64 and h == audio_sha256(tmp_path / "out.wav")
    save_wav(tmp_path / "out.wav", y * 0.5)
    assert audio_sha256(tmp_path / "out.wav") != h


# ------------------------------------------------------------------------------------------ features

def test_n_frames_rounds_up():
    assert F.n_frames(16000) == 25
    assert F.n_frames(16001) == 26
    assert F.n_frames(640) == 1 and F.n_frames(641) == 2
    assert F.n_frames(0) == 0
    assert F.n_frames(44100, sr=44100) == 25


@pytest.mark.parametrize("dur", [0.05, 0.5, 1.0, 1.01, 3.7])
def test_window_shapes(dur):
    y = np.random.default_rng(0).standard_normal(int(dur * SR)).astype(np.float32) * 0.1
    w = F.mfcc_windows(y)
    assert w.shape == (int(np.ceil(dur * 25 - 1e-9)), 28, 12) and w.dtype == np.float32
    assert F.mfcc(y).shape == (1 + len(y) // 160, 12)


def test_windows_hold_the_right_mfcc_rows():
    rng = np.random.default_rng(3)
    y = speechlike(rng, [(0.1, 0.6), (0.8, 1.6)])
    # The same analysis called directly through librosa, c0 dropped.
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=400, hop_length=160, n_mels=40, fmax=8000)
    direct = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=13)[1:].T
    w = F.mfcc_windows(y)
    t = 20
    np.testing.assert_allclose(w[t], direct[4 * t - 12: 4 * t + 16], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(w[t, 14], direct[4 * t + 2], rtol=1e-4, atol=1e-3)  # the frame's centre
    # Edges repeat the first/last MFCC frame.
    np.testing.assert_allclose(w[0, :12], np.repeat(direct[:1], 12, axis=0), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(w[0, 12:], direct[:16], rtol=1e-4, atol=1e-3)
    last = len(direct) - 1
    assert np.allclose(w[-1, -1], direct[last], atol=1e-3)


def test_explicit_frame_count_pads_with_the_last_frame():
    y = tone(dur=0.4)
    w = F.mfcc_windows(y, n_frames=30)
    assert w.shape == (30, 28, 12)
    np.testing.assert_array_equal(w[-1], np.repeat(w[-1, :1], 28, axis=0))


def test_mfcc_resamples_other_rates():
    y16 = tone(dur=1.0)
    y48 = tone(dur=1.0, sr=48000)
    a, b = F.mfcc(y16), F.mfcc(y48, sr=48000)
    assert a.shape == b.shape
    assert np.median(np.abs(a - b)) < 0.5


def test_energy_levels():
    full_sine = tone(amp=1.0, dur=1.0)
    e = F.energy(full_sine)
    assert e.shape == (25,)
    np.testing.assert_allclose(e, -3.01, atol=0.05)
    assert (F.energy(np.zeros(SR, np.float32)) == F.ENERGY_FLOOR_DB).all()
    half = np.concatenate([np.zeros(SR // 2, np.float32), np.full(SR // 2, 0.1, np.float32)])
    e = F.energy(half)
    assert (e[:12] == F.ENERGY_FLOOR_DB).all() and np.allclose(e[13:], -20.0, atol=1e-3)
    assert F.energy(full_sine, sr=SR, n_frames=30)[-1] == F.ENERGY_FLOOR_DB  # past the end


@pytest.mark.parametrize("kind", ["zeros", "faint_noise"])
def test_silence_has_no_voice(kind):
    y = np.zeros(2 * SR, np.float32) if kind == "zeros" else \
        (np.random.default_rng(0).standard_normal(2 * SR) * 1e-4).astype(np.float32)
    va = F.voice_activity(y)
    assert va.shape == (50,) and not va.any()


def test_tone_bursts_are_active_exactly_inside_bursts():
    y = np.zeros(4 * SR, np.float32)
    bursts = [(0.40, 1.20), (2.00, 2.40), (3.00, 3.60)]  # on 40 ms frame boundaries
    for s, e in bursts:
        y[int(s * SR):int(e * SR)] = tone(dur=e - s, amp=0.3)
    va = F.voice_activity(y)
    expected = np.zeros(100, bool)
    for s, e in bursts:
        expected[round(s * 25):round(e * 25)] = True
    frames = np.arange(100)
    diff = np.flatnonzero(va != expected)
    dist = np.array([min(abs(f - round(b * 25)) for s, e in bursts for b in (s, e)) for f in diff])
    assert (dist <= 2).all(), f"frames off by more than 2 from a burst edge: {frames[diff]}"
    for s, e in bursts:  # the core of each burst is fully active
        assert va[round(s * 25) + 1: round(e * 25) - 1].all()


def test_speechlike_pauses_are_inactive():
    rng = np.random.default_rng(7)
    segs = [(0.3, 0.9), (1.5, 2.3), (3.0, 3.4)]
    y = speechlike(rng, segs)
    va = F.voice_activity(y)
    for a, b in [(0.0, 0.3), (0.9, 1.5), (2.3, 3.0)]:  # pauses, minus the 80 ms hangover
        lo, hi = round(a * 25) + (3 if a > 0 else 0), round(b * 25) - 1
        assert not va[lo:hi].any(), (a, b, np.flatnonzero(va[lo:hi]) + lo)
    for a, b in segs:
        assert va[round(a * 25) + 1: round(b * 25) - 1].all()


@pytest.mark.parametrize("bad", [np.zeros((10, 2), np.float32), np.zeros(10, np.int16),
                                 np.array([0.0, np.nan], np.float32)])
def test_features_reject_bad_input(bad):
    for fn in (F.mfcc, F.mfcc_windows, F.energy, F.voice_activity):
        with pytest.raises(EvpError, match="audio"):
            fn(bad)


def test_empty_audio_has_no_mfcc_but_zero_frames_of_energy():
    with pytest.raises(EvpError, match="no samples"):
        F.mfcc_windows(np.zeros(0, np.float32))
    assert F.energy(np.zeros(0, np.float32)).shape == (0,)
    assert F.voice_activity(np.zeros(0, np.float32)).shape == (0,)


def test_features_file_holds_the_feature_functions_on_one_clock(tmp_path):
    y = tone(dur=1.01)
    save_wav(tmp_path / "a.wav", y)
    out = tmp_path / "a.npz"
    assert write_features(tmp_path / "a.wav", out) == 26
    x = load_audio(tmp_path / "a.wav")
    with np.load(out) as z:
        assert sorted(z.files) == ["energy_db", "fps", "mfcc_windows", "voice_activity"]
        np.testing.assert_array_equal(z["mfcc_windows"], F.mfcc_windows(x))
        np.testing.assert_array_equal(z["energy_db"], F.energy(x, n_frames=26))
        np.testing.assert_array_equal(z["voice_activity"], F.voice_activity(x, n_frames=26))
        assert z["fps"].dtype == np.float32 and float(z["fps"]) == 25.0


def test_features_file_must_be_npz_and_is_checked_before_reading(tmp_path):
    with pytest.raises(EvpError, match="must end in .npz"):
        write_features(tmp_path / "missing.wav", tmp_path / "f.h5")
