"""Streaming `animate` (issue 15, row 9): speech of any length goes through one chunked path.

Chunked results must equal the whole clip's: the MFCC windows of a stretch of samples, EVP with its
LSTM state carried across chunks (and the silence gate and rest mouth decided over the whole clip),
EMOTE on the spans its own chunked predict uses, the track file written chunk by chunk. Small chunk
sizes force several chunks on a short clip. A failure half-way leaves no file behind.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from evp_anim.audio.features import mfcc_window_span, mfcc_windows, window_span_samples
from evp_anim.audio.io import iter_audio_blocks, load_audio
from evp_anim.emotion_keys import EmotionKey
from evp_anim.errors import EvpError
from evp_anim.models import animate as anim
from evp_anim.models.animate import (EmotionSpec, animate, animate_emote, animate_speech_file,
                                     animate_speech_to_file)
from evp_anim.models.emotion_control import per_frame
from evp_anim.tracks import Track, TrackWriter, load_track, save_track

REPO = Path(__file__).resolve().parents[1]
SR = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """30.5 s of speech with pauses of quiet noise (the silence gate closes the mouth in them):
    763 frames at 25 fps, several chunks at the chunk sizes below."""
    x, sr = sf.read(REPO / "assets" / "sample_speech.wav", dtype="float32")
    assert sr == SR
    rng = np.random.default_rng(5)
    pieces = []
    while sum(map(len, pieces)) < 30.5 * SR:
        pieces += [x, 0.002 * rng.standard_normal(int(SR * rng.uniform(0.3, 1.2))).astype(np.float32)]
    return np.concatenate(pieces)[: int(30.5 * SR) + 77]


@pytest.fixture(scope="module")
def evp():
    from evp_anim.models.evp import EvpModel
    return EvpModel.load(anim.default_model_path())


@pytest.fixture(scope="module")
def emote():
    from evp_anim.models.emote import EmoteModel
    return EmoteModel.load(anim.default_emote_path())


@pytest.fixture(scope="module")
def rig(sfm_dir):
    from evp_anim.face.rig import FaceRig
    return FaceRig(sfm_dir)


# ---------------------------------------------------------------------- features and audio
def test_window_span_of_a_stretch_equals_the_whole_clips_windows():
    y = (0.1 * np.random.default_rng(0).standard_normal(16000 * 7 + 123)).astype(np.float32)
    whole = mfcc_windows(y)
    t = len(whole)
    for f0, f1 in [(0, t), (0, 1), (t - 1, t), (60, 121), (t - 5, t)]:
        s0, s1 = window_span_samples(f0, f1, y.size)
        got = mfcc_window_span(y[s0:s1], s0, y.size, f0, f1)      # only the samples it needs
        assert got.shape == (f1 - f0, 28, 12)
        np.testing.assert_allclose(got, whole[f0:f1], atol=1e-4, rtol=1e-5)
    with pytest.raises(EvpError, match="do not cover"):
        s0, s1 = window_span_samples(60, 121, y.size)
        mfcc_window_span(y[s0 + 1:s1], s0 + 1, y.size, 60, 121)


def test_audio_blocks_join_to_load_audio_bit_for_bit(tmp_path):
    # 44.1 kHz stereo: channels averaged per block, soxr's stream = its one-shot resampling
    import soxr
    rng = np.random.default_rng(1)
    st = (0.2 * rng.standard_normal((44100 * 7 + 5, 2))).astype(np.float32)
    sf.write(tmp_path / "st.wav", st, 44100, subtype="FLOAT")
    blocks = list(iter_audio_blocks(tmp_path / "st.wav"))
    assert len(blocks) > 1
    joined = np.concatenate(blocks)
    want = np.clip(soxr.resample(st.mean(axis=1, dtype=np.float32), 44100, SR, quality="HQ"), -1, 1)
    np.testing.assert_array_equal(joined, want)
    np.testing.assert_array_equal(load_audio(tmp_path / "st.wav"), want)


def test_keys_per_chunk_are_the_whole_clips_rows():
    keys = [EmotionKey(0.5, "happy", 1.0), EmotionKey(3.0, "sad", 0.4), EmotionKey(9.0, "angry", 0.8)]
    code = lambda e, i: np.array([len(e), i], np.float32)   # noqa: E731
    whole = per_frame(keys, 300, 25.0, code)
    for a, b in [(0, 100), (100, 250), (250, 300)]:
        for w, c in zip(whole, per_frame(keys, b - a, 25.0, code, start=a)):
            np.testing.assert_array_equal(c, w[a:b])


# ---------------------------------------------------------------------- models in chunks
def _speech_shift(speech, model, track):
    """What animate adds to every MFCC row (models/animate._speech_shift): the model's training
    speech mean minus the clip's voiced frames' mean; checked against what the track records."""
    from evp_anim.audio.features import frame_mfcc_rows, speech_mfcc_mean, voice_activity
    shift = (np.asarray(model.meta["speech_mfcc_mean"], np.float32)
             - speech_mfcc_mean(frame_mfcc_rows(speech), voice_activity(speech)))
    np.testing.assert_allclose(track.info["mfcc_speech_shift"], shift, atol=0.006)
    return shift.astype(np.float32)


@pytest.mark.parametrize("spec", [
    EmotionSpec("happy", 0.7),
    # a cross-fade over the clip: every frame has its own code, so the rest mouth of the silence
    # gate comes from a grid of frames spread over the whole clip
    EmotionSpec(None, keys=[EmotionKey(0.0, "angry", 1.0), EmotionKey(29.0, "sad", 0.6)]),
], ids=["label", "keys"])
def test_evp_in_chunks_equals_the_whole_clip(speech, evp, spec):
    whole = animate(speech, evp, spec, chunk_frames=10 ** 6)
    assert whole.n_frames == 763
    chunked = animate(speech, evp, spec, chunk_frames=200)            # 4 chunks; the LSTM carries on
    odd = animate(speech, evp, spec, chunk_frames=333)                # chunk edges off the 500-frame steps
    for tr in (chunked, odd):
        assert tr.n_frames == whole.n_frames
        np.testing.assert_allclose(tr.landmarks_3d, whole.landmarks_3d, atol=1e-4)     # mm
        np.testing.assert_allclose(tr.landmarks_2d, whole.landmarks_2d, atol=1e-3)     # px
        np.testing.assert_array_equal(tr.emotion, whole.emotion)
        np.testing.assert_array_equal(tr.intensity, whole.intensity)
    # the whole-clip pass is the network's own prediction where the silence gate is off
    from evp_anim.audio.features import voice_activity
    codes = (per_frame(spec.keys, 763, 25.0, evp.label_code)[0] if spec.keys
             else evp.label_code(spec.emotion, spec.intensity))
    ref = evp.net.ref_mean.numpy().reshape(68, 3)
    direct = evp.predict_lm3d(mfcc_windows(speech) + _speech_shift(speech, evp, whole), ref, codes)
    gate = anim._silence_gate(voice_activity(speech))
    assert 0 < (gate > 0).sum() < 700          # the pauses are gated, the speech is not
    open_ = gate == 0
    np.testing.assert_allclose(whole.landmarks_3d[open_], direct[open_], atol=1e-4)
    # in the gated frames the mouth moved towards the model's closed mouth, the rest did not
    shut = gate > 0
    assert np.abs(whole.landmarks_3d[shut][:, 48:] - direct[shut][:, 48:]).max() > 0.01
    np.testing.assert_allclose(whole.landmarks_3d[shut][:, :48], direct[shut][:, :48], atol=1e-4)


def test_emote_in_chunks_equals_its_chunked_predict(speech, emote, rig):
    """EMOTE's generator normalises over its input (GroupNorm over all frames), so a chunk's
    coefficients depend on where the chunk lies; the stream runs the spans ``predict`` runs for its
    own chunks (64 frames of overlap, latent grid aligned), so it equals ``predict`` on the whole
    clip's windows with the same chunk size (the default, CHUNK_FRAMES, is predict's default)."""
    from evp_anim.models.emote import label_condition
    onehot, inten = label_condition("sad", 0.8)
    spec = EmotionSpec("sad", 0.8)
    for chunk in (250, 10 ** 6):
        tr = animate_emote(speech, emote, spec, rig, chunk_frames=chunk)
        windows = mfcc_windows(speech) + _speech_shift(speech, emote, tr)
        want = emote.predict(windows, onehot, inten, 0, chunk=min(chunk, len(windows)))
        assert tr.n_frames == len(want) == 763
        np.testing.assert_allclose(tr.expression, want, atol=1e-5)
        np.testing.assert_allclose(tr.landmarks_3d, rig.landmarks_3d(None, want), atol=1e-4)
    import inspect
    assert anim.CHUNK_FRAMES == inspect.signature(emote.predict).parameters["chunk"].default


# ---------------------------------------------------------------------- the track file
def _frames(n: int, k: int = 3, seed: int = 0) -> Track:
    rng = np.random.default_rng(seed)
    emo = rng.random((n, 8)).astype(np.float32)
    return Track.new(rng.random((n, 68, 2)).astype(np.float32) * 200, landmarks_3d=rng.random((n, 68, 3)) * 50,
                     expression=rng.random((n, k)), expression_names=[f"c{i}" for i in range(k)],
                     emotion=emo / emo.sum(1, keepdims=True), intensity=rng.random(n),
                     identity=np.arange(5, dtype=np.float32), provenance={"model": "m"}, info={"a": 1})


def test_track_writer_file_equals_save_track_of_the_whole(tmp_path):
    whole = _frames(257)
    whole.phonemes = [(0.1, 0.3, "HH"), (5.0, 5.5, "AH"), (9.0, 10.25, "M")]   # none across a chunk edge
    with TrackWriter(tmp_path / "w.npz") as w:
        for a, b in [(0, 100), (100, 101), (101, 257)]:
            w.append(whole.slice(a, b))                   # phonemes shifted to the chunk's start
        w.info["front_end"] = "mfcc"
    whole.info["front_end"] = "mfcc"
    save_track(whole, tmp_path / "s.npz")
    streamed, saved = load_track(tmp_path / "w.npz"), load_track(tmp_path / "s.npz")
    assert streamed.n_frames == 257
    assert {**streamed.meta(), "phonemes": None} == {**saved.meta(), "phonemes": None}
    assert [p for _, _, p in streamed.phonemes] == ["HH", "AH", "M"]
    np.testing.assert_allclose([s[:2] for s in streamed.phonemes], [s[:2] for s in saved.phonemes], atol=1e-9)
    for name, arr in saved.arrays().items():
        np.testing.assert_array_equal(getattr(streamed, name), arr)
    np.testing.assert_array_equal(streamed.identity, saved.identity)
    assert sorted(os.listdir(tmp_path)) == ["s.npz", "w.npz"]        # no spool or temporary left
    with np.load(tmp_path / "w.npz") as z:                            # the same members as save_track's
        assert sorted(z.files) == sorted(np.load(tmp_path / "s.npz").files)


def test_track_writer_refuses_mismatched_chunks_and_leaves_nothing(tmp_path):
    w = TrackWriter(tmp_path / "w.npz")
    w.append(_frames(10))
    with pytest.raises(EvpError, match="differ from the first chunk"):
        w.append(_frames(10, k=4))
    w.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(EvpError, match="0 frames"):
        TrackWriter(tmp_path / "e.npz").close()
    with pytest.raises(EvpError, match=".npz"):
        TrackWriter(tmp_path / "x.json")
    with pytest.raises(KeyboardInterrupt):
        with TrackWriter(tmp_path / "k.npz") as w:
            w.append(_frames(10))
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("model_name", ["evp", "emote"])
def test_animate_to_file_in_chunks_equals_the_whole_clip(tmp_path, speech, rig, model_name, request):
    import soxr
    model = request.getfixturevalue(model_name)
    # a 44.1 kHz stereo file: blocks are mixed down and resampled as they are read
    st = np.stack([speech, 0.5 * speech], 1)
    sf.write(tmp_path / "speech.wav", soxr.resample(st, SR, 44100), 44100, subtype="FLOAT")
    spec = EmotionSpec("happy", 0.6)
    chunk = 200 if model_name == "evp" else 3000    # EMOTE: predict's own chunk (see above)
    out = tmp_path / "t.npz"
    done = []
    frames = animate_speech_to_file(tmp_path / "speech.wav", out, model, spec, rig, chunk_frames=chunk,
                                    progress=done.append)
    whole = animate_speech_file(tmp_path / "speech.wav", model, spec, rig, chunk_frames=10 ** 6)
    track = load_track(out)
    assert frames == track.n_frames == whole.n_frames
    assert done[-1] == 1.0 and done == sorted(done)
    np.testing.assert_allclose(track.landmarks_3d, whole.landmarks_3d, atol=1e-4)
    np.testing.assert_allclose(track.landmarks_2d, whole.landmarks_2d, atol=1e-3)
    np.testing.assert_allclose(track.expression, whole.expression, atol=1e-4)
    assert track.expression_names == whole.expression_names == list(rig.channels)
    assert track.provenance["source_audio_sha256"] == whole.provenance["source_audio_sha256"]
    assert track.info == whole.info and track.info["front_end"] == "mfcc"
    # the in-memory path on the loaded samples gives the same landmarks
    if model_name == "evp":
        mem = animate(load_audio(tmp_path / "speech.wav"), model, spec, reference=rig.landmarks_3d(np.zeros(63)))
        np.testing.assert_allclose(track.landmarks_3d, mem.landmarks_3d, atol=1e-4)
    assert sorted(os.listdir(tmp_path)) == ["speech.wav", "t.npz"]


def test_a_failure_half_way_leaves_no_file(tmp_path, speech, evp, rig, monkeypatch):
    sf.write(tmp_path / "speech.wav", speech, SR)
    calls = []
    real = anim.lift_to_rig

    def failing(track, *a, **k):
        calls.append(track.n_frames)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(track, *a, **k)

    monkeypatch.setattr(anim, "lift_to_rig", failing)
    out = tmp_path / "t.npz"
    with pytest.raises(OSError):
        animate_speech_to_file(tmp_path / "speech.wav", out, evp, EmotionSpec("sad"), rig, chunk_frames=200)
    assert calls == [200, 200, 200]                 # two chunks were written before the failure
    assert os.listdir(tmp_path) == ["speech.wav"]   # no partial track, no temporary file
    monkeypatch.setattr(anim, "lift_to_rig", real)
    # an error found before any frame (keys past the end) leaves nothing either
    keys = EmotionSpec(None, keys=[EmotionKey(0.0, "happy", 1.0), EmotionKey(99.0, "sad", 1.0)])
    with pytest.raises(EvpError, match="outside the clip"):
        animate_speech_to_file(tmp_path / "speech.wav", out, evp, keys, rig, chunk_frames=200)
    assert os.listdir(tmp_path) == ["speech.wav"]
