"""Synthetic target footage: the SFM head rendered with known pose and expression per frame.

The video shows the textured SFM face (skin, lips, eyes, brows, mouth interior) of a sampled
identity, lit from the upper left, over a background with hair, neck and shoulders and some
room clutter (so the footage has edges outside the face, as real footage does). Its ground-truth
:class:`~evp_anim.tracks.Track` carries exactly what drew each frame: landmarks_2d (the rig's
landmark vertices projected with :func:`~evp_anim.face.projection.project`), pose-invariant
landmarks_3d (mm), pose (radians, px, px/mm), identity and rig weights (``RIG_CHANNELS``).

Tests use it to measure tracking and fitting against truth; the renderer issue uses it as a
stand-in for an actor's footage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import EvpError
from ..tracks import DEFAULT_FPS, Track, save_track


@dataclass
class SyntheticFootageConfig:
    """Options for :func:`make_synthetic_footage`.

    n_frames: frames at ``fps``; width, height: video size in px (even numbers).
    face_px: jaw width (iBUG 1..17 span, frontal) in pixels at the mean scale.
    yaw_deg, pitch_deg, roll_deg: peak amplitude of the smooth head rotation.
    move_px: peak head translation; scale_var: peak relative scale change.
    expressions: animate emotion blendshapes and a speech-like jaw (False: neutral face).
    expression_style: "simple" (one jaw rhythm, one smile that builds up and fades, one blink) or
        "rich" (speech-like syllables of varying opening, rounded/stretched/pressed lips, six
        emotions taking turns, brow raises and a blink every ~3 s: training footage for the
        renderer, which must see many mouth shapes).
    seed: identity and motion phases.
    """

    n_frames: int = 50
    width: int = 384
    height: int = 384
    fps: float = DEFAULT_FPS
    face_px: float = 170.0
    yaw_deg: float = 25.0
    pitch_deg: float = 10.0
    roll_deg: float = 8.0
    move_px: float = 20.0
    scale_var: float = 0.08
    expressions: bool = True
    expression_style: str = "simple"
    identity_scale: float = 0.7
    seed: int = 0

    def validate(self) -> None:
        if self.n_frames < 1:
            raise EvpError(f"n_frames must be >= 1, got {self.n_frames}")
        if self.width % 2 or self.height % 2 or min(self.width, self.height) < 64:
            raise EvpError(f"video size must be even and >= 64 px, got {self.width}x{self.height}")
        if not 20 <= self.face_px <= 0.9 * min(self.width, self.height):
            raise EvpError(f"face_px must be in [20, 0.9 * min(width, height)], got {self.face_px}")
        if self.expression_style not in ("simple", "rich"):
            raise EvpError(f"expression_style must be 'simple' or 'rich', got {self.expression_style!r}")


def synthetic_motion(cfg: SyntheticFootageConfig, channels: tuple[str, ...], jaw_width_mm: float,
                     ) -> dict[str, np.ndarray]:
    """Smooth ground-truth motion: rotation (T, 3) rad, translation (T, 2) px, scale (T,) px/mm,
    weights (T, K) rig weights in ``channels`` order."""
    rng = np.random.default_rng(cfg.seed)
    t = np.arange(cfg.n_frames) / cfg.fps
    ph = rng.uniform(0, 2 * np.pi, 8)

    def wave(amp, f, p):
        return amp * np.sin(2 * np.pi * f * t + p)

    rot = np.stack([
        np.radians(wave(cfg.pitch_deg, 0.23, ph[0]) + 0.3 * wave(cfg.pitch_deg, 0.61, ph[1])) / 1.3,
        np.radians(wave(cfg.yaw_deg, 0.17, ph[2])),
        np.radians(wave(cfg.roll_deg, 0.29, ph[3])),
    ], 1)
    s0 = cfg.face_px / jaw_width_mm
    scale = s0 * (1.0 + wave(cfg.scale_var, 0.13, ph[4]))
    centre = np.array([cfg.width / 2.0, cfg.height * 0.46])
    trans = centre + np.stack([wave(cfg.move_px, 0.11, ph[5]), wave(0.6 * cfg.move_px, 0.19, ph[6])], 1)
    w = np.zeros((cfg.n_frames, len(channels)), np.float64)
    if cfg.expressions and cfg.expression_style == "rich":
        w = _rich_weights(t, channels, np.random.default_rng(cfg.seed + 7))
    elif cfg.expressions:
        idx = {c: i for i, c in enumerate(channels)}
        # speech-like jaw at ~4 syllables/s, an emotion that builds up and fades, and a blink
        w[:, idx["jawOpen"]] = np.clip(0.35 * (np.sin(2 * np.pi * 4.0 * t + ph[7]) + 0.4), 0, 0.5)
        env = np.clip(np.sin(np.pi * t / max(t[-1], 1e-6)), 0, 1) if len(t) > 1 else np.ones(1)
        for ch, v in (("sfm_happiness", 0.8), ("mouthSmileLeft", 0.5), ("mouthSmileRight", 0.5)):
            w[:, idx[ch]] = v * env
        blink = np.exp(-0.5 * ((t - 0.5 * t[-1]) / 0.05) ** 2)
        w[:, idx["eyeBlinkLeft"]] = blink
        w[:, idx["eyeBlinkRight"]] = blink
    return {"rotation": rot, "translation": trans, "scale": scale, "weights": w}


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, hz: float) -> np.ndarray:
    """(T,) smooth random signal in about [-1, 1]: a sum of sines around ``hz``."""
    out = np.zeros_like(t)
    for f in rng.uniform(0.5 * hz, 1.5 * hz, 3):
        out += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out / 3.0 * 1.7


def _rich_weights(t: np.ndarray, channels: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """(T, K) rig weights for the "rich" style: many mouth shapes, emotions in turn, blinks."""
    n = len(t)
    idx = {c: i for i, c in enumerate(channels)}
    w = np.zeros((n, len(channels)), np.float64)

    def put(name, v):
        w[:, idx[name]] = np.clip(v, 0.0, 1.0)

    # syllables at 3-5 per second with an opening that varies syllable to syllable, and pauses
    rate = 4.0 + 0.8 * _smooth_noise(rng, t, 0.2)
    phase = 2 * np.pi * np.cumsum(rate) / DEFAULT_FPS if n > 1 else np.zeros(1)
    depth = 0.15 + 0.55 * np.clip(0.5 + 0.5 * _smooth_noise(rng, t, 0.6), 0, 1)
    talking = np.clip(1.5 * (0.3 + _smooth_noise(rng, t, 0.08)), 0, 1)
    put("jawOpen", depth * talking * np.maximum(0.0, np.sin(phase)) ** 0.8)
    for ch, hz, amp in (("mouthFunnel", 0.35, 0.8), ("mouthPucker", 0.27, 0.8), ("mouthClose", 0.5, 0.3),
                        ("mouthRollLower", 0.3, 0.4), ("mouthUpperUpLeft", 0.4, 0.4),
                        ("mouthLowerDownLeft", 0.45, 0.5)):
        put(ch, amp * np.clip(_smooth_noise(rng, t, hz) - 0.2, 0, 1) * talking)
    w[:, idx["mouthUpperUpRight"]] = w[:, idx["mouthUpperUpLeft"]]
    w[:, idx["mouthLowerDownRight"]] = w[:, idx["mouthLowerDownLeft"]]
    for side in ("Left", "Right"):
        s = np.clip(_smooth_noise(rng, t, 0.3) - 0.1, 0, 1)
        put("mouthStretch" + side, 0.6 * s)
        put("mouthPress" + side, 0.5 * np.clip(-_smooth_noise(rng, t, 0.3) - 0.3, 0, 1))
    # six emotions take turns, each rising and falling over ~4 s, at random strengths
    emos = ["sfm_happiness", "sfm_sadness", "sfm_surprise", "sfm_anger", "sfm_disgust", "sfm_fear"]
    period = 4.0
    k = np.floor(t / period).astype(int)
    env = np.sin(np.pi * (t / period - k)) ** 2
    order = rng.permutation(len(emos))
    strength = rng.uniform(0.4, 1.0, k.max() + 1)
    for j in range(k.max() + 1):
        sel = k == j
        w[sel, idx[emos[order[j % len(emos)]]]] = strength[j] * env[sel]
    smile = w[:, idx["sfm_happiness"]] * 0.6 + 0.3 * np.clip(_smooth_noise(rng, t, 0.15) - 0.4, 0, 1)
    put("mouthSmileLeft", smile)
    put("mouthSmileRight", smile)
    put("browInnerUp", 0.7 * np.clip(_smooth_noise(rng, t, 0.25) - 0.3, 0, 1))
    # a 0.25 s blink every ~3 s
    blink = np.zeros(n)
    tb = rng.uniform(0.5, 2.0)
    while tb < t[-1] + 1:
        blink = np.maximum(blink, np.exp(-0.5 * ((t - tb) / 0.05) ** 2))
        tb += rng.uniform(2.0, 4.0)
    put("eyeBlinkLeft", blink)
    put("eyeBlinkRight", blink)
    return w


def draw_background(width: int, height: int, rng: np.random.Generator,
                    base_bgr: tuple[float, float, float] = (150, 160, 165)) -> np.ndarray:
    """(H, W, 3) uint8 BGR: a wall gradient with a picture frame and a shelf (edges for Canny).

    The wall's colour is ``base_bgr`` (0-255) jittered by ±20 per channel from ``rng``; the film
    clip (:mod:`evp_anim.footage.film_clip`) passes a different base per shot.
    """
    h, w = height, width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.array(base_bgr, np.float32) + rng.uniform(-20, 20, 3).astype(np.float32)
    img = base + (xx / w - 0.5)[..., None] * 40 - (yy / h)[..., None] * 30
    img = np.clip(img, 0, 255).astype(np.uint8)
    cv2.rectangle(img, (int(0.05 * w), int(0.08 * h)), (int(0.22 * w), int(0.35 * h)), (60, 90, 120), 3)
    cv2.rectangle(img, (int(0.78 * w), int(0.12 * h)), (int(0.95 * w), int(0.30 * h)), (90, 60, 50), -1)
    cv2.line(img, (0, int(0.62 * h)), (int(0.2 * w), int(0.62 * h)), (70, 70, 70), 4)
    cv2.line(img, (int(0.8 * w), int(0.66 * h)), (w, int(0.66 * h)), (70, 70, 70), 4)
    return img


HAIR_BGR = (30, 35, 45)
SHIRT_BGR = (70, 50, 40)


def draw_body(img: np.ndarray, lm2d: np.ndarray, skin_bgr: tuple[int, int, int],
              hair_bgr: tuple[int, int, int] = HAIR_BGR, shirt_bgr: tuple[int, int, int] = SHIRT_BGR,
              hair: str = "cap", shoulders_y: float | None = None) -> None:
    """Draw hair behind the head and neck/shoulders under it, from the frame's (68, 2) px
    landmarks ``lm2d`` (in place; colours are 0-255 BGR; ``skin_bgr`` is the face's, the neck gets
    0.8 of it).

    hair: "cap" (a dark cap over the forehead, wider than the face) or "long" (the cap plus hair
    falling behind the face to below the chin). shoulders_y: px row of the shoulders' base; None
    puts it at the frame's bottom edge (a person in the foreground); a smaller value (a person
    further back) adds the torso from the shoulders down to the bottom edge.
    """
    if hair not in ("cap", "long"):
        raise EvpError(f"hair must be 'cap' or 'long', got {hair!r}")
    h, w = img.shape[:2]
    base = float(h if shoulders_y is None else shoulders_y)
    jaw = lm2d[:17]
    cx = float(jaw[:, 0].mean())
    width = float(np.linalg.norm(jaw[16] - jaw[0]))
    top = float(lm2d[17:27, 1].min())
    chin = lm2d[8]
    if hair == "long":
        # drawn first, so neck and shoulders lie over its lower end and the face over its middle
        cv2.ellipse(img, (int(cx), int(0.5 * (top + chin[1]) - 0.05 * width)),
                    (int(0.72 * width), int(0.5 * (chin[1] - top) + 0.55 * width)), 0, 0, 360,
                    hair_bgr, -1, cv2.LINE_AA)
    # shoulders and a neck under the chin
    neck_w = 0.32 * width
    cv2.ellipse(img, (int(cx), int(base + 0.15 * width)), (int(1.3 * width), int(0.55 * width)), 0, 180, 360,
                shirt_bgr, -1, cv2.LINE_AA)
    if base + 0.15 * width < h:
        cv2.rectangle(img, (int(cx - 1.3 * width), int(base + 0.15 * width)), (int(cx + 1.3 * width), h),
                      shirt_bgr, -1, cv2.LINE_AA)
    pts = np.array([[chin[0] - neck_w, chin[1] - 0.2 * width], [chin[0] + neck_w, chin[1] - 0.2 * width],
                    [cx + 1.1 * neck_w, base], [cx - 1.1 * neck_w, base]], np.int32)
    cv2.fillPoly(img, [pts], tuple(int(0.8 * c) for c in skin_bgr), cv2.LINE_AA)
    # hair: a dark cap over the forehead, wider than the face
    cv2.ellipse(img, (int(cx), int(top + 0.05 * width)), (int(0.62 * width), int(0.42 * width)), 0, 180, 360,
                hair_bgr, -1, cv2.LINE_AA)


def face_renderers(rig, skin_bgr: tuple[float, float, float] | None = None) -> tuple:
    """The two :class:`~evp_anim.face.raster.FaceRenderer` (over black, over white) that
    :func:`face_layer` needs, at 2x supersampling; ``skin_bgr`` (0-255 BGR, default the
    renderer's) colours the skin."""
    from ..face.raster import FaceRenderer

    kw = {} if skin_bgr is None else {"skin": tuple(float(c) / 255.0 for c in skin_bgr)}
    return (FaceRenderer(rig, supersample=2, background=(0, 0, 0), **kw),
            FaceRenderer(rig, supersample=2, background=(255, 255, 255), **kw))


def face_layer(renderers: tuple, width: int, height: int, **render_kw) -> tuple[np.ndarray, np.ndarray]:
    """One face as a layer: (colour (H, W, 3) float32 0-255 BGR premultiplied by coverage,
    alpha (H, W, 1) float32 in [0, 1]).

    ``renderers`` from :func:`face_renderers`; ``render_kw`` go to ``FaceRenderer.render``
    (identity, weights, rotation, scale, translation); the square render of side max(W, H) is
    cropped to (H, W). Composite with ``below * (1 - alpha) + colour``.
    """
    black, white = renderers
    side = max(width, height)
    a = black.render(size=side, **render_kw)[:height, :width].astype(np.float32)
    b = white.render(size=side, **render_kw)[:height, :width].astype(np.float32)
    # two backgrounds give the coverage exactly: b - a = 255 * (1 - alpha)
    alpha = np.clip(1.0 - (b - a).mean(axis=2, keepdims=True) / 255.0, 0.0, 1.0)
    return a, alpha


def render_synthetic_frames(cfg: SyntheticFootageConfig, sfm_dir: str | Path):
    """Yield (frame (H, W, 3) uint8 BGR, index) and finally return the ground-truth Track.

    Use :func:`make_synthetic_footage` to write a video; this generator is for in-memory tests.
    """
    from ..face.channels import RIG_CHANNELS
    from ..face.projection import project
    from ..face.raster import SKIN_BGR
    from ..face.rig import FaceRig

    cfg.validate()
    rig = FaceRig(sfm_dir)
    rng = np.random.default_rng(cfg.seed + 1)
    identity = rig.sample_identity(rng, cfg.identity_scale)
    neutral = rig.landmarks_3d(identity)
    jaw_mm = float(neutral[:17, 0].max() - neutral[:17, 0].min())
    motion = synthetic_motion(cfg, RIG_CHANNELS, jaw_mm)
    lm3d = rig.landmarks_3d(identity, motion["weights"].astype(np.float32))
    lm2d = project(lm3d, motion["rotation"], motion["translation"], motion["scale"])
    renderers = face_renderers(rig)
    bg = draw_background(cfg.width, cfg.height, rng)
    skin = tuple(int(255 * c) for c in SKIN_BGR)
    for i in range(cfg.n_frames):
        a, alpha = face_layer(renderers, cfg.width, cfg.height, identity=identity,
                              weights=motion["weights"][i].astype(np.float32), rotation=motion["rotation"][i],
                              scale=float(motion["scale"][i]), translation=motion["translation"][i])
        frame = bg.copy()
        draw_body(frame, lm2d[i], skin)
        out = frame.astype(np.float32) * (1.0 - alpha) + a
        yield np.clip(out + 0.5, 0, 255).astype(np.uint8), i
    track = Track.new(
        lm2d.astype(np.float32), fps=cfg.fps, image_size=(cfg.width, cfg.height),
        landmarks_3d=lm3d.astype(np.float32), pose_rotation=motion["rotation"].astype(np.float32),
        pose_translation=motion["translation"].astype(np.float32),
        pose_scale=motion["scale"].astype(np.float32), identity=identity,
        expression=motion["weights"].astype(np.float32), expression_names=list(RIG_CHANNELS),
        info={"synthetic_footage": True, "seed": cfg.seed, "face_px": cfg.face_px},
        provenance={"model": "synthetic-footage"},
    )
    return track


def write_rendered_frames(gen, video_path: str | Path, fps: float, size: tuple[int, int], progress=None):
    """Encode a frame generator's (frame (H, W, 3) uint8 BGR, index) pairs to ``video_path``
    (H.264, crf 16, at ``fps``, ``size`` = (width, height)) and return the generator's return
    value (its ground truth); ``progress(done)`` after each frame."""
    from ..video_io import open_video_writer

    with open_video_writer(video_path, fps, size, crf=16) as writer:
        while True:
            try:
                frame, i = next(gen)
            except StopIteration as stop:
                return stop.value
            writer.write(frame)
            if progress is not None:
                progress(i + 1)


def make_synthetic_footage(video_path: str | Path, sfm_dir: str | Path,
                           cfg: SyntheticFootageConfig | None = None,
                           track_path: str | Path | None = None, progress=None) -> Track:
    """Render synthetic target footage to ``video_path`` (.mp4, 25 fps H.264) and return its truth.

    The ground-truth Track is also saved to ``track_path`` when given (default: none).
    ``progress(done)`` is called after each frame.
    """
    cfg = cfg or SyntheticFootageConfig()
    track = write_rendered_frames(render_synthetic_frames(cfg, sfm_dir), video_path, cfg.fps,
                                  (cfg.width, cfg.height), progress)
    track.info["video"] = Path(video_path).name
    if track_path is not None:
        save_track(track, track_path)
    return track


def photo_footage_warps(n_frames: int, size: int, fps: float = DEFAULT_FPS, zoom: float = 0.15,
                        shift_px: float = 25.0) -> np.ndarray:
    """(T, 2, 3) smooth similarity warps (zoom about the centre + shift) for :func:`make_photo_footage`.

    The zoom breathes between 1 and 1 + ``zoom`` every 6 s and the shift wanders ±``shift_px``
    (x every 9 s, y every 7 s): slow camera-like motion.
    """
    t = np.arange(n_frames) / fps
    a = 1.0 + zoom * 0.5 * (1 - np.cos(2 * np.pi * t / 6.0))
    b = np.stack([shift_px * np.sin(2 * np.pi * t / 9.0), 0.6 * shift_px * np.sin(2 * np.pi * t / 7.0 + 1.0)], 1)
    c = size / 2.0
    return np.stack([[[a[i], 0, (1 - a[i]) * c + b[i, 0]], [0, a[i], (1 - a[i]) * c + b[i, 1]]]
                     for i in range(n_frames)])


def make_photo_footage(image_bgr: np.ndarray, video_path: str | Path, n_frames: int = 250,
                       fps: float = DEFAULT_FPS, progress=None) -> np.ndarray:
    """Footage of a real photograph (e.g. ``skimage.data.astronaut()``) moved smoothly.

    The (H, W, 3) uint8 BGR image (square, even side) is warped per frame by
    :func:`photo_footage_warps` (reflecting its border) and written as 25 fps H.264 to
    ``video_path``. Returns the (T, 2, 3) warps. The face does not talk: the renderer's real-photo
    target (real skin and hair texture), not a test of mouth shapes.
    """
    from ..video_io import open_video_writer

    h, w = image_bgr.shape[:2]
    if h != w or w % 2:
        raise EvpError(f"photo footage needs a square image with an even side, got {w}x{h}")
    warps = photo_footage_warps(n_frames, w, fps)
    with open_video_writer(video_path, fps, (w, h), crf=16) as writer:
        for i, m in enumerate(warps):
            writer.write(cv2.warpAffine(image_bgr, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
            if progress is not None:
                progress(i + 1)
    return warps
