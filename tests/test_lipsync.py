"""Real-speech lip sync: pocketsphinx phones (recogniser and transcript alignment), lip contact on
/p b m/ at every emotion, the lip-sync scores, and the CLI (`animate --text`, `eval-lipsync`).

The recordings are ../shared/realspeech-dev (real people; a development check, never trained on)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from evp_anim.audio.io import load_audio
from evp_anim.audio.phones import (NUM_PHONES, TranscriptMismatch, align_transcript, letter_to_sound,
                                   phone_posteriors, recognize_phones, recognize_words, utterance_cuts,
                                   viseme_posteriors)
from evp_anim.emotions import EMOTIONS
from evp_anim.errors import EvpError
from evp_anim.eval.lipsync import PHONE_OPENNESS, score_lipsync
from evp_anim.face.lip_contact import close_lips, closure_curve, compose_emotion, mouth_openness

DEV = REPO.parent / "shared" / "realspeech-dev"
SPADES = "eight of spades four of clubs seven of hearts"


@pytest.fixture(scope="module")
def spades_audio():
    return load_audio(DEV / "005.wav")


@pytest.fixture(scope="module")
def rig(sfm_dir):
    from evp_anim.face.rig import FaceRig
    return FaceRig(sfm_dir)


# ------------------------------------------------------------------ phones
def test_alignment_gives_the_transcript_phones_in_order(spades_audio):
    segs = align_transcript(spades_audio, SPADES)
    speech = [p for _, _, p in segs if p != "SIL"]
    # CMUdict: eight EY T, of AH V, spades S P EY D Z, ...
    assert speech[:9] == ["EY", "T", "AH", "V", "S", "P", "EY", "D", "Z"]
    assert speech.count("B") == 1 and speech.count("P") == 1
    starts = [s for s, _, _ in segs]
    assert starts == sorted(starts)
    assert 3.0 < segs[-1][1] <= len(spades_audio) / 16000 + 0.02


def test_wrong_or_empty_transcript_is_refused(spades_audio):
    with pytest.raises(TranscriptMismatch):
        align_transcript(spades_audio, "go forward ten meters")
    with pytest.raises(EvpError, match="empty"):
        align_transcript(spades_audio, " ... ")


def test_an_aligner_failure_is_a_mismatch_not_a_traceback(spades_audio, monkeypatch):
    """pocketsphinx raises a bare RuntimeError when its search finds no path (seen on some
    synthetic voices): the user gets the one-line mismatch, which animate falls back from."""
    import pocketsphinx

    class FailingDecoder(pocketsphinx.Decoder):
        def end_utt(self):
            raise RuntimeError("Failed to stop utterance processing")

    monkeypatch.setattr(pocketsphinx, "Decoder", FailingDecoder)
    with pytest.raises(TranscriptMismatch, match="aligner failed: Failed to stop"):
        align_transcript(spades_audio, SPADES)


def test_unknown_words_get_letter_to_sound_with_a_warning(spades_audio):
    assert letter_to_sound("clubz")[:2] == ["K", "L"]
    said = []
    segs = align_transcript(spades_audio, SPADES.replace("hearts", "heartz"), warn=said.append)
    assert said and "heartz" in said[0]
    assert any(p == "HH" for _, _, p in segs)


def test_recogniser_and_frame_features(spades_audio):
    segs = recognize_phones(spades_audio)
    assert len(segs) > 15 and {"S", "EY"} <= {p for _, _, p in segs}
    n = int(round(len(spades_audio) / 16000 * 25))
    post = phone_posteriors(segs, n)
    assert post.shape == (n, NUM_PHONES)
    np.testing.assert_allclose(post.sum(1), 1.0, atol=1e-5)
    vis = viseme_posteriors(segs, n)
    assert vis.shape == (n, 15)
    np.testing.assert_allclose(vis.sum(1), 1.0, atol=1e-5)


def test_word_recogniser_hears_the_words_and_aligns_their_phones(spades_audio):
    heard = recognize_words(spades_audio)
    assert heard.text == SPADES                      # the bundled general-English model, no grammar
    said = [p for _, _, p in heard.phones if p != "SIL"]
    assert said == [p for _, _, p in align_transcript(spades_audio, SPADES) if p != "SIL"]
    assert heard.utterances == [(0.0, len(spades_audio) / 16000, SPADES)]


def test_word_recogniser_cuts_long_speech_in_pauses_and_ignores_silence(spades_audio):
    pause = np.zeros(8000, np.float32)                              # 0.5 s
    clip = np.concatenate([spades_audio, pause, np.zeros(32000, np.float32), spades_audio, pause])
    n1 = spades_audio.size
    cuts = utterance_cuts(clip, max_s=5.0)
    assert cuts[0][0] == 0 and cuts[-1][1] == clip.size
    assert all(b == c for (_, b), (c, _) in zip(cuts, cuts[1:]))   # they tile the clip
    assert all(b - a <= 5.0 * 16000 for a, b in cuts)
    assert n1 < cuts[0][1] < n1 + 40000                             # cut in the first pause
    done = []
    heard = recognize_words(clip, progress=done.append, max_utterance_s=5.0)
    assert heard.text == f"{SPADES} {SPADES}" and done[-1] == 1.0 and len(done) == len(heard.utterances) >= 2
    second = n1 / 16000 + 2.5                                       # where the second take starts
    ps = [s for s, _, p in heard.phones if p == "P"]
    assert len(ps) == 2 and ps[0] < n1 / 16000 < second < ps[1] < clip.size / 16000
    # No words are made up in digital silence (the language model alone hears "dog" in it).
    assert recognize_words(np.zeros(32000, np.float32)).text == ""
    assert recognize_words(np.zeros(0, np.float32)).phones == []
    # A clip without a pause longer than the limit is cut at the limit.
    tone = (0.3 * np.sin(np.arange(12 * 16000) * 0.2)).astype(np.float32)
    assert [b for _, b in utterance_cuts(tone, max_s=5.0)] == [80000, 160000, 192000]


# ------------------------------------------------------------------ lip contact
def test_close_lips_seals_at_every_emotion(rig):
    w = np.stack([rig.emotion_weights(e, 1.0) for e in EMOTIONS]).astype(np.float32)
    w[:, rig.channel_index("jawOpen")] += 0.3
    before = mouth_openness(rig.landmarks_3d(None, w))
    assert (before > 0.08).all()           # every emotion with an open jaw holds the lips apart
    sealed = close_lips(rig, w, np.ones(len(w)))
    after = mouth_openness(rig.landmarks_3d(None, sealed))
    assert (after < 0.0).all() and (after > -0.02).all()
    assert sealed.min() >= 0.0 and sealed.max() <= 1.0
    np.testing.assert_array_equal(close_lips(rig, w, np.zeros(len(w))), w)


@pytest.mark.parametrize("emotion", ["happy", "surprised", "angry", "fear"])
def test_emotion_opens_the_mouth_only_where_the_phones_do(rig, emotion):
    """compose_emotion: the emotion's shapes stay (smile, brows), its extra lip gap follows the
    phones: on /t d s/ the mouth is within 0.02 (gap/width) of neutral speech, on open vowels it
    may open further, and the openness over a sentence still follows neutral speech's."""
    from evp_anim.face.channels import SPEECH_CHANNELS
    from evp_anim.synth.visemes import articulation_curves
    # "ta da sa ta" with open vowels between alveolars, 0.1 s each.
    syms = ["_", "t", "A:", "d", "A:", "s", "A:", "t", "A:", "_"]
    phones = [(0.1 * i, 0.1 * (i + 1), s) for i, s in enumerate(syms)]
    n = 25
    speech = np.zeros((n, rig.num_channels), np.float32)
    speech[:, [rig.channel_index(c) for c in SPEECH_CHANNELS]] = articulation_curves(phones, n, 25.0)
    emo = np.repeat(rig.emotion_weights(emotion, 1.0)[None], n, axis=0)
    both = compose_emotion(rig, speech, emo)
    assert both.shape == speech.shape and both.min() >= 0.0 and both.max() <= 1.0
    neutral_gap = mouth_openness(rig.landmarks_3d(None, speech))
    gap = mouth_openness(rig.landmarks_3d(None, both))
    added = mouth_openness(rig.landmarks_3d(None, np.clip(speech + emo, 0, 1)))
    consonant = [int((0.1 * i + 0.05) * 25) for i, s in enumerate(syms) if s in ("t", "d", "s")]
    vowel = [int((0.1 * i + 0.05) * 25) for i, s in enumerate(syms) if s == "A:"]
    assert (gap[consonant] <= neutral_gap[consonant] + 0.03).all()
    assert np.corrcoef(gap, neutral_gap)[0, 1] > 0.95
    # Adding the emotion's weights instead holds the mouth open through the consonants (the
    # failure this prevents) for the emotions that part the lips; composed, at most a third of
    # that extra gap is left (coarticulation with the open vowels around them).
    if emotion in ("happy", "surprised"):
        extra = added[consonant] - neutral_gap[consonant]
        assert (extra > 0.05).all()
        assert (gap[consonant] - neutral_gap[consonant] <= extra / 3).all()
        assert gap[vowel].mean() >= neutral_gap[vowel].mean() - 0.01
    # The emotion's own shapes are kept outside the mouth's opening channels.
    for c in ("mouthSmileLeft", "browInnerUp", "browDownLeft", "cheekSquintLeft", "noseSneerLeft"):
        i = rig.channel_index(c)
        np.testing.assert_allclose(both[:, i], np.clip(speech[:, i] + emo[:, i], 0, 1), atol=1e-6)


def test_closure_curve_marks_short_segments():
    c = closure_curve([(0.41, 0.43), (1.0, 1.2)], 40, 25.0)
    assert c[10] == 1.0 and c[9] == 0.0 and c[11] == 0.0     # a 20 ms /p/ still gets its frame
    assert (c[25:30] == 1.0).all() and c[24] == 0.0 and c[30] == 0.0 and c[20] == 0.0
    assert set(np.unique(c)) == {0.0, 1.0}
    # The corpus's ground truth also seals the frame either side half-way.
    a = closure_curve([(0.41, 0.43), (1.0, 1.2)], 40, 25.0, approach=0.5)
    assert a[9] == 0.5 and a[11] == 0.5 and a[24] == 0.5 and a[30] == 0.5 and a[20] == 0.0
    assert np.array_equal(a == 1.0, c == 1.0)


# ------------------------------------------------------------------ scores
def _mouth(openness: np.ndarray) -> np.ndarray:
    """(T, 68, 2) landmarks whose inner-lip gap / width is ``openness`` (width 50)."""
    lm = np.zeros((openness.size, 68, 2), np.float32)
    lm[:, 48] = (-25, 0)
    lm[:, 54] = (25, 0)
    lm[:, 51] = (0, -5)
    lm[:, 57, 1] = 5 + 50 * openness
    for a, b in ((61, 67), (62, 66), (63, 65)):
        lm[:, a] = (0, 0)
        lm[:, b, 1] = 50 * openness
    return lm


def _oracle(segs, n, shift_frames=0):
    from evp_anim.audio.phones import phone_at_frames
    target = np.array([PHONE_OPENNESS[p] for p in phone_at_frames(segs, n)]) * 0.4
    return np.roll(target, shift_frames) if shift_frames else target


def test_scores_oracle_constant_and_late(spades_audio):
    segs = align_transcript(spades_audio, SPADES)
    n = int(round(len(spades_audio) / 16000 * 25))
    oracle = score_lipsync(_mouth(_oracle(segs, n)), segs, 25.0)
    assert oracle.openness_corr > 0.99
    assert oracle.closure == 1.0 and oracle.n_bilabials == 2
    assert abs(oracle.lag_ms) < 20
    assert oracle.open_vowel_contrast > 0.2
    # The oracle shuts on /p b m/ and nearly shuts on /f v/ ("of", "four"): shut frames, but none
    # outside those phones.
    assert oracle.shut_frames > 0.05 and oracle.shut_elsewhere == 0.0
    constant = score_lipsync(_mouth(np.full(n, 0.2)), segs, 25.0)
    assert constant.openness_corr == 0.0 and constant.closure == 0.0 and constant.shut_frames == 0.0
    assert constant.shut_elsewhere == 0.0
    shut = score_lipsync(_mouth(np.zeros(n)), segs, 25.0)
    assert shut.shut_frames == 1.0 and shut.shut_elsewhere == 1.0 and shut.closure == 1.0
    late = score_lipsync(_mouth(_oracle(segs, n, shift_frames=8)), segs, 25.0)   # 0.32 s late
    assert late.openness_corr < 0.5
    assert 250 <= late.lag_ms <= 370


# ------------------------------------------------------------------ CLI
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "evp_anim", *args], capture_output=True, text=True, cwd=REPO)


def test_animate_with_transcript_then_eval_lipsync(tmp_path, sfm_dir):
    track = tmp_path / "t.npz"
    r = _cli("--quiet", "animate", str(DEV / "005.wav"), "-o", str(track), "--model", "emote",
             "-e", "happy", "--text", SPADES, "--sfm-dir", str(sfm_dir))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "s.json"
    r = _cli("--quiet", "eval-lipsync", str(track), "--text", SPADES, "--json", str(out),
             "--plot", str(tmp_path / "p.png"))
    assert r.returncode == 0, r.stderr
    scores = json.loads(out.read_text())
    assert scores["n_bilabials"] == 2 and scores["closure"] == 1.0     # happy, and still sealed
    assert scores["openness_corr"] > 0.2
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_bad_transcript_inputs(tmp_path, sfm_dir):
    track = tmp_path / "t.npz"
    r = _cli("animate", str(DEV / "005.wav"), "-o", str(track), "--model", "emote",
             "--text", "go forward ten meters", "--sfm-dir", str(sfm_dir))
    assert r.returncode == 0 and "does not match the audio" in r.stderr + r.stdout
    r = _cli("animate", str(DEV / "005.wav"), "-o", str(tmp_path / "u.npz"), "--text", "  ")
    assert r.returncode == 2 and r.stderr.strip() == "error: the transcript is empty"
    assert not (tmp_path / "u.npz").exists()
    r = _cli("animate", str(DEV / "005.wav"), "-o", str(tmp_path / "u.npz"), "--text", "a",
             "--transcript", str(tmp_path / "none.txt"))
    assert r.returncode == 2 and "at most one of --text and --transcript" in r.stderr
    r = _cli("eval-lipsync", str(track))
    assert r.returncode == 2 and "--text or --transcript" in r.stderr


def test_mfcc_front_end_hears_a_brighter_microphone_like_the_original(tmp_path, rig):
    """A microphone's colour is a constant offset of every MFCC row; animate moves each clip's
    speech mean to the training corpus's (``meta["speech_mfcc_mean"]``), so the same words through
    a brighter microphone (pre-emphasis: +6 dB/octave) give nearly the same mouth."""
    import soundfile as sf
    from scipy.signal import lfilter

    from evp_anim.models.animate import EmotionSpec, animate_speech_file, load_animation_model
    model = load_animation_model(None)
    assert len(model.meta["speech_mfcc_mean"]) == 12
    clean = load_audio(DEV / "005.wav")
    bright = (0.5 * lfilter([1.0, -0.95], [1.0], clean)).astype(np.float32)
    sf.write(tmp_path / "clean.wav", clean, 16000)
    sf.write(tmp_path / "bright.wav", bright, 16000)

    def mouths():
        tracks = [animate_speech_file(tmp_path / f"{n}.wav", model, EmotionSpec("neutral", 1.0), rig)
                  for n in ("clean", "bright")]
        return tracks, [mouth_openness(t.landmarks_3d) for t in tracks]

    (t_clean, t_bright), (a, b) = mouths()
    shift = np.array(t_bright.info["mfcc_speech_shift"]) - np.array(t_clean.info["mfcc_speech_shift"])
    assert shift[0] > 10.0      # brighter: a lower spectral slope c1, which the shift raises further
    moved = np.abs(a - b).mean()
    model.meta.pop("speech_mfcc_mean")        # a model file without the mean: no shift
    (t_clean, _), (a0, b0) = mouths()
    assert "mfcc_speech_shift" not in t_clean.info
    assert moved < 0.5 * np.abs(a0 - b0).mean()
