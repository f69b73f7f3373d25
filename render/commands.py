"""CLI commands of the renderer: ``render train``, ``render run``, ``dub``, ``eval-video``.

Discovered by :mod:`evp_anim.cli` (``register(app)``); heavy imports stay inside the commands.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from evp_anim.cli_common import SfmDirOpt, reporter, sfm
from evp_anim.errors import EvpError

render_app = typer.Typer(help="The edge-to-video renderer: train one per target video, then render with it.",
                         no_args_is_help=True)


def _mp4_out(path: Path, what: str) -> None:
    if path.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise EvpError(f"{what} output must end in .mp4, .mov or .mkv, got {path.name!r}")


def _threads(n: Optional[int]) -> None:
    if n:
        import torch
        torch.set_num_threads(n)


def train_target(video: Path, track_path: Path, output: Path, size: int = 256, minutes: Optional[float] = None,
                 steps: Optional[int] = None, holdout: float = 0.1, batch: int = 2, lr: float = 5e-4,
                 gan_start: float = 0.75, preview_every: int = 200, checkpoint_every: int = 100, bf16: bool = True,
                 rep=None) -> dict:
    """Train (or resume) a renderer for ``video`` into folder ``output``; returns the model's meta."""
    from evp_anim.tracks import load_track

    from .data import TargetFrames, video_fingerprint
    from .trainer import RenderTrainConfig, RenderTrainer

    rep = rep or reporter()
    if int(os.environ.get("RANK", "0")) != 0:   # under torchrun only rank 0 reports
        from evp_anim.progress import Reporter
        rep = Reporter(quiet=True)
    if minutes is None and steps is None:
        minutes = 60.0
    if output.exists() and not output.is_dir():
        raise EvpError(f"{output} exists and is not a folder: give a folder for the model")
    cfg = RenderTrainConfig(size=size, holdout=holdout, batch=batch, lr=lr, gan_start=gan_start,
                            preview_every=preview_every, checkpoint_every=checkpoint_every, bf16=bf16)
    cfg.validate()
    target = load_track(track_path)
    fp = video_fingerprint(video)
    rep.start("render-train-frames", total=target.n_frames, description="decode footage")
    frames = TargetFrames.load(video, target, size, cfg.crop_margin, holdout, progress=rep.update)
    rep.success(frames=len(frames))
    info = {"video": video.name, "image_size": list(target.image_size), "n_frames": target.n_frames,
            "track": track_path.name}
    last = {}

    def progress(frac, logs):
        last.update(logs)
        rep.fraction(frac)

    trainer = RenderTrainer(frames, output, cfg, fp, info, steps=steps, minutes=minutes, progress=progress)
    if trainer.rank == 0:   # the footage's track travels with the model (render run / eval-video use it)
        from evp_anim.atomic import write_bytes_atomic
        output.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(output / "target_track.npz", track_path.read_bytes())
    if trainer.resumed:
        rep.info(f"resuming {output} at step {trainer.step} ({trainer.elapsed / 60:.1f} min trained)")
    rep.start("render-train", description="train renderer")
    meta = trainer.run()
    rep.success(output=str(output), steps=meta["steps"], seconds=meta["train_seconds"])
    rep.info(f"trained {meta['steps']} steps in {meta['train_seconds'] / 60:.1f} min on frames "
             f"0..{frames.n_train - 1} (frames {frames.n_train}..{len(frames) - 1} held out) → {output}"
             + (f"; last losses {', '.join(f'{k} {v:.4f}' for k, v in last.items())}" if last else ""))
    return meta


@render_app.command("train")
def train(
    video: Path = typer.Argument(..., help="Target footage (the face to re-animate)."),
    track: Path = typer.Option(..., "--track", help="The footage's track from `evp-anim track` (.npz)."),
    output: Path = typer.Option(..., "-o", "--output", help="Model folder to write (resumes if it holds a checkpoint)."),
    size: int = typer.Option(256, "--size", help="Face crop size in px (256, or 512 for sharper, ~4x slower)."),
    minutes: Optional[float] = typer.Option(None, "--minutes", min=0.05, help="Training time budget "
                                            "(counted across resumes; default 60 unless --steps is given)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training step budget."),
    holdout: float = typer.Option(0.1, "--holdout", min=0.0, max=0.5, help="Fraction of the footage (its end) "
                                  "left out of training for `evp-anim eval-video`."),
    batch: int = typer.Option(2, "--batch", min=1, help="Clips of 3 frames per step (per process)."),
    lr: float = typer.Option(5e-4, "--lr", min=1e-6, help="Generator learning rate (decays to 10%)."),
    gan_start: float = typer.Option(0.75, "--gan-start", min=0.0, max=1.0, help="Fraction of the budget "
                                    "trained on L1 + SSIM alone before the discriminators join (1: no GAN)."),
    preview_every: int = typer.Option(200, "--preview-every", min=0, help="Steps between preview PNGs (0: none)."),
    bf16: bool = typer.Option(True, "--bf16/--no-bf16", help="bfloat16 autocast (~1.6x faster on CPUs "
                              "with AVX512-BF16; losses stay float32)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
) -> None:
    """Train the edge-to-video renderer for one target video (per-target, as in EVP)."""
    _threads(threads)
    train_target(video, track, output, size, minutes, steps, holdout, batch, lr, gan_start, preview_every,
                 bf16=bf16)


def _load_audio(path: Optional[Path]):
    if path is None:
        return None, 16000
    from evp_anim.audio.io import load_audio
    return load_audio(path, 16000), 16000


def render_dubbed(aligned_path: Path, target_video: Path, model_dir: Path, output: Path,
                  target_track: Optional[Path] = None, audio: Optional[Path] = None, rep=None,
                  prev_blur: Optional[float] = None) -> int:
    """Render ``aligned_path`` over ``target_video`` with the model in ``model_dir`` into ``output``."""
    from evp_anim.tracks import load_track

    from .inference import RenderModel, check_pair, render_video

    rep = rep or reporter()
    _mp4_out(output, "dubbed video")
    aligned = load_track(aligned_path)
    model = RenderModel(model_dir, prev_blur=prev_blur)
    model.check_target(target_video)
    if target_track is None:
        cand = (model_dir if model_dir.is_dir() else model_dir.parent) / "target_track.npz"
        if not cand.is_file():
            raise EvpError(f"no target track: pass --target-track (the footage's track from `evp-anim track`)")
        target_track = cand
    target = load_track(target_track)
    check_pair(aligned, target, model)
    if audio is None and aligned.info.get("audio") and Path(aligned.info["audio"]).is_file():
        audio = Path(aligned.info["audio"])
    samples, sr = _load_audio(audio)
    rep.start("render", total=aligned.n_frames, description="render")
    n = render_video(aligned, target, target_video, model, output, audio=samples, sample_rate=sr,
                     progress=rep.update)
    rep.success(output=str(output), frames=n)
    rep.info(f"wrote {output} ({n} frames, {n / aligned.fps:.2f} s" + (f", audio {audio})" if audio else ", no audio)"))
    return n


@render_app.command("run")
def run(
    aligned: Path = typer.Argument(..., help="Aligned track from `evp-anim align` (.npz)."),
    target: Path = typer.Option(..., "--target", help="The target footage the model was trained on."),
    model: Path = typer.Option(..., "--model", help="Model folder from `evp-anim render train`."),
    output: Path = typer.Option(..., "-o", "--output", help="Dubbed video to write (.mp4)."),
    target_track: Optional[Path] = typer.Option(None, "--target-track", help="The footage's track (default: "
                                                "the one saved with the model)."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Audio to mux in (default: the aligned "
                                         "track's speech when found)."),
    prev_blur: Optional[float] = typer.Option(None, "--prev-blur", min=0.0, help="Blur (sigma, crop px) of the "
                                              "fed-back previous frame (0: none; default 1 px per 256 px)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
) -> None:
    """Render the dubbed video: generated faces pasted into the target footage, new audio muxed."""
    _threads(threads)
    render_dubbed(aligned, target, model, output, target_track, audio, prev_blur=prev_blur)


def eval_video(
    model: Path = typer.Argument(..., help="Model folder from `evp-anim render train`."),
    target: Path = typer.Option(..., "--target", help="The footage the model was trained on."),
    target_track: Optional[Path] = typer.Option(None, "--target-track", help="Its track (default: the one "
                                                "saved with the model)."),
    frames_out: Optional[Path] = typer.Option(None, "--frames-out", help="Also write generated | real PNGs "
                                              "of every 10th held-out frame here."),
    fid_weights: Optional[Path] = typer.Option(None, "--fid-weights", help="TorchScript Inception feature "
                                               "extractor for FID (none can be downloaded here)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the figures as JSON."),
    prev_blur: Optional[float] = typer.Option(None, "--prev-blur", min=0.0, help="Blur (sigma, crop px) of the "
                                              "fed-back previous frame (0: none; default 1 px per 256 px)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
) -> None:
    """Self-reenactment metrics on the held-out end of the footage: SSIM, PSNR, mouth LD, flicker, FID."""
    from evp_anim.atomic import write_text_atomic
    from evp_anim.tracks import load_track

    from .inference import RenderModel
    from .video_metrics import evaluate_holdout

    _threads(threads)
    m = RenderModel(model, prev_blur=prev_blur)
    m.check_target(target)
    tt = target_track or ((model if model.is_dir() else model.parent) / "target_track.npz")
    if not tt.is_file():
        raise EvpError("no target track: pass --target-track (the footage's track from `evp-anim track`)")
    tr = load_track(tt)
    rep = reporter()
    n = tr.n_frames - int(m.meta["holdout_start"])
    rep.start("eval-video", total=n, description="held-out frames")
    res = evaluate_holdout(m, tr, target, frames_out=frames_out, fid_weights=fid_weights, progress=rep.update)
    res["model"] = str(model)
    res["train_seconds"] = m.meta.get("train_seconds")
    res["train_steps"] = m.meta.get("steps")
    rep.success(**{k: v for k, v in res.items() if isinstance(v, (int, float, str)) or v is None})
    lines = [
        f"held-out frames {res['first_frame']}..{res['first_frame'] + res['frames'] - 1} ({res['frames']}), "
        f"{res['size']}x{res['size']} crops, model trained {res['train_steps']} steps / "
        f"{(res['train_seconds'] or 0) / 60:.1f} min",
        f"SSIM {res['ssim']:.4f} (min {res['ssim_min']:.4f})   PSNR {res['psnr_db']:.2f} dB   "
        f"(face region only: SSIM {res['ssim_face']:.4f}, PSNR {res['psnr_face_db']:.2f} dB)",
        f"mouth landmark distance (dlib re-detected vs driving) {res['mouth_ld_px']:.2f} px "
        f"[real frames: {res['mouth_ld_real_px']:.2f} px]; frames without a face {res['frames_without_face']}",
        f"temporal flicker {res['flicker']:.2f} levels (real frame-to-frame change {res['real_motion']:.2f})",
        f"FID {res['fid']:.2f}" if res["fid"] is not None else
        "FID: not computed (pass --fid-weights with a TorchScript Inception; none can be downloaded here)",
    ]
    rep.info("\n".join(lines))
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(res, indent=2))


def dub(
    speech: Path = typer.Argument(..., help="Speech to dub (wav, flac, mp3, ...)."),
    target: Path = typer.Argument(..., help="Target footage of the face to dub."),
    output: Path = typer.Option(..., "-o", "--output", help="Dubbed video to write (.mp4)."),
    emotion: str = typer.Option("neutral", "--emotion", "-e", help="One of the 8 MEAD emotions."),
    intensity: float = typer.Option(1.0, "--intensity", "-i", help="Emotion intensity in [0, 1]."),
    model: Optional[Path] = typer.Option(None, "--model", help="Trained renderer folder for this target "
                                         "(default: the cached one, trained now if none)."),
    train_minutes: float = typer.Option(30.0, "--train-minutes", min=0.05, help="Budget for training a "
                                        "renderer when the target has none yet."),
    length_policy: str = typer.Option("loop", "--length-policy", help="loop, pingpong, trim or hold."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where tracks and renderers of targets "
                                             "are kept (default $EVP_ANIM_CACHE or ~/.cache/evp-anim/targets)."),
    evp_model: Optional[Path] = typer.Option(None, "--evp-model", help="EVP model (.pt; default: shipped)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Speech + target footage → dubbed video: animate → track → align → render, with caches."""
    from .dub import dub_video

    _threads(threads)
    _mp4_out(output, "dubbed video")
    dub_video(speech, target, output, emotion=emotion, intensity=intensity, model_dir=model,
              train_minutes=train_minutes, length_policy=length_policy, cache_dir=cache_dir,
              evp_model=evp_model, sfm_dir=sfm(sfm_dir), rep=reporter(), command=" ".join(["evp-anim"] + sys.argv[1:]))


def register(app: typer.Typer) -> None:
    """Add the renderer's commands to the ``evp-anim`` app."""
    app.add_typer(render_app, name="render")
    app.command("eval-video")(eval_video)
    app.command("dub")(dub)
