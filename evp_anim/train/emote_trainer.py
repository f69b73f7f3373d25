"""Training of the EMOTE path (models/emote.py) in five stages.

1. **prior** — the temporal VAE over ground-truth rig-coefficient crops: reconstruction
   (per-channel normalised MSE + vertex error over the face and, weighted up, over the lips,
   through the rig's Gram matrices) + beta * KL. Frozen afterwards.
2. **lipreader** — the lip reader on ground-truth coefficients → per-frame viseme classes (the
   corpus's exact phoneme timing); a little coefficient noise for robustness. Frozen afterwards.
3. **emotion** — the sequence emotion classifier on ground-truth crops. Frozen afterwards.
4. **content** — the content encoder: MFCC windows (with Gaussian noise of ``audio_noise``
   training-set standard deviations) → per-frame viseme classes. Frozen afterwards.
5. **generator** — viseme probabilities + condition → prior latents → frozen decoder (for a
   ``phone_content`` share of the samples the probabilities are the clip's true visemes instead of
   the content encoder's — sharp, as the phones of the recogniser or of an aligned transcript are at
   inference, ``animate --front-end phones`` — blended, when the corpus features carry them, with the
   clip's acoustic frames as ``animate`` blends them: ``features.front_end_visemes``), with
   L = L_rec (lip-weighted vertex error + coefficient MSE)
     + lambda_lip * CE(lip reader(output), visemes)       (per frame)
     + lambda_emo * CE(emotion classifier(output), emotion) (per sequence)
     + the content-emotion exchange: the same audio with the emotion conditions (emotion,
       intensity) of another sample of the batch; its lip loss holds it to the original visemes,
       its emotion loss to the new emotion (no reconstruction: there is no ground truth for it).

``without`` (the ablation) drops ``lip`` (both lip terms), ``exchange`` or ``prior`` (stage 1 is
skipped and the generator regresses coefficients per frame with a head of its own). The content
bottleneck is kept in every ablation model.

Speaker style ids: training speakers get ids 1..S in name order; with probability
``speaker_dropout`` a sample's id is replaced by 0 ("unknown"), the id used for unseen speakers.

Checkpoints (``<run_dir>/checkpoint.pt``) are written atomically every ``checkpoint_every`` steps
and at stage ends with optimiser and random states; a killed run resumes where it stopped. The
same code runs under ``torchrun --standalone --nproc_per_node N`` (DDP, gloo on CPU); rank 0
writes the files. Crops are short (``crop`` frames, 2.6 s by default) so a step is cheap.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..atomic import atomic_path
from ..data.manifest import ClipRow
from ..emotions import EMOTIONS, NUM_EMOTIONS
from ..errors import EvpError
from ..models.emote import RATE, EmoteConfig, EmoteModel, EmoteNet, rig_bases
from .features import CorpusFeatures, front_end_visemes, manifest_hash
from .loop import StepLog, barrier, dist_info, read_checkpoint, restore_run_state, train_stage_steps, wrap_ddp

STAGES = ("prior", "lipreader", "emotion", "content", "generator")
GENERATOR = STAGES.index("generator")
ABLATION_TERMS = ("lip", "exchange", "prior")
RIG_CACHE = "emote_rig_v1.npz"


# ---------------------------------------------------------------------- rig-weight cache
def load_rig_weights(corpus: str | Path, rows: Sequence[ClipRow],
                     progress: Callable[[float], None] | None = None) -> list[np.ndarray]:
    """Per-clip ground-truth rig coefficients (T, 42) float32 (RIG_CHANNELS order) of ``rows``,
    read from the tracks once and cached in ``<corpus>/cache/emote_rig_v1.npz`` (float16; rebuilt
    when the manifest changes)."""
    from ..face.channels import RIG_CHANNELS
    corpus = Path(corpus)
    path = corpus / "cache" / RIG_CACHE
    mh = manifest_hash(rows)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["manifest_hash"]) == mh:
                    off, w = z["offsets"], z["weights"]
                    if progress:
                        progress(1.0)
                    return [w[off[i]:off[i + 1]].astype(np.float32) for i in range(len(rows))]
        except (OSError, KeyError, ValueError):
            pass
    out = []
    names = list(RIG_CHANNELS)
    for k, r in enumerate(rows):
        if not r.track:
            raise EvpError(f"clip {r.clip_id} has no track; EMOTE training needs ground-truth rig weights")
        try:
            with np.load(corpus / r.track, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode("utf-8"))
                w = z["expression"].astype(np.float32)
        except (OSError, KeyError, ValueError) as e:
            raise EvpError(f"{corpus / r.track}: not a readable track ({type(e).__name__})") from None
        have = meta.get("expression_names", [])
        if have != names:
            if not set(names) <= set(have):
                raise EvpError(f"{r.track}: track has no rig coefficients (expression channels "
                               f"{len(have)}, expected the {len(names)} rig channels)")
            w = w[:, [have.index(n) for n in names]]
        out.append(w)
        if progress and (k % 200 == 0 or k == len(rows) - 1):
            progress((k + 1) / len(rows))
    offsets = np.cumsum([0] + [len(w) for w in out]).astype(np.int64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, offsets=offsets, weights=np.concatenate(out).astype(np.float16),
                     manifest_hash=np.array(mh))
    return [w.astype(np.float16).astype(np.float32) for w in out]


@dataclasses.dataclass(frozen=True)
class EmoteTrainConfig:
    """Knobs of a training run (stored in the checkpoint; a resume must use the same ones)."""

    steps: tuple[int, int, int, int, int] = (4000, 600, 300, 2000, 2000)
    batch: int = 24
    crop: int = 64                # frames per crop (2.56 s at 25 fps); a multiple of 4
    lr: float = 2e-3
    beta_kl: float = 1e-3
    lip_vertex_weight: float = 4.0
    lambda_lip: float = 0.3
    lambda_emo: float = 0.3
    lambda_exchange: float = 1.0
    speaker_dropout: float = 0.3
    audio_noise: float = 0.2      # content stage: MFCC noise, in training-set standard deviations
    phone_content: float = 0.5    # generator stage: share of samples fed true visemes (phone front end)
    acoustic_content: bool = True  # ... blended with the clip's acoustic frames (features.front_end_visemes)
    without: tuple[str, ...] = ()
    seed: int = 0
    checkpoint_every: int = 250

    def validate(self) -> None:
        if len(self.steps) != len(STAGES) or any(int(s) != s or s < 0 for s in self.steps):
            raise EvpError(f"steps must be {len(STAGES)} non-negative integers ({', '.join(STAGES)}), "
                           f"got {self.steps}")
        bad = set(self.without) - set(ABLATION_TERMS)
        if bad:
            raise EvpError(f"unknown term(s) {sorted(bad)} for --without: choose from {', '.join(ABLATION_TERMS)}")
        if self.batch < 2:
            raise EvpError(f"batch must be at least 2 (the exchange swaps within a batch), got {self.batch}")
        if self.crop < 16 or self.crop % RATE:
            raise EvpError(f"crop must be a multiple of {RATE} frames, at least 16, got {self.crop}")
        if not 0.0 <= self.speaker_dropout <= 1.0:
            raise EvpError(f"speaker_dropout must be in [0, 1], got {self.speaker_dropout}")
        if self.audio_noise < 0:
            raise EvpError(f"audio_noise must be >= 0, got {self.audio_noise}")
        if not 0.0 <= self.phone_content <= 1.0:
            raise EvpError(f"phone_content must be in [0, 1], got {self.phone_content}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["steps"], d["without"] = list(self.steps), list(self.without)
        return d


# ---------------------------------------------------------------------- batches
class Sampler:
    """Random crops of training clips: windows, coefficients, visemes and conditions (numpy)."""

    def __init__(self, feats: CorpusFeatures, weights: list[np.ndarray], train_idx: list[int],
                 speaker_ids: dict[str, int], rng: np.random.Generator, speaker_dropout: float):
        self.f, self.w, self.rng = feats, weights, rng
        self.train = np.asarray(train_idx)
        self.spk = np.array([speaker_ids.get(r.speaker, 0) for r in feats.rows], np.int64)
        self.dropout = speaker_dropout
        self.emo_idx = feats.emotion_index
        self.inten = np.array([r.intensity for r in feats.rows], np.float32)

    def batch(self, size: int, crop: int, audio: bool = True) -> dict[str, np.ndarray]:
        idx = self.rng.choice(self.train, size=size, replace=True)
        length = min(crop, min(len(self.w[i]) for i in idx))
        length -= length % RATE
        if length < RATE:
            raise EvpError("training clips are shorter than 4 frames")
        out: dict[str, list] = {"weights": [], "visemes": [], "windows": [], "acoustic": []}
        for i in idx:
            s = int(self.rng.integers(0, len(self.w[i]) - length + 1))
            out["weights"].append(self.w[i][s:s + length])
            out["visemes"].append(self.f.visemes[i][s:s + length])
            if audio:
                out["windows"].append(self.f.windows[i][s:s + length])
                if self.f.acoustic is not None:
                    out["acoustic"].append(self.f.acoustic[i][s:s + length])
        res = {k: np.stack(v) for k, v in out.items() if v}
        emo = self.emo_idx[idx]
        res["emotion_index"] = emo
        res["emotion"] = np.eye(NUM_EMOTIONS, dtype=np.float32)[emo]
        res["intensity"] = np.where(emo == 0, 0.0, self.inten[idx]).astype(np.float32)
        spk = self.spk[idx].copy()
        spk[self.rng.random(size) < self.dropout] = 0
        res["speaker"] = spk
        return res


# ---------------------------------------------------------------------- losses
def _quad(err: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """Mean over frames of e^T G e: the mean squared vertex error (mm²) of coefficient errors e."""
    return ((err @ gram) * err).sum(-1).mean()


class RigLoss(nn.Module):
    """Reconstruction in coefficient and vertex space (buffers: Gram matrices of the rig)."""

    def __init__(self, net: EmoteNet, gram_face: np.ndarray, gram_lip: np.ndarray, lip_weight: float):
        super().__init__()
        self.register_buffer("gram_face", torch.from_numpy(gram_face))
        self.register_buffer("gram_lip", torch.from_numpy(gram_lip))
        self.lip_weight = lip_weight
        self.std = net.prior.w_std

    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, dict]:
        e = pred - gt
        coef = ((e / self.std) ** 2).mean()
        face, lip = _quad(e, self.gram_face), _quad(e, self.gram_lip)
        return coef + 0.1 * (face + self.lip_weight * lip), {"coef": coef.item(), "vert_mm2": face.item(),
                                                             "lip_mm2": lip.item()}


class PriorLoss(nn.Module):
    def __init__(self, net: EmoteNet, rig_loss: RigLoss, beta: float):
        super().__init__()
        self.net, self.rig_loss, self.beta = net, rig_loss, beta

    def forward(self, weights):
        rec, mu, logvar = self.net.prior(weights)
        l_rec, logs = self.rig_loss(rec, weights)
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1).mean()
        logs["kl"] = kl.item()
        return l_rec + self.beta * kl, logs


def frame_ce(logits: torch.Tensor, visemes: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per-frame cross-entropy of viseme logits (B, T, 15) against classes (B, T), and the accuracy."""
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), visemes.reshape(-1))
    return loss, (logits.argmax(-1) == visemes).float().mean().item()


class LipReaderLoss(nn.Module):
    def __init__(self, net: EmoteNet, noise: float = 0.02):
        super().__init__()
        self.net, self.noise = net, noise

    def forward(self, weights, visemes):
        w = weights + self.noise * torch.randn_like(weights)
        loss, acc = frame_ce(self.net.lip_reader(w), visemes)
        return loss, {"ce": loss.item(), "acc": acc}


class EmotionLoss(nn.Module):
    def __init__(self, net: EmoteNet, noise: float = 0.01):
        super().__init__()
        self.net, self.noise = net, noise

    def forward(self, weights, emotion_index):
        logits = self.net.emotion_classifier(weights + self.noise * torch.randn_like(weights))
        loss = F.cross_entropy(logits, emotion_index)
        return loss, {"ce": loss.item(), "acc": (logits.argmax(1) == emotion_index).float().mean().item()}


class ContentLoss(nn.Module):
    """Stage 4: per-frame viseme classes from noisy MFCC windows (the content encoder)."""

    def __init__(self, net: EmoteNet, noise: float):
        super().__init__()
        self.net, self.noise = net, noise

    def forward(self, windows, visemes):
        c = self.net.content
        if self.noise > 0:
            windows = windows + self.noise * c.mfcc_std * torch.randn_like(windows)
        loss, acc = frame_ce(c(windows), visemes)
        return loss, {"ce": loss.item(), "acc": acc}


class GeneratorLoss(nn.Module):
    """Stage 5 (module docstring); ``without`` drops lip / exchange terms."""

    def __init__(self, net: EmoteNet, rig_loss: RigLoss, cfg: EmoteTrainConfig):
        super().__init__()
        self.net, self.rig_loss, self.cfg = net, rig_loss, cfg
        self.use_lip = "lip" not in cfg.without
        self.use_exchange = "exchange" not in cfg.without

    def forward(self, windows, weights, visemes, emotion, intensity, emotion_index, speaker, perm, acoustic=None):
        net, cfg = self.net, self.cfg
        t = windows.shape[1]
        with torch.no_grad():           # the content encoder is frozen
            probs = net.viseme_probs(windows)
            if cfg.phone_content > 0:
                pick = torch.rand(probs.shape[0]) < cfg.phone_content
                heard = acoustic if cfg.acoustic_content else None
                probs = torch.where(pick[:, None, None], front_end_visemes(visemes, heard, probs.shape[-1]), probs)
        cond_e = emotion[:, None, :].expand(-1, t, -1)
        cond_i = intensity[:, None].expand(-1, t)
        pred = net.generate(windows, cond_e, cond_i, speaker, visemes=probs)
        total, logs = self.rig_loss(pred, weights)
        l_emo = F.cross_entropy(net.emotion_classifier(pred), emotion_index)
        total = total + cfg.lambda_emo * l_emo
        logs["emo"] = l_emo.item()
        if self.use_lip:
            l_lip, logs["lip_acc"] = frame_ce(net.lip_reader(pred), visemes)
            total = total + cfg.lambda_lip * l_lip
            logs["lip"] = l_lip.item()
        if self.use_exchange:
            # Content-emotion exchange: the same audio with another sample's emotion condition.
            xe, xi = emotion[perm], intensity[perm]
            swapped = net.generate(windows, xe[:, None, :].expand(-1, t, -1), xi[:, None].expand(-1, t),
                                   speaker, visemes=probs)
            l_xemo = F.cross_entropy(net.emotion_classifier(swapped), emotion_index[perm])
            l_x = cfg.lambda_emo * l_xemo
            logs["x_emo"] = l_xemo.item()
            if self.use_lip:
                l_xlip, _ = frame_ce(net.lip_reader(swapped), visemes)
                l_x = l_x + cfg.lambda_lip * l_xlip
                logs["x_lip"] = l_xlip.item()
            total = total + cfg.lambda_exchange * l_x
        return total, logs


def exchange_permutation(emotion_index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of the batch that moves every sample to one of another emotion where the
    batch allows it (a random derangement, then samples still paired with their own emotion are
    swapped with a sample of a different emotion)."""
    n = len(emotion_index)
    order = rng.permutation(n)
    perm = np.empty(n, np.int64)
    perm[order] = np.roll(order, 1)           # a cyclic derangement: perm[i] != i
    for i in range(n):
        if emotion_index[perm[i]] == emotion_index[i]:
            cands = np.where(emotion_index != emotion_index[i])[0]
            if len(cands):
                perm[i] = cands[int(rng.integers(len(cands)))]
    return perm


# ---------------------------------------------------------------------- statistics
def fit_statistics(net: EmoteNet, feats: CorpusFeatures, weights: list[np.ndarray], train_idx: list[int],
                   bases: dict[str, np.ndarray]) -> None:
    """Normalisation buffers from the training clips and the rig bases of the lip reader."""
    w = np.concatenate([weights[i] for i in train_idx])
    mean, std = w.mean(0), w.std(0) + 0.02
    for mod in (net.prior, net.emotion_classifier):
        mod.w_mean.copy_(torch.from_numpy(mean))
        mod.w_std.copy_(torch.from_numpy(std.astype(np.float32)))
    win = np.concatenate([feats.windows[i][:, 14] for i in train_idx[::max(1, len(train_idx) // 2000)]])
    net.content.mfcc_mean.copy_(torch.from_numpy(win.mean(0)))
    net.content.mfcc_std.copy_(torch.from_numpy(win.std(0) + 1e-3))
    net.lip_reader.basis.copy_(torch.from_numpy(bases["lip_deltas"]))
    disp = w[:: max(1, len(w) // 20000)] @ bases["lip_deltas"]
    net.lip_reader.scale.copy_(torch.tensor(float(disp.std()) + 1e-3))


# ---------------------------------------------------------------------- the run
class EmoteTrainer:
    """Runs (or resumes) the five stages and returns the trained :class:`EmoteModel`."""

    def __init__(self, feats: CorpusFeatures, weights: list[np.ndarray], rig, config: EmoteTrainConfig,
                 run_dir: Path, progress: Callable[[str, int, int, dict], None] | None = None,
                 corpus_name: str = "", model_config: EmoteConfig | None = None,
                 pretrained: Path | None = None):
        config.validate()
        if len(weights) != len(feats):
            raise EvpError("rig weights and features cover different clips")
        self.feats, self.weights, self.cfg, self.run_dir = feats, weights, config, Path(run_dir)
        self.rank, self.world = dist_info()
        self.progress, self.corpus_name = progress, corpus_name
        self.train_idx = feats.split("train")
        if not self.train_idx:
            raise EvpError("the corpus has no clips in the train split")
        for i in self.train_idx[:50]:
            if len(weights[i]) != len(feats.windows[i]):
                raise EvpError(f"clip {feats.rows[i].clip_id}: {len(weights[i])} rig frames but "
                               f"{len(feats.windows[i])} audio frames")
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng([config.seed, self.rank])
        self.speakers = sorted({feats.rows[i].speaker for i in self.train_idx})
        self.bases = rig_bases(rig)
        mc = model_config or EmoteConfig()
        mc = dataclasses.replace(mc, n_speakers=len(self.speakers), lip_vertices=len(self.bases["lip_vertices"]),
                                 direct="prior" in config.without)
        self.net = EmoteNet(mc)
        fit_statistics(self.net, feats, weights, self.train_idx, self.bases)
        self.rig_loss = RigLoss(self.net, self.bases["gram_face"], self.bases["gram_lip"], config.lip_vertex_weight)
        self.sampler = Sampler(feats, weights, self.train_idx, {s: k + 1 for k, s in enumerate(self.speakers)},
                               self.rng, config.speaker_dropout)
        self.stage, self.step, self.elapsed = 0, 0, 0.0
        self.optim: torch.optim.Optimizer | None = None
        self.ckpt = self.run_dir / "checkpoint.pt"
        if self.ckpt.is_file():
            self._resume()
        elif pretrained is not None:
            self._start_from_pretrained(Path(pretrained))

    def _steps(self, stage: int) -> int:
        if stage == 0 and "prior" in self.cfg.without:
            return 0
        return self.cfg.steps[stage]

    # -- checkpoints -------------------------------------------------------------------
    def _state(self) -> dict:
        return {"kind": "emote-checkpoint", "stage": self.stage, "step": self.step, "net": self.net.state_dict(),
                "optim": self.optim.state_dict() if self.optim else None,
                "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "config": self.cfg.to_dict(), "elapsed": self.elapsed}

    def _save(self) -> None:
        if self.rank != 0:
            return
        with atomic_path(self.ckpt) as tmp:
            torch.save(self._state(), tmp)

    def _resume(self) -> None:
        blob = read_checkpoint(self.ckpt)
        if not isinstance(blob, dict) or blob.get("kind") != "emote-checkpoint":
            raise EvpError(f"{self.ckpt}: not an EMOTE training checkpoint; use a new --run-dir")
        restore_run_state(self, blob, len(STAGES))

    def _start_from_pretrained(self, path: Path) -> None:
        """Skip stages 1–4: take the prior, lip reader, emotion classifier and content encoder from another run's
        ``perceptual.pt`` (same recipe, so the ablation models share them with the full model)."""
        blob = read_checkpoint(path, "not a readable checkpoint", hint="")
        if not isinstance(blob, dict) or blob.get("kind") != "emote-checkpoint" or blob.get("stage", 0) < GENERATOR:
            raise EvpError(f"{path} is not a finished EMOTE prior/perceptual checkpoint (<run>/perceptual.pt)")
        state = blob["net"]
        for name in ("prior", "lip_reader", "emotion_classifier", "content"):
            sub = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
            try:
                getattr(self.net, name).load_state_dict(sub)
            except RuntimeError as e:
                raise EvpError(f"{path}: {name} does not fit ({str(e).splitlines()[0][:100]})") from None
        self.stage, self.step = GENERATOR, 0
        self.pretrained_from = str(path)

    # -- optimisation ------------------------------------------------------------------
    def _module(self) -> nn.Module:
        n = self.net
        return [PriorLoss(n, self.rig_loss, self.cfg.beta_kl), LipReaderLoss(n), EmotionLoss(n),
                ContentLoss(n, self.cfg.audio_noise), GeneratorLoss(n, self.rig_loss, self.cfg)][self.stage]

    def _make_optim(self) -> torch.optim.Optimizer:
        params = self._stage_modules()[self.stage].parameters()
        return torch.optim.Adam(list(params), lr=self.cfg.lr)

    def _lr(self, total: int) -> float:
        """Cosine decay to 5 % over the stage (smoother end points for short schedules)."""
        frac = self.step / max(1, total)
        return self.cfg.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * frac)))

    def _batch(self) -> tuple:
        t = torch.from_numpy
        c = self.cfg
        b = self.sampler.batch(c.batch, c.crop, audio=self.stage >= 3)
        if self.stage == 0:
            return (t(b["weights"]),)
        if self.stage == 1:
            return t(b["weights"]), t(b["visemes"])
        if self.stage == 2:
            return t(b["weights"]), t(b["emotion_index"])
        if self.stage == 3:
            return t(b["windows"]), t(b["visemes"])
        perm = exchange_permutation(b["emotion_index"], self.rng)
        heard = t(b["acoustic"]) if "acoustic" in b else None
        return (t(b["windows"]), t(b["weights"]), t(b["visemes"]), t(b["emotion"]), t(b["intensity"]),
                t(b["emotion_index"]), t(b["speaker"]), t(perm), heard)

    def _stage_modules(self) -> list[nn.Module]:
        """The module each stage trains, in STAGES order."""
        n = self.net
        return [n.prior, n.lip_reader, n.emotion_classifier, n.content, n.generator]

    def _freeze_for_stage(self) -> None:
        for mod in self._stage_modules():
            mod.requires_grad_(False)
            mod.eval()
        mod = self._stage_modules()[self.stage]
        mod.requires_grad_(True)
        mod.train()

    def run(self) -> EmoteModel:
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.world)
        log = StepLog(self.run_dir / "log.csv")
        while self.stage < len(STAGES):
            total = self._steps(self.stage)
            if self.optim is None:
                self.optim = self._make_optim()
            self._freeze_for_stage()
            module = wrap_ddp(self._module(), self.world)

            def set_lr(total=total):
                for g in self.optim.param_groups:
                    g["lr"] = self._lr(total)

            train_stage_steps(self, module, STAGES[self.stage], total, log, before_step=set_lr,
                              terms=lambda logs: {k: round(v, 5) for k, v in logs.items()})
            self.stage, self.step, self.optim = self.stage + 1, 0, None
            self._save()
            if self.stage == GENERATOR and self.rank == 0:   # reusable by the ablation runs (--pretrained)
                import shutil
                with atomic_path(self.run_dir / "perceptual.pt") as tmp:
                    shutil.copyfile(self.ckpt, tmp)
        log.close()
        self.net.eval()
        return self._finish()

    def _finish(self) -> EmoteModel:
        from ..face.channels import RIG_CHANNELS
        idx = self.train_idx
        meta = {
            "name": "emote" + ("" if not self.cfg.without else " w/o " + ",".join(self.cfg.without)),
            "evp_anim_version": __version__, "channels": list(RIG_CHANNELS), "speakers": self.speakers,
            "emotions": list(EMOTIONS),
            "trained_on": {"corpus": self.corpus_name, "train_clips": len(idx), "speakers": self.speakers,
                           "sentences": sorted({self.feats.rows[i].sentence_id for i in idx})},
            "train_config": self.cfg.to_dict(), "train_seconds": round(self.elapsed, 1),
            "world_size": self.world,
        }
        if getattr(self, "pretrained_from", None):
            meta["pretrained_from"] = self.pretrained_from
        return EmoteModel(self.net, meta)
