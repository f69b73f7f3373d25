"""A generic face renderer, pre-trained on the project's synthetic footage (``evp-anim render pretrain``).

It is the warm start of per-target training (:mod:`render.warmstart`): trained from random weights,
a per-target run on a 2-core CPU gets a few hundred steps in 20 minutes and shows a blob; started
from this generator it begins with a face.

What :func:`pretrain_generic` does, into the model folder ``DIR``:

1. makes ``targets`` synthetic "rich" footages (speech-like mouths, six emotions, blinks;
   :func:`evp_anim.footage.synthetic.render_synthetic_frames`) of ``frames`` frames each, with
   different identities, head motion, face size in px (the crop is resampled from faces smaller and
   larger than it), frame size and shape, background, and a colour cast of the whole frame (skin
   tones: the network must read the skin colour from the footage, not remember one), into
   ``DIR/footage/target_KK.mp4`` (:func:`synthetic_target_configs`, all from ``seed``);
2. tracks each with :func:`evp_anim.footage.fitting.track_footage`, as a real target is
   (training uses tracked landmarks, with their jitter and errors, not the synthetic truth):
   ``DIR/footage/target_KK.npz``; ``DIR/footage/footage.json`` lists what was made (a rerun into
   the same folder reuses it, and resumes the training);
3. trains ONE renderer on all of them (:class:`~render.trainer.RenderTrainer` over a
   :class:`~render.multi_frames.MultiTargetFrames`: each clip from one target, the target drawn
   uniformly), mostly with L1 + SSIM (``gan_start`` 0.9: the discriminators join for the last 10%).

The model folder is a normal one (``model.pt``, ``model_l1.pt``, ``checkpoint.pt``, ``log.csv``,
``previews/``); ``model.pt``'s meta says ``generic: true``, ``n_targets``, the footages (name,
sha256, seed, sizes, colour cast) and no fingerprint of a video, so ``render run`` / ``eval-video``
refuse it ("… is a generic warm-start renderer, not trained for VIDEO …"). Only ``model.pt`` (the
generator and its config) is the warm start: discriminators are not kept in it (see
:mod:`render.warmstart`).

The shipped asset is made by one command (:data:`render.warmstart.REPRODUCE_COMMAND`)::

    evp-anim render pretrain -o /tmp/warm --minutes 20 --targets 4 --frames 300 --size 256 --seed 0 \\
        && cp /tmp/warm/model.pt assets/render_warmstart.pt

(footage: ~0.1 s per frame to render and ~0.1-0.15 s to track on a CPU core, i.e. ~10 min for 6 x 400
frames, before the 30 minutes of training; the file is ~5.4 MB at any crop size: 1.34 M float32
weights.)

On a GPU: ``--device cuda --loader-workers N`` (one process; N worker processes draw the batches,
which one core cannot do as fast as the GPU steps). One run on an H200 (32 targets, batch 16,
7 minutes, 3,042 steps) is described in the README ("Renderer: warm start"); it was not made the
shipped warm start.

Under ``torchrun`` the footage must already exist (make it with one run of the same command and
``--steps 1`` without torchrun, then resume): ranks would otherwise all make and track it at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np

from evp_anim.errors import EvpError
from evp_anim.progress import Reporter

FOOTAGE_DIR = "footage"
FOOTAGE_MANIFEST = "footage.json"
PRETRAIN_GAN_START = 0.9


@dataclasses.dataclass(frozen=True)
class SyntheticTarget:
    """One synthetic footage of the pre-training set: its footage options and colour cast."""

    name: str
    config: dict                 # SyntheticFootageConfig as a dict
    tint: tuple[float, float, float]   # BGR gains applied to every frame (1, 1, 1: none)

    def to_dict(self) -> dict:
        return {"name": self.name, "config": self.config, "tint": list(self.tint)}


def synthetic_target_configs(targets: int, frames: int, size: int, seed: int = 0) -> list[SyntheticTarget]:
    """``targets`` varied synthetic footages (deterministic in ``seed``): identity and motion
    (``SyntheticFootageConfig.seed``), identity strength, head-rotation amplitudes, face width
    0.8-1.4x max(size / 2, 96) px (the crop, 1.9x the face, is thus resampled up and down), frame
    2.3-3.2 face widths wide and 2.3-3.0 high, and a colour cast (brightness 0.7-1.15, warm/cool
    shift) on all but the first."""
    from evp_anim.footage.synthetic import SyntheticFootageConfig

    if targets < 1:
        raise EvpError(f"--targets must be ≥ 1, got {targets}")
    if frames < 12:
        raise EvpError(f"--frames must be ≥ 12 (a target needs ≥ 8 training frames), got {frames}")
    out = []
    for k in range(targets):
        rng = np.random.default_rng([int(seed), k, 7])
        face = max(size / 2.0, 96.0) * rng.uniform(0.8, 1.4)
        even = lambda x: int(max(64, 2 * round(x / 2)))   # noqa: E731
        w, h = even(face * rng.uniform(2.3, 3.2)), even(face * rng.uniform(2.3, 3.0))
        cfg = SyntheticFootageConfig(
            n_frames=int(frames), width=w, height=h, face_px=round(float(face), 1), expression_style="rich",
            yaw_deg=round(float(rng.uniform(15, 30)), 1), pitch_deg=round(float(rng.uniform(6, 12)), 1),
            roll_deg=round(float(rng.uniform(4, 10)), 1), move_px=round(float(0.12 * face), 1),
            identity_scale=round(float(rng.uniform(0.6, 1.0)), 2), seed=int(seed) * 1000 + k)
        cfg.validate()
        if k == 0:
            tint = (1.0, 1.0, 1.0)
        else:
            b, warm = rng.uniform(0.7, 1.15), rng.uniform(-0.1, 0.12)
            tint = (round(float(b * (1 - warm)), 3), round(float(b), 3), round(float(b * (1 + warm)), 3))
        out.append(SyntheticTarget(f"target_{k:02d}", dataclasses.asdict(cfg), tint))
    return out


def make_target_footage(target: SyntheticTarget, video: Path, sfm_dir: Path, progress=None) -> None:
    """Render ``target`` to ``video`` (25 fps H.264, written atomically), its colour cast applied."""
    from evp_anim.footage.synthetic import SyntheticFootageConfig, render_synthetic_frames
    from evp_anim.video_io import open_video_writer

    cfg = SyntheticFootageConfig(**target.config)
    gains = np.asarray(target.tint, np.float32)
    gen = render_synthetic_frames(cfg, sfm_dir)
    with open_video_writer(video, cfg.fps, (cfg.width, cfg.height), crf=16) as writer:
        for frame, i in gen:
            if not np.allclose(gains, 1.0):
                frame = np.clip(frame.astype(np.float32) * gains + 0.5, 0, 255).astype(np.uint8)
            writer.write(frame)
            if progress is not None:
                progress(i + 1)


def prepare_footage(folder: Path, targets: list[SyntheticTarget], sfm_dir: Path,
                    rep: Optional[Reporter] = None) -> list[tuple[SyntheticTarget, Path, Path]]:
    """Make and track the footages into ``folder`` (reusing those already there); returns
    [(target, video, track)] for the footages that could be tracked (a footage the tracker cannot
    follow is skipped with a warning; none left is an error). ``folder/footage.json`` records the
    targets: a folder made for other ones is refused (one line)."""
    from evp_anim.atomic import write_text_atomic
    from evp_anim.footage.fitting import track_footage
    from evp_anim.tracks import save_track

    rep = rep or Reporter()
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / FOOTAGE_MANIFEST
    want = [t.to_dict() for t in targets]
    if manifest.is_file():
        try:
            have = json.loads(manifest.read_text())["targets"]
        except (OSError, ValueError, KeyError, TypeError):
            raise EvpError(f"{manifest}: corrupt; delete {folder} to make the footage again") from None
        if [{k: v for k, v in t.items() if k != "skipped"} for t in have] != want:
            raise EvpError(f"{folder.parent} was pre-trained on other footage (other --targets/--frames/--size/"
                           f"--seed): use the same options again, or a new -o folder")
        skipped = {t["name"]: t["skipped"] for t in have if t.get("skipped")}
    else:
        skipped = {}
    out = []
    for k, t in enumerate(targets):
        video, track = folder / f"{t.name}.mp4", folder / f"{t.name}.npz"
        if t.name in skipped:
            rep.info(f"footage {k + 1}/{len(targets)}: {t.name} skipped ({skipped[t.name]})")
            continue
        cfg = t.config
        if not video.is_file():
            rep.start("pretrain-footage", total=cfg["n_frames"],
                      description=f"footage {k + 1}/{len(targets)}")
            make_target_footage(t, video, sfm_dir, progress=rep.update)
            rep.success(output=str(video))
            track.unlink(missing_ok=True)
        if not track.is_file():
            rep.start("pretrain-track", total=cfg["n_frames"], description=f"track {k + 1}/{len(targets)}")
            try:
                tr = track_footage(video, sfm_dir, progress=rep.update)
            except EvpError as e:
                skipped[t.name] = str(e)
                rep.warning(f"{t.name}: the tracker cannot follow this footage, skipped ({e})")
                continue
            tr.info["video"] = video.name
            save_track(tr, track)
            rep.success(output=str(track))
        rep.info(f"footage {k + 1}/{len(targets)}: {video.name} {cfg['width']}x{cfg['height']}, "
                 f"{cfg['n_frames']} frames, face {cfg['face_px']:g} px, seed {cfg['seed']}, "
                 f"colour cast {'/'.join(f'{g:g}' for g in t.tint)} (BGR)")
        out.append((t, video, track))
    write_text_atomic(manifest, json.dumps({"targets": [dict(t.to_dict(), **({"skipped": skipped[t.name]}
                                                                            if t.name in skipped else {}))
                                                        for t in targets]}, indent=1))
    if not out:
        raise EvpError("none of the synthetic footages could be tracked: try another --seed")
    return out


def pretrain_generic(output: Path, minutes: Optional[float] = None, steps: Optional[int] = None, targets: int = 6,
                     frames: int = 400, size: int = 256, seed: int = 0, batch: int = 2, lr: float = 5e-4,
                     gan_start: float = PRETRAIN_GAN_START, preview_every: int = 200, checkpoint_every: int = 100,
                     precision: str = "auto", sfm_dir: Optional[Path] = None, rep: Optional[Reporter] = None,
                     command: str = "", device: str = "cpu", loader_workers: int = 0) -> dict:
    """Make ``targets`` synthetic footages, track them and train one generic renderer on all of
    them into the model folder ``output`` (see the module docstring); resumes a checkpoint there.
    Returns the model's meta (``generic`` True, ``n_targets``). ``device`` "cuda" trains on a GPU
    (``loader_workers`` processes drawing the batches; the footage is still made on the CPU)."""
    from evp_anim.tracks import load_track

    from .data import TargetFrames, video_fingerprint
    from .multi_frames import MultiTargetFrames
    from .trainer import RenderTrainConfig, RenderTrainer, ReporterProgress, choose_precision

    rep = rep or Reporter()
    if int(os.environ.get("RANK", "0")) != 0:
        rep = Reporter(quiet=True)
    if minutes is None and steps is None:
        minutes = 30.0
    if output.exists() and not output.is_dir():
        raise EvpError(f"{output} exists and is not a folder: give a folder for the model")
    bf16, why = choose_precision(precision, size, device)
    cfg = RenderTrainConfig(size=size, holdout=0.1, batch=batch, lr=lr, gan_start=gan_start, seed=seed,
                            preview_every=preview_every, checkpoint_every=checkpoint_every, bf16=bf16)
    cfg.validate()
    rep.info(why)
    if sfm_dir is None:
        from evp_anim.assets import find_sfm_dir
        sfm_dir = find_sfm_dir()
    wanted = synthetic_target_configs(targets, frames, size, seed)
    fdir = output / FOOTAGE_DIR
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (fdir / FOOTAGE_MANIFEST).is_file():
        # every rank would make and track the same footage at once
        raise EvpError("under torchrun the footage must exist already: run the same `evp-anim render pretrain` "
                       "command once without torchrun with --steps 1, then resume it under torchrun")
    made = prepare_footage(fdir, wanted, Path(sfm_dir), rep)
    sets, infos, prints = [], [], []
    tracks = [load_track(track_path) for _, _, track_path in made]
    # decoding, cropping and PNG-encoding are mostly C calls (PyAV, OpenCV): a thread per core
    rep.start("render-train-frames", total=sum(tr.n_frames for tr in tracks),
              description=f"decode {len(made)} footages")
    decoded = 0
    with ThreadPoolExecutor(max(1, min(len(made), os.cpu_count() or 1))) as pool:
        loaded = pool.map(lambda job: TargetFrames.load(job[0][1], job[1], size, cfg.crop_margin, cfg.holdout),
                          zip(made, tracks))
        for target_frames in loaded:    # in order, as each finishes
            sets.append(target_frames)
            decoded += len(target_frames)
            rep.update(decoded)
    rep.success(frames=decoded)
    for (t, video, _), tr in zip(made, tracks):
        fp = video_fingerprint(video)
        prints.append(fp)
        c = t.config
        infos.append({"video": video.name, "sha256": fp, "n_frames": tr.n_frames, "image_size": list(tr.image_size),
                      "seed": c["seed"], "face_px": c["face_px"], "tint_bgr": list(t.tint)})
    multi = MultiTargetFrames(sets, [i["video"] for i in infos])
    footprint = "generic:" + hashlib.sha256(json.dumps(prints).encode()).hexdigest()
    info = {"generic": True, "targets": infos, "frames_per_target": frames, "seed": seed,
            "command": command or None}
    progress = ReporterProgress(rep)
    trainer = RenderTrainer(multi, output, cfg, footprint, info, steps=steps, minutes=minutes, progress=progress,
                            init_why="random weights (a generic renderer is trained from scratch)",
                            device=device, loader_workers=loader_workers)
    progress.trainer = trainer
    if trainer.resumed:
        rep.info(f"resuming {output} at step {trainer.step} ({trainer.elapsed / 60:.1f} min trained)")
    rep.info(f"pretrain: one generic renderer on {len(sets)} synthetic targets ({multi.n_train} training frames "
             f"of {len(multi)}), {size} px crops, L1 + SSIM until {gan_start:.0%} of the budget, then GAN")
    rep.start("render-pretrain", description="pretrain generic renderer")
    meta = trainer.run()
    rep.success(output=str(output), steps=meta["steps"], seconds=meta["train_seconds"], targets=len(sets))
    rep.info(f"pre-trained {meta['steps']} steps in {meta['train_seconds'] / 60:.1f} min on {len(sets)} targets → "
             f"{output / 'model.pt'} (a warm start: `evp-anim render train VIDEO --track T -o DIR --init {output}`)"
             + progress.losses())
    return meta
