"""Rendering a dubbed video (``evp-anim render run``): aligned landmarks + target footage -> mp4.

For each output frame i (25 fps, the aligned track's rate) the footage frame
``aligned.info["target_frames"][i]`` is decoded, its face crop and guidance map are built
(:mod:`render.guidance`, the aligned landmarks drawn, the footage's own face region erased),
the generator paints the face (conditioned on its previous output), and the painted face is
pasted back into the full frame with the generator's soft blending mask, warped to the frame.
Frames are encoded as they come (H.264 + AAC); nothing holds more than a few frames, so memory
stays flat for any length. When the footage must be revisited out of order (ping-pong), decoded
frames are spooled to a temporary file on disk instead of memory
(:class:`evp_anim.footage.video.FrameSource`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch

from evp_anim.audio.features import SAMPLE_RATE
from evp_anim.errors import EvpError
from evp_anim.footage.video import iter_footage

from .data import frame_inputs, to_uint8_image, video_fingerprint
from .guidance import CropTransforms, crop_frame, footage_crops, frame_coverage
from .model_file import MODEL_FILE, load_blob
from .networks import Generator, GeneratorConfig


class RenderModel:
    """A trained generator with the facts of its target (from ``model_dir/model.pt``)."""

    def __init__(self, model_dir: str | Path, bf16: bool | None = None, prev_blur: float | None = None):
        """bf16: bfloat16 autocast (default: as the model was trained; ~20% faster on CPUs with
        AVX512-BF16, outputs within ~1 grey level of float32). prev_blur: Gaussian sigma (crop px)
        applied to the previous generated crop before it is fed back (0: none; default 1 px per
        256 px of crop). It keeps the model's own high-frequency errors from being fed back and
        amplified over long clips (training shows it blurred previous frames too); measured on
        held-out frames it raised face-region PSNR by 0.4 dB (synthetic target, 33 min model) and
        2.8 dB (photo target, 4 min model)."""
        model_dir = Path(model_dir)
        path = model_dir / MODEL_FILE if model_dir.is_dir() else model_dir
        if not path.is_file():
            raise EvpError(f"no trained renderer in {model_dir} ({MODEL_FILE} missing): "
                           f"run `evp-anim render train` first")
        blob = load_blob(path, "model")
        self.meta = blob["meta"]
        try:
            self.gen = Generator(GeneratorConfig.from_dict(blob["generator_config"]))
            self.gen.load_state_dict(blob["generator"])
        except (RuntimeError, KeyError, TypeError) as e:
            raise EvpError(f"{path}: corrupt model ({type(e).__name__})") from None
        self.gen.eval()
        self.gen.to(memory_format=torch.channels_last)
        self.bf16 = bool(self.meta.get("train_config", {}).get("bf16", False)) if bf16 is None else bf16
        self.size = int(self.meta["size"])
        self.crop_margin = float(self.meta["crop_margin"])
        self.path = path
        self.prev_blur = self.size / 256.0 if prev_blur is None else float(prev_blur)
        self._prev: torch.Tensor | None = None

    def check_target(self, video: str | Path, fingerprint: str | None = None) -> None:
        """Refuse footage other than the one this model was trained on (and any footage for a generic
        warm-start renderer, which was trained for none: :mod:`render.warmstart`)."""
        if self.meta.get("generic"):
            name = Path(video).name
            raise EvpError(f"{self.path} is a generic warm-start renderer, not trained for {name}: train it on this "
                           f"footage with `evp-anim render train {name} --track TRACK -o MODEL_DIR --init {self.path}`")
        fp = fingerprint or video_fingerprint(video)
        want = self.meta["fingerprint"]
        if fp != want:
            name = self.meta.get("target", {}).get("video", "another video")
            raise EvpError(f"{self.path.parent} was trained for {name} (sha256 {want[:12]}…), not {Path(video).name} "
                           f"(sha256 {fp[:12]}…): train a model for this video with `evp-anim render train`")

    def reset(self) -> None:
        """Forget the previous frame (start of a new clip)."""
        self._prev = None

    @torch.inference_mode()
    def paint(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Generate one crop from :func:`render.data.frame_inputs` -> (S, S, 3) uint8 BGR (composited)."""
        cl = torch.channels_last
        t = {k: torch.from_numpy(inputs[k])[None].contiguous(memory_format=cl)
             for k in ("guidance", "known", "mask", "alpha")}
        prev = self._prev if self._prev is not None else torch.zeros_like(t["known"])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.gen(t["guidance"], t["known"], t["mask"], t["alpha"], prev).float()
        self._prev = out
        if self.prev_blur > 0:
            a = cv2.GaussianBlur(np.ascontiguousarray(out[0].permute(1, 2, 0).numpy()), (0, 0), self.prev_blur)
            self._prev = torch.from_numpy(a).permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)
        return to_uint8_image(out[0])


def paste_crop(frame: np.ndarray, crop: np.ndarray, alpha: np.ndarray, crops: CropTransforms, i: int) -> np.ndarray:
    """Blend a generated (S, S, 3) crop into the (H, W, 3) frame with its (S, S) soft mask, both
    warped back with the crop's inverse transform. Returns a new uint8 frame."""
    h, w = frame.shape[:2]
    inv = crops.inverse(i)
    warped = cv2.warpAffine(crop, inv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    a = cv2.warpAffine(alpha.astype(np.float32), inv, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    out = frame.astype(np.float32) * (1 - a) + warped.astype(np.float32) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def check_pair(aligned, target, model: RenderModel | None = None) -> np.ndarray:
    """Validate an aligned track against the footage's track; returns footage frame indices (T,)."""
    if tuple(aligned.image_size) != tuple(target.image_size):
        raise EvpError(f"the aligned track is for {aligned.image_size[0]}x{aligned.image_size[1]} images but the "
                       f"target track for {target.image_size[0]}x{target.image_size[1]}: align against this footage's track")
    idx = np.asarray(aligned.info.get("target_frames", np.arange(aligned.n_frames)), np.int64)
    if len(idx) != aligned.n_frames:
        raise EvpError(f"the aligned track has {aligned.n_frames} frames but {len(idx)} footage indices")
    if idx.size and (idx.min() < 0 or idx.max() >= target.n_frames):
        raise EvpError(f"the aligned track uses footage frame {int(idx.max())} but the target track has "
                       f"{target.n_frames} frames: align against this footage's track")
    if model is not None and model.meta.get("target", {}).get("image_size") not in (None, list(target.image_size)):
        raise EvpError(f"the model was trained on {model.meta['target']['image_size']} footage, "
                       f"the target track is {list(target.image_size)}")
    return idx


def iter_rendered(aligned, target, video: str | Path, model: RenderModel,
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, CropTransforms]]:
    """Yield (i, output frame (H, W, 3) uint8 BGR, generated crop (S, S, 3), real crop (S, S, 3), crops)."""
    idx = check_pair(aligned, target, model)
    if aligned.n_frames == 0:
        return
    crops = footage_crops(target.landmarks_2d, idx, model.size, model.crop_margin, fps=target.fps,
                          cuts=target.info.get("cuts"))
    model.reset()
    for i, j, frame in iter_footage(video, target.fps, idx, target.image_size):
        if i > 0 and abs(j - int(idx[i - 1])) > 1:
            model.reset()   # a jump in the footage (loop restart): the previous crop no longer fits
        crop = crop_frame(frame, crops, i)
        inside = frame_coverage(frame.shape, crops, i)
        inp = frame_inputs(crop, crops.to_crop(aligned.landmarks_2d[i], i).astype(np.float32),
                           crops.to_crop(target.landmarks_2d[j], i).astype(np.float32),
                           None if inside.all() else inside)
        out = model.paint(inp)
        yield i, paste_crop(frame, out, inp["alpha"][0], crops, i), out, crop, crops


def render_video(aligned, target, video: str | Path, model: RenderModel, output: str | Path,
                 audio: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE,
                 progress: Callable[[int], None] | None = None) -> int:
    """Render the dubbed video to ``output`` (written atomically); returns the number of frames.

    audio: (N,) float32 mono at ``sample_rate`` Hz, muxed as AAC (None: silent video).
    """
    from evp_anim.video_io import open_video_writer

    w, h = target.image_size
    ew, eh = w - w % 2, h - h % 2   # H.264 needs even sizes: drop a last odd row/column
    n = 0
    with open_video_writer(output, aligned.fps, (ew, eh), audio=audio, sample_rate=sample_rate) as writer:
        for i, frame, _, _, _ in iter_rendered(aligned, target, video, model):
            writer.write(np.ascontiguousarray(frame[:eh, :ew]))
            n += 1
            if progress is not None:
                progress(i + 1)
    return n
