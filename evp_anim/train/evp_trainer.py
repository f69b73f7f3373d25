"""Training of the EVP audio side in three stages (Ji et al. 2021, Sec. 3.2–3.3 and Sec. 4).

1. **pretrain** — Ee + Ce as an emotion classifier (EVP pre-trains Ee on emotion classification)
   and Ec + a viseme head on per-frame viseme classes (EVP pre-trains Ec on LRW lip reading; the
   synthetic corpus's exact phoneme timing gives that supervision here).
2. **disentangle** — cross-reconstruction on DTW-aligned pseudo pairs, Eq. 2–6:
   L_dis = L_cross + L_self + λ_cla·L_cla + λ_con·L_con, with a fresh decoder D. For a speaker,
   sentences i ≠ j, and emotion/level pairs m ≠ n, the four clips x_im, x_in, x_jm, x_jn are
   aligned pairwise by their DTW paths (x_im with x_in, x_jm with x_jn). Any term can be
   switched off (Table 2's ablation).
3. **landmarks** — the audio-to-landmark network on frozen encoders, Eq. 7 (L2 between predicted
   and ground-truth landmarks; we use pose-invariant 3D landmarks in mm, see models/evp.py).
   Half of the samples (``phone_content``) take their content from the phone encoder Ep fed the
   clip's true visemes, trained alongside: the front end for real speech (``--front-end phones``);
   blended, when the features carry them, with the clip's acoustic frames as ``animate`` blends
   them (``acoustic_content``). Half of the samples (``label_code_share``) get their emotion's
   label code (the mean code of its emotion and level) instead of the clip's own Ee code, which
   is what label control feeds the LSTM at inference.

Afterwards the mean emotion code of each emotion at each MEAD level is stored for label control.

Robustness: checkpoints (``<run_dir>/checkpoint.pt``) are written atomically every
``checkpoint_every`` steps and at stage ends, with optimiser and random states, so a killed
run resumes where it stopped and gives the same weights as an uninterrupted one. Logs go to
``<run_dir>/log.csv``. The same code runs under ``torchrun --nproc_per_node N`` (DDP; gloo on
CPU, nccl on GPU): each rank draws its own batches, gradients are averaged, rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..atomic import atomic_path
from ..emotions import EMOTIONS
from ..errors import EvpError
from ..models.evp import EvpConfig, EvpModel, EvpNet
from .features import CorpusFeatures, front_end_visemes
from .loop import StepLog, barrier, dist_info, read_checkpoint, restore_run_state, train_stage_steps, wrap_ddp

STAGES = ("pretrain", "disentangle", "landmarks")
LOSS_TERMS = ("cross", "self", "cla", "con")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Knobs of a training run (stored in the checkpoint; a resume must use the same ones)."""

    steps: tuple[int, int, int] = (800, 800, 1500)
    batch: int = 32
    crop: int = 48              # frames per training crop in stage 1 (1.9 s)
    pair_batch: int = 16        # quadruples per batch in stage 2 (each is four sequences)
    pair_crop: int = 32         # aligned frames per quadruple in stage 2 (1.3 s)
    landmark_crop: int = 96     # frames per crop in stage 3 (3.8 s)
    lr: float = 1e-3
    lambda_cla: float = 1.0
    lambda_con: float = 1.0
    lambda_anchor: float = 1.0      # Ec's viseme task kept during stage 2 (see DisentangleLoss)
    phone_content: float = 0.5      # stage 3: share of samples whose content comes from Ep (true visemes)
    acoustic_content: bool = True   # stage 3: Ep reads the visemes blended with the acoustic frames
    label_code_share: float = 0.5   # stage 3: share of samples given their emotion's label code
    lambda_gap: float = 0.0         # stage 3: weight of the inner-lip gap loss (mm, see LandmarkLoss)
    without: tuple[str, ...] = ()   # loss terms switched off in stage 2 (ablation)
    seed: int = 0
    checkpoint_every: int = 250

    def validate(self) -> None:
        if len(self.steps) != 3 or any(s < 0 for s in self.steps):
            raise EvpError(f"steps must be three non-negative numbers (pretrain, disentangle, landmarks), got {self.steps}")
        bad = set(self.without) - set(LOSS_TERMS)
        if bad:
            raise EvpError(f"unknown loss term(s) {sorted(bad)} for --without: choose from {', '.join(LOSS_TERMS)}")
        if self.batch < 1 or self.crop < 8 or self.landmark_crop < 8:
            raise EvpError("batch must be ≥ 1 and crops ≥ 8 frames")
        if not 0.0 <= self.phone_content <= 1.0:
            raise EvpError(f"phone_content must be in [0, 1], got {self.phone_content}")
        if self.lambda_gap < 0:
            raise EvpError(f"lambda_gap must be ≥ 0, got {self.lambda_gap}")
        if not 0.0 <= self.label_code_share <= 1.0:
            raise EvpError(f"label_code_share must be in [0, 1], got {self.label_code_share}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["steps"], d["without"] = list(self.steps), list(self.without)
        return d


# ---------------------------------------------------------------------- batches
class Sampler:
    """Draws training batches from the features (numpy, seeded per rank)."""

    def __init__(self, feats: CorpusFeatures, pairs: dict, train_idx: list[int], rng: np.random.Generator):
        self.f = feats
        self.rng = rng
        self.train = np.asarray(train_idx)
        self.pairs = pairs  # (speaker, sentence, (emo, lvl) a, (emo, lvl) b) -> (idx a, idx b, path)
        same_condition: dict[tuple, list[tuple]] = {}
        for key in pairs:
            same_condition.setdefault((key[0], key[2], key[3]), []).append(key)
        # For each pair (speaker, sentence i, m, n): the pairs of the same speaker and emotions on
        # other sentences j, the partners a quadruple needs. Pairs without partners are never drawn.
        self.partners = {k: [o for o in same_condition[(k[0], k[2], k[3])] if o[1] != k[1]] for k in pairs}
        self.pair_keys = [k for k in pairs if self.partners[k]]

    def _crop(self, n: int, length: int) -> int:
        return int(self.rng.integers(0, n - length + 1))

    def clips(self, batch: int, crop: int, with_landmarks: bool = False) -> dict[str, np.ndarray]:
        idx = self.rng.choice(self.train, size=batch, replace=True)
        length = min(crop, min(self.f.windows[i].shape[0] for i in idx))
        win, vis, lm, heard = [], [], [], []
        for i in idx:
            s = self._crop(self.f.windows[i].shape[0], length)
            win.append(self.f.windows[i][s:s + length])
            vis.append(self.f.visemes[i][s:s + length])
            if with_landmarks:
                lm.append(self.f.lm3d[i][s:s + length])
                if self.f.acoustic is not None:
                    heard.append(self.f.acoustic[i][s:s + length])
        out = {"idx": idx, "windows": np.stack(win), "visemes": np.stack(vis),
               "emotion": self.f.emotion_index[idx]}
        if with_landmarks:
            out["lm3d"] = np.stack(lm)
            out["reference"] = self.f.reference[idx]
            out["acoustic"] = np.stack(heard) if heard else None
        return out

    def quadruples(self, batch: int, crop: int) -> dict[str, np.ndarray]:
        """x_im, x_in, x_jm, x_jn aligned pairwise (i with i, j with j), each (B, L, 28, 12)."""
        xs = {k: [] for k in ("im", "in", "jm", "jn", "vis_i", "vis_j")}
        labels = {k: [] for k in ("m", "n")}
        for _ in range(batch):
            key = self.pair_keys[int(self.rng.integers(len(self.pair_keys)))]
            others = self.partners[key]
            key2 = others[int(self.rng.integers(len(others)))]
            ai, bi, p1 = self.pairs[key]
            aj, bj, p2 = self.pairs[key2]
            length = min(crop, len(p1), len(p2))
            s1, s2 = self._crop(len(p1), length), self._crop(len(p2), length)
            q1, q2 = p1[s1:s1 + length], p2[s2:s2 + length]
            xs["im"].append(self.f.windows[ai][q1[:, 0]])
            xs["in"].append(self.f.windows[bi][q1[:, 1]])
            xs["jm"].append(self.f.windows[aj][q2[:, 0]])
            xs["jn"].append(self.f.windows[bj][q2[:, 1]])
            xs["vis_i"].append(self.f.visemes[ai][q1[:, 0]])
            xs["vis_j"].append(self.f.visemes[bj][q2[:, 1]])
            labels["m"].append(EMOTIONS.index(key[2][0]))
            labels["n"].append(EMOTIONS.index(key[3][0]))
        length = min(x.shape[0] for x in xs["im"] + xs["jm"])
        out = {k: np.stack([x[:length] for x in v]) for k, v in xs.items()}
        out.update({k: np.asarray(v) for k, v in labels.items()})
        return out


def pair_index(feats: CorpusFeatures, pairs: list, train_idx: list[int]) -> dict:
    """Map (speaker, sentence, (emo_a, lvl_a), (emo_b, lvl_b)) → (clip a, clip b, path) for train pairs.

    Both orders are stored, so a quadruple can ask for (m, n) in either direction.
    """
    pos = {feats.rows[i].clip_id: i for i in train_idx}
    out = {}
    for p in pairs:
        a, b = pos.get(p.clip_a), pos.get(p.clip_b)
        if a is None or b is None:
            continue
        ra, rb = feats.rows[a], feats.rows[b]
        ka, kb = (ra.emotion, ra.level), (rb.emotion, rb.level)
        path = np.asarray(p.path, np.int64)
        out[(ra.speaker, ra.sentence_id, ka, kb)] = (a, b, path)
        out[(ra.speaker, ra.sentence_id, kb, ka)] = (b, a, path[:, ::-1].copy())
    return out


# ---------------------------------------------------------------------- stage losses
class PretrainLoss(nn.Module):
    """Stage 1: emotion classification (Ee + Ce) and per-frame viseme classification (Ec + head)."""

    def __init__(self, net: EvpNet):
        super().__init__()
        self.net = net

    def forward(self, windows, visemes, emotion):
        x = self.net.normalise(windows)
        emo_logits = self.net.classifier(self.net.emotion(x))
        vis_logits = self.net.viseme_head(self.net.content(x))
        l_emo = F.cross_entropy(emo_logits, emotion)
        l_vis = F.cross_entropy(vis_logits.reshape(-1, vis_logits.shape[-1]), visemes.reshape(-1))
        acc = (emo_logits.argmax(1) == emotion).float().mean()
        return l_emo + l_vis, {"emotion_ce": l_emo.item(), "viseme_ce": l_vis.item(), "emotion_acc": acc.item()}


class DisentangleLoss(nn.Module):
    """Stage 2: Eq. 2–6 on quadruples; ``without`` switches terms off (ablation)."""

    def __init__(self, net: EvpNet, lambda_cla: float, lambda_con: float, without: tuple[str, ...],
                 lambda_anchor: float = 1.0):
        super().__init__()
        self.net = net
        self.lambda_cla, self.lambda_con, self.without = lambda_cla, lambda_con, set(without)
        self.lambda_anchor = lambda_anchor

    def forward(self, im, in_, jm, jn, m, n, vis_i, vis_j):
        net = self.net
        x = {k: net.normalise(v) for k, v in (("im", im), ("in", in_), ("jm", jm), ("jn", jn))}
        c = {k: net.content(v) for k, v in x.items()}
        e = {k: net.emotion(v) for k, v in x.items()}
        mse = F.mse_loss
        terms = {
            "cross": mse(net.decoder(c["im"], e["jn"]), x["in"]) + mse(net.decoder(c["jn"], e["im"]), x["jm"]),
            "self": mse(net.decoder(c["im"], e["im"]), x["im"]) + mse(net.decoder(c["jn"], e["jn"]), x["jn"]),
            "cla": sum(F.cross_entropy(net.classifier(e[k]), lab) for k, lab in
                       (("im", m), ("in", n), ("jm", m), ("jn", n))) / 4,
            "con": F.l1_loss(c["im"], c["in"]) + F.l1_loss(c["jm"], c["jn"]),
        }
        weights = {"cross": 1.0, "self": 1.0, "cla": self.lambda_cla, "con": self.lambda_con}
        total = sum(weights[k] * v for k, v in terms.items() if k not in self.without)
        # Content anchor (not in the paper): Ec keeps its pre-training task, per-frame visemes of
        # x_im and x_jn. Without it, L_con is minimised by mapping every input to one constant
        # code before the fresh decoder has learnt to use the content (observed: L_con → 0 while
        # L_self stayed at the data variance).
        anchor = sum(F.cross_entropy(net.viseme_head(c[k]).reshape(-1, net.cfg.num_visemes), v.reshape(-1))
                     for k, v in (("im", vis_i), ("jn", vis_j))) / 2
        total = total + self.lambda_anchor * anchor
        terms["anchor"] = anchor
        logs = {f"L_{k}": v.item() for k, v in terms.items()}
        return total, logs


class LandmarkLoss(nn.Module):
    """Stage 3: Eq. 7, L2 between predicted and ground-truth landmarks (mm), Ec and Ee frozen.

    For a ``phone_content`` share of the samples the content codes come from the phone encoder
    Ep reading the clip's true visemes as the phone front end gives them, blended with the
    clip's acoustic frames when the corpus features carry them
    (:func:`~evp_anim.train.features.front_end_visemes`), trained here with the LSTM, so one
    audio-to-landmark network serves every front end.

    Beside Eq. 7's L2, ``lambda_gap`` × the mean absolute error of the inner-lip gap (mm; the
    gap :func:`~evp_anim.face.lip_contact.mouth_openness` measures, before its division by the
    mouth width). The L2 over 68 landmarks weighs a half-millimetre error of the lips' gap as
    nothing, yet it decides whether lips read shut (a sibilant's 2.8 mm against the 2.4 mm at
    which the lip-sync score calls them closed) or a bilabial seals.
    """

    def __init__(self, net: EvpNet, phone_content: float = 0.0, lambda_gap: float = 0.0):
        super().__init__()
        self.net = net
        self.phone_content = phone_content if net.phones is not None else 0.0
        self.lambda_gap = lambda_gap

    def forward(self, windows, emotion_code, reference, lm3d, visemes=None, acoustic=None):
        net = self.net
        if net.cfg.content_delay > 0:
            # A delayed (live) model: Ec's temporal convolution learns, with the LSTM, to read the
            # newest of the frame encodings it sees (frozen, its codes describe their centre frame).
            with torch.no_grad():
                h = net.content.frame(net.normalise(windows))
            content = net.content.codes(h)
        else:
            with torch.no_grad():
                content = net.content(net.normalise(windows))
        if self.phone_content > 0 and visemes is not None:
            pick = torch.rand(content.shape[0]) < self.phone_content
            phones = net.phones(front_end_visemes(visemes, acoustic, net.cfg.num_visemes))
            content = torch.where(pick[:, None, None], phones, content)
        coeffs, _ = net.a2l(net.delay(content), emotion_code, net.normalise_reference(reference))
        pred = net.landmarks(coeffs, reference)
        l2 = F.mse_loss(pred, lm3d)
        err = (pred - lm3d).norm(dim=-1).mean()
        logs = {"L_a": l2.item(), "mean_err_mm": err.item()}
        loss = l2
        if self.lambda_gap > 0:
            gap = (inner_lip_gap(pred, lm3d) - inner_lip_gap(lm3d, lm3d)).abs().mean()
            loss = l2 + self.lambda_gap * gap
            logs["L_gap"] = gap.item()
        return loss, logs


def inner_lip_gap(lm: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """(...,) mm: the mean signed gap of the inner-lip pairs of landmarks (..., 68, 3), measured
    along ``frame``'s (the ground truth's) down direction across the mouth — the numerator of
    :func:`~evp_anim.face.lip_contact.mouth_openness`, in torch."""
    from ..face.lip_contact import INNER_LIP_PAIRS, MOUTH_CORNERS
    with torch.no_grad():
        across = frame[..., MOUTH_CORNERS[1], :] - frame[..., MOUTH_CORNERS[0], :]
        u = across / across.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        down = frame[..., 57, :] - frame[..., 51, :]
        down = down - (down * u).sum(-1, keepdim=True) * u
        down = down / down.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    return torch.stack([((lm[..., b, :] - lm[..., a, :]) * down).sum(-1) for a, b in INNER_LIP_PAIRS]).mean(0)


# ---------------------------------------------------------------------- statistics
def fit_statistics(net: EvpNet, feats: CorpusFeatures, train_idx: list[int], rng: np.random.Generator) -> None:
    """MFCC normalisation, reference normalisation and the landmark-displacement PCA, from train clips."""
    win = np.concatenate([feats.windows[i][:, 14] for i in train_idx])      # centre rows, (N, 12)
    net.mfcc_mean.copy_(torch.from_numpy(win.mean(0)))
    net.mfcc_std.copy_(torch.from_numpy(win.std(0) + 1e-3))
    refs = feats.reference[train_idx].reshape(len(train_idx), -1)
    net.ref_mean.copy_(torch.from_numpy(refs.mean(0)))
    net.ref_scale.copy_(torch.tensor(float(refs.std()) + 1e-3))
    disp = np.concatenate([(feats.lm3d[i] - feats.reference[i][None]).reshape(-1, 68 * 3) for i in train_idx])
    if len(disp) > 60000:
        disp = disp[rng.choice(len(disp), 60000, replace=False)]
    mean = disp.mean(0)
    _, sv, vt = np.linalg.svd(disp - mean, full_matrices=False)
    k = min(net.cfg.pca_dim, vt.shape[0])
    # Scale each component by its standard deviation, so the network predicts coefficients of
    # unit size rather than tens of millimetres (which a freshly initialised head learns slowly).
    basis = np.zeros((net.cfg.pca_dim, 68 * 3), np.float32)
    basis[:k] = vt[:k] * (sv[:k, None] / np.sqrt(len(disp)))
    net.pca_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
    net.pca_basis.copy_(torch.from_numpy(basis))


@torch.no_grad()
def clip_emotion_codes(net: EvpNet, feats: CorpusFeatures, idx: list[int]) -> np.ndarray:
    """(len(idx), De) Ee codes of whole clips."""
    net.eval()
    out = [net.emotion(net.normalise(torch.from_numpy(feats.windows[i])[None]))[0].numpy() for i in idx]
    return np.stack(out)


def fit_label_codes(net: EvpNet, feats: CorpusFeatures, idx: list[int], codes: np.ndarray) -> None:
    """Mean code per emotion and level; column 0 (intensity 0) of every emotion is the neutral mean."""
    table = np.zeros(tuple(net.label_codes.shape), np.float32)
    rows = [feats.rows[i] for i in idx]
    neutral = [c for c, r in zip(codes, rows) if r.emotion == "neutral"]
    if not neutral:
        raise EvpError("the training split has no neutral clips; label control needs them")
    table[:, 0] = np.mean(neutral, 0)
    for e, name in enumerate(EMOTIONS):
        for lvl in (1, 2, 3):
            sel = [c for c, r in zip(codes, rows) if r.emotion == name and (r.level == lvl or name == "neutral")]
            table[e, lvl] = np.mean(sel, 0) if sel else table[e, 0]
    net.label_codes.copy_(torch.from_numpy(table))


# ---------------------------------------------------------------------- the run
class Trainer:
    """Runs (or resumes) the three stages and writes the final model."""

    def __init__(self, feats: CorpusFeatures, pairs: list, config: TrainConfig, run_dir: Path,
                 model_config: EvpConfig | None = None, pretrained: Path | None = None,
                 progress: Callable[[str, int, int, dict], None] | None = None, corpus_name: str = ""):
        config.validate()
        self.feats, self.cfg, self.run_dir = feats, config, Path(run_dir)
        self.rank, self.world = dist_info()
        self.progress = progress
        self.corpus_name = corpus_name
        self.train_idx = feats.split("train")
        if not self.train_idx:
            raise EvpError("the corpus has no clips in the train split")
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng([config.seed, self.rank])
        self.net = EvpNet(model_config or EvpConfig())
        fit_statistics(self.net, feats, self.train_idx, np.random.default_rng(config.seed))
        self.pairs = pair_index(feats, pairs, self.train_idx)
        if config.steps[1] > 0 and not self.pairs:
            raise EvpError("no DTW pairs among the training clips: run `evp-anim pairs CORPUS` first")
        self.sampler = Sampler(feats, self.pairs, self.train_idx, self.rng)
        if config.steps[1] > 0 and not self.sampler.pair_keys:
            raise EvpError("cross-reconstruction needs two training sentences per speaker in the same two "
                           "emotions; this corpus's train split has none")
        self.stage, self.step = 0, 0
        self.optim: torch.optim.Optimizer | None = None
        self.elapsed = 0.0
        self.ckpt = self.run_dir / "checkpoint.pt"
        if self.ckpt.is_file():
            self._resume()
        elif pretrained is not None:
            self._start_from_pretrained(pretrained)

    # -- checkpoints ------------------------------------------------------------------
    def _state(self) -> dict:
        return {"stage": self.stage, "step": self.step, "net": self.net.state_dict(),
                "optim": self.optim.state_dict() if self.optim else None,
                "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "config": self.cfg.to_dict(), "elapsed": self.elapsed}

    def _save(self, path: Path | None = None) -> None:
        if self.rank != 0:
            return
        with atomic_path(path or self.ckpt) as tmp:
            torch.save(self._state(), tmp)

    def _resume(self) -> None:
        restore_run_state(self, read_checkpoint(self.ckpt), len(STAGES))

    def _start_from_pretrained(self, path: Path) -> None:
        """Skip stage 1: take Ec, Ee, Ce and the statistics from another run's stage-1 checkpoint."""
        blob = read_checkpoint(path)
        done = blob.get("stage", 0) >= 1 or blob.get("step", 0) >= blob.get("config", {}).get("steps", [1])[0]
        if not done:
            raise EvpError(f"{path} is not a finished pre-training checkpoint")
        self.net.load_state_dict(blob["net"])
        self.stage, self.step = 1, 0

    # -- optimisation ---------------------------------------------------------------
    def _stage_module(self) -> nn.Module:
        if self.stage == 0:
            return PretrainLoss(self.net)
        if self.stage == 1:
            return DisentangleLoss(self.net, self.cfg.lambda_cla, self.cfg.lambda_con, self.cfg.without,
                                   self.cfg.lambda_anchor)
        return LandmarkLoss(self.net, self.cfg.phone_content, self.cfg.lambda_gap)

    def _params(self):
        n = self.net
        if self.stage == 0:
            mods = [n.content, n.emotion, n.classifier, n.viseme_head]
        elif self.stage == 1:
            mods = [n.content, n.emotion, n.classifier, n.decoder, n.viseme_head]
        else:
            mods = [n.a2l] + ([n.phones] if n.phones is not None else [])
            if n.cfg.content_delay > 0:
                mods.append(n.content.temporal)
        return [p for m in mods for p in m.parameters()]

    def _make_optim(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self._params(), lr=self.cfg.lr)

    def _batch(self) -> tuple:
        t = torch.from_numpy
        c = self.cfg
        if self.stage == 0:
            b = self.sampler.clips(c.batch, c.crop)
            return t(b["windows"]), t(b["visemes"]), t(b["emotion"])
        if self.stage == 1:
            b = self.sampler.quadruples(c.pair_batch, c.pair_crop)
            return (t(b["im"]), t(b["in"]), t(b["jm"]), t(b["jn"]), t(b["m"]), t(b["n"]),
                    t(b["vis_i"]), t(b["vis_j"]))
        b = self.sampler.clips(c.batch, c.landmark_crop, with_landmarks=True)
        # Label control (the default of `animate`) gives the LSTM its emotion's mean code, not a
        # clip's own: a share of the samples learn from that code (the decoder otherwise sees only
        # the clips' scattered codes, and the mean code's emotion came out weak: 88-91% judged).
        label = self.rng.random(len(b["idx"])) < c.label_code_share
        codes = t(np.where(label[:, None], self._label_codes[b["idx"]], self._codes[b["idx"]]))
        heard = t(b["acoustic"]) if b["acoustic"] is not None and c.acoustic_content else None
        return t(b["windows"]), codes, t(b["reference"]), t(b["lm3d"]), t(b["visemes"]), heard

    def _clip_label_codes(self) -> np.ndarray:
        """(N, De) the label code of each clip's emotion and level (the table :func:`fit_label_codes`
        makes from the training clips' codes, as the finished model stores it)."""
        fit_label_codes(self.net, self.feats, self.train_idx, self._codes[self.train_idx])
        table = self.net.label_codes.numpy()
        rows = self.feats.rows
        return np.stack([table[EMOTIONS.index(r.emotion), 0 if r.emotion == "neutral" else r.level]
                         for r in rows]).astype(np.float32)

    def run(self) -> EvpModel:
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.world)
        log = StepLog(self.run_dir / "log.csv")
        while self.stage < 3:
            total = self.cfg.steps[self.stage]
            if self.optim is None:
                self.optim = self._make_optim()
            if self.stage == 2:
                self._codes = clip_emotion_codes(self.net, self.feats, list(range(len(self.feats))))
                self._label_codes = self._clip_label_codes()
            module = wrap_ddp(self._stage_module(), self.world)
            module.train()
            if self.stage == 2:  # encoders stay frozen (eval mode, no gradients)
                self.net.content.eval()
                self.net.emotion.eval()
            train_stage_steps(self, module, STAGES[self.stage], total, log)
            if self.stage == 0:
                self._save(self.run_dir / "stage1.pt")  # reusable by ablation runs (--pretrained)
            self.stage, self.step, self.optim = self.stage + 1, 0, None
            self._save()
        log.close()
        return self._finish()

    def _finish(self) -> EvpModel:
        idx = self.train_idx
        codes = clip_emotion_codes(self.net, self.feats, idx)
        fit_label_codes(self.net, self.feats, idx, codes)
        speakers = sorted({self.feats.rows[i].speaker for i in idx})
        meta = {
            "name": "evp", "evp_anim_version": __version__,
            "trained_on": {"corpus": self.corpus_name, "train_clips": len(idx), "speakers": speakers,
                           "sentences": sorted({self.feats.rows[i].sentence_id for i in idx})},
            "train_config": self.cfg.to_dict(), "train_seconds": round(self.elapsed, 1),
            "world_size": self.world,
        }
        return EvpModel(self.net, meta)
