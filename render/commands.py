"""CLI commands of the renderer: ``render train``, ``render pretrain`` (the generic warm start,
:mod:`render.pretrain`), ``render run``, ``dub``, ``eval-video``.

Registered explicitly in :mod:`evp_anim.cli` (``register(app)``). Each command parses its options and calls
the library function in :mod:`render.pipeline` (which keeps its heavy imports inside it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from evp_anim.cli_common import SfmDirOpt, reporter, sfm
from evp_anim.errors import EvpError

from .pipeline import check_video_output, dub_video, evaluate_renderer, evaluate_warp, render_dubbed, train_target
from .warmstart import DEFAULT_INIT_SHRINK

render_app = typer.Typer(help="The edge-to-video renderer: train one per target video, then render with it.",
                         no_args_is_help=True)


DeviceOpt = typer.Option("cpu", "--device", help="Where to train: cpu, or cuda where torch sees a GPU (one "
                         "process, not under torchrun; footage is decoded on the CPU either way).")
LoaderWorkersOpt = typer.Option(0, "--loader-workers", min=0, help="Processes drawing training batches ahead of "
                                "the steps (0: in the training process; give several with --device cuda, where "
                                "one core cannot keep up).")


def _threads(n: Optional[int]) -> None:
    if n:
        import torch
        torch.set_num_threads(n)


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
    precision: str = typer.Option("auto", "--precision", help="auto, fp32 or bf16. auto: fp32 on a CPU without "
                                  "native bf16 (avx512_bf16/amx_bf16: emulated bf16 is ~1.7x slower); with it, the "
                                  "generator's step is timed both ways (~1 s) and bf16 used if 1.15x faster. "
                                  "Losses stay float32."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", hidden=True,
                                        help="Old spelling of --precision bf16 / fp32."),
    init: str = typer.Option("auto", "--init", help="Generator to start from: a model folder (or its model.pt) "
                             "from `evp-anim render pretrain` (a generic face renderer) or another target's; "
                             "auto: the shipped assets/render_warmstart.pt when present and of this --size, else "
                             "random weights; none: random weights. Same --size and generator required. Ignored "
                             "when resuming a checkpoint in -o."),
    cold: bool = typer.Option(False, "--cold", help="Start from random weights (same as --init none)."),
    init_shrink: float = typer.Option(
        DEFAULT_INIT_SHRINK, "--init-shrink", min=0.01, max=1.0,
        help="A warm start's weights are mixed with random ones: s × warm + (1 − s) × random (shrink and "
             "perturb). 1: the warm weights as they are; measured on two synthetic targets: 0.5 ends "
             "0.4-1.0 dB above 1 on held-out frames after 20 min."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    device: str = DeviceOpt,
    loader_workers: int = LoaderWorkersOpt,
) -> None:
    """Train the edge-to-video renderer for one target video (per-target, as in EVP).

    Starts from a generic face renderer (--init, or the shipped assets/render_warmstart.pt made by
    `evp-anim render pretrain`) when there is one of this --size, else from random weights.
    """
    _threads(threads)
    if bf16 is not None:     # the old flag, kept so existing scripts run
        precision = "bf16" if bf16 else "fp32"
    if cold:
        if init.lower() not in ("auto", "none"):
            raise EvpError(f"--cold and --init {init} contradict each other: give one of them")
        init = "none"
    train_target(video, track, output, size, minutes, steps, holdout, batch, lr, gan_start, preview_every,
                 precision=precision, rep=reporter(), init=init, init_shrink=init_shrink, device=device,
                 loader_workers=loader_workers)


@render_app.command("pretrain")
def pretrain(
    output: Path = typer.Option(..., "-o", "--output", help="Model folder to write (resumes if it holds a "
                                "checkpoint; the footage goes to its footage/ folder)."),
    minutes: Optional[float] = typer.Option(None, "--minutes", min=0.05, help="Training time budget, footage "
                                            "making not counted (default 30 unless --steps is given)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training step budget."),
    targets: int = typer.Option(6, "--targets", min=1, help="Synthetic footages (identities) to make and train on."),
    frames: int = typer.Option(400, "--frames", min=12, help="Frames per footage (25 fps; ~0.25 s each to "
                               "render and track on a CPU core)."),
    size: int = typer.Option(256, "--size", help="Face crop size in px: per-target runs need the same one."),
    seed: int = typer.Option(0, "--seed", help="Seed of the footages (identities, motion, sizes, colour casts) "
                             "and of the training."),
    batch: int = typer.Option(2, "--batch", min=1, help="Clips of 3 frames per step (each from one target)."),
    lr: float = typer.Option(5e-4, "--lr", min=1e-6, help="Generator learning rate (decays to 10%)."),
    gan_start: float = typer.Option(0.9, "--gan-start", min=0.0, max=1.0, help="Fraction of the budget trained "
                                    "on L1 + SSIM alone before the discriminators join (1: no GAN)."),
    preview_every: int = typer.Option(200, "--preview-every", min=0, help="Steps between preview PNGs (0: none)."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32 or bf16 (as `render train`)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    device: str = DeviceOpt,
    loader_workers: int = LoaderWorkersOpt,
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Pre-train a generic face renderer on synthetic footage: the warm start of `render train`.

    Makes --targets synthetic footages (identities, head motion, face and frame sizes, colour casts)
    in OUTPUT/footage/, tracks each as a real target is, and trains one renderer on all of them.

    OUTPUT/model.pt is a warm start (`render train VIDEO --track T -o DIR --init OUTPUT`),
    not a dubbing model: `render run` refuses it.

    The shipped assets/render_warmstart.pt is made by (then copy OUTPUT/model.pt there):
    evp-anim render pretrain -o /tmp/warm --minutes 20 --targets 4 --frames 300 --size 256 --seed 0
    """
    from .pretrain import pretrain_generic

    _threads(threads)
    pretrain_generic(output, minutes=minutes, steps=steps, targets=targets, frames=frames, size=size, seed=seed,
                     batch=batch, lr=lr, gan_start=gan_start, preview_every=preview_every, precision=precision,
                     sfm_dir=sfm(sfm_dir), rep=reporter(), command=" ".join(["evp-anim"] + sys.argv[1:]),
                     device=device, loader_workers=loader_workers)


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
    render_dubbed(aligned, target, model, output, target_track, audio, rep=reporter(), prev_blur=prev_blur)


def eval_video(
    model: Optional[Path] = typer.Argument(None, help="Model folder from `evp-anim render train` "
                                           "(none with --warp)."),
    target: Path = typer.Option(..., "--target", help="The footage the model was trained on."),
    warp: bool = typer.Option(False, "--warp", help="Score the no-training warp path instead of a GAN model: "
                              "the held-out end rebuilt from mouths of the frames before it (needs --target-track)."),
    holdout: float = typer.Option(0.1, "--holdout", min=0.01, max=0.5, help="--warp: fraction of the footage "
                                  "(its end) to rebuild."),
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
    _threads(threads)
    if warp:
        if model is not None:
            raise EvpError("--warp scores the no-training path: give no model folder with it")
        if target_track is None:
            raise EvpError("--warp needs --target-track (the footage's track from `evp-anim track`)")
        evaluate_warp(target, target_track, holdout=holdout, frames_out=frames_out, json_out=json_out, rep=reporter())
        return
    if model is None:
        raise EvpError("give the model folder from `evp-anim render train` (or --warp for the no-training path)")
    evaluate_renderer(model, target, target_track, frames_out=frames_out, fid_weights=fid_weights,
                      json_out=json_out, prev_blur=prev_blur, rep=reporter())


def dub(
    speech: Path = typer.Argument(..., help="Speech to dub (wav, flac, mp3, ...)."),
    target: Path = typer.Argument(..., help="Target footage of the face to dub."),
    output: Path = typer.Option(..., "-o", "--output", help="Dubbed video to write (.mp4)."),
    emotion: str = typer.Option("neutral", "--emotion", "-e", help="One of the 8 MEAD emotions."),
    intensity: float = typer.Option(1.0, "--intensity", "-i", help="Emotion intensity in [0, 1]."),
    renderer: str = typer.Option("auto", "--renderer", help="warp: no training, mouths taken from the "
                                 "footage itself and warped (minutes on a CPU); gan: the EVP edge-to-video "
                                 "renderer (trained per target: hours on a CPU); auto: gan when --model is given "
                                 "or a finished one is cached for this footage, else warp."),
    track: Optional[Path] = typer.Option(None, "--track", help="The footage's track from `evp-anim track` "
                                         "(default: tracked now and cached)."),
    face: Optional[str] = typer.Option(None, "--face", help="Whom to dub when the footage shows several "
                                       "people: a face number (0, 1, ... left to right) or a box x0,y0,x1,y1 px, "
                                       "as `evp-anim track --face` (default: the largest, most central face)."),
    front_end: str = typer.Option("words", "--front-end", help="Speech content, as `animate --front-end`: "
                                  "words (pocketsphinx), phones or mfcc."),
    text: Optional[str] = typer.Option(None, "--text", help="What the speech says (sharper mouths)."),
    transcript: Optional[Path] = typer.Option(None, "--transcript", help="Like --text, from a UTF-8 text file."),
    model: Optional[Path] = typer.Option(None, "--model", help="Trained GAN renderer folder for this target."),
    train_minutes: float = typer.Option(30.0, "--train-minutes", min=0.05, help="--renderer gan: budget for "
                                        "training a renderer when the target has none yet."),
    length_policy: str = typer.Option("loop", "--length-policy", help="loop, pingpong, trim or hold."),
    precision: str = typer.Option("auto", "--precision", help="Of the renderer's training when the target "
                                  "has none yet: auto (bf16 only on a CPU with native bf16, else fp32), fp32 "
                                  "or bf16."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where tracks and renderers of targets "
                                             "are kept (default $EVP_ANIM_CACHE or ~/.cache/evp-anim/targets)."),
    evp_model: Optional[Path] = typer.Option(None, "--evp-model", help="EVP model (.pt; default: shipped)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Speech + target footage → dubbed video: animate → track → align → render (warp or GAN), with caches."""
    from evp_anim.audio.phones import FRONT_ENDS
    from evp_anim.cli_common import speech_content_options

    _threads(threads)
    check_video_output(output, "dubbed video")
    if front_end not in FRONT_ENDS:
        raise EvpError(f"--front-end must be one of {', '.join(FRONT_ENDS)}, got {front_end!r}")
    front_end, line = speech_content_options(front_end, text, transcript)
    dub_video(speech, target, output, emotion=emotion, intensity=intensity, model_dir=model,
              train_minutes=train_minutes, length_policy=length_policy, cache_dir=cache_dir,
              evp_model=evp_model, sfm_dir=sfm(sfm_dir), rep=reporter(), command=" ".join(["evp-anim"] + sys.argv[1:]),
              precision=precision, renderer=renderer, track=track, front_end=front_end, text=line, face=face)


def register(app: typer.Typer) -> None:
    """Add the renderer's commands to the ``evp-anim`` app."""
    app.add_typer(render_app, name="render")
    app.command("eval-video")(eval_video)
    app.command("dub")(dub)
