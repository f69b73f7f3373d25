"""Incremental EVP inference: 16 kHz samples in, 25 fps Track frames out, as the audio arrives.

Offline ``animate`` (:func:`evp_anim.models.animate._evp_chunks`) reads a whole chunk's MFCC
windows, runs the content encoder Ec over it and the audio-to-landmark LSTM with its state
carried. :class:`LiveEngine` does the same computation one step at a time, each piece once:

* **MFCC rows** (100 Hz, 12 coefficients) as soon as the 25 ms analysis window of a row has all
  its samples (row m is centred at sample 160·m and reads [160·m − 200, 160·m + 200));
* **frame encodings** (Ec's per-frame CNN, 128 values) as soon as a frame's 28-row window
  (rows 4t − 12 … 4t + 15) is complete;
* **content codes** as soon as the ±2 neighbouring frame encodings exist (Ec's temporal
  convolution), then one **LSTM step** per frame with the state carried, the landmark decoder,
  the silence gate, the rig solve (:func:`~evp_anim.models.animate.lift_to_rig`) and the living
  face (:class:`~evp_anim.living.Life`, its state carried).

Look-ahead (measured by construction, see :data:`LOOKAHEAD_SAMPLES`): frame t (samples
[640·t, 640·t + 640)) can be computed once sample 640·t + 3880 has arrived: its content code reads
frame t + 2's window, whose last row 4t + 23 reads up to sample 160·(4t + 23) + 200. That is
3,240 samples = **202.5 ms after the frame's last sample** (80 ms from Ec's ±2-frame convolution,
122.5 ms from the MFCC window's 13 rows after its centre plus half an analysis window), i.e.
222.5 ms after the frame's average sample. No output frame of EVP can come sooner.

What differs from offline (and why):

* the silence gate (the mouth eased to the model's closed mouth in pauses) needs voice activity,
  whose thresholds offline are percentiles of the *whole clip's* levels; live they are the
  percentiles of the last :data:`VAD_HISTORY_S` seconds heard so far (including the look-ahead),
  and each frame's decision is frozen when it is made. The gate of frame t reads voice activity
  up to frame t + 6, one frame past what the look-ahead has heard: that one frame is assumed
  to continue the last one heard. Near the clip's ends offline wraps around (np.roll); live
  repeats the edge. In speech the gate is 0 both ways and the frames are offline's to float
  precision; in pauses the mouth can differ where the two voice-activity decisions differ.
* the emotion can change while running: each change ramps (smoothstep) from the current code,
  weights and intensity to the new ones over :data:`RAMP_S` seconds, so nothing pops.
* no phones (no transcript or word recogniser: they need the whole clip), so no sealing on them.

**The acoustic path** (``front_end="acoustic"``, what `live` uses for a model that reads phones
without a content delay, e.g. ``assets/evp_live.pt``): instead of MFCC rows and Ec, pocketsphinx's
acoustic model scores the audio frame by frame
(:class:`~evp_anim.audio.acoustic.StreamingAcoustic`), each frame's viseme posteriors feed the
phone encoder Ep, and the lips are sealed where the acoustic model hears /p b m/, as offline
``animate --front-end acoustic`` does. Frame t's posteriors are known once sample 640·t + 1210 has
arrived; Ep reads ``phone_lookahead`` frames past it, so frame t leaves
:func:`acoustic_lookahead_ms` after its last sample: 35.6 ms for a model whose Ep reads none
ahead, 155.6 ms for the offline model's ±3 frames. The one difference from offline: the cepstral
mean is the running mean of what was heard (offline: the whole clip's).
"""

from __future__ import annotations

import collections
import dataclasses
import threading

import numpy as np
import torch

from ..audio.features import (ENERGY_FLOOR_DB, MFCC_PER_FRAME, MFCC_WINDOW, SAMPLE_RATE,
                              mfcc_block, voice_activity_from_energy)
from ..emotions import EMOTIONS, NUM_EMOTIONS, canonical_emotion, check_intensity
from ..errors import EvpError
from ..living import Life, LifeSettings, apply_life
from ..tracks import DEFAULT_FPS, MOUTH, Track

FPS = DEFAULT_FPS                      # 25 fps out of the model
CROP = 256                             # the aligned crop the 2D landmarks are projected into
HOP = 160                              # samples between MFCC rows (10 ms)
HALF_WIN = 200                         # half the 25 ms analysis window, samples
SAMPLES_PER_FRAME = int(SAMPLE_RATE // FPS)          # 640
WIN_BEFORE = MFCC_WINDOW // 2 - 2                    # 12 rows before 4t in a frame's window
CONTEXT = 2                                          # Ec's temporal convolution: ±2 frames
# Samples that must have arrived before frame t (samples [640t, 640t+640)) can be computed:
# 640·t + NEEDED_OFFSET. Frame t + 2's window ends at row 4(t+2) - 12 + 27 = 4t + 23, whose analysis
# window ends at 160·(4t + 23) + 200 = 640t + 3880.
NEEDED_OFFSET = HOP * (MFCC_PER_FRAME * CONTEXT - WIN_BEFORE + MFCC_WINDOW - 1) + HALF_WIN   # 3880
LOOKAHEAD_SAMPLES = NEEDED_OFFSET - SAMPLES_PER_FRAME                                          # 3240
LOOKAHEAD_MS = 1000.0 * LOOKAHEAD_SAMPLES / SAMPLE_RATE                                       # 202.5 ms
SHIFT_PRIOR_FRAMES = 50                # voiced frames (2 s) of weight the corpus's speech mean starts with


def needed_offset(content_delay: int = 0) -> int:
    """Samples past frame t's first that must have arrived before frame t can be computed, for a
    model whose LSTM reads the content code of frame t - ``content_delay``: each frame of delay
    needs 640 samples (40 ms) less. :data:`NEEDED_OFFSET` for the offline model (delay 0)."""
    return NEEDED_OFFSET - SAMPLES_PER_FRAME * int(content_delay)


def lookahead_ms(content_delay: int = 0) -> float:
    """How long after a frame's last sample it can be computed, ms: 202.5 for the offline model,
    42.5 for a model trained with ``content_delay`` 4 (the live model before the acoustic path)."""
    return 1000.0 * (needed_offset(content_delay) - SAMPLES_PER_FRAME) / SAMPLE_RATE
# The acoustic front end (evp_anim.audio.acoustic.StreamingAcoustic) knows frame t once sample
# 640·t + 1210 has arrived; Ep then reads phone_lookahead frames past it.
ACOUSTIC_NEEDED_OFFSET = 1210


def acoustic_lookahead_ms(phone_lookahead: int = 0) -> float:
    """How long after a frame's last sample the acoustic path can compute it, ms: 35.6 for a model
    whose Ep reads no frame ahead (assets/evp_live.pt), 155.6 for the offline model's ±3 frames."""
    samples = ACOUSTIC_NEEDED_OFFSET + SAMPLES_PER_FRAME * int(phone_lookahead) - SAMPLES_PER_FRAME
    return 1000.0 * samples / SAMPLE_RATE


def live_front_end(model) -> str:
    """The content path `live` uses for an EVP model: ``"acoustic"`` (pocketsphinx's acoustic model
    frame by frame into the phone encoder Ep) when the model reads phones without a content delay,
    else ``"mfcc"`` (Ec on MFCC windows; a delayed model's Ep cannot make up for the delay)."""
    return "acoustic" if model.reads_phones and model.net.cfg.content_delay == 0 else "mfcc"


RAMP_S = 0.3                           # s over which an emotion / intensity change blends in
VAD_HISTORY_S = 30.0                   # s of levels the live voice-activity thresholds look at
_GATE_MIN, _GATE_RAMP = 5, 3           # _silence_gate's defaults (offline): a pause ≥ 5 frames, eased over 3


@dataclasses.dataclass
class EmotionState:
    """What the model is conditioned on for one frame: EVP code (De,), weights (8,), intensity."""

    code: np.ndarray
    weights: np.ndarray
    intensity: float


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


class LiveEngine:
    """EVP on a stream of 16 kHz mono samples: :meth:`feed` blocks of any size, get back a Track of
    the 25 fps frames that became computable (or None); :meth:`finish` at the end of the stream
    gives the last frames (the ones the look-ahead held back), as offline animate would.

    ``model`` an :class:`~evp_anim.models.evp.EvpModel`, ``rig`` a
    :class:`~evp_anim.face.rig.FaceRig`; ``identity`` (63,) the face (default the SFM mean face);
    ``life`` the living face's settings (:class:`~evp_anim.living.LifeSettings`; offline
    ``animate``'s defaults unless given). Frame tracks carry landmarks_3d (mm), their projection,
    the rig weights, head rotation, gaze, emotion weights and intensity, like offline chunks.
    On the acoustic front end, ``cepstral_mean`` (13,) is removed from every frame's cepstrum in
    place of the running mean (offline's, given the clip's mean), and ``cepstral_prior`` is where the
    running mean starts (see :class:`~evp_anim.audio.acoustic.StreamingAcoustic`).
    :meth:`set_emotion` / :meth:`set_intensity` may be called from any thread.
    """

    def __init__(self, model, rig, identity: np.ndarray | None = None, life: LifeSettings | None = None,
                 emotion: str = "neutral", intensity: float = 1.0, ramp_s: float = RAMP_S,
                 provenance: dict | None = None, info: dict | None = None, front_end: str | None = None,
                 cepstral_mean: np.ndarray | None = None, cepstral_prior: np.ndarray | str | None = None):
        from ..face.projection import aligned_crop_transform
        from ..models.emote import EmoteModel
        if isinstance(model, EmoteModel):
            raise EvpError("live needs the EVP model: EMOTE normalises over a whole span of frames "
                           "(GroupNorm) and reads 64 frames (2.6 s) ahead, so it cannot run with a short look-ahead")
        torch.set_num_threads(1)         # one core: the live loop is sequential, threads only add jitter
        # ... and so are numpy's BLAS / OpenMP pools (the rig solve): their idle threads spin after
        # every small call, which took the loop from 29% to 100–130% of a core. Process-wide.
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
        self.model, self.net, self.rig = model, model.net, rig
        self.delay = int(model.net.cfg.content_delay)
        self.front_end = live_front_end(model) if front_end is None else front_end
        self._acoustic = None
        if self.front_end == "acoustic":
            if live_front_end(model) != "acoustic":
                raise EvpError("the acoustic front end needs an EVP model with the phone encoder and no "
                               "content delay (e.g. assets/evp_live.pt); this one reads MFCCs live")
            from ..audio.acoustic import StreamingAcoustic
            from ..models.evp import PhoneContentEncoder
            self._acoustic = StreamingAcoustic(prior=cepstral_prior, fixed_mean=cepstral_mean)
            self._ahead = int(model.net.cfg.phone_lookahead)
            self._behind = PhoneContentEncoder.SPAN - self._ahead
            self.lookahead_ms = acoustic_lookahead_ms(self._ahead)
            # frame t can be made once sample 640·t + needed_samples has arrived
            self.needed_samples = ACOUSTIC_NEEDED_OFFSET + SAMPLES_PER_FRAME * self._ahead
            self._vis = np.zeros((0, model.net.cfg.num_visemes), np.float32)    # frames [vis0, ...)
            self._closure = np.zeros(0, np.float32)
            self._vis0 = 0
        elif self.front_end == "mfcc":
            self.lookahead_ms = lookahead_ms(self.delay)
            self.needed_samples = needed_offset(self.delay)
        else:
            raise EvpError(f"live front end must be mfcc or acoustic, got {front_end!r}")
        # The speech-mean shift of offline animate's MFCC front end (models/animate._speech_shift),
        # from the voiced frames heard so far: the corpus's mean stands in for the first
        # SHIFT_PRIOR_FRAMES of them, so the shift grows from 0 to the voice's as it is heard.
        target = model.meta.get("speech_mfcc_mean")
        self._speech_target = None if target is None else np.asarray(target, np.float64)
        self._speech_sum, self._speech_n = np.zeros(12), 0
        self.ident = (np.zeros(rig.num_identity, np.float32) if identity is None
                      else np.asarray(identity, np.float32))
        self.reference = rig.landmarks_3d(self.ident).astype(np.float32)          # (68, 3) mm
        ref = torch.from_numpy(self.reference.reshape(1, 68, 3))
        self._ref_t, self._ref_n = ref, self.net.normalise_reference(ref)
        self.life_settings = LifeSettings() if life is None else life
        self.life = None if self.life_settings.off else Life(FPS, self.life_settings)
        self.scale, self.trans = aligned_crop_transform(CROP)
        self.provenance = dict(provenance or {})
        self.info = dict(info or {})
        if self.life is not None:
            self.info["life"] = dataclasses.asdict(self.life_settings)
        # audio: buffer of samples [buf0, n) still needed
        self._buf = np.zeros(0, np.float32)
        self._buf0 = 0
        self.n_samples = 0
        self.eof = False
        # MFCC rows [row0, row0 + len(rows)) held; rows computed so far: next_row
        self._rows = np.zeros((0, 12), np.float32)
        self._row0 = 0
        self._next_row = 0
        # frame encodings (128,) of frames [feat0, next_win)
        self._feats: collections.deque = collections.deque()
        self._feat0 = 0
        self._next_win = 0
        # per-frame levels (dBFS) and frozen voice activity
        self._levels: collections.deque = collections.deque(maxlen=int(VAD_HISTORY_S * FPS))
        self._vad: dict[int, bool] = {}
        self._next_level = 0
        # output
        self.next_frame = 0
        self._state = None
        # emotion (ramped)
        self._lock = threading.Lock()
        self._ramp_frames = max(1.0, float(ramp_s) * FPS)
        self._emotion, self._intensity = canonical_emotion(emotion), check_intensity(intensity)
        self._target = self._emotion_state(self._emotion, self._intensity)
        self._from = self._target
        self._current = self._target
        self._ramp_pos = self._ramp_frames
        self._pending: tuple[str, float] | None = None

    # ------------------------------------------------------------------ control
    def _emotion_state(self, emotion: str, intensity: float) -> EmotionState:
        """The offline label condition: neutral has intensity 0 whatever is asked."""
        inten = 0.0 if emotion == "neutral" else float(intensity)
        onehot = np.eye(NUM_EMOTIONS, dtype=np.float32)[EMOTIONS.index(emotion)]
        return EmotionState(self.model.label_code(emotion, inten), onehot, inten)

    def set_emotion(self, emotion: str, intensity: float | None = None) -> None:
        """Blend to ``emotion`` (any spelling :func:`canonical_emotion` knows; EvpError otherwise)
        and optionally a new intensity in [0, 1], over :data:`RAMP_S` s from the next frame."""
        emo = canonical_emotion(emotion)
        inten = self._intensity if intensity is None else check_intensity(intensity)
        with self._lock:
            self._emotion, self._intensity = emo, inten
            self._pending = (emo, inten)

    def set_intensity(self, intensity: float) -> None:
        """Blend to a new intensity in [0, 1] (clipped) of the current emotion."""
        inten = float(np.clip(float(intensity), 0.0, 1.0))
        with self._lock:
            self._intensity = inten
            self._pending = (self._emotion, inten)

    @property
    def emotion(self) -> tuple[str, float]:
        """(emotion, intensity) asked for last (the face may still be blending towards it)."""
        with self._lock:
            return self._emotion, self._intensity

    def _next_emotion(self) -> EmotionState:
        """The condition of the next frame: a new target starts a ramp from where the face is."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._from = self._current
            self._target = self._emotion_state(*pending)
            self._ramp_pos = 0.0
        if self._ramp_pos < self._ramp_frames:
            self._ramp_pos += 1.0
            s = np.float32(_smoothstep(self._ramp_pos / self._ramp_frames))
            a, b = self._from, self._target
            self._current = EmotionState(((1 - s) * a.code + s * b.code).astype(np.float32),
                                         ((1 - s) * a.weights + s * b.weights).astype(np.float32),
                                         float((1 - s) * a.intensity + s * b.intensity))
        else:
            self._current = self._target
        return self._current

    # ------------------------------------------------------------------ audio in
    def feed(self, samples: np.ndarray) -> Track | None:
        """Add (n,) float32 16 kHz mono samples; → a Track of the frames now computable (25 fps,
        consecutive from :attr:`next_frame`'s old value), or None when none is yet."""
        if self.eof:
            raise EvpError("the stream has ended; make a new LiveEngine")
        x = np.asarray(samples, np.float32).reshape(-1)
        if x.size:
            if not np.isfinite(x).all():
                x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
            self._buf = np.concatenate([self._buf, x]) if self._buf.size else x.copy()
            self.n_samples += x.size
            if self._acoustic is not None:
                self._acoustic.feed(x)
        return self._advance()

    def finish(self) -> Track | None:
        """The end of the stream: the frames held back by the look-ahead, computed as offline
        does at a clip's end (rows past the end repeat the last one, Ec sees zeros past it)."""
        if self.eof:
            return None
        self.eof = True
        if self._acoustic is not None:
            self._acoustic.finish()
        return self._advance()

    @property
    def n_frames_total(self) -> int | None:
        """Frames of the whole stream once it has ended (ceil(N / 640)), else None."""
        return -(-self.n_samples // SAMPLES_PER_FRAME) if self.eof else None

    # ------------------------------------------------------------------ the pipeline
    def _samples(self, s0: int, s1: int) -> np.ndarray:
        return self._buf[s0 - self._buf0:s1 - self._buf0]

    def _advance(self) -> Track | None:
        n = self.n_samples
        m_total = 1 + n // HOP
        # 1. MFCC rows whose analysis window has all its samples (at the end: every row).
        last_row = m_total if self.eof else (n - HALF_WIN) // HOP + 1 if n >= HALF_WIN else 0
        if self._acoustic is None and last_row > self._next_row:
            m0, m1 = self._next_row, last_row
            s0 = max(m0 * HOP - HALF_WIN, 0)
            new = mfcc_block(self._samples(s0, min(n, (m1 - 1) * HOP + HALF_WIN)), m0, m1, offset=s0)
            self._rows = np.concatenate([self._rows, new]) if self._rows.size else new
            self._next_row = m1
        # 2. per-frame levels (voice activity) of complete frames (at the end: the partial last one)
        n_lev = -(-n // SAMPLES_PER_FRAME) if self.eof else n // SAMPLES_PER_FRAME
        while self._next_level < n_lev:
            f = self._next_level
            seg = self._samples(f * SAMPLES_PER_FRAME, min(n, (f + 1) * SAMPLES_PER_FRAME)).astype(np.float64)
            power = float(np.mean(seg * seg)) if seg.size else 0.0
            self._levels.append(np.float32(10.0 * np.log10(max(power, 10.0 ** (ENERGY_FLOOR_DB / 10.0)))))
            self._vad[f] = bool(voice_activity_from_energy(np.fromiter(self._levels, np.float32))[-1])
            row = MFCC_PER_FRAME * f + MFCC_PER_FRAME // 2 - self._row0        # the frame's centre row
            if (self._vad[f] and self._speech_target is not None and self._acoustic is None
                    and 0 <= row < len(self._rows)):
                self._speech_sum += self._rows[row]
                self._speech_n += 1
            self._next_level += 1
        if self._acoustic is not None:
            return self._advance_acoustic()
        # 3. frame encodings of frames whose window rows are all computed
        if self.eof:
            last_win = -(-n // SAMPLES_PER_FRAME)
        else:
            # frame t's last row is 4t + 15: computed once next_row > 4t + 15
            last_win = max(0, (self._next_row - 1 - (MFCC_WINDOW - 1 - WIN_BEFORE)) // MFCC_PER_FRAME + 1)
        if last_win > self._next_win:
            t = np.arange(self._next_win, last_win)[:, None]
            idx = MFCC_PER_FRAME * t - WIN_BEFORE + np.arange(MFCC_WINDOW)[None, :]
            idx = np.clip(idx, 0, m_total - 1 if self.eof else self._next_row - 1) - self._row0
            windows = self._rows[idx]                                           # (k, 28, 12)
            if self._speech_target is not None:
                mean = ((SHIFT_PRIOR_FRAMES * self._speech_target + self._speech_sum)
                        / (SHIFT_PRIOR_FRAMES + self._speech_n))
                windows = windows + (self._speech_target - mean).astype(np.float32)
            with torch.no_grad():
                f = self.net.content.frame(self.net.normalise(torch.from_numpy(windows)[None]))[0]
            self._feats.extend(f)
            self._next_win = last_win
        # 4. frames whose content code (that of frame t - delay) has its ±2 neighbours
        if self.eof:
            last_out = -(-n // SAMPLES_PER_FRAME)
        else:
            # (the first frames read frame 0's code: none leaves before that code is computable)
            last_out = self._next_win - CONTEXT + self.delay if self._next_win > CONTEXT else 0
        track = None
        if last_out > self.next_frame:
            track = self._frames(self.next_frame, last_out)
            self.next_frame = last_out
        self._trim()
        return track

    def _advance_acoustic(self) -> Track | None:
        """Steps 3–4 on the acoustic path: the frames' viseme posteriors as they become known, then
        the frames whose Ep context (``phone_lookahead`` frames ahead) is known."""
        new, closure = self._acoustic.frames()
        if len(new):
            self._vis = np.concatenate([self._vis, new])
            self._closure = np.concatenate([self._closure, closure])
        known = self._acoustic.next_frame
        last_out = known if self.eof else max(0, known - self._ahead)
        track = None
        if last_out > self.next_frame:
            track = self._frames(self.next_frame, last_out)
            self.next_frame = last_out
        keep_s = self._next_level * SAMPLES_PER_FRAME
        if keep_s > self._buf0:
            self._buf = self._buf[keep_s - self._buf0:].copy()
            self._buf0 = keep_s
        keep_v = max(0, self.next_frame - self._behind - self._vis0)
        if keep_v > 0:
            self._vis = self._vis[keep_v:]
            self._closure = self._closure[keep_v:]
            self._vis0 += keep_v
        for f in [f for f in self._vad if f < self.next_frame - 16]:
            del self._vad[f]
        return track

    def _trim(self) -> None:
        """Drop what no later frame reads: samples before the next row's / level's window, rows
        before the next window's first, encodings before the next frame's context."""
        keep_s = min(max(self._next_row * HOP - HALF_WIN, 0), self._next_level * SAMPLES_PER_FRAME)
        if keep_s > self._buf0:
            self._buf = self._buf[keep_s - self._buf0:].copy()
            self._buf0 = keep_s
        keep_r = max(0, min(MFCC_PER_FRAME * self._next_win - WIN_BEFORE, self._next_row - 1))
        if keep_r > self._row0:
            self._rows = self._rows[keep_r - self._row0:]
            self._row0 = keep_r
        keep_f = max(0, self.next_frame - self.delay - CONTEXT)
        while self._feat0 < keep_f and self._feats:
            self._feats.popleft()
            self._feat0 += 1
        for f in [f for f in self._vad if f < self.next_frame - 16]:
            del self._vad[f]

    def _content(self, a: int, b: int, n_total: int | None) -> torch.Tensor:
        """(1, b - a, Dc) content codes the LSTM reads for frames [a, b): those of frames
        f - delay (frame 0's before the start; :meth:`EvpNet.delay`). On the acoustic path: Ep
        over the frames' viseme posteriors, as offline ``predict_frames`` slices them."""
        if self._acoustic is not None:
            lo = max(0, a - self._behind)
            hi = b + self._ahead if n_total is None else min(n_total, b + self._ahead)
            vis = torch.from_numpy(self._vis[lo - self._vis0:hi - self._vis0])[None]
            return self.net.phones(vis)[:, a - lo:b - lo]
        ca = max(0, a - self.delay)
        cb = max(ca + 1, b - self.delay)
        codes = self._codes(ca, cb, n_total)
        return codes[:, np.maximum(np.arange(a, b) - self.delay, 0) - ca]

    def _codes(self, a: int, b: int, n_total: int | None) -> torch.Tensor:
        """(1, b - a, Dc) content codes of frames [a, b): Ec's temporal convolution over the frame
        encodings a - 2 … b + 1, zeros outside the clip (its zero padding), then its LayerNorm."""
        rows = []
        for f in range(a - CONTEXT, b + CONTEXT):
            inside = f >= 0 and (n_total is None or f < n_total)
            rows.append(self._feats[f - self._feat0] if inside else None)
        zero = torch.zeros_like(self._feats[0])
        x = torch.stack([zero if r is None else r for r in rows], 1)[None]     # (1, 128, k + 4)
        conv = self.net.content.temporal
        h = torch.nn.functional.conv1d(x, conv.weight, conv.bias)            # (1, Dc, k)
        return self.net.content.norm(h.transpose(1, 2))

    def _gate(self, i: int) -> float:
        """Offline's silence gate (_silence_gate: pauses of ≥ 5 frames, eroded and blurred over ±3)
        at frame i, from the voice activity decided so far (see the module docstring)."""
        n_total = self.n_frames_total
        known = self._next_level - 1

        def vad(j: int) -> bool:
            if j > known:
                j = known                              # not heard yet: continues the last frame heard
            return self._vad.get(j, True)

        lo, hi = i - 4 * _GATE_RAMP, i + 4 * _GATE_RAMP + 1
        lo_c = max(lo, 0)
        hi_c = hi if n_total is None else min(hi, n_total)
        v = np.array([vad(j) for j in range(lo_c, hi_c)], bool)
        raw = np.zeros(v.size, np.float32)
        j = 0
        while j < v.size:                              # silent runs of ≥ 5 frames (runs cut by the
            if v[j]:                                   # range's edges are ≥ 6 long where they matter)
                j += 1
                continue
            k = j
            while k < v.size and not v[k]:
                k += 1
            if k - j >= _GATE_MIN:
                raw[j:k] = 1.0
            j = k
        # edges of the clip: repeat the edge (offline wraps around the clip)
        pad_l, pad_r = lo_c - lo, hi - hi_c
        raw = np.pad(raw, (pad_l, pad_r), mode="edge")
        r = _GATE_RAMP
        c = i - lo                                     # index of frame i in raw
        eroded = np.array([raw[c + k - r:c + k + r + 1].min() for k in range(-r, r + 1)], np.float32)
        if i - r < 0:                                  # offline's blur pads the eroded gate by its edge
            e0 = raw[c - i - r:c - i + r + 1].min()
            eroded[:r - i] = e0
        if n_total is not None and i + r >= n_total:
            e1 = raw[c + (n_total - 1 - i) - r:c + (n_total - 1 - i) + r + 1].min()
            eroded[r + (n_total - 1 - i) + 1:] = e1
        return float(eroded.mean())

    def _rest_mouth(self, code: np.ndarray) -> np.ndarray:
        """(20, 3) mm: the model's own closed mouth for ``code`` (offline's, shared with it)."""
        from ..models.animate import rest_mouth
        return rest_mouth(self.model, self.reference, code)

    def _frames(self, a: int, b: int) -> Track:
        from ..face.projection import aligned_landmarks
        from ..models.animate import lift_to_rig, seal_track
        k = b - a
        emo = [self._next_emotion() for _ in range(k)]
        codes = np.stack([e.code for e in emo]).astype(np.float32)
        weights = np.stack([e.weights for e in emo]).astype(np.float32)
        intensity = np.array([e.intensity for e in emo], np.float32)
        with torch.no_grad():
            content = self._content(a, b, self.n_frames_total)
            coeffs, self._state = self.net.a2l(content, torch.from_numpy(codes)[None], self._ref_n, self._state)
            lm3d = self.net.landmarks(coeffs, self._ref_t)[0].numpy().copy()
        for j in range(k):
            g = self._gate(a + j)
            if g > 0:
                lm3d[j, MOUTH] = (1 - g) * lm3d[j, MOUTH] + g * self._rest_mouth(codes[j])
        track = Track.new(
            aligned_landmarks(lm3d, CROP).astype(np.float32), fps=FPS, image_size=(CROP, CROP),
            landmarks_3d=lm3d, pose_translation=np.tile(np.asarray(self.trans, np.float32), (k, 1)),
            pose_scale=np.full(k, self.scale, np.float32), identity=self.ident,
            emotion=weights, intensity=intensity, provenance=self.provenance, info=self.info)
        lift_to_rig(track, self.rig, self.ident)
        if self._acoustic is not None:         # the lips close where the acoustic model hears /p b m/
            seal_track(track, self.rig, self._closure[a - self._vis0:b - self._vis0], self.ident)
        if self.life is not None:
            apply_life(track, self.life, self.rig, self.ident)
        return track
