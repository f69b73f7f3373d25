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
model_dir/model_l1.pt`` renders with it), ``log.csv`` (stage, step, loss, terms as JSON with the
elapsed ``seconds``; one row per step, flushed as written), ``previews/step_NNNNNN.png``
(guidance | generated | real, for a training and a held-out frame).

Precision: bfloat16 autocast only where the CPU computes bf16 natively and the generator's step is
measured faster with it (:func:`choose_precision`);
speed: :class:`TrainingPace` (steps/s, ETA, and a warning when the budget allows too few steps).

On a GPU (``device="cuda"``, with ``loader_workers`` processes drawing the batches) the same loop
runs there; the files it writes load on any CPU.

Under ``torchrun --standalone --nproc_per_node N`` each rank draws its own clips, gradients are
averaged with all-reduce (gloo on CPU) and rank 0 writes the files.

Warm start (:mod:`render.warmstart`): ``init`` (a :class:`~render.warmstart.WarmStart`) loads a
generator's weights before step 0 (discriminators and optimisers start fresh), mixed with the run's
own random ones by ``init_shrink``; a resumed checkpoint ignores it (``init_ignored``).
``meta["init"]`` records what the run started from.

Generic renderer (:mod:`render.pretrain`): ``frames`` may be a
:class:`~render.multi_frames.MultiTargetFrames` (several synthetic targets): each clip is drawn from
one target (a target first, uniformly, then a clip in its training frames), and the meta says
``generic`` with no video fingerprint (``render run`` refuses such a model; it is a warm start).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from evp_anim import __version__
from evp_anim.atomic import atomic_path
from evp_anim.errors import EvpError
from evp_anim.train.loop import StepLog, dist_info

from .data import TargetFrames, to_uint8_image
from .guidance import guidance_preview
from .losses import feature_matching_loss, lsgan_loss, reconstruction_loss
from .model_file import FORMAT, MODEL_FILE, load_blob, write_model
from .networks import CLIP, Discriminators, Generator, GeneratorConfig, mouth_boxes
from .warmstart import checked_shrink

CHECKPOINT_FILE = "checkpoint.pt"
L1_MODEL_FILE = "model_l1.pt"   # snapshot at the end of the L1 + SSIM phase
LOG_FILE = "log.csv"
LOG_STAGE = "render"             # log.csv's stage column (evp_anim.train.loop.StepLog's format)

# Fewer steps than this in a run's whole budget draws a warning. The README's renderer figures: the
# synthetic target reached face-region PSNR 27.7 dB / mouth LD 0.88 px after 3,358 steps (33 min),
# while 4-minute runs (382-480 steps) stayed at 23 dB on the synthetic face and "far too short" (soft
# skin and eyes) on the astronaut photo, and runs of 16-72 steps gave a grey blob. 2,000 steps is
# ~60% of the one converged run, i.e. ~1,500 steps of the L1 + SSIM phase before the GAN joins:
# below it a user should expect a visibly unfinished face. (A real video wants far more.)
MIN_CONVERGED_STEPS = 2000
# the README's CPU timings: ~0.5 s per step in the L1 phase, ~1 s once the discriminators train
ADVERSARIAL_SLOWDOWN = 2.0
PROGRESS_EVERY_S = 30.0          # a progress line at least this often (also with no terminal)
PACE_WARMUP_STEPS = 3            # steps timed (after the first, which pays oneDNN's setup) before estimating


# ---------------------------------------------------------------------- precision
def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo's first ``flags`` line (empty where it cannot be read,
    e.g. not on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# x86 instructions that compute in bfloat16 natively. Without them oneDNN emulates bf16 with
# conversions around fp32 maths, which measured 1.66x *slower* than plain fp32 on an AVX2 CPU.
# (torch.backends.mkldnn's bf16 check says yes for any AVX512 core, native or not, so it is not used.)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def check_precision(requested: str) -> None:
    """One-line EvpError unless ``requested`` is auto, fp32 or bf16 (nothing is timed)."""
    if requested not in ("auto", "fp32", "bf16"):
        raise EvpError(f"--precision must be auto, fp32 or bf16, got {requested!r}")


def choose_precision(requested: str = "auto", size: int = 256, device: str = "cpu") -> tuple[bool, str]:
    """(bfloat16 autocast on?, one line saying what was chosen and why) for ``--precision``
    auto | fp32 | bf16. On the CPU, auto looks at the CPU: fp32 without native bf16 instructions;
    with them, bf16 only if the generator's step (one ``size`` px crop, ~1 s to time) is at least
    BF16_MIN_SPEEDUP× faster in bf16. On a GPU (``device`` cuda, checked by :func:`check_device`)
    auto is fp32 (its convolutions run in TF32; one H200 run was bound by drawing batches, not by
    arithmetic)."""
    check_precision(requested)
    if device != "cpu":
        check_device(device)
        return requested == "bf16", (f"precision: {'bf16' if requested == 'bf16' else 'fp32'} on {device} "
                                     f"(--precision {requested})")
    native = sorted(set(NATIVE_BF16_FLAGS) & cpu_flags())
    if requested == "fp32":
        return False, "precision: fp32 (--precision fp32)"
    if requested == "bf16":
        return True, ("precision: bf16 (--precision bf16; this CPU has " + "/".join(native) + ")" if native else
                      "precision: bf16 (--precision bf16) although this CPU has no native bf16 "
                      "(avx512_bf16/amx_bf16): expect it to be ~1.7x slower than fp32")
    if native:
        # The flags are not the whole story: on a CPU reporting avx512_bf16/amx_bf16 a whole
        # training step still measured 1.66x slower in bf16 (11.3 vs 6.8 s/step) while a bare
        # convolution ran ~1.8x faster. So the generator itself decides, timed both ways.
        fp32_s, bf16_s = _time_generator_step(size)
        if bf16_s * BF16_MIN_SPEEDUP <= fp32_s:
            return True, (f"precision: bf16 (auto: native {'/'.join(native)}, and the generator's step took "
                          f"{bf16_s:.2f} s in bf16 against {fp32_s:.2f} s in fp32)")
        return False, (f"precision: fp32 (auto: the CPU reports {'/'.join(native)}, but the generator's step took "
                       f"{bf16_s:.2f} s in bf16 against {fp32_s:.2f} s in fp32; --precision bf16 forces it)")
    return False, ("precision: fp32 (auto: this CPU has no native bf16 (avx512_bf16/amx_bf16), where bf16 "
                   "is emulated and slower; --precision bf16 forces it)")


def check_device(device: str) -> None:
    """One-line EvpError unless ``device`` is "cpu", or "cuda" / "cuda:N" with such a GPU visible to torch."""
    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise EvpError(f"--device must be cpu or cuda (cuda:N), got {device!r}")
    if not torch.cuda.is_available():
        raise EvpError(f"--device {device}: torch sees no CUDA GPU here (use --device cpu)")
    try:
        index = torch.device(device).index or 0
    except RuntimeError:
        raise EvpError(f"--device must be cpu or cuda (cuda:N), got {device!r}") from None
    if index >= torch.cuda.device_count():
        raise EvpError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")


BF16_MIN_SPEEDUP = 1.15       # bf16 must beat fp32 by this much to be worth its rounding


def _time_generator_step(size: int, reps: int = 3) -> tuple[float, float]:
    """Seconds of one forward + backward of the default generator on one size² sample, in fp32
    and under bf16 autocast (after one warm-up each; the best of ``reps``)."""
    from .networks import Generator
    s = max(64, int(size) // 64 * 64)
    gen = Generator().to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    inputs = [torch.rand(1, c, s, s, generator=g) for c in (10, 3, 1, 1, 3)]
    out = {}
    for bf16 in (False, True):
        times = []
        for i in range(reps + 1):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = gen(*inputs)
            y.float().mean().backward()
            gen.zero_grad(set_to_none=True)
            if i:
                times.append(time.perf_counter() - t0)
        out[bf16] = min(times)
    return out[False], out[True]


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
    bf16: bool = False           # bfloat16 autocast for the networks (losses stay float32); see choose_precision
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


# ---------------------------------------------------------------------- batches
def draw_clip_batch(frames, cfg: RenderTrainConfig, rng: np.random.Generator,
                    generic: bool) -> dict[str, torch.Tensor]:
    """(B, K, ...) float32 CPU tensors for B = ``cfg.batch`` clips of K = ``cfg.clip`` consecutive
    training frames of ``frames`` (each clip from one target of a generic set, never across two),
    plus ``prev0`` (B, 3, S, S): the real frame before each clip, blurred and noisy, or zeros with
    probability ``cfg.prev_drop``."""
    k = cfg.clip
    ranges = frames.train_ranges() if generic else [(0, frames.n_train)]
    if len(ranges) == 1:
        (a, n), = ranges
        starts = a + rng.integers(1, max(2, n - a - k + 1), cfg.batch)
        ends = [n] * cfg.batch
    else:   # a target, then a clip in its training frames (never across two targets)
        which = rng.integers(0, len(ranges), cfg.batch)
        starts = np.array([ranges[t][0] + rng.integers(1, max(2, ranges[t][1] - ranges[t][0] - k + 1))
                           for t in which])
        ends = [ranges[t][1] for t in which]
    items = [[frames.sample(min(int(s) + j, e - 1)) for j in range(k)] for s, e in zip(starts, ends)]
    out = {key: torch.from_numpy(np.stack([[it[key] for it in clip] for clip in items]))
           for key in ("guidance", "known", "mask", "alpha", "real", "mouth", "mouth_centre")}
    prev = []
    for s in starts:
        if rng.random() < cfg.prev_drop:
            prev.append(np.zeros((3, cfg.size, cfg.size), np.float32))
            continue
        p = frames.crop(int(s) - 1)
        p = cv2.GaussianBlur(p, (0, 0), float(rng.uniform(0.3, 1.2)))
        p = p.astype(np.float32) / 127.5 - 1.0 + rng.normal(0, 0.02, p.shape).astype(np.float32)
        prev.append(p.transpose(2, 0, 1))
    out["prev0"] = torch.from_numpy(np.stack(prev).astype(np.float32))
    return out


class ClipStream(torch.utils.data.IterableDataset):
    """Endless :func:`draw_clip_batch` batches for a DataLoader's worker processes; worker ``w``
    draws with its own generator seeded ``seed + [w]`` (so the batches differ from a run drawn in
    one process, and between workers)."""

    def __init__(self, frames, cfg: RenderTrainConfig, generic: bool, seed: list[int]):
        super().__init__()
        self.frames, self.cfg, self.generic, self.seed = frames, cfg, generic, list(seed)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng(self.seed + [0 if info is None else info.id + 1])
        while True:
            yield draw_clip_batch(self.frames, self.cfg, rng, self.generic)


# ---------------------------------------------------------------------- the run
class RenderTrainer:
    """Trains (or resumes training) a renderer for one target video (or, given a
    :class:`~render.multi_frames.MultiTargetFrames`, a generic renderer over several targets).

    steps / minutes: the budget (either may be None; training stops at whichever comes first;
    the time counts across resumes). ``progress(frac, logs)`` is called after each step on rank 0.
    fingerprint: the video's sha256 (for a generic renderer, any string naming its footage: it only
    ties a checkpoint to its footage). init: a :class:`~render.warmstart.WarmStart` whose generator
    weights replace the random ones before step 0, unless a checkpoint is resumed (then
    ``init_ignored``); init_why: for a cold start, why (recorded in the meta). init_shrink: the
    warm weights are mixed with this run's random ones, ``s × warm + (1 − s) × random``
    (:data:`render.warmstart.DEFAULT_INIT_SHRINK`; 1: the warm weights as they are).
    device: where the networks train ("cpu", or "cuda" where there is a GPU; files are read back
    on the CPU). loader_workers: processes that draw the batches ahead of the steps (0: drawn in
    this process, reproducible from the seed; a GPU step outruns one core's drawing).
    """

    def __init__(self, frames: TargetFrames, model_dir: str | Path, config: RenderTrainConfig,
                 fingerprint: str, target_info: dict, steps: int | None = None, minutes: float | None = None,
                 progress: Callable[[float, dict], None] | None = None, init=None, init_why: str | None = None,
                 init_shrink: float = 1.0, device: str = "cpu", loader_workers: int = 0):
        config.validate()
        if steps is None and minutes is None:
            raise EvpError("give a training budget: steps or minutes")
        if frames.size != config.size:
            raise EvpError(f"frames are {frames.size} px crops but the config says {config.size}")
        self.frames, self.cfg, self.dir = frames, config, Path(model_dir)
        self.fingerprint, self.target_info = fingerprint, target_info
        self.max_steps, self.max_seconds = steps, (minutes * 60.0 if minutes is not None else None)
        self.rank, self.world = dist_info()
        if self.world > 1 and torch.device(device).type != "cpu":
            raise EvpError("training on a GPU runs in one process: drop torchrun, or use --device cpu under it")
        self.progress = progress
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng([config.seed, self.rank])
        self.device, self.loader_workers = torch.device(device), int(loader_workers)
        self.gen = Generator(config.gen_config()).to(self.device, memory_format=torch.channels_last)
        self.disc = Discriminators().to(self.device, memory_format=torch.channels_last)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=config.lr, betas=(0.9, 0.999))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=config.lr_d, betas=(0.5, 0.999))
        self.step, self.elapsed = 0, 0.0
        self.ckpt = self.dir / CHECKPOINT_FILE
        self.resumed = False
        self.generic = bool(getattr(frames, "generic", False))
        self.pace = TrainingPace(self)
        self.init_record = (init.record() if init is not None
                            else {"kind": "cold", "why": init_why or "random weights"})
        self.init_ignored = False
        if self.ckpt.is_file():
            self._resume()
            self.init_ignored = init is not None
        elif init is not None:
            init_shrink = checked_shrink(init_shrink)
            fresh = {k: v.clone() for k, v in self.gen.state_dict().items()} if init_shrink < 1.0 else None
            try:
                self.gen.load_state_dict(init.state)
            except (RuntimeError, KeyError, TypeError) as e:
                raise EvpError(f"{init.path}: corrupt warm start ({type(e).__name__}); give another --init "
                               f"or --init none") from None
            if fresh is not None:
                # shrink and perturb (Ash & Adams 2020): warm × s + this run's random init × (1 − s).
                # Started from the generic weights as they are, per-target runs learnt faster but
                # stalled ~0.7 dB below a cold start on held-out frames after 20 min; s = 0.5 kept
                # most of the early lead and ended 0.4-1.0 dB higher (README, "warm start").
                with torch.no_grad():
                    for k, v in self.gen.state_dict().items():
                        if v.is_floating_point():
                            v.mul_(init_shrink).add_(fresh[k], alpha=1.0 - init_shrink)
            self.init_record = dict(self.init_record, shrink=init_shrink)
        _broadcast(self.gen, self.world)
        _broadcast(self.disc, self.world)

    # -- checkpoints ------------------------------------------------------------------
    def _state(self) -> dict:
        return {"format": FORMAT, "step": self.step, "elapsed": self.elapsed, "config": self.cfg.to_dict(),
                "fingerprint": self.fingerprint, "gen": self.gen.state_dict(), "disc": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "init": self.init_record}

    def _resume(self) -> None:
        blob = load_blob(self.ckpt, "checkpoint")
        if blob.get("fingerprint") != self.fingerprint:
            raise EvpError(f"{self.ckpt} belongs to a model of another video; use a new output folder")
        # precision is a speed knob, like the budget: a run may resume in another one
        same = lambda d: {k: v for k, v in (d or {}).items() if k != "bf16"}   # noqa: E731
        if same(blob.get("config")) != same(self.cfg.to_dict()):
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
        self.init_record = blob.get("init")   # what the run started from (None: a checkpoint older than warm starts)
        self.resumed = True

    def meta(self, finished: bool) -> dict:
        m = {"fingerprint": self.fingerprint, "target": self.target_info, "size": self.cfg.size,
             "crop_margin": self.cfg.crop_margin, "holdout_start": self.frames.n_train,
             "n_frames": len(self.frames), "steps": self.step, "train_seconds": round(self.elapsed, 1),
             "world_size": self.world, "finished": finished, "train_config": self.cfg.to_dict(),
             "init": self.init_record, "evp_anim_version": __version__}
        if self.generic:
            # no one video's fingerprint: render run / eval-video refuse it (a warm start, not a dubbing model)
            m.update(fingerprint=None, generic=True, n_targets=len(self.frames.targets), holdout_start=None,
                     footage_fingerprint=self.fingerprint)
        return m

    def save(self, finished: bool = False) -> None:
        if self.rank != 0:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.ckpt) as tmp:
            torch.save(self._state(), tmp)
        write_model(self.dir / MODEL_FILE, self.gen, self.meta(finished))

    # -- batches ----------------------------------------------------------------------
    def _clip_batch(self) -> dict[str, torch.Tensor]:
        """(B, K, ...) tensors for B clips of K consecutive training frames, plus ``prev0``
        (drawn in this process with the run's own generator; :meth:`_batches` may draw them in
        loader workers instead)."""
        return draw_clip_batch(self.frames, self.cfg, self.rng, self.generic)

    def _batches(self):
        """Endless training batches: drawn in this process, or, with ``loader_workers``, by that
        many worker processes ahead of the steps (a GPU step is faster than one CPU core decodes
        and draws the batch's crops and guidance)."""
        if not self.loader_workers:
            while True:
                yield self._clip_batch()
        from torch.utils.data import DataLoader
        stream = ClipStream(self.frames, self.cfg, self.generic, [self.cfg.seed, self.rank, self.step])
        loader = DataLoader(stream, batch_size=None, num_workers=self.loader_workers, prefetch_factor=4,
                            pin_memory=self.device.type == "cuda", persistent_workers=False)
        yield from loader

    # -- one step ---------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

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
        b = {k: v.to(self.device, non_blocking=True) for k, v in b.items()}
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
        picks = (self.frames.preview_indices() if self.generic else
                 (self.frames.n_train // 2, min(n - 1, self.frames.n_train + (n - self.frames.n_train) // 2)))
        for i in picks:
            s = self.frames.sample(i)
            t = {k: torch.from_numpy(v)[None].to(self.device) for k, v in s.items()
                 if k in ("guidance", "known", "mask", "alpha")}
            prev = torch.zeros((1, *s["real"].shape), device=self.device)
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
        """Train until the budget is spent; returns the model's meta. On rank 0 every step is a
        row of ``log.csv`` (flushed at once, so the file grows while training; a resumed run keeps
        the rows its checkpoint covers: :class:`evp_anim.train.loop.StepLog`) and is timed by
        ``self.pace`` before ``progress`` is called."""
        log = StepLog(self.dir / LOG_FILE) if self.rank == 0 else None
        if self.rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        batches = self._batches()
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
                logs = self.train_step(next(batches))
                if self.rank == 0:
                    log.write(LOG_STAGE, self.step, logs["loss"],
                              {**logs, "seconds": round(self.elapsed + time.perf_counter() - t0, 1)})
                    self.pace.after_step(adversarial="d" in logs)
                    if self.progress:
                        self.progress(self.frac_done(), logs)
                    if self.cfg.preview_every and self.step % self.cfg.preview_every == 0:
                        self.preview(self.dir / "previews" / f"step_{self.step:06d}.png")
                if self.step % self.cfg.checkpoint_every == 0:
                    self.elapsed += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self.save()
        finally:
            batches.close()     # stops the loader workers now, not whenever the generator is collected
            if log is not None:
                log.close()
        self.save(finished=True)
        if self.rank == 0:
            self.preview(self.dir / "previews" / f"step_{self.step:06d}.png")
        return self.meta(True)


# ---------------------------------------------------------------------- pace
class ReporterProgress:
    """The ``progress(frac, logs)`` callback of :class:`RenderTrainer` for a command: the fraction
    and pace fields to ``rep``, the few-steps warning, the periodic steps/s + ETA line. Set
    ``.trainer`` once the trainer exists; ``.last`` keeps the latest losses."""

    def __init__(self, rep):
        self.rep = rep
        self.trainer: "RenderTrainer | None" = None
        self.last: dict = {}

    def __call__(self, frac: float, logs: dict) -> None:
        self.last.update(logs)
        pace = self.trainer.pace
        self.rep.fraction(frac, **pace.fields())
        warning = pace.few_steps_warning()
        if warning:
            self.rep.warning(warning)
        line = pace.line(logs)
        if line:
            self.rep.info(line)

    def losses(self) -> str:
        """"; last losses k v, ..." or "" before any step."""
        return f"; last losses {', '.join(f'{k} {v:.4f}' for k, v in self.last.items())}" if self.last else ""


class TrainingPace:
    """How fast a run goes in this process, for people watching it without a terminal.

    The first step of a process is not timed (it pays for oneDNN's kernel setup); the rate is then
    the steps per second of wall time since, restarted when the adversarial phase begins (its steps
    cost ~2x). Before that phase the estimates assume its steps will cost ``ADVERSARIAL_SLOWDOWN``
    times the measured ones. ``clock`` is injectable for tests."""

    def __init__(self, trainer: "RenderTrainer", clock: Callable[[], float] = time.perf_counter,
                 every_s: float | None = None):
        self.tr, self.clock = trainer, clock
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self._t0: float | None = None
        self._s0 = 0
        self._adv = False
        self.rate: float | None = None       # steps/s, None until PACE_WARMUP_STEPS steps are timed
        self._last_line: float | None = None
        self._warned = False

    def after_step(self, adversarial: bool = False) -> None:
        now = self.clock()
        if self._t0 is None or adversarial != self._adv:
            self._t0, self._s0, self._adv = now, self.tr.step, adversarial
            return
        n = self.tr.step - self._s0
        if n >= PACE_WARMUP_STEPS or self.rate is not None:
            self.rate = n / max(now - self._t0, 1e-9)

    def _phase_rates(self) -> tuple[float, float, bool]:
        """(rate of L1-phase steps, rate of adversarial steps, whether an adversarial phase is still to come)."""
        cfg = self.tr.cfg
        gan = cfg.w_adv > 0 and cfg.gan_start < 1
        if self._adv:
            return self.rate * ADVERSARIAL_SLOWDOWN, self.rate, False
        coming = gan and cfg.gan_start > 0
        return self.rate, (self.rate / ADVERSARIAL_SLOWDOWN if coming else self.rate), coming

    def _before_gan(self, left: float, to_gan: float, coming: bool) -> float:
        """The part of ``left`` (seconds or steps of budget) spent before the adversarial phase,
        which begins ``to_gan`` from now when ``coming``; all of it when there is none."""
        if coming:
            return min(left, max(0.0, to_gan))
        return 0.0 if self._adv else left

    def expected_steps(self) -> int | None:
        """Steps the whole budget will allow (None until the rate is known)."""
        if self.rate is None:
            return None
        tr = self.tr
        r_l1, r_adv, coming = self._phase_rates()
        total = float("inf")
        if tr.max_seconds is not None:
            left = max(0.0, tr.max_seconds - tr.elapsed)
            left_l1 = self._before_gan(left, tr.cfg.gan_start * tr.max_seconds - tr.elapsed, coming)
            total = tr.step + left_l1 * r_l1 + (left - left_l1) * r_adv
        if tr.max_steps is not None:
            total = min(total, tr.max_steps)
        return int(total)

    def eta_s(self) -> float | None:
        """Seconds until the budget is spent (None until the rate is known)."""
        if self.rate is None:
            return None
        tr = self.tr
        r_l1, r_adv, coming = self._phase_rates()
        eta = float("inf")
        if tr.max_steps is not None:
            left = max(0, tr.max_steps - tr.step)
            left_l1 = self._before_gan(left, tr.cfg.gan_start * tr.max_steps - tr.step, coming)
            eta = left_l1 / r_l1 + (left - left_l1) / r_adv
        if tr.max_seconds is not None:
            eta = min(eta, max(0.0, tr.max_seconds - tr.elapsed))
        return eta

    def fields(self) -> dict:
        """JSON-ready pace of the run (for machine-readable progress lines)."""
        eta = self.eta_s()
        return {"step": self.tr.step, "steps_per_s": None if self.rate is None else round(self.rate, 4),
                "eta_s": None if eta is None else round(eta, 1), "expected_steps": self.expected_steps()}

    def line(self, logs: dict | None = None, force: bool = False) -> str | None:
        """A progress line when one is due (the first once the rate is known, then every
        ``every_s`` seconds), else None."""
        if self.rate is None:
            return None
        now = self.clock()
        if not force and self._last_line is not None and now - self._last_line < self.every_s:
            return None
        self._last_line = now
        tr, expected, eta = self.tr, self.expected_steps(), self.eta_s()
        budget = []
        if tr.max_seconds is not None:
            budget.append(f"{_duration(tr.elapsed)} of {_duration(tr.max_seconds)}")
        text = (f"train: step {tr.step:,} of ~{expected:,} ({100 * tr.frac_done():.0f}%), "
                f"{self.rate:.2f} steps/s ({1 / self.rate:.2f} s/step)"
                + (", " + budget[0] if budget else "") + f", ETA {_duration(eta)}")
        if logs and "loss" in logs:
            text += f", loss {logs['loss']:.4f}" + (" (adversarial phase)" if self._adv else "")
        return text

    def few_steps_warning(self) -> str | None:
        """Once, as soon as the rate is known: a warning when the budget allows fewer than
        ``MIN_CONVERGED_STEPS`` steps, with what to do about it."""
        expected = self.expected_steps()
        if self._warned or expected is None or expected >= MIN_CONVERGED_STEPS:
            return None
        self._warned = True
        tr = self.tr
        if tr.max_seconds is not None and (tr.max_steps is None or expected < tr.max_steps):
            need = MIN_CONVERGED_STEPS / max(expected, 1) * tr.max_seconds / 60
            return (f"at {self.rate:.2f} steps/s the {tr.max_seconds / 60:g}-minute budget allows only ~{expected:,} "
                    f"training steps, fewer than the ~{MIN_CONVERGED_STEPS:,} a face needs to converge (expect a "
                    f"blurred or blob-like face): give more minutes (~{need:.0f}), a smaller --size, or a GPU")
        return (f"--steps {tr.max_steps:,} is fewer than the ~{MIN_CONVERGED_STEPS:,} steps a face needs to converge "
                f"(expect a blurred or blob-like face): give more steps")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
