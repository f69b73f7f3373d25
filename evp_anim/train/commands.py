"""CLI: `evp-anim train` (EVP's audio side, evp_trainer.py) and `evp-anim train-emote` (the EMOTE
path, emote_trainer.py), with the progress, feature-cache and model-writing steps they share."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli_common import SfmDirOpt, reporter, sfm
from ..errors import EvpError


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("train-emote")(train_emote)


def _stage_progress(rep, prefix: str):
    """A trainer progress callback: one progress bar per training stage (none on ranks > 0);
    ``progress.finish()`` closes the last stage's bar."""
    state = {"stage": None}

    def progress(stage: str, step: int, total: int, logs: dict) -> None:
        if rep is None:
            return
        if state["stage"] != stage:
            if state["stage"] is not None:
                rep.success()
            state["stage"] = stage
            rep.start(f"{prefix}-{stage}", total=total, description=stage)
        rep.update(step)

    def finish() -> None:
        if rep is not None and state["stage"] is not None:
            rep.success()

    progress.finish = finish
    return progress


def _corpus_caches(rank: int, world: int, rep, build):
    """Run ``build()`` (which reads, and on first use writes, the corpus's feature caches) so that
    rank 0 builds the caches while the other DDP ranks wait, then read them. Returns its result."""
    if rep:
        rep.start("features", description="features")
    if rank != 0:
        import torch.distributed as dist
        dist.barrier()
    out = build()
    if rank == 0 and world > 1:
        import torch.distributed as dist
        dist.barrier()
    if rep:
        rep.success()
    return out


# Both trainings read the phone front ends' input the way `animate` gives it (features.front_end_visemes).
AcousticOpt = typer.Option(True, "--acoustic/--no-acoustic", help="Feed the phone content path the true "
                           "visemes blended with the acoustic front end's frames of each clip, as `animate` "
                           "does (computed once and cached beside the corpus: ~3 min for 10 h of speech).")


def _finish_training(trainer, output: Path, rank: int, world: int, rep, progress, corpus: Path) -> None:
    """Run ``trainer``; rank 0 adds the training clips' speech MFCC mean to the model (see
    :func:`~evp_anim.train.features.corpus_speech_mfcc_mean`) and saves it to ``output``; all
    ranks leave the process group."""
    from .features import corpus_speech_mfcc_mean
    model = trainer.run()
    if rank == 0:
        progress.finish()
        model.meta["speech_mfcc_mean"] = corpus_speech_mfcc_mean(
            corpus, [trainer.feats.rows[i] for i in trainer.train_idx])
        model.save(output)
        rep.info(f"wrote {output} (trained {model.meta['train_seconds']} s on "
                 f"{model.meta['trained_on']['train_clips']} clips)")
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()


def train(
    corpus: Path = typer.Argument(..., help="Corpus folder (manifest.csv, tracks, pairs.npz)."),
    output: Path = typer.Option(..., "-o", "--output", help="Model file to write (.pt)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Checkpoints and log.csv "
                                           "(default: OUTPUT with .run). An existing checkpoint is resumed."),
    steps: str = typer.Option("800,800,1500", "--steps", help="Steps of the three stages: "
                              "pretrain,disentangle,landmarks."),
    batch: int = typer.Option(32, "--batch", help="Batch size per process."),
    without: Optional[str] = typer.Option(None, "--without", help="Ablation: comma-separated loss terms "
                                          "to drop in stage 2 (cross, self, cla, con)."),
    pretrained: Optional[Path] = typer.Option(None, "--pretrained", help="Start from another run's "
                                              "stage1.pt (skips pre-training; for ablations)."),
    lambda_con: float = typer.Option(1.0, "--lambda-con", help="Weight of the content loss L_con (Eq. 6)."),
    lambda_cla: float = typer.Option(1.0, "--lambda-cla", help="Weight of the classification loss L_cla (Eq. 6)."),
    lambda_gap: float = typer.Option(0.0, "--lambda-gap", help="Weight of the inner-lip gap loss beside Eq. 7's "
                                     "L2 in stage 3 (mean absolute error of the lips' gap, mm; 0: Eq. 7 alone)."),
    content_delay: int = typer.Option(0, "--content-delay", help="Frames (40 ms each) the audio-to-landmark "
                                      "LSTM's content input lags its output: a model for `live` with less "
                                      "look-ahead (0: offline, 202.5 ms past a frame's end; 4: 42.5 ms)."),
    phone_lookahead: int = typer.Option(3, "--phone-lookahead", help="Frames ahead the phone content "
                                        "encoder Ep reads (of the 7 it sees): 3 offline; 0 for a live model "
                                        "fed the acoustic front end's frames (36 ms of look-ahead in all)."),
    phone_content: float = typer.Option(0.5, "--phone-content", help="Share of stage 3's samples whose content "
                                        "comes from the phone encoder Ep (the rest from the MFCC encoder Ec)."),
    acoustic: bool = AcousticOpt,
    seed: int = typer.Option(0, "--seed"),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads per process."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Train EVP's audio side: pre-train Ec/Ee, cross-reconstruction (Eq. 2–6), audio-to-landmark (Eq. 7).

    Runs unchanged under `torchrun --nproc_per_node N` (DDP). Resumes after a kill.
    """
    import torch

    from ..data.manifest import read_manifest
    from ..data.pairs import load_pairs
    from ..models.evp import EvpConfig
    from .evp_trainer import Trainer, TrainConfig
    from .features import load_features
    from .loop import dist_info

    if output.suffix != ".pt":
        raise EvpError(f"model output must end in .pt, got {output.name!r}")
    try:
        step_t = tuple(int(s) for s in steps.split(","))
    except ValueError:
        raise EvpError(f"--steps must be three integers like 800,800,1500, got {steps!r}") from None
    cfg = TrainConfig(steps=step_t, batch=batch, seed=seed, lambda_con=lambda_con, lambda_cla=lambda_cla,
                      acoustic_content=acoustic, phone_content=phone_content, lambda_gap=lambda_gap,
                      without=tuple(w.strip() for w in without.split(",") if w.strip()) if without else ())
    cfg.validate()
    if threads:
        torch.set_num_threads(threads)
    rank, world = dist_info()
    rep = reporter() if rank == 0 else None
    rows = read_manifest(corpus / "manifest.csv")
    feats = _corpus_caches(rank, world, rep, lambda: load_features(corpus, sfm(sfm_dir), rows,
                                                                    progress=rep.fraction if rep else None,
                                                                    acoustic=acoustic and step_t[2] > 0))
    pairs = load_pairs(corpus / "pairs.npz") if step_t[1] > 0 else []
    progress = _stage_progress(rep, "train")

    if not 0 <= content_delay <= 8:
        raise EvpError(f"--content-delay must be 0 to 8 frames, got {content_delay}")
    if not 0 <= phone_lookahead <= 6:
        raise EvpError(f"--phone-lookahead must be 0 to 6 frames, got {phone_lookahead}")
    trainer = Trainer(feats, pairs, cfg, run_dir or output.with_suffix(".run"), pretrained=pretrained,
                      progress=progress, corpus_name=str(corpus),
                      model_config=EvpConfig(content_delay=content_delay, phone_lookahead=phone_lookahead))
    _finish_training(trainer, output, rank, world, rep, progress, corpus)


def train_emote(
    corpus: Path = typer.Argument(..., help="Corpus folder (manifest.csv and ground-truth tracks)."),
    output: Path = typer.Option(..., "-o", "--output", help="EMOTE model file to write (.pt)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Checkpoints and log.csv "
                                           "(default: OUTPUT with .run). An existing checkpoint is resumed."),
    steps: str = typer.Option("4000,600,300,2000,2000", "--steps", help="Steps of the five stages: "
                              "prior,lipreader,emotion,content,generator."),
    batch: int = typer.Option(24, "--batch", help="Crops per batch per process."),
    crop: int = typer.Option(64, "--crop", help="Frames per training crop (multiple of 4; 64 = 2.56 s)."),
    without: Optional[str] = typer.Option(None, "--without", help="Ablation: comma-separated parts to drop "
                                          "(lip, exchange, prior)."),
    pretrained: Optional[Path] = typer.Option(None, "--pretrained", help="Take the motion prior, lip reader, "
                                              "emotion classifier and content encoder from another run's "
                                              "perceptual.pt (skips stages 1-4; for ablations)."),
    lambda_lip: float = typer.Option(0.3, "--lambda-lip", help="Weight of the per-frame lip-reading loss."),
    lambda_emo: float = typer.Option(0.3, "--lambda-emo", help="Weight of the sequence emotion loss."),
    acoustic: bool = AcousticOpt,
    seed: int = typer.Option(0, "--seed"),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads per process."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Train the EMOTE path: motion prior (temporal VAE), lip reader, emotion classifier, content
    encoder (audio → visemes), then the speech+emotion generator with lip-reading, emotion and content-emotion exchange losses.

    Runs unchanged under `torchrun --standalone --nproc_per_node N` (DDP, gloo). Resumes after a kill.
    """
    import torch

    from ..data.manifest import read_manifest
    from ..face.rig import FaceRig
    from .emote_trainer import EmoteTrainConfig, EmoteTrainer, load_rig_weights
    from .features import load_features
    from .loop import dist_info

    if output.suffix != ".pt":
        raise EvpError(f"model output must end in .pt, got {output.name!r}")
    if not (corpus / "manifest.csv").is_file():
        raise EvpError(f"{corpus}: no manifest.csv (not a corpus; make one with `evp-anim synth`)")
    try:
        step_t = tuple(int(s) for s in steps.split(","))
    except ValueError:
        raise EvpError(f"--steps must be five integers like 4000,600,300,2000,2000, got {steps!r}") from None
    cfg = EmoteTrainConfig(steps=step_t, batch=batch, crop=crop, seed=seed, lambda_lip=lambda_lip,
                           lambda_emo=lambda_emo, acoustic_content=acoustic,
                           without=tuple(w.strip() for w in without.split(",") if w.strip()) if without else ())
    cfg.validate()
    if pretrained is not None and not pretrained.is_file():
        raise EvpError(f"--pretrained file not found: {pretrained}")
    if threads:
        torch.set_num_threads(threads)
    rank, world = dist_info()
    rep = reporter() if rank == 0 else None
    rows = [r for r in read_manifest(corpus / "manifest.csv") if r.track]

    def build():
        f = load_features(corpus, sfm(sfm_dir), rows, progress=rep.fraction if rep else None,
                          acoustic=acoustic and step_t[4] > 0)
        return f, load_rig_weights(corpus, f.rows)

    feats, weights = _corpus_caches(rank, world, rep, build)
    progress = _stage_progress(rep, "train-emote")

    trainer = EmoteTrainer(feats, weights, FaceRig(sfm(sfm_dir)), cfg, run_dir or output.with_suffix(".run"),
                           progress=progress, corpus_name=str(corpus), pretrained=pretrained)
    _finish_training(trainer, output, rank, world, rep, progress, corpus)
