"""Per-target training of the renderer (``evp-anim render train``).

Pairs are (guidance from the target's own landmarks, real face crop) from the first 90% of the
footage (the rest is held out for ``evp-anim eval-video``). Each step draws ``batch`` clips of
``clip`` consecutive frames and generates them in order, each conditioned on the previous
generated crop (vid2vid; the first frame of a clip gets the real previous crop, blurred and
noisy, or nothing), so the network learns from its own outputs what inference will feed it.

Losses (:mod:`render.losses`; no pretrained VGG can be had here, so no perceptual loss):

* L1, weighted 1 + ``w_face`` on the face region + ``w_mouth`` on the mouth region;
* 1 - SSIM on the face region (structure and local contrast, what a perceptual loss buys);
* after ``gan_start`` of the budget (a mostly-L1 first phase, then adversarial fine-tuning):
  LSGAN losses from the multi-scale patch discriminators, the temporal discriminator (clips of
  ``clip`` frames) and the mouth discriminator, and pix2pixHD discriminator feature matching.

The learning rate decays linearly to 10% over the budget (steps or minutes, whichever ends first).

Files in the model folder: ``checkpoint.pt`` (everything to resume; written atomically every
``checkpoint_every`` steps), ``model.pt`` (the generator + facts about the target, as
:mod:`render.model_file` writes it; rewritten with each checkpoint, ``finished`` once the budget
is spent), ``model_l1.pt`` (the generator when the adversarial phase began: ``render run --model
model_dir/model_l1.pt`` renders with it), ``log.csv``, ``previews/step_NNNNNN.png``
(guidance | generated | real, for a training and a held-out frame).

Under ``torchrun --standalone --nproc_per_node N`` each rank draws its own clips, gradients are
averaged with all-reduce (gloo on CPU) and rank 0 writes the files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from evp_anim import __version__
from evp_anim.atomic import atomic_path
from evp_anim.errors import EvpError
from evp_anim.train.loop import dist_info

from .data import TargetFrames, to_uint8_image
from .guidance import guidance_preview
from .losses import feature_matching_loss, lsgan_loss, reconstruction_loss
from .model_file import FORMAT, MODEL_FILE, load_blob, write_model
from .networks import CLIP, Discriminators, Generator, GeneratorConfig, mouth_boxes

CHECKPOINT_FILE = "checkpoint.pt"
L1_MODEL_FILE = "model_l1.pt"   # snapshot at the end of the L1 + SSIM phase


@dataclasses.dataclass(frozen=True)
class RenderTrainConfig:
    """Knobs of a training run (stored in the checkpoint; a resume must use the same ones,
    except the budget: ``steps`` and ``minutes`` may be raised to train on)."""

    size: int = 256
    crop_margin: float = 1.9
    holdout: float = 0.1
    batch: int = 2
    clip: int = CLIP
    lr: float = 5e-4
    clip_grad: float = 1.0       # gradient norm clipping of both optimisers
    lr_d: float = 2e-4
    w_face: float = 4.0
    w_mouth: float = 8.0
    w_ssim: float = 2.0
    w_adv: float = 0.05
    w_fm: float = 1.0
    gan_start: float = 0.75      # fraction of the budget after which the discriminators join
    prev_drop: float = 0.2       # probability that a clip starts with no previous frame
    generator: tuple = tuple(sorted(GeneratorConfig().to_dict().items()))
    bf16: bool = True            # bfloat16 autocast for the networks (losses stay float32)
    seed: int = 0
    checkpoint_every: int = 100
    preview_every: int = 200

    def validate(self) -> None:
        if self.size % 64 or not 64 <= self.size <= 1024:
            raise EvpError(f"crop size must be a multiple of 64 in [64, 1024] (256 or 512), got {self.size}")
        if self.batch < 1 or self.clip < 1:
            raise EvpError("batch and clip must be ≥ 1")
        if not 0.0 <= self.gan_start <= 1.0:
            raise EvpError(f"gan_start must be in [0, 1], got {self.gan_start}")

    def gen_config(self) -> GeneratorConfig:
        d = dict(self.generator)
        return GeneratorConfig.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["generator"] = dict(self.generator)
        d["generator"]["widths"] = list(d["generator"]["widths"])
        return d


# ---------------------------------------------------------------------- distributed helpers
# (dist_info is the shared training loop's, evp_anim/train/loop.py: torchrun's environment, gloo on CPU, nccl on GPU)

def _average_gradients(params, world: int) -> None:
    if world <= 1:
        return
    import torch.distributed as dist
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


def _broadcast(module: torch.nn.Module, world: int) -> None:
    if world <= 1:
        return
    import torch.distributed as dist
    for t in module.state_dict().values():
        dist.broadcast(t, 0)


def _agree(value: float, world: int) -> float:
    """Rank 0's value on every rank (time budgets must stop all ranks at the same step)."""
    if world <= 1:
        return value
    import torch.distributed as dist
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, 0)
    return float(t.item())


# ---------------------------------------------------------------------- the run
class RenderTrainer:
    """Trains (or resumes training) a renderer for one target video.

    steps / minutes: the budget (either may be None; training stops at whichever comes first;
    the time counts across resumes). ``progress(frac, logs)`` is called after each step on rank 0.
    """

    def __init__(self, frames: TargetFrames, model_dir: str | Path, config: RenderTrainConfig,
                 fingerprint: str, target_info: dict, steps: int | None = None, minutes: float | None = None,
                 progress: Callable[[float, dict], None] | None = None):
        config.validate()
        if steps is None and minutes is None:
            raise EvpError("give a training budget: steps or minutes")
        if frames.size != config.size:
            raise EvpError(f"frames are {frames.size} px crops but the config says {config.size}")
        self.frames, self.cfg, self.dir = frames, config, Path(model_dir)
        self.fingerprint, self.target_info = fingerprint, target_info
        self.max_steps, self.max_seconds = steps, (minutes * 60.0 if minutes is not None else None)
        self.rank, self.world = dist_info()
        self.progress = progress
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng([config.seed, self.rank])
        self.gen = Generator(config.gen_config()).to(memory_format=torch.channels_last)
        self.disc = Discriminators().to(memory_format=torch.channels_last)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=config.lr, betas=(0.9, 0.999))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=config.lr_d, betas=(0.5, 0.999))
        self.step, self.elapsed = 0, 0.0
        self.ckpt = self.dir / CHECKPOINT_FILE
        self.resumed = False
        if self.ckpt.is_file():
            self._resume()
        _broadcast(self.gen, self.world)
        _broadcast(self.disc, self.world)

    # -- checkpoints ------------------------------------------------------------------
    def _state(self) -> dict:
        return {"format": FORMAT, "step": self.step, "elapsed": self.elapsed, "config": self.cfg.to_dict(),
                "fingerprint": self.fingerprint, "gen": self.gen.state_dict(), "disc": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state()}

    def _resume(self) -> None:
        blob = load_blob(self.ckpt, "checkpoint")
        if blob.get("fingerprint") != self.fingerprint:
            raise EvpError(f"{self.ckpt} belongs to a model of another video; use a new output folder")
        if blob.get("config") != self.cfg.to_dict():
            raise EvpError(f"{self.ckpt} was written with other training options; use them again or a new folder")
        self.gen.load_state_dict(blob["gen"])
        self.disc.load_state_dict(blob["disc"])
        self.opt_g.load_state_dict(blob["opt_g"])
        self.opt_d.load_state_dict(blob["opt_d"])
        self.step, self.elapsed = int(blob["step"]), float(blob["elapsed"])
        if self.rank == 0:
            self.rng.bit_generator.state = blob["rng"]
        else:
            self.rng = np.random.default_rng([self.cfg.seed, self.rank, self.step])
        torch.set_rng_state(blob["torch_rng"])
        self.resumed = True

    def meta(self, finished: bool) -> dict:
        return {"fingerprint": self.fingerprint, "target": self.target_info, "size": self.cfg.size,
                "crop_margin": self.cfg.crop_margin, "holdout_start": self.frames.n_train,
                "n_frames": len(self.frames), "steps": self.step, "train_seconds": round(self.elapsed, 1),
                "world_size": self.world, "finished": finished, "train_config": self.cfg.to_dict(),
                "evp_anim_version": __version__}

    def save(self, finished: bool = False) -> None:
        if self.rank != 0:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.ckpt) as tmp:
            torch.save(self._state(), tmp)
        write_model(self.dir / MODEL_FILE, self.gen, self.meta(finished))

    # -- batches ----------------------------------------------------------------------
    def _clip_batch(self) -> dict[str, torch.Tensor]:
        """(B, K, ...) tensors for B clips of K consecutive training frames, plus ``prev0``."""
        k, n = self.cfg.clip, self.frames.n_train
        starts = self.rng.integers(1, max(2, n - k + 1), self.cfg.batch)
        items = [[self.frames.sample(min(int(s) + j, n - 1)) for j in range(k)] for s in starts]
        out = {key: torch.from_numpy(np.stack([[it[key] for it in clip] for clip in items]))
               for key in ("guidance", "known", "mask", "alpha", "real", "mouth", "mouth_centre")}
        prev = []
        for s in starts:
            if self.rng.random() < self.cfg.prev_drop:
                prev.append(np.zeros((3, self.cfg.size, self.cfg.size), np.float32))
                continue
            p = self.frames.crop(int(s) - 1)
            p = cv2.GaussianBlur(p, (0, 0), float(self.rng.uniform(0.3, 1.2)))
            p = p.astype(np.float32) / 127.5 - 1.0 + self.rng.normal(0, 0.02, p.shape).astype(np.float32)
            prev.append(p.transpose(2, 0, 1))
        out["prev0"] = torch.from_numpy(np.stack(prev).astype(np.float32))
        return out

    # -- one step ---------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def frac_done(self) -> float:
        f = 0.0
        if self.max_steps:
            f = max(f, self.step / self.max_steps)
        if self.max_seconds:
            f = max(f, self.elapsed / self.max_seconds)
        return min(f, 1.0)

    def train_step(self, batch: dict[str, torch.Tensor] | None = None, adversarial: bool | None = None) -> dict:
        """One optimisation step of G (and of the discriminators in the adversarial phase)."""
        cfg = self.cfg
        b = batch or self._clip_batch()
        frac = self.frac_done()
        adv = (frac >= cfg.gan_start and cfg.w_adv > 0) if adversarial is None else adversarial
        lr_scale = 1.0 - 0.9 * frac
        for g in self.opt_g.param_groups:
            g["lr"] = cfg.lr * lr_scale * (0.5 if adv else 1.0)
        for g in self.opt_d.param_groups:
            g["lr"] = cfg.lr_d * lr_scale
        self.gen.train()
        cl = torch.channels_last
        b = {k: (v.contiguous(memory_format=cl) if v.ndim == 4 else v) for k, v in b.items()}
        fakes = []
        prev = b["prev0"]
        for j in range(cfg.clip):
            with self._autocast():
                f = self.gen(*(b[k][:, j].contiguous(memory_format=cl) for k in ("guidance", "known", "mask", "alpha")),
                             prev).float()
            fakes.append(f)
            prev = f.detach()
        fake = torch.stack(fakes, 1)                    # (B, K, 3, S, S)
        flat = lambda x: x.reshape(-1, *x.shape[2:])    # noqa: E731
        rec, logs = reconstruction_loss(flat(fake), flat(b["real"]), flat(b["mask"]), flat(b["mouth"]), cfg)
        loss_g = rec
        if adv:
            gd, real, ff = flat(b["guidance"]), flat(b["real"]), flat(fake)
            boxes = mouth_boxes(flat(b["mouth_centre"]), cfg.size)
            # discriminators
            for p in self.disc.parameters():
                p.requires_grad_(True)
            with self._autocast():
                d_real = (self.disc.spatial_scores(gd, real) + self.disc.temporal_scores(b["real"])
                          + self.disc.mouth_scores(gd, real, boxes))
                d_fake = (self.disc.spatial_scores(gd, ff.detach()) + self.disc.temporal_scores(fake.detach())
                          + self.disc.mouth_scores(gd, ff.detach(), boxes))
            d_real = [[t.float() for t in x] for x in d_real]
            d_fake = [[t.float() for t in x] for x in d_fake]
            loss_d = 0.5 * (lsgan_loss(d_real, 1.0) + lsgan_loss(d_fake, 0.0))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            _average_gradients(list(self.disc.parameters()), self.world)
            if torch.isfinite(torch.nn.utils.clip_grad_norm_(self.disc.parameters(), cfg.clip_grad)):
                self.opt_d.step()
            # generator's adversarial and feature-matching terms
            for p in self.disc.parameters():
                p.requires_grad_(False)
            with self._autocast():
                g_fake = (self.disc.spatial_scores(gd, ff) + self.disc.temporal_scores(fake)
                          + self.disc.mouth_scores(gd, ff, boxes))
            g_fake = [[t.float() for t in x] for x in g_fake]
            n_sp = len(self.disc.spatial)
            fm = feature_matching_loss(g_fake[:n_sp], [[t.detach() for t in x] for x in d_real[:n_sp]])
            adv_g = lsgan_loss(g_fake, 1.0)
            loss_g = loss_g + cfg.w_adv * adv_g + cfg.w_fm * cfg.w_adv * fm
            logs.update(d=loss_d.item(), adv=adv_g.item(), fm=fm.item())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        _average_gradients(list(self.gen.parameters()), self.world)
        # clipping keeps one bad batch from blowing the weights up (Adam rescales steps anyway)
        gnorm = torch.nn.utils.clip_grad_norm_(self.gen.parameters(), cfg.clip_grad)
        if torch.isfinite(gnorm):
            self.opt_g.step()
        logs["grad_norm"] = float(gnorm)
        self.step += 1
        logs["loss"] = loss_g.item()
        return logs

    # -- previews ---------------------------------------------------------------------
    @torch.no_grad()
    def preview(self, path: Path) -> None:
        """PNG rows guidance | generated | real for a training frame and a held-out frame."""
        self.gen.eval()
        rows = []
        n = len(self.frames)
        for i in (self.frames.n_train // 2, min(n - 1, self.frames.n_train + (n - self.frames.n_train) // 2)):
            s = self.frames.sample(i)
            t = {k: torch.from_numpy(v)[None] for k, v in s.items() if k in ("guidance", "known", "mask", "alpha")}
            prev = torch.from_numpy(s["real"])[None] * 0
            out = self.gen(t["guidance"], t["known"], t["mask"], t["alpha"], prev)
            # run twice so the second sees a previous frame, as in a video
            out = self.gen(t["guidance"], t["known"], t["mask"], t["alpha"], out)
            g = guidance_preview((s["guidance"].transpose(1, 2, 0) * 255).astype(np.uint8))
            rows.append(np.hstack([g, to_uint8_image(out[0]), self.frames.crop(i)]))
        self.gen.train()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            cv2.imwrite(str(tmp), np.vstack(rows))

    # -- the loop ---------------------------------------------------------------------
    def done(self) -> bool:
        if self.max_steps is not None and self.step >= self.max_steps:
            return True
        return self.max_seconds is not None and self.elapsed >= self.max_seconds

    def run(self) -> dict:
        """Train until the budget is spent; returns the model's meta."""
        log_path = self.dir / "log.csv"
        if self.rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
        fh = writer = None
        t0 = time.perf_counter()
        try:
            while True:
                now = time.perf_counter()
                self.elapsed = _agree(self.elapsed + (now - t0), self.world)
                t0 = now
                if self.done():
                    break
                if (self.rank == 0 and 0 < self.cfg.gan_start < 1 and self.cfg.w_adv > 0
                        and self.frac_done() >= self.cfg.gan_start and not (self.dir / L1_MODEL_FILE).is_file()):
                    # the generator as the L1 + SSIM phase left it, before the discriminators join
                    write_model(self.dir / L1_MODEL_FILE, self.gen, self.meta(False))
                logs = self.train_step()
                if self.rank == 0:
                    if writer is None:
                        new = not log_path.is_file()
                        fh = open(log_path, "a", newline="")
                        writer = csv.writer(fh)
                        if new:
                            writer.writerow(["step", "seconds", "loss", "terms"])
                    writer.writerow([self.step, round(self.elapsed, 1), f"{logs['loss']:.5f}", json.dumps(logs)])
                    if self.progress:
                        self.progress(self.frac_done(), logs)
                    if self.cfg.preview_every and self.step % self.cfg.preview_every == 0:
                        self.preview(self.dir / "previews" / f"step_{self.step:06d}.png")
                if self.step % self.cfg.checkpoint_every == 0:
                    self.elapsed += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    if fh:
                        fh.flush()
                    self.save()
        finally:
            if fh:
                fh.close()
        self.save(finished=True)
        if self.rank == 0:
            self.preview(self.dir / "previews" / f"step_{self.step:06d}.png")
        return self.meta(True)
