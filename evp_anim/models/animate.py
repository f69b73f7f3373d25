"""``evp-anim animate``: speech → an emotional landmark Track with a trained EVP model.

The emotion comes from a label (the emotion cluster's mean code at an intensity), from a
reference clip (Ee of another recording), or from timecoded keys that blend emotions per frame.
The output Track (25 fps) carries pose-invariant 3D landmarks (mm), their frontal projection in
the 256×256 aligned crop, an identity pose, per-frame emotion weights and intensity.

Silence closes the mouth: where voice activity is off for a while, the mouth landmarks are
eased towards the model's own prediction for silent input with the same emotion, so noise in
pauses does not make the lips flutter.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..emotions import EMOTIONS, NUM_EMOTIONS, canonical_emotion, check_intensity
from ..errors import EvpError
from ..audio.features import SAMPLE_RATE
from ..tracks import DEFAULT_FPS, MOUTH, Track
from ..emotion_keys import EmotionKey, validate_keys
from .emotion_control import per_frame
from .evp import EvpModel

FPS = DEFAULT_FPS
CROP = 256


@dataclasses.dataclass
class EmotionSpec:
    """Exactly one of: a label (+ intensity), a reference audio clip, or a keys file."""

    emotion: str | None = "neutral"
    intensity: float = 1.0
    reference_audio: Path | None = None
    keys: list[EmotionKey] | None = None


def default_model_path() -> Path:
    """The shipped default weights (assets/evp_default.pt in the source tree)."""
    return Path(__file__).resolve().parents[2] / "assets" / "evp_default.pt"


def _silence_gate(vad: np.ndarray, min_frames: int = 5, ramp: int = 3) -> np.ndarray:
    """(T,) in [0, 1]: 1 inside silences of at least ``min_frames`` frames, eased over ``ramp`` frames."""
    t = len(vad)
    gate = np.zeros(t, np.float32)
    i = 0
    while i < t:
        if not vad[i]:
            j = i
            while j < t and not vad[j]:
                j += 1
            if j - i >= min_frames:
                gate[i:j] = 1.0
            i = j
        else:
            i += 1
    if ramp > 0 and gate.any():
        kernel = np.ones(2 * ramp + 1, np.float32) / (2 * ramp + 1)
        # Only shrink the gate at its edges (erode then blur) so speech frames stay untouched.
        eroded = np.minimum.reduce([np.roll(gate, s) for s in range(-ramp, ramp + 1)])
        gate = np.convolve(np.pad(eroded, ramp, mode="edge"), kernel, mode="valid")
    return gate.astype(np.float32)


def animate(audio: np.ndarray, model: EvpModel, spec: EmotionSpec, reference: np.ndarray | None = None,
            identity: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE, content=None) -> Track:
    """Animate ``audio`` (N,) float32 mono at ``sample_rate`` → Track at 25 fps.

    ``reference`` (68, 3) mm is the neutral face to animate (default: the SFM mean face, stored in
    the model as the mean training reference); ``identity`` (63,) is recorded in the track if given.
    ``content`` (:class:`~evp_anim.audio.phones.SpeechContent`) feeds the phones' visemes to the
    phone content encoder Ep in Ec's place (a model without Ep keeps Ec, with a warning).
    """
    from ..audio.features import mfcc, mfcc_window_view, mfcc_windows, n_frames, voice_activity
    from ..audio.io import load_audio
    from ..face.projection import aligned_crop_transform, aligned_landmarks

    # A strided view over the (M, 12) MFCC rows: the windows' values without their 7x copy
    # (121 MB an hour); predict_lm3d reads it chunk by chunk. mfcc() checks the waveform first.
    windows = mfcc_window_view(mfcc(audio, sample_rate), n_frames(np.asarray(audio).size, sample_rate))
    n = windows.shape[0]
    duration = n / FPS
    if reference is None:
        reference = model.net.ref_mean.numpy().reshape(68, 3)

    if spec.keys is not None:
        validate_keys(spec.keys, duration)
        codes, weights, intensity = per_frame(spec.keys, n, FPS, model.label_code)
    elif spec.reference_audio is not None:
        ref_audio = load_audio(spec.reference_audio)
        if not voice_activity(ref_audio).any():
            raise EvpError(f"{spec.reference_audio}: the reference emotion clip is silent; "
                           "give a clip with speech in the wanted emotion")
        code = model.emotion_code(mfcc_windows(ref_audio))
        codes = np.broadcast_to(code, (n, code.shape[0]))
        with torch.no_grad():
            logits = model.net.classifier(torch.from_numpy(code)[None]).numpy()[0]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        weights = np.tile(probs.astype(np.float32), (n, 1))
        intensity = np.full(n, float(1.0 - probs[0]), np.float32)
    else:
        emo = canonical_emotion(spec.emotion or "neutral")
        inten = check_intensity(spec.intensity) if emo != "neutral" else 0.0
        codes = np.broadcast_to(model.label_code(emo, inten), (n, model.net.cfg.emotion_dim))
        weights = np.tile(np.eye(NUM_EMOTIONS, dtype=np.float32)[EMOTIONS.index(emo)], (n, 1))
        intensity = np.full(n, inten, np.float32)

    visemes = None
    if content is not None:
        if model.reads_phones:
            from ..audio.phones import viseme_posteriors
            visemes = viseme_posteriors(content.phones, n, FPS)
        else:
            import warnings
            warnings.warn("this EVP model has no phone content encoder (an older model file): its "
                          "MFCC content encoder is used; the phones only seal the lips", stacklevel=2)
    lm3d = model.predict_lm3d(windows, reference, codes, visemes=visemes)
    gate = _silence_gate(voice_activity(audio, sample_rate, n_frames=n))
    if gate.any():
        silent = mfcc_windows(np.zeros(int(sample_rate * 0.6), np.float32), sample_rate)
        # The model's own closed mouth for this emotion: its prediction on silence, per frame code.
        uniq, which = _unique_codes(codes)
        # Only the gated frames' mouth rows are blended (elsewhere g = 0 leaves them as they are),
        # so the temporaries are (gated frames, 20, 3) rather than (T, 68, 3) on long clips.
        on = np.flatnonzero(gate)
        rest = np.stack([model.predict_lm3d(silent, reference, c)[-1] for c in uniq])[:, MOUTH][which[on]]
        g = gate[on, None, None]
        lm3d[on, MOUTH] = (1 - g) * lm3d[on, MOUTH] + g * rest

    scale, trans = aligned_crop_transform(CROP)
    # Projected in blocks of frames: the projection works in float64 (T, 68, 3) temporaries
    # (230 MB for 30 minutes at once); the track stores float32 anyway.
    lm2d = np.empty((n, lm3d.shape[1], 2), np.float32)
    for a in range(0, n, 4096):
        lm2d[a:a + 4096] = aligned_landmarks(lm3d[a:a + 4096], CROP)
    return Track.new(
        lm2d, fps=FPS, image_size=(CROP, CROP), landmarks_3d=lm3d,
        pose_translation=np.tile(np.asarray(trans, np.float32), (n, 1)),
        pose_scale=np.full(n, scale, np.float32),
        identity=np.zeros(0, np.float32) if identity is None else np.asarray(identity, np.float32),
        emotion=weights, intensity=intensity,
        provenance={"model": model.name, "model_version": str(model.meta.get("evp_anim_version", "")),
                    "evp_anim_version": __version__, "command": " ".join(["evp-anim"] + sys.argv[1:])},
    )


def _unique_codes(codes: np.ndarray, decimals: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of (T, De) codes and the index of each frame's row (keys give few distinct codes
    only when constant; blended keys give many, so cap the work by quantising)."""
    q = np.round(codes, decimals)
    uniq, inverse = np.unique(q, axis=0, return_inverse=True)
    if len(uniq) > 64:  # a long cross-fade: sample the rest pose on a coarse grid of frames instead
        step = int(np.ceil(len(codes) / 64))
        anchors = np.arange(0, len(codes), step)
        inverse = np.minimum(np.round(np.arange(len(codes)) / step).astype(int), len(anchors) - 1)
        return codes[anchors], inverse
    return uniq.astype(np.float32), inverse.reshape(-1)


def seal_bilabials(rig, weights: np.ndarray, phones, identity: np.ndarray | None = None) -> np.ndarray:
    """(T, K) rig weights with the lips sealed on the /p b m/ among ARPAbet ``phones`` (25 fps)."""
    from ..face.lip_contact import bilabial_intervals, close_lips, closure_curve
    closure = closure_curve(bilabial_intervals(phones), len(weights), FPS)
    return close_lips(rig, weights, closure, identity)


def lift_to_rig(track: Track, rig, identity: np.ndarray | None = None) -> Track:
    """Fill ``track``'s expression channels with the rig weights (T, K) in [0, 1] that best
    reproduce its 3D landmarks (box-constrained least squares), so the EVP landmarks drive the
    shape-key head, Blender and ARKit exports. Modifies and returns ``track``."""
    from ..face.solve import weights_from_landmarks
    track.expression = weights_from_landmarks(rig, track.landmarks_3d, identity).astype(np.float32)
    track.expression_names = list(rig.channels)
    return track.validate()


def _seal_track(track: Track, rig, phones, identity: np.ndarray | None) -> None:
    """Seal the lips of a lifted EVP track on /p b m/: the rig weights change, and the landmarks
    move by the rig's displacement for that change (the rig is linear), so the network's own
    landmarks are kept everywhere else."""
    from ..face.projection import aligned_landmarks
    before = track.expression
    after = seal_bilabials(rig, before, phones, identity).astype(np.float32)
    if np.array_equal(before, after):
        return
    shift = rig.landmarks_3d(identity, after) - rig.landmarks_3d(identity, before)
    track.landmarks_3d = (track.landmarks_3d + shift).astype(np.float32)
    track.landmarks = aligned_landmarks(track.landmarks_3d, CROP).astype(np.float32)
    track.expression = after
    track.validate()


# ---------------------------------------------------------------------- the EMOTE path
def default_emote_path() -> Path:
    """The shipped EMOTE weights (assets/emote_default.pt in the source tree)."""
    return Path(__file__).resolve().parents[2] / "assets" / "emote_default.pt"


def load_animation_model(path: Path | str | None):
    """The model for ``animate --model``: None → the shipped EVP model; ``emote`` → the shipped
    EMOTE model; a file → EVP or EMOTE according to its format tag. One-line EvpError otherwise."""
    from .emote import EmoteModel
    if path is None:
        return EvpModel.load(default_model_path())
    if str(path) == "emote":
        return EmoteModel.load(default_emote_path())
    path = Path(path)
    if not path.is_file():
        raise EvpError(f"model file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        fmt = blob.get("format") if isinstance(blob, dict) else None
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise EvpError(f"{path}: not a readable model file ({type(e).__name__})") from None
    if fmt == "evp-anim-emote-model":
        return EmoteModel.load(path)
    return EvpModel.load(path)


def animate_emote(audio: np.ndarray, model, spec: EmotionSpec, rig, identity: np.ndarray | None = None,
                  style: str | None = None, sample_rate: int = SAMPLE_RATE, content=None) -> Track:
    """EMOTE: ``audio`` (N,) float32 mono at ``sample_rate`` → Track at 25 fps whose ``expression``
    holds the rig coefficients (T, 42) (RIG_CHANNELS names), with landmarks_3d (mm) from the rig for
    ``identity`` (63,) (default: the SFM mean face) and their frontal projection in the 256×256
    aligned crop. Emotion from a label + intensity or timecoded keys (cross-fading the emotion
    weights and intensity the generator is conditioned on); ``style`` is a training speaker's name
    for its style id (None / unseen = the "unknown" style). ``content``
    (:class:`~evp_anim.audio.phones.SpeechContent`, phones heard by the recogniser or aligned from a
    transcript) replaces the content encoder's visemes with the phones' (the front end for real
    speech) and seals the lips on /p b m/ (:func:`~evp_anim.face.lip_contact.close_lips`)."""
    from ..audio.features import mfcc, mfcc_window_view, n_frames
    from ..face.projection import aligned_crop_transform, aligned_landmarks
    from .emote import label_condition

    if spec.reference_audio is not None:
        raise EvpError("--emotion-audio needs the EVP model (EMOTE takes the emotion from a label or keys)")
    if style is not None and style not in model.speakers:
        known = ", ".join(model.speakers[:6]) + (" ..." if len(model.speakers) > 6 else "")
        raise EvpError(f"unknown speaker style {style!r}: the model knows {known or 'none'}")
    # Windows as a strided view over the MFCC rows (see animate); predict copies one chunk at a time.
    windows = mfcc_window_view(mfcc(audio, sample_rate), n_frames(np.asarray(audio).size, sample_rate))
    n = windows.shape[0]
    if spec.keys is not None:
        validate_keys(spec.keys, n / FPS)
        _, weights, intensity = per_frame(spec.keys, n, FPS, lambda e, i: np.zeros(1, np.float32))
    else:
        onehot, inten = label_condition(spec.emotion or "neutral", spec.intensity)
        weights = np.tile(onehot, (n, 1))
        intensity = np.full(n, inten, np.float32)
    if list(model.channels) != list(rig.channels):
        raise EvpError("the EMOTE model's channels differ from this rig's; retrain it")
    ident = None if identity is None else np.asarray(identity, np.float32)
    visemes = None
    if content is not None:
        from ..audio.phones import viseme_posteriors
        visemes = viseme_posteriors(content.phones, n, FPS)
    coeffs = model.predict(windows, weights, intensity, model.speaker_id(style), visemes=visemes)
    if content is not None:
        coeffs = seal_bilabials(rig, coeffs, content.phones, ident)
    # Landmarks and their projection in blocks of frames (float64 temporaries; see animate).
    lm3d = np.empty((n, 68, 3), np.float32)
    lm2d = np.empty((n, 68, 2), np.float32)
    for a in range(0, n, 4096):
        lm3d[a:a + 4096] = rig.landmarks_3d(ident, coeffs[a:a + 4096])
        lm2d[a:a + 4096] = aligned_landmarks(lm3d[a:a + 4096], CROP)
    scale, trans = aligned_crop_transform(CROP)
    return Track.new(
        lm2d, fps=FPS, image_size=(CROP, CROP), landmarks_3d=lm3d,
        pose_translation=np.tile(np.asarray(trans, np.float32), (n, 1)),
        pose_scale=np.full(n, scale, np.float32),
        identity=np.zeros(0, np.float32) if ident is None else ident,
        expression=coeffs, expression_names=list(rig.channels),
        emotion=weights.astype(np.float32), intensity=intensity.astype(np.float32),
        provenance={"model": model.name, "model_version": str(model.meta.get("evp_anim_version", "")),
                    "evp_anim_version": __version__, "command": " ".join(["evp-anim"] + sys.argv[1:])},
        info={"style": style or "unknown"},
    )


def animate_speech_file(path: str | Path, model, spec: EmotionSpec, rig, identity: np.ndarray | None = None,
                        style: str | None = None, front_end: str = "mfcc", text: str | None = None,
                        warn=None) -> Track:
    """Animate the speech file at ``path`` with an EVP model (landmarks, lifted to the rig) or an
    EMOTE model (rig coefficients) on the face of ``identity`` (63,) (default: the SFM mean face,
    recorded as zero coefficients so that ``align`` can re-express it on a target's face). The
    track records the audio's sha256 and absolute path. 25 fps.

    ``front_end="phones"`` adds what is said, heard by pocketsphinx (trained on real voices) or
    aligned from ``text`` (a transcript; a mismatching one is reported through ``warn`` and the
    audio alone is used): EMOTE reads the phones' visemes instead of its MFCC content encoder's,
    EVP reads them through its phone content encoder Ep instead of Ec, and both models seal the
    lips on /p b m/. ``"mfcc"``: the models' own audio features only."""
    from ..audio.io import audio_sha256, load_audio
    from ..audio.phones import FRONT_ENDS, speech_content
    from .emote import EmoteModel

    x = load_audio(path)
    ident = np.zeros(rig.num_identity, np.float32) if identity is None else np.asarray(identity, np.float32)
    if front_end not in FRONT_ENDS:
        raise EvpError(f"unknown front end {front_end!r}: choose from {', '.join(FRONT_ENDS)}")
    if text is not None and front_end != "phones":
        raise EvpError("a transcript needs the phone front end (--front-end phones)")
    content = speech_content(x, text, warn=warn) if front_end == "phones" else None
    if isinstance(model, EmoteModel):
        track = animate_emote(x, model, spec, rig, identity=ident, style=style, content=content)
    else:
        track = animate(x, model, spec, reference=rig.landmarks_3d(ident), identity=ident, content=content)
        lift_to_rig(track, rig, ident)
        if content is not None:
            _seal_track(track, rig, content.phones, ident)
    track.info["front_end"] = front_end if content is None else f"phones ({content.source})"
    track.provenance["source_audio_sha256"] = audio_sha256(path)
    track.info["audio"] = str(Path(path).resolve())
    return track
