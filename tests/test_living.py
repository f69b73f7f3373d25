"""A living face (evp_anim.living): head motion, blinks and gaze from the speech rhythm and emotion.

The input is a minute of speech-like mouth motion made by the corpus's own articulation rules on
the SFM rig (random consonant-vowel syllables in phrases of 2–4 s with pauses between), so the
figures hold for what the models produce, not for a sine wave."""

import numpy as np
import pytest

from evp_anim.emotions import EMOTIONS
from evp_anim.errors import EvpError
from evp_anim.face.lip_contact import mouth_openness
from evp_anim.living import Life, LifeSettings, apply_life
from evp_anim.tracks import Track

FPS = 25.0


@pytest.fixture(scope="module")
def rig(sfm_dir):
    from evp_anim.face.rig import FaceRig
    return FaceRig(sfm_dir)


@pytest.fixture(scope="module")
def minute(rig):
    """(weights (T, 42), speaking mask (T,)) for 60 s of phrases and pauses."""
    from evp_anim.face.channels import SPEECH_CHANNELS
    from evp_anim.synth.visemes import articulation_curves
    rng = np.random.default_rng(7)
    phones, t = [], 0.0
    while t < 60.0:
        pause = rng.uniform(0.4, 1.2)
        phones.append((t, t + pause, "_"))
        t += pause
        end = t + rng.uniform(2.0, 4.0)
        while t < end:
            for sym, dur in ((rng.choice(["t", "d", "s", "k", "n", "m", "l"]), 0.07),
                             (rng.choice(["A:", "E", "i:", "O:", "a", "V"]), 0.11)):
                phones.append((t, t + dur, str(sym)))
                t += dur
    n = int(60.0 * FPS)
    w = np.zeros((n, rig.num_channels), np.float32)
    w[:, [rig.channel_index(c) for c in SPEECH_CHANNELS]] = articulation_curves(phones, n, FPS)
    speaking = np.zeros(n, bool)
    for s, e, p in phones:
        if p != "_":
            speaking[int(s * FPS):int(e * FPS) + 1] = True
    return w, speaking[:n]


def _track(rig, weights, emotion="neutral", intensity=1.0):
    lm3 = rig.landmarks_3d(None, weights)
    n = len(weights)
    e = np.zeros((n, len(EMOTIONS)), np.float32)
    e[:, EMOTIONS.index(emotion)] = 1.0
    return Track.new(lm3[..., :2] * 2 + 128, fps=FPS, landmarks_3d=lm3, expression=weights,
                     expression_names=list(rig.channels), emotion=e,
                     intensity=np.full(n, intensity if emotion != "neutral" else 0.0, np.float32),
                     pose_scale=np.full(n, 2.0, np.float32),
                     pose_translation=np.tile(np.float32([128, 128]), (n, 1)))


def _run(rig, weights, emotion="neutral", settings=LifeSettings(seed=3)):
    tr = _track(rig, weights, emotion)
    return Life(FPS, settings).step(mouth_openness(tr.landmarks_3d), tr.emotion, tr.intensity)


def _blinks(b: np.ndarray) -> np.ndarray:
    return np.flatnonzero((b[1:] > 0.5) & (b[:-1] <= 0.5)) + 1


def test_head_moves_a_few_degrees_and_not_when_off(rig, minute):
    w, _ = minute
    rot, _, _ = _run(rig, w)
    std = np.rad2deg(rot).std(0)
    assert 1.5 < std[0] < 6.0 and 2.0 < std[1] < 6.0 and 0.5 < std[2] < 4.0, std
    assert 2.0 < np.sqrt((std ** 2).sum()) < 6.0
    # smooth: no frame-to-frame jump above 1.5°
    assert np.abs(np.diff(np.rad2deg(rot), axis=0)).max() < 1.5
    still, _, _ = _run(rig, w, settings=LifeSettings(head_motion=0.0, seed=3))
    assert not still.any()


def test_head_motion_follows_speech_and_emotion(rig, minute):
    w, speaking = minute
    rot, _, _ = _run(rig, w)
    # The nods ride on the syllables: pitch moves faster while speaking than in pauses.
    vel = np.abs(np.diff(np.rad2deg(rot[:, 0])))
    assert vel[speaking[1:]].mean() > 1.2 * vel[~speaking[1:]].mean()
    calm, _, _ = _run(rig, w, "sad")
    loud, _, _ = _run(rig, w, "angry")
    assert np.rad2deg(loud).std(0)[:2].sum() > 1.5 * np.rad2deg(calm).std(0)[:2].sum()
    assert np.rad2deg(calm[:, 0]).mean() > 2.0                    # a sad head hangs (chin down)


def test_blinks_at_human_rates_fully_closed_more_in_pauses(rig, minute):
    w, _ = minute
    runs = [_run(rig, w, settings=LifeSettings(seed=s))[1] for s in range(8)]
    many = [_blinks(b) for b in runs]
    rates = [len(o) for o in many]                                 # per minute
    assert 10 <= np.mean(rates) <= 20 and min(rates) >= 5, rates
    for blink, onsets in zip(runs, many):
        for o in onsets:
            assert blink[o:o + 8].max() >= 0.9                     # each blink closes the eye
        assert np.diff(onsets).min() >= 0.8 * FPS - 1
        assert blink.min() == 0.0 and (blink < 0.05).mean() > 0.8  # open most of the time
    # People blink more while listening or pausing than while talking: a still mouth for a
    # minute gets more blinks than the minute of phrases.
    still = np.zeros_like(w)
    quiet = [len(_blinks(_run(rig, still, settings=LifeSettings(seed=s))[1])) for s in range(8)]
    assert np.mean(quiet) > 1.5 * np.mean(rates), (quiet, rates)


def test_gaze_fixates_and_jumps(rig, minute):
    w, _ = minute
    _, _, gaze = _run(rig, w, settings=LifeSettings(head_motion=0.0, seed=5))
    deg = np.rad2deg(gaze)
    step = np.abs(np.diff(deg, axis=0)).max(1)
    saccades = np.flatnonzero(step > 0.5)
    jumps = np.split(saccades, np.flatnonzero(np.diff(saccades) > 2) + 1)
    assert 15 <= len(jumps) <= 120                     # fixations of 0.4–3 s over a minute
    assert (step < 0.05).mean() > 0.8                  # still between saccades
    assert 0.5 < deg[:, 1].std() < 8 and np.abs(deg).max() < 15
    # With head motion the eyes counter-rotate: gaze + 0.7 head is the fixation (piecewise still).
    rot, _, gaze2 = _run(rig, w, settings=LifeSettings(seed=5))
    fixation = np.rad2deg(gaze2 + 0.7 * rot[:, :2])
    np.testing.assert_allclose(fixation, deg, atol=1e-3)


def test_seeded_and_chunked_equals_whole(rig, minute):
    w, _ = minute
    tr = _track(rig, w[:400])
    op = mouth_openness(tr.landmarks_3d)
    whole = Life(FPS, LifeSettings(seed=11)).step(op, tr.emotion, tr.intensity)
    life = Life(FPS, LifeSettings(seed=11))
    parts = [life.step(op[a:a + 97], tr.emotion[a:a + 97], tr.intensity[a:a + 97]) for a in range(0, 400, 97)]
    for k in range(3):
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
    other = Life(FPS, LifeSettings(seed=12)).step(op, tr.emotion, tr.intensity)
    assert not np.array_equal(other[0], whole[0])


def test_apply_life_writes_pose_blinks_gaze_and_landmarks(rig, minute):
    w, _ = minute
    tr = _track(rig, w[:500])
    out = apply_life(tr.copy(), Life(FPS, LifeSettings(seed=2)), rig)
    assert np.abs(out.pose_rotation).max() > np.deg2rad(1.0)
    assert out.gaze is not None and out.gaze.shape == (500, 2)
    b = out.channel("eyeBlinkLeft")
    assert b.max() >= 0.9
    # the eyelid landmarks close on the blink (upper lid 37/38 towards lower lid 41/40)
    lid = np.linalg.norm(out.landmarks_3d[:, 37] - out.landmarks_3d[:, 41], axis=1)
    shut, open_ = int(np.argmax(b)), int(np.argmin(b))
    assert lid[shut] < 0.5 * lid[open_]
    # the 2D landmarks are the 3D ones under the new head rotation
    from evp_anim.face.projection import project
    np.testing.assert_allclose(out.landmarks_2d, project(out.landmarks_3d, out.pose_rotation,
                                                         out.pose_translation, out.pose_scale), atol=1e-3)
    # the mouth is untouched
    np.testing.assert_allclose(out.landmarks_3d[:, 48:], tr.landmarks_3d[:, 48:], atol=1e-4)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(EvpError, match="head motion"):
        LifeSettings(head_motion=5.0)
    with pytest.raises(EvpError, match="fps"):
        Life(0.0)


def test_animate_cli_lives_by_default_and_is_still_on_request(tmp_path):
    """`evp-anim animate` on a real recording: head motion and gaze by default, none with --still;
    --head-motion out of range is one line."""
    import subprocess
    import sys
    from conftest import REPO
    from evp_anim.tracks import load_track
    wav = REPO.parent / "shared" / "realspeech-dev" / "005.wav"
    exe = [sys.executable, "-m", "evp_anim"]
    for name, extra in (("live", []), ("still", ["--still"])):
        p = subprocess.run(exe + ["animate", str(wav), "-o", str(tmp_path / f"{name}.npz"), *extra],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
    live, still = load_track(tmp_path / "live.npz"), load_track(tmp_path / "still.npz")
    assert np.rad2deg(live.pose_rotation).std(0)[:2].max() > 0.5 and live.gaze is not None
    assert live.info["life"]["seed"] == 0
    assert not still.pose_rotation.any() and still.gaze is None
    # the mouth is the model's either way
    np.testing.assert_allclose(live.landmarks_3d[:, 48:], still.landmarks_3d[:, 48:], atol=1e-4)
    p = subprocess.run(exe + ["animate", str(wav), "-o", str(tmp_path / "x.npz"), "--head-motion", "9"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == ["error: head motion must be between 0 and 3, got 9.0"]
