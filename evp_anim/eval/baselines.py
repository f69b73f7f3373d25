"""Two baselines without learning, to read the EVP figures against.

* :func:`static_face` — the speaker's neutral reference landmarks on every frame (no motion at
  all: its LVD is the ground truth's own velocity, its LD the ground truth's distance from rest).
* :func:`static_emotion_face` — the same face wearing the rig's expression of the clip's emotion
  label (an oracle for emotion with no speech at all; a reference point, not a competitor).
* :class:`RuleBasedAnimator` — a phoneme → viseme animator. Phones come from pocketsphinx's
  phone recogniser (allphone search with its bundled US-English acoustic model and phone
  language model) on the clip's 16 kHz audio; each ARPAbet phone is mapped to a representative
  espeak-ng mnemonic (:data:`~evp_anim.audio.phones.ARPABET_TO_ESPEAK`), so :func:`~evp_anim.synth.visemes.articulation_curves`
  turns them into mouth curves over :data:`~evp_anim.face.channels.SPEECH_CHANNELS`; the face is
  ``FaceRig.landmarks_3d(identity, weights)`` with neutral emotion, projected into the aligned
  crop. When pocketsphinx is not installed or finds no speech, the jaw follows the normalised
  frame energy instead (``source == "energy"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..audio.features import SAMPLE_RATE
from ..audio.phones import arpabet_to_espeak, pocketsphinx_available, recognize_phones
from ..errors import EvpError
from ..tracks import DEFAULT_FPS


# ------------------------------------------------------------------------ static mean face
def static_face(reference_aligned: np.ndarray, n_frames: int) -> np.ndarray:
    """(n_frames, 68, 2) float32: the (68, 2) neutral reference repeated on every frame."""
    r = np.asarray(reference_aligned, np.float32)
    if r.shape != (68, 2):
        raise EvpError(f"reference landmarks must have shape (68, 2), got {r.shape}")
    return np.repeat(r[None], int(n_frames), axis=0)


def static_emotion_face(rig, reference: np.ndarray, n_frames: int, emotion: str, intensity: float,
                        size: int = 256) -> np.ndarray:
    """(n_frames, 68, 2) float32: the neutral reference (68, 3) mm wearing the rig's expression of
    ``emotion`` at ``intensity`` on every frame, no speech — an oracle for the emotion (it is given
    the label) that shows how much of F-LD and emotion accuracy needs no audio at all."""
    from ..face.projection import aligned_landmarks
    ref = np.asarray(reference, np.float32)
    if ref.shape != (68, 3):
        raise EvpError(f"reference landmarks must have shape (68, 3), got {ref.shape}")
    delta = rig.landmarks_3d(None, rig.emotion_weights(emotion, intensity)) - rig.landmarks_3d(None)
    lm = aligned_landmarks((ref + delta)[None], size)[0].astype(np.float32)
    return np.repeat(lm[None], int(n_frames), axis=0)


# ------------------------------------------------------------------------ phone recognition
# ------------------------------------------------------------------------ rule-based animator
def frame_energy(audio: np.ndarray, n_frames: int, fps: float = DEFAULT_FPS, rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_frames,) RMS of the audio around each frame centre (a 40 ms window)."""
    a = np.asarray(audio, np.float64).reshape(-1)
    half = int(0.02 * rate)
    out = np.zeros(int(n_frames), np.float64)
    for i in range(int(n_frames)):
        c = int((i + 0.5) / fps * rate)
        seg = a[max(0, c - half):c + half]
        out[i] = np.sqrt(np.mean(seg ** 2)) if seg.size else 0.0
    return out


def energy_jaw(audio: np.ndarray, n_frames: int, max_open: float = 0.45) -> np.ndarray:
    """(n_frames,) jawOpen from frame energy: energy in dB mapped from a noise floor (20th
    percentile) to the loud level (95th percentile) onto [0, ``max_open``], lightly smoothed."""
    e = frame_energy(audio, n_frames)
    if e.size == 0:
        return e.astype(np.float32)
    db = 20 * np.log10(e + 1e-6)
    lo, hi = np.percentile(db, 20), np.percentile(db, 95)
    x = np.clip((db - lo) / max(hi - lo, 1e-3), 0.0, 1.0) if hi - lo > 3.0 else np.zeros_like(db)
    k = np.array([0.25, 0.5, 0.25])
    x = np.convolve(np.pad(x, 1, mode="edge"), k, mode="valid")
    return (max_open * x).astype(np.float32)


class RuleBasedAnimator:
    """Audio → (T, 68, 2) aligned landmarks with fixed rules (no learning).

    ``animate`` returns ``(landmarks, source)`` with source ``"phonemes"`` (pocketsphinx phones →
    visemes) or ``"energy"`` (the energy-driven jaw fallback).
    """

    def __init__(self, sfm_dir: str | Path | None = None, rig=None, use_pocketsphinx: bool = True):
        if rig is None:
            if sfm_dir is None:
                raise EvpError("RuleBasedAnimator needs the SFM folder (sfm_dir) or a FaceRig")
            from ..face.rig import FaceRig
            rig = FaceRig(sfm_dir)
        from ..face.channels import SPEECH_CHANNELS
        self.rig = rig
        self.use_pocketsphinx = use_pocketsphinx and pocketsphinx_available()
        self._speech_cols = np.array([rig.channel_index(c) for c in SPEECH_CHANNELS])
        self._jaw_col = rig.channel_index("jawOpen")
        self._neutral = rig.emotion_weights("neutral", 1.0)

    def phonemes(self, audio: np.ndarray) -> list[tuple[float, float, str]]:
        """espeak-ng phoneme segments of the audio from pocketsphinx ([] when unavailable)."""
        if not self.use_pocketsphinx:
            return []
        return [(s, e, arpabet_to_espeak(p)) for s, e, p in recognize_phones(audio)]

    def weights(self, audio: np.ndarray, n_frames: int, phones=None) -> tuple[np.ndarray, str]:
        """(T, K) rig weights and the source used ("phonemes" or "energy").

        ``phones``: ARPAbet segments ``[(start_s, end_s, phone)]`` already recognised for this
        audio (e.g. cached); None recognises them now.
        """
        from ..synth.visemes import articulation_curves
        n = int(n_frames)
        w = np.repeat(self._neutral[None], n, axis=0).astype(np.float32)
        if phones is None:
            phones = self.phonemes(audio)
        else:
            phones = [(float(s), float(e), arpabet_to_espeak(str(p))) for s, e, p in phones]
        if any(sym != "_" for _, _, sym in phones):
            from ..face.lip_contact import close_lips, closure_curve
            curves = articulation_curves(phones, n, DEFAULT_FPS)
            w[:, self._speech_cols] += curves
            # /p b m/ seal the lips (coarticulation alone leaves short ones open).
            bilabial = [(s, e) for s, e, sym in phones if sym in ("p", "b", "m")]
            w = close_lips(self.rig, np.clip(w, 0.0, 1.0), closure_curve(bilabial, n, DEFAULT_FPS))
            return w, "phonemes"
        w[:, self._jaw_col] += energy_jaw(audio, n)
        return w, "energy"

    def animate_3d(self, audio: np.ndarray, n_frames: int, identity=None, reference=None, phones=None,
                   ) -> tuple[np.ndarray, str]:
        """(T, 68, 3) mm landmarks of the speaker (``identity`` (63,), or the neutral ``reference``
        (68, 3) mm — the rig is linear, so the channel deltas are added to it) and the source."""
        w, source = self.weights(audio, n_frames, phones)
        if identity is not None and np.asarray(identity).size == self.rig.num_identity:
            return self.rig.landmarks_3d(identity, w).astype(np.float32), source
        if reference is None:
            raise EvpError("the rule-based baseline needs the speaker's identity (63,) or reference (68, 3)")
        ref = np.asarray(reference, np.float32)
        if ref.shape != (68, 3):
            raise EvpError(f"reference landmarks must have shape (68, 3), got {ref.shape}")
        delta = self.rig.landmarks_3d(None, w) - self.rig.landmarks_3d(None)[None]
        return (ref[None] + delta).astype(np.float32), source

    def animate(self, audio: np.ndarray, n_frames: int, identity=None, reference=None, phones=None,
                size: int = 256) -> tuple[np.ndarray, str]:
        """(T, 68, 2) float32 landmarks in the size×size aligned crop, and the source used."""
        from ..face.projection import aligned_landmarks
        lm3d, source = self.animate_3d(audio, n_frames, identity, reference, phones)
        return aligned_landmarks(lm3d, size).astype(np.float32), source
