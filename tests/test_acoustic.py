"""The acoustic front end (evp_anim/audio/acoustic.py): pocketsphinx's acoustic model read and
scored frame by frame, checked against pocketsphinx itself and against real recordings
(../shared/realspeech-dev: a development check, never trained on)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from evp_anim.audio import acoustic
from evp_anim.audio.io import load_audio
from evp_anim.audio.phones import (_aligner, _pcm16, align_transcript, normalize_phone,
                                   pocketsphinx_available, speech_content, viseme_posteriors)
from evp_anim.errors import EvpError

DEV = REPO.parent / "shared" / "realspeech-dev"
CLIP = DEV / "005.wav"
TEXT = "eight of spades four of clubs seven of hearts"

pytestmark = [pytest.mark.skipif(not pocketsphinx_available(), reason="pocketsphinx not installed"),
              pytest.mark.skipif(not CLIP.is_file(), reason="../shared/realspeech-dev missing")]


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return load_audio(CLIP)


def test_model_files_read_as_pocketsphinx_lays_them_out():
    m = acoustic.default_model()
    assert len(m.phones) == 42 and "SIL" in m.phones and m.phones[m.phones.index("P")] == "P"
    assert m.means.shape == (42, 3, 128, 13) and m.inv_var.shape == m.means.shape
    assert (m.inv_var > 0).all() and np.isfinite(m.log_norm).all()
    # Each state's mixture weights over its codebook's 128 Gaussians sum to one (8-bit log
    # quantisation leaves a few percent).
    sums = m.weights.sum(axis=2)                      # (streams, phones, states)
    assert sums.shape == (3, 42, 3)
    assert np.all(np.abs(sums - 1.0) < 0.1), (sums.min(), sums.max())


def test_pocketsphinx_aligns_our_cepstra_as_it_aligns_the_audio(clip):
    """Our Sphinx MFCC fed to pocketsphinx's own aligner (process_cep) gives the phones that the
    audio itself gives (process_raw): same sequence, boundaries within a frame or two."""
    from pocketsphinx import get_model_path

    def align(feed):
        dec = _aligner(get_model_path())
        dec.set_align_text(TEXT)
        for _ in range(2):                            # words, then phones inside them
            dec.start_utt()
            feed(dec)
            dec.end_utt()
            dec.set_alignment()
        return [(ph.start, normalize_phone(ph.name)) for w in dec.get_alignment() for ph in w]

    theirs = align(lambda d: d.process_raw(_pcm16(clip), full_utt=True))
    ours = align(lambda d: d.process_cep(acoustic.cepstra(clip).tobytes(), full_utt=True))
    assert [p for _, p in ours] == [p for _, p in theirs]
    shift = np.abs(np.array([s for s, _ in ours]) - np.array([s for s, _ in theirs]))
    assert np.median(shift) == 0 and np.mean(shift <= 2) >= 0.9, shift


def test_cepstra_frames_cover_the_clip():
    assert acoustic.n_sphinx_frames(0) == 1
    assert acoustic.n_sphinx_frames(410) == 1 and acoustic.n_sphinx_frames(411) == 2
    c = acoustic.cepstra(np.zeros(16000, np.float32))
    assert c.shape == (acoustic.n_sphinx_frames(16000), 13) and c.dtype == np.float32
    f = acoustic.stream_features(c)
    assert f.shape == (len(c), 39) and np.allclose(f, 0.0, atol=1e-3)   # constant: no deltas, mean removed


def test_frames_follow_the_spoken_visemes_on_a_real_voice(clip):
    n = int(np.ceil(clip.size / 16000 * 25))
    heard = acoustic.acoustic_frames(clip)
    assert heard.visemes.shape == (n, 15) and heard.closure.shape == (n,)
    assert np.allclose(heard.visemes.sum(axis=1), 1.0, atol=1e-5)
    assert heard.closure.min() >= 0.0 and heard.closure.max() <= 1.0
    truth = viseme_posteriors(align_transcript(clip, TEXT), n)
    agree = heard.visemes.argmax(axis=1) == truth.argmax(axis=1)
    speech = truth.argmax(axis=1) != 0
    # 15 classes (chance ~0.07); measured 0.61 overall, 0.55 on speech frames.
    assert agree.mean() >= 0.45 and agree[speech].mean() >= 0.40, (agree.mean(), agree[speech].mean())


def test_digital_silence_is_silence_and_never_closes_the_lips():
    heard = acoustic.acoustic_frames(np.zeros(32000, np.float32))
    assert heard.visemes[:, 0].mean() > 0.9
    assert heard.closure.max() == 0.0


def test_scoring_every_other_frame_keeps_the_visemes(clip, monkeypatch):
    half = acoustic.acoustic_frames(clip)
    monkeypatch.setattr(acoustic, "SCORE_STEP", 1)
    full = acoustic.acoustic_frames(clip)
    assert np.abs(half.visemes - full.visemes).sum(axis=1).mean() < 0.25
    assert np.mean(half.visemes.argmax(1) == full.visemes.argmax(1)) > 0.8


def test_chunked_scoring_equals_one_pass(clip, monkeypatch):
    feats = acoustic.stream_features(acoustic.cepstra(clip))
    whole = acoustic.phone_log_likelihoods(feats)
    monkeypatch.setattr(acoustic, "_CHUNK_FRAMES", 37)
    assert np.allclose(acoustic.phone_log_likelihoods(feats), whole, rtol=1e-5, atol=1e-3)


def test_speech_content_and_animate_with_the_acoustic_front_end(clip, sfm_dir):
    from evp_anim.eval.lipsync import score_lipsync
    from evp_anim.face.rig import FaceRig
    from evp_anim.models.animate import EmotionSpec, animate_speech_file, load_animation_model
    content = speech_content(clip, recogniser=acoustic.acoustic_content)
    assert content.source == "acoustic model frames" and content.phones == []
    n = int(np.ceil(clip.size / 16000 * 25))
    assert content.visemes(n).shape == (n, 15) and content.closure(n + 3)[n:].tolist() == [0.0] * 3
    track = animate_speech_file(CLIP, load_animation_model(None), EmotionSpec(emotion="neutral"),
                                FaceRig(sfm_dir), front_end="acoustic")
    assert track.n_frames == n and "acoustic" in track.info["front_end"]
    score = score_lipsync(track.landmarks_3d, align_transcript(clip, TEXT), 25.0)
    assert score.openness_corr > 0.5, score        # the mouth follows this real voice


def test_missing_pocketsphinx_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with pytest.raises(EvpError, match="pocketsphinx is not installed"):
        acoustic.model_folder()
    # training's acoustic frames say how to train without them, before reading any clip
    from evp_anim.train.features import load_acoustic_visemes
    with pytest.raises(EvpError, match="train with --no-acoustic"):
        load_acoustic_visemes(tmp_path, None)
    assert not (tmp_path / "cache").exists()


def test_a_damaged_model_file_is_one_clear_error(tmp_path):
    import shutil
    folder = tmp_path / "en-us"
    shutil.copytree(acoustic.model_folder(), folder)
    (folder / "sendump").write_bytes((folder / "sendump").read_bytes()[:5000])
    with pytest.raises(EvpError, match="sendump"):
        acoustic.AcousticModel.load(str(folder))
    (folder / "means").write_bytes(b"not a model")
    with pytest.raises(EvpError, match="means"):
        acoustic.AcousticModel.load(str(folder))


def test_command_line_animates_with_the_acoustic_front_end(tmp_path):
    out = tmp_path / "a.npz"
    r = subprocess.run([sys.executable, "-m", "evp_anim", "--quiet", "animate", str(CLIP), "-o", str(out),
                        "--front-end", "acoustic", "--still"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    from evp_anim.tracks import load_track
    track = load_track(out)
    assert track.n_frames == 88 and "acoustic" in track.info["front_end"]    # ceil(3.50 s × 25)


def test_phone_front_ends_blend_the_acoustic_frames(clip):
    """Phones from a transcript plus the acoustic frames: the models read the weighted sum of the
    two viseme posteriors, and the lips close where the phones have /p b m/."""
    from evp_anim.face.lip_contact import bilabial_intervals, closure_curve
    n = int(np.ceil(clip.size / 16000 * 25))
    phones = align_transcript(clip, TEXT)
    plain = speech_content(clip, TEXT)
    assert plain.source == "transcript" and plain.viseme_frames is None
    mixed = acoustic.with_acoustic_frames(plain, clip)
    heard = acoustic.acoustic_frames(clip)
    w = acoustic.PHONE_BLEND
    assert 0.0 < w < 1.0
    expected = (1 - w) * viseme_posteriors(phones, n) + w * heard.visemes
    assert np.allclose(mixed.visemes(n), expected, atol=1e-6)
    assert np.allclose(mixed.visemes(n).sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(mixed.closure(n), closure_curve(bilabial_intervals(phones), n, 25.0))
    assert mixed.closure(n).max() == 1.0        # "spades": the /p/ closes the lips


def test_animate_with_a_transcript_reads_phones_and_acoustic_frames(sfm_dir):
    from evp_anim.face.rig import FaceRig
    from evp_anim.models.animate import EmotionSpec, animate_speech_file, load_animation_model
    track = animate_speech_file(CLIP, load_animation_model(None), EmotionSpec(emotion="neutral"),
                                FaceRig(sfm_dir), front_end="words", text=TEXT)
    assert track.info["front_end"] == f"phones (transcript) + acoustic frames ({acoustic.PHONE_BLEND:g})"


def test_a_delayed_model_reads_its_mfcc_encoder_not_phones(clip, sfm_dir):
    """A model whose LSTM reads content 4 frames late (`train --content-delay 4`): phones carry
    no look-ahead, so animate gives it the MFCC content (speech-mean shift included) and uses the
    phones only to seal."""
    import dataclasses

    from evp_anim.face.rig import FaceRig
    from evp_anim.models.animate import EmotionSpec, animate_speech_file, load_animation_model
    model = load_animation_model(None, "torch")      # its .net is edited below
    model.net.cfg = dataclasses.replace(model.net.cfg, content_delay=4)
    assert model.reads_phones and model.net.cfg.content_delay == 4
    rig = FaceRig(sfm_dir)
    with pytest.warns(UserWarning, match="reads the content 4 frames late"):
        sealed = animate_speech_file(CLIP, model, EmotionSpec(emotion="neutral"), rig, front_end="words", text=TEXT)
    plain = animate_speech_file(CLIP, model, EmotionSpec(emotion="neutral"), rig, front_end="mfcc")
    assert "mfcc_speech_shift" in sealed.info and sealed.info["front_end"] == "phones (transcript)"
    # Away from the /p/ of "spades" (sealed) the mouth is the MFCC path's.
    from evp_anim.face.lip_contact import bilabial_intervals, closure_curve
    free = closure_curve(bilabial_intervals(align_transcript(clip, TEXT)), sealed.n_frames, 25.0) == 0
    assert np.allclose(sealed.landmarks_3d[free], plain.landmarks_3d[free], atol=1e-4)


def test_cepstra_in_blocks_equal_one_block(clip, monkeypatch):
    whole = acoustic.cepstra(clip)
    monkeypatch.setattr(acoustic, "_CEP_BLOCK", 7)          # blocks of 70 ms: every edge case
    assert np.allclose(acoustic.cepstra(clip), whole, atol=1e-3)


@pytest.mark.parametrize("block", [7, 160, 1000])
def test_streaming_frames_are_offlines_with_the_same_mean(clip, block):
    """`live`'s acoustic front end fed blocks of any size gives offline's frames (with the clip's
    cepstral mean), each frame as soon as sample 640·t + 1210 has arrived, never sooner."""
    off = acoustic.acoustic_frames(clip)
    s = acoustic.StreamingAcoustic(fixed_mean=acoustic.cepstra(clip).mean(axis=0))
    vis, clo = [], []
    for i in range(0, clip.size, block):
        s.feed(clip[i:i + block])
        v, c = s.frames()
        vis.append(v)
        clo.append(c)
        n = min(clip.size, i + block)
        assert s.next_frame == max(0, (n - 1210) // 640 + 1)
    s.finish()
    v, c = s.frames()
    vis, clo = np.concatenate(vis + [v]), np.concatenate(clo + [c])
    assert vis.shape == off.visemes.shape == (88, 15)
    np.testing.assert_allclose(vis, off.visemes, atol=1e-5)
    np.testing.assert_allclose(clo, off.closure, atol=1e-5)


def _streamed_visemes(clip: np.ndarray, prior=None) -> np.ndarray:
    """(T, 15): StreamingAcoustic's viseme posteriors of ``clip`` fed in 10 ms blocks."""
    s = acoustic.StreamingAcoustic(prior=prior)
    parts = []
    for i in range(0, clip.size, 160):
        s.feed(clip[i:i + 160])
        parts.append(s.frames()[0])
    s.finish()
    parts.append(s.frames()[0])
    return np.concatenate(parts)


def test_streaming_running_mean_follows_the_clip(clip):
    """Without the clip's mean (a stream has none) the running mean of what was heard stands in:
    most frames still hear the same viseme."""
    off = acoustic.acoustic_frames(clip)
    vis = _streamed_visemes(clip)
    agree = (vis.argmax(axis=1) == off.visemes.argmax(axis=1)).mean()
    assert 0.75 < agree < 1.0, agree


def test_streaming_prior_is_the_corpus_mean_cepstrum_and_hears_the_first_second_better(clip):
    """The running mean starts from CMN_PRIOR (the training corpus's mean cepstrum), not from the
    clip's first frame (its leading pause): the first second's visemes are closer to offline's
    (clip mean) with it. ``prior="first"`` keeps pocketsphinx's live start; another word is an error."""
    off = acoustic.acoustic_frames(clip)
    errors = {}
    for prior in (None, "first"):
        vis = _streamed_visemes(clip, prior)
        assert vis.shape == off.visemes.shape
        errors[prior] = float(np.abs(vis[:25] - off.visemes[:25]).sum(axis=1).mean())
    assert acoustic.CMN_PRIOR.shape == (13,) and 30 < acoustic.CMN_PRIOR[0] < 80   # c0: a speech level
    assert errors[None] < 0.75 * errors["first"], errors        # 005.wav: 0.18 against 0.29
    with pytest.raises(EvpError, match="prior"):
        acoustic.StreamingAcoustic(prior="last")


def test_cepstral_prior_script_prints_the_train_clips_mean_cepstrum(tiny_corpus):
    """scripts/cepstral_prior.py (how CMN_PRIOR was made) prints the mean cepstrum of every frame of
    the train split's clips, to two decimals."""
    from evp_anim.data.manifest import read_manifest
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "cepstral_prior.py"), str(tiny_corpus),
                          "--clips", "1000"], capture_output=True, text=True, check=True).stdout
    printed = np.array([float(v) for v in out.strip().splitlines()[-1].split(",")])
    rows = [r for r in read_manifest(tiny_corpus / "manifest.csv") if r.split == "train"]
    frames = np.concatenate([acoustic.cepstra(load_audio(tiny_corpus / r.audio)) for r in rows])
    assert printed.shape == (13,) and f"{len(rows)} train clips, {len(frames)} Sphinx frames" in out
    np.testing.assert_allclose(printed, frames.astype(np.float64).mean(axis=0), atol=0.006)
    assert 30 < printed[0] < 80                                           # c0 of speech and pauses
