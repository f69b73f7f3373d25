"""A living face: head motion, blinks and gaze on top of speech animation (25 fps tracks).

The speech models animate the mouth and the emotion; a face made only of that is dead for 3D use:
the head never moves, the eyes never blink (the models average the corpus's randomly timed blinks
into a constant 0.1–0.2) and never look anywhere. :class:`Life` adds the three, driven by what the
track already says:

* **speech rhythm**, read from the animated mouth (no audio needed, so it works on any track, in
  chunks and live): the inner-lip opening (:func:`~evp_anim.face.lip_contact.mouth_openness`)
  rises on every syllable; its rises are the beats, and a slow average of its movement says
  whether the face is speaking or pausing;
* **the emotion** (per-frame weights × intensity): arousal scales the motion (angry, surprised,
  fearful heads move more, sad ones less and lower), each emotion sets a posture offset and its
  blink rate (:data:`~evp_anim.synth.dynamics.BLINK_RATE_PER_MIN`, kept within 13–19 a minute).

Head (radians, the track's ``pose_rotation`` [pitch, yaw, roll]): a nod on each beat (a damped
second-order response, down then back), plus mean-reverting drift per axis (Ornstein–Uhlenbeck,
time constant ~1.5 s) whose spread is larger while speaking than in pauses. At ``amount`` 1 a
minute of neutral speech moves about 2–4° (std) in pitch and yaw, 1–2° in roll.

Blinks (eyelid closure 0–1 on ``eyeBlinkLeft/Right``): a random hazard at the emotion's rate,
×1.8 in pauses and ×0.6 while speaking (people blink at phrase ends, rarely mid-word), at least
0.8 s apart; each closes in 70–110 ms to 0.92–1.0, holds 0–40 ms, reopens in 120–200 ms.

Gaze (the track's ``gaze`` [pitch, yaw] of both eyes in the head, radians): fixations of 0.4–3 s,
each ended by a ~60 ms saccade: from a look aside mostly back to the camera, from the camera half
the time a small correction, else a look a few degrees away;
the eyes counter-rotate 70% of the head's motion so the fixation holds while the head moves.

Everything is causal and carries its state across :meth:`Life.apply` calls, so a clip processed
in chunks equals the clip processed at once (and a live stream can use it), and a seed makes it
reproducible.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .emotions import EMOTIONS
from .errors import EvpError

FPS_MIN = 1.0
# Arousal gain on the head's motion, and a posture offset [pitch, yaw, roll] in degrees
# (positive pitch = chin down: +x rotation brings the forehead towards the camera), per emotion.
_AROUSAL = {"neutral": 1.0, "angry": 1.4, "contempt": 0.9, "disgusted": 1.0, "fear": 1.25,
            "happy": 1.15, "sad": 0.7, "surprised": 1.3}
_POSTURE_DEG = {"neutral": (0.0, 0.0, 0.0), "angry": (2.0, 0.0, 0.0), "contempt": (-1.5, 0.0, 3.0),
                "disgusted": (-1.0, 2.0, 0.0), "fear": (-1.5, 0.0, 0.0), "happy": (-1.0, 0.0, 2.0),
                "sad": (4.0, 0.0, 0.0), "surprised": (-3.0, 0.0, 0.0)}


@dataclasses.dataclass(frozen=True)
class LifeSettings:
    """What :class:`Life` adds. ``head_motion``: scale of the head's motion (0 = still, 1 =
    natural, up to 3); ``blinks`` / ``gaze``: on or off; ``seed``: the random stream."""

    head_motion: float = 1.0
    blinks: bool = True
    gaze: bool = True
    seed: int = 0

    def __post_init__(self):
        if not (0.0 <= float(self.head_motion) <= 3.0):
            raise EvpError(f"head motion must be between 0 and 3, got {self.head_motion}")

    @property
    def off(self) -> bool:
        return self.head_motion == 0 and not self.blinks and not self.gaze


OFF = LifeSettings(head_motion=0.0, blinks=False, gaze=False)


class Life:
    """Causal generator of head rotation, blinks and gaze for consecutive chunks of one clip.

    ``Life(fps, settings).step(openness, emotion, intensity)`` takes a chunk's (n,) mouth
    openness (gap / width), (n, 8) emotion weights and (n,) intensity, and returns
    ``(rotation (n, 3) rad [pitch, yaw, roll], blink (n,) in [0, 1], gaze (n, 2) rad [pitch, yaw])``.
    """

    def __init__(self, fps: float, settings: LifeSettings = LifeSettings()):
        if not fps >= FPS_MIN:
            raise EvpError(f"fps must be at least {FPS_MIN}, got {fps}")
        self.fps = float(fps)
        self.settings = settings
        # One random stream per part, so turning one off does not change the others.
        seed = int(settings.seed) & 0xFFFFFFFF
        self.rng_head, self.rng_blink, self.rng_gaze = (np.random.default_rng([seed, 0x11FE, k]) for k in range(3))
        dt = 1.0 / self.fps
        self.dt = dt
        # speech rhythm
        self.prev_open = 0.0
        self.move = 0.0                 # slow average of |Δ openness| per second
        self.rising = False
        self.rise_from = 0.0
        # head: nod oscillator (pitch) and OU drifts, in degrees
        self.nod = np.zeros(2)          # position, velocity
        self.push = 0.0                 # the beat's force, smoothed over ~80 ms
        self.drift_raw = self.rng_head.normal(0.0, 0.5, 3)
        self.drift = np.zeros((2, 3))   # the drift through two 0.25 s low-pass stages (smooth)
        self.posture = np.zeros(3)
        # blinks
        self.blink_t = None             # time since the current blink's onset, s
        self.blink_shape = None
        self.since_blink = 10.0
        # gaze (degrees)
        self.fix = np.zeros(2)
        self.fix_from = np.zeros(2)
        self.saccade_t = 1.0            # progress of the current saccade, 1 = done
        self.next_saccade = self.rng_gaze.uniform(0.3, 1.5)

    # ------------------------------------------------------------------ parts
    def _mix(self, emotion: np.ndarray, intensity: float) -> tuple[float, np.ndarray, float]:
        """(arousal gain, posture offset (3,) degrees, blink rate per minute) for one frame."""
        from .synth.dynamics import BLINK_RATE_PER_MIN
        w = np.asarray(emotion, np.float64)
        w = w / max(w.sum(), 1e-9)
        gain = sum(w[i] * (1.0 + (_AROUSAL[e] - 1.0) * intensity) for i, e in enumerate(EMOTIONS))
        post = sum(w[i] * np.asarray(_POSTURE_DEG[e]) * intensity for i, e in enumerate(EMOTIONS))
        rate = sum(w[i] * (BLINK_RATE_PER_MIN["neutral"]
                           + (BLINK_RATE_PER_MIN[e] - BLINK_RATE_PER_MIN["neutral"]) * intensity)
                   for i, e in enumerate(EMOTIONS))
        # The corpus's per-emotion rates (10–26 a minute) kept within the 13–19 that land a
        # minute of speech at 10–20 blinks once pauses and speech reweight them.
        return float(gain), np.asarray(post, np.float64), float(np.clip(rate, 13.0, 19.0))

    def _blink(self, speaking: float, rate: float) -> float:
        dt = self.dt
        self.since_blink += dt
        if self.blink_t is None and self.since_blink > 0.8:
            hazard = rate / 60.0 * dt * (0.9 * speaking + 2.2 * (1.0 - speaking))
            if self.rng_blink.random() < hazard:
                self.blink_t = 0.0
                self.since_blink = 0.0
                self.blink_shape = (self.rng_blink.uniform(0.07, 0.11), self.rng_blink.uniform(0.0, 0.04),
                                    self.rng_blink.uniform(0.12, 0.2), self.rng_blink.uniform(0.92, 1.0))
        if self.blink_t is None:
            return 0.0
        close, hold, reopen, depth = self.blink_shape
        # Sampled at the frame's middle, so a 25 fps frame inside the closed phase reads ≥ 0.9.
        x = self.blink_t + 0.5 * dt
        self.blink_t += dt
        if x < close:
            v = _smoothstep(x / close)
        elif x < close + hold + dt:        # held for at least one frame: the lid visibly shuts
            v = 1.0
        else:
            v = 1.0 - _smoothstep((x - close - hold - dt) / reopen)
            if x > close + hold + dt + reopen:
                self.blink_t = None
        return depth * v

    def _gaze(self, speaking: float) -> np.ndarray:
        dt = self.dt
        self.next_saccade -= dt
        if self.next_saccade <= 0:
            self.fix_from = self._gaze_now()
            aside = bool(np.abs(self.fix).sum() > 0)
            if aside and self.rng_gaze.random() < 0.75:
                target = np.zeros(2)                                  # back to the camera
            elif not aside and self.rng_gaze.random() < 0.5:
                target = self.rng_gaze.normal(0.0, 0.4, 2)                 # a small correction
            else:
                target = self.rng_gaze.normal(0.0, [2.5, 5.0])             # a look aside
            self.fix = np.clip(target, [-8.0, -12.0], [8.0, 12.0])
            self.saccade_t = 0.0
            mean = 1.4 if speaking > 0.5 else 0.9
            self.next_saccade = float(np.clip(self.rng_gaze.gamma(3.0, mean / 3.0), 0.4, 3.0))
        if self.saccade_t < 1.0:
            self.saccade_t = min(1.0, self.saccade_t + dt / 0.06)     # ~60 ms saccade
        return self._gaze_now()

    def _gaze_now(self) -> np.ndarray:
        s = _smoothstep(self.saccade_t)
        return self.fix_from + (self.fix - self.fix_from) * s

    # ------------------------------------------------------------------ one chunk
    def step(self, openness: np.ndarray, emotion: np.ndarray, intensity: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        op = np.asarray(openness, np.float64).reshape(-1)
        n = op.size
        emotion = np.asarray(emotion, np.float64).reshape(n, -1)
        intensity = np.asarray(intensity, np.float64).reshape(n)
        rot = np.zeros((n, 3), np.float32)
        blink = np.zeros(n, np.float32)
        gaze = np.zeros((n, 2), np.float32)
        s = self.settings
        dt = self.dt
        a_move = 1.0 - np.exp(-dt / 0.15)                # 0.15 s average of the mouth's movement
        a_post = 1.0 - np.exp(-dt / 0.8)                 # posture eases in over ~0.8 s
        a_push = 1.0 - np.exp(-dt / 0.08)
        a_smooth = 1.0 - np.exp(-dt / 0.25)
        theta = 1.0 / 1.5                                # OU mean reversion, 1/s
        w0, zeta = 2 * np.pi * 1.6, 0.55                 # nod: 1.6 Hz, under-damped
        for i in range(n):
            gain, post, rate = self._mix(emotion[i], float(intensity[i]))
            d = op[i] - self.prev_open
            self.move += a_move * (abs(d) * self.fps - self.move)
            speaking = float(np.clip((self.move - 0.15) / 0.35, 0.0, 1.0))
            # A beat: the end of a rise of the mouth by more than 0.04 (a syllable's opening).
            kick = 0.0
            if d > 0 and not self.rising:
                self.rising, self.rise_from = True, self.prev_open
            elif d <= 0 and self.rising:
                self.rising = False
                rise = self.prev_open - self.rise_from
                if rise > 0.04:
                    kick = min(rise, 0.3) / 0.3 * self.rng_head.uniform(0.6, 1.0)
            self.prev_open = op[i]
            if s.head_motion > 0:
                # nod: x'' = -w0² x - 2ζw0 x' + impulse (degrees)
                self.push += a_push * (kick * 700.0 - self.push)
                x, v = self.nod
                v += dt * (-w0 * w0 * x - 2 * zeta * w0 * v + self.push)
                x += dt * v
                self.nod[:] = (x, v)
                sigma = np.array([2.6, 3.6, 1.4]) * (0.45 + 0.55 * speaking)   # degrees, stationary
                self.drift_raw += (-theta * self.drift_raw * dt
                                   + sigma * np.sqrt(2 * theta * dt) * self.rng_head.standard_normal(3))
                self.drift[0] += a_smooth * (self.drift_raw - self.drift[0])
                self.drift[1] += a_smooth * (self.drift[0] - self.drift[1])
                self.posture += a_post * (post - self.posture)
                deg = (self.drift[1] + np.array([x, 0.0, 0.0])) * gain + self.posture
                rot[i] = np.deg2rad(deg * s.head_motion)
            if s.blinks:
                blink[i] = self._blink(speaking, rate)
            if s.gaze:
                g = self._gaze(speaking)
                # The eyes hold the fixation while the head moves (70% counter-rotation).
                g = g - 0.7 * np.rad2deg(rot[i, :2])
                gaze[i] = np.deg2rad(np.clip(g, [-25.0, -30.0], [25.0, 30.0]))
        return rot, blink, gaze


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def apply_life(track, life: Life, rig=None, identity: np.ndarray | None = None):
    """Give ``track`` (one clip or the next chunk of it) head motion, blinks and gaze from ``life``.

    Sets ``pose_rotation``; with blinks, ``eyeBlinkLeft/Right`` become the emotion's own eyelid
    level (the rig's table at the track's intensity) plus the blink, and the 3D landmarks move by
    the rig's displacement for that change (``rig`` needed); sets ``gaze``; re-projects
    ``landmarks_2d`` with the new rotation; records the settings in ``info["life"]``. Modifies and
    returns ``track``."""
    from .face.lip_contact import mouth_openness
    from .face.projection import project
    if life.settings.off:
        return track
    lm3 = track.landmarks_3d
    if lm3 is None:
        raise EvpError("a living face needs the track's 3D landmarks")
    rot, blink, gaze = life.step(mouth_openness(lm3), track.emotion, track.intensity)
    track.info["life"] = dataclasses.asdict(life.settings)
    if life.settings.head_motion > 0:
        track.pose_rotation = rot
    if life.settings.blinks and rig is not None and "eyeBlinkLeft" in track.expression_names:
        before = np.asarray(track.expression, np.float32)
        after = before.copy()
        cols = [track.expression_names.index(c) for c in ("eyeBlinkLeft", "eyeBlinkRight")]
        level = _emotion_blink_level(rig, track.emotion, track.intensity)
        for c in cols:
            after[:, c] = np.clip(level + blink, 0.0, 1.0)
        shift = rig.landmarks_3d(identity, after) - rig.landmarks_3d(identity, before)
        track.landmarks_3d = (lm3 + shift).astype(np.float32)
        track.expression = after
    if life.settings.gaze:
        track.gaze = gaze
    track.landmarks_2d = project(track.landmarks_3d, track.pose_rotation, track.pose_translation,
                                 track.pose_scale).astype(np.float32)
    return track.validate()


def _emotion_blink_level(rig, emotion: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """(T,) the eyelid level the emotion itself holds (e.g. sad 0.15 at full intensity)."""
    col = rig.channel_index("eyeBlinkLeft")
    table = np.array([rig.emotion_weights(e, 1.0)[col] for e in EMOTIONS], np.float32)
    w = np.asarray(emotion, np.float32)
    return (w @ table) / np.maximum(w.sum(1), 1e-9) * np.asarray(intensity, np.float32)
