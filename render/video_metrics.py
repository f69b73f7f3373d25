"""Video metrics of a trained renderer (``evp-anim eval-video``), by self-reenactment.

The held-out frames (the last ``holdout`` of the footage, never seen in training) are rendered
from the footage's *own* landmarks, so the real frames are the ground truth:

* SSIM and PSNR (skimage.metrics, 8-bit, colour) between the generated S x S crop (the face
  painted and blended into the known surroundings, exactly what is pasted into the frame) and
  the real crop; also SSIM and PSNR on the face region alone (the blanked region the network
  paints; the rest of the crop is known footage passed through);
* mouth landmark distance: dlib's tracker (the one ``evp-anim track`` uses) run on the rendered
  full frames, its 20 mouth points against the driving landmarks, mean Euclidean distance in
  crop px; the same tracker on the real frames gives the floor (tracker noise);
* temporal flicker: mean |(g_t - g_{t-1}) - (r_t - r_{t-1})| over the face region in 8-bit
  levels (0: the rendered face changes exactly as the real one does), next to mean |r_t - r_{t-1}|;
* FID only with user-supplied Inception weights (a TorchScript feature extractor such as the
  StyleGAN2-ADA ``inception-2015-12-05.pt``); none can be downloaded here. On a few hundred
  frames FID is biased high and only comparable between runs on the same frames.

A figure that cannot be computed (no face re-detected on the generated frames, identical images
giving an infinite PSNR, ...) is ``None`` (JSON ``null``) and ``null_reasons[name]`` says why:
the results never hold NaN or infinity, so they are valid JSON (``json.dumps(allow_nan=False)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from evp_anim.errors import EvpError
from evp_anim.tracks import MOUTH

if TYPE_CHECKING:
    from .inference import RenderModel

from .data import face_mask


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    if mask is not None:
        d = d[mask]
    mse = float(d.mean()) if d.size else 0.0
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def evaluate_holdout(model: "RenderModel", target, video: str | Path, start: int | None = None,
                     frames_out: Path | None = None, fid_weights: Path | None = None,
                     progress: Callable[[int], None] | None = None) -> dict:
    """Metrics of the GAN renderer on footage frames [start, end) (default: its held-out frames)."""
    from .inference import iter_rendered

    start = int(model.meta["holdout_start"] if start is None else start)
    _check_holdout(start, target)
    if int(model.meta.get("n_frames", target.n_frames)) != target.n_frames:
        raise EvpError(f"the model was trained on {model.meta['n_frames']} frames of footage, the track has "
                       f"{target.n_frames}: give the track of the model's own footage")
    aligned = _self_driven(target, start)
    stream = ((i, frame, gen, real, crops) for i, frame, gen, real, crops in iter_rendered(aligned, target, video, model))
    return score_stream(stream, aligned, target, video, model.size, frames_out, fid_weights, progress)


def _check_holdout(start: int, target) -> None:
    if not 0 <= start < target.n_frames - 1:
        raise EvpError(f"no held-out frames to evaluate (start {start}, footage {target.n_frames} frames)")


def _self_driven(target, start: int):
    """The footage's own track from ``start`` on, as an aligned track over those footage frames."""
    aligned = target.slice(start)
    aligned.info["target_frames"] = list(range(start, target.n_frames))
    return aligned


def evaluate_warp_holdout(target, video: str | Path, holdout: float = 0.1, size: int = 256,
                          crop_margin: float = 1.9, frames_out: Path | None = None,
                          progress: Callable[[int], None] | None = None) -> dict:
    """Metrics of the no-training warp path (:mod:`render.warp_dub`) by self-reenactment: the
    last ``holdout`` of the footage is rebuilt from mouths of the frames before it only, driven
    by its own landmarks, and scored like the GAN renderer on ``size`` px face crops."""
    from .guidance import crop_frame, footage_crops
    from .warp_dub import MouthLibrary, WarpDubber, iter_warped

    start = int(np.floor(target.n_frames * (1.0 - holdout)))
    _check_holdout(start, target)
    lib = MouthLibrary.build(video, target, allowed=np.arange(target.n_frames) < start)
    dubber = WarpDubber(lib)
    aligned = _self_driven(target, start)
    idx = np.arange(start, target.n_frames)
    crops = footage_crops(target.landmarks_2d, idx, size, crop_margin, fps=target.fps, cuts=target.info.get("cuts"))

    def stream():
        for i, frame, _j, real in iter_warped(aligned, target, video, dubber, with_source=True, model_shapes=False):
            yield i, frame, crop_frame(frame, crops, i), crop_frame(real, crops, i), crops

    res = score_stream(stream(), aligned, target, video, size, frames_out, None, progress)
    res.update({"renderer": "warp", "mode": dubber.mode, "library_frames": int(len(lib.frames))})
    return res


def score_stream(stream, aligned, target, video: str | Path, size: int, frames_out: Path | None = None,
                 fid_weights: Path | None = None, progress: Callable[[int], None] | None = None) -> dict:
    """The figures of the module docstring over ``stream``: (i, output frame, generated crop,
    real crop, crops) per output frame i of ``aligned`` (the footage's own landmarks over frames
    ``aligned.info["target_frames"]``). Real full frames are decoded from ``video`` for the
    tracker's floor."""
    from skimage.metrics import structural_similarity

    start = int(aligned.info["target_frames"][0])
    ssim, psnr, psnr_face, ssim_face = [], [], [], []
    flick, real_motion = [], []
    gen_frames, real_frames, scales = [], [], []
    prev = None
    gen_crops, real_crops = [], []
    from evp_anim.footage.video import iter_frames
    real_iter = iter(iter_frames(video, target.fps, "bgr24"))
    for _ in range(start):
        next(real_iter)
    for i, frame, gen, real, crops in stream:
        s_mean, s_map = structural_similarity(gen, real, channel_axis=2, data_range=255, full=True)
        ssim.append(s_mean)
        psnr.append(_psnr(gen, real))
        lm = crops.to_crop(aligned.landmarks_2d[i], i)
        m = face_mask(lm, size) > 0
        ssim_face.append(float(s_map.mean(axis=2)[m].mean()))
        psnr_face.append(_psnr(gen, real, m))
        g, r = gen.astype(np.float32), real.astype(np.float32)
        if prev is not None:
            pg, pr = prev
            flick.append(float(np.abs((g - pg) - (r - pr))[m].mean()))
            real_motion.append(float(np.abs(r - pr)[m].mean()))
        prev = (g, r)
        gen_frames.append(frame)
        real_frames.append(next(real_iter))
        scales.append(size / float(crops.side[i]))
        if fid_weights is not None:
            gen_crops.append(gen)
            real_crops.append(real)
        if frames_out is not None and i % 10 == 0:
            import cv2
            frames_out.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(frames_out / f"holdout_{start + i:05d}.png"), np.hstack([gen, real]))
        if progress is not None:
            progress(i + 1)
    reasons: dict[str, str] = {}
    sc = np.asarray(scales)
    gen_m = redetected_mouth(gen_frames, aligned.landmarks_2d, target.fps, sc)
    real_m = redetected_mouth(real_frames, aligned.landmarks_2d, target.fps, sc)
    for key, m, what in (("mouth_ld_px", gen_m, "generated"), ("mouth_ld_real_px", real_m, "real")):
        if m["reason"]:
            reasons[key] = f"{m['reason']} ({what} frames)"
    out = {
        "frames": len(ssim), "first_frame": start, "size": size,
        "ssim": float(np.mean(ssim)), "psnr_db": float(np.mean(psnr)), "psnr_face_db": float(np.mean(psnr_face)),
        "ssim_face": float(np.mean(ssim_face)),
        "ssim_min": float(np.min(ssim)),
        "mouth_ld_px": gen_m["ld_px"], "mouth_ld_real_px": real_m["ld_px"],
        "mouth_open_corr": gen_m["open_corr"], "mouth_open_corr_real": real_m["open_corr"],
        "frames_without_face": gen_m["missing"], "frames_without_face_real": real_m["missing"],
        "flicker": float(np.mean(flick)) if flick else 0.0,
        "real_motion": float(np.mean(real_motion)) if real_motion else 0.0,
    }
    out["fid"] = fid(gen_crops, real_crops, fid_weights) if fid_weights is not None else None
    if fid_weights is None:
        reasons["fid"] = "not computed: no --fid-weights (a TorchScript Inception) given"
    return finite_or_null(out, reasons)


def redetected_mouth(frames: list[np.ndarray], driving: np.ndarray, fps: float, scale=1.0) -> dict:
    """dlib's tracker (the one ``evp-anim track`` uses) run on ``frames`` (T of (H, W, 3) uint8)
    and compared with the (T, 68, 2) px ``driving`` landmarks that made them.

    Returns ``ld_px``: mean distance of the 20 mouth points, px times ``scale`` (a scalar or (T,),
    e.g. crop px per frame px); ``open_corr``: correlation of the re-detected inner-lip gap with
    the driving one (None when either is constant); ``missing``: frames where no face was found;
    ``reason``: why ``ld_px`` is None, else "".
    """
    from evp_anim.footage.tracking import TrackerOptions, track_frames

    from .warp_dub import lip_gap

    out = {"ld_px": None, "open_corr": None, "missing": len(frames), "reason": ""}
    try:
        # unsmoothed: each frame's own mouth (the One-Euro filter would blur a fast closure)
        res = track_frames(frames, fps, TrackerOptions(smooth=False))
    except EvpError:   # no face found at all (e.g. an untrained model's blob)
        out["reason"] = f"no face found: dlib re-detected no face in any of the {len(frames)} frames"
        return out
    if not res.valid.any():
        out["reason"] = f"no face found: dlib's landmarks were rejected on all {len(frames)} frames"
        return out
    drive = np.asarray(driving, np.float64)[:len(frames)]
    sc = np.broadcast_to(np.asarray(scale, np.float64), (len(frames),))[:, None]
    d = np.linalg.norm(res.landmarks[:, MOUTH] - drive[:, MOUTH], axis=2) * sc
    out["ld_px"] = float(d[res.valid].mean())
    out["missing"] = int((~res.valid).sum())
    a, b = lip_gap(res.landmarks[res.valid]), lip_gap(drive[res.valid])
    if len(a) > 2 and a.std() > 1e-9 and b.std() > 1e-9:
        out["open_corr"] = float(np.corrcoef(a, b)[0, 1])
    return out


def finite_or_null(res: dict, reasons: dict[str, str] | None = None) -> dict:
    """``res`` with every NaN / infinite float replaced by None, and ``res["null_reasons"]`` naming,
    for every None figure, why it is missing (``reasons`` first, else a reason read off the value:
    an infinite PSNR means identical images, a NaN an empty region or no data)."""
    reasons = dict(reasons or {})
    out = {}
    for k, v in res.items():
        if isinstance(v, (float, np.floating)) and not np.isfinite(v):
            if k not in reasons:
                reasons[k] = ("identical to the real frames (infinite PSNR)" if np.isinf(v) and v > 0 else
                              "not computable (no pixels or frames to measure)")
            v = None
        out[k] = v
    out["null_reasons"] = {k: r for k, r in reasons.items() if out.get(k) is None}
    return out


def fid(gen: list[np.ndarray], real: list[np.ndarray], weights: Path) -> float:
    """Fréchet Inception Distance between two sets of (S, S, 3) uint8 BGR crops.

    ``weights``: a TorchScript Inception feature extractor taking (N, 3, 299, 299) uint8 RGB
    (StyleGAN2-ADA's ``inception-2015-12-05.pt`` convention, called with ``return_features=True``)
    or float in [0, 1] when that call fails; it must return (N, 2048) features.
    """
    import cv2
    import torch
    from scipy import linalg

    weights = Path(weights)
    if not weights.is_file():
        raise EvpError(f"--fid-weights: {weights} not found")
    try:
        net = torch.jit.load(str(weights), map_location="cpu").eval()
    except Exception as e:  # noqa: BLE001
        raise EvpError(f"{weights}: not a TorchScript Inception model ({type(e).__name__})") from None

    def feats(images):
        out = []
        for k in range(0, len(images), 16):
            x = np.stack([cv2.resize(cv2.cvtColor(im, cv2.COLOR_BGR2RGB), (299, 299), interpolation=cv2.INTER_LINEAR)
                          for im in images[k:k + 16]]).transpose(0, 3, 1, 2)
            with torch.no_grad():
                try:
                    f = net(torch.from_numpy(x), return_features=True)
                except Exception:  # noqa: BLE001 - a plain float-input extractor
                    f = net(torch.from_numpy(x).float() / 255.0)
            out.append(f.reshape(len(x), -1).double().numpy())
        return np.concatenate(out)

    a, b = feats(gen), feats(real)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
