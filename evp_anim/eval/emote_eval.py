"""Evaluation of the EMOTE path (``evp-anim eval CORPUS --model emote[=PATH]``).

On each held-out split (default: unseen speakers, unseen sentences) every method produces rig
coefficients (T, 42) for the clip's audio and label; from them, through the SFM rig and the clip
speaker's identity, the lip vertices and the 68 landmarks. Figures per method:

* **LVE** (mm) — lip vertex error: per frame the maximum over the lip vertices
  (:func:`~evp_anim.models.emote.lip_vertices`, ~200 SFM vertices) of the L2 distance to ground
  truth, averaged over frames, then over clips (:func:`~evp_anim.eval.metrics.lip_vertex_error`);
* **M-LD / M-LVD** (px of the 256×256 aligned crop) — EVP's mouth landmark metrics;
* **lip-read** — per-frame viseme accuracy on the speech frames (silence excluded) as judged by
  an *independent* lip reader (:class:`LipJudge`: mouth-landmark input, own seed, trained on the
  corpus's ground-truth train split; cached in ``<corpus>/cache/``), also given as a fraction of
  the judge's accuracy on the ground truth of the same clips;
* **emo-acc** — the existing landmark emotion judge (:mod:`.emotion_classifier`).

Methods: EMOTE (label control; known speakers use their style id, unseen ones the unknown id),
the EVP model (its landmarks for M-LD/M-LVD/emotion; LVE and lip reading on its landmarks lifted
to the rig with :func:`~evp_anim.models.animate.lift_to_rig`'s solver), the rule-based viseme
baseline (its rig weights), and the ground truth. :func:`emote_ablation` gives one row per
EMOTE model on one split.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import EvpError
from .metrics import clip_metrics, lip_vertex_error

EMOTE = "EMOTE (ours)"
EVP_LIFTED = "EVP (lifted to rig)"
RULE = "rule-based visemes"
GROUND_TRUTH = "ground truth"
JUDGE_CACHE = "emote_lipjudge_v1.pt"
ABLATION_ORDER = ("full", "w/o lip", "w/o exchange", "w/o prior")
COLUMNS = ("LVE", "M-LD", "M-LVD", "lip_acc", "lip_rel", "emotion_acc")


# ------------------------------------------------------------------------------ the judge
class LipJudge:
    """Independent lip reader: per-frame visemes from the 20 mouth landmarks (3D, as displacements
    from the neutral face through the rig's landmark rows) of rig coefficients (T, 42)."""

    def __init__(self, net, info: dict | None = None):
        self.net = net.eval()
        self.info = dict(info or {})

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """(T,) viseme class per frame of coefficients (T, 42)."""
        import torch
        with torch.no_grad():
            return self.net(torch.from_numpy(np.asarray(weights, np.float32))[None])[0].argmax(-1).numpy()

    def accuracy(self, weights: np.ndarray, visemes: np.ndarray) -> tuple[int, int]:
        """(correct, counted) over the speech frames (viseme ≠ silence)."""
        v = np.asarray(visemes)
        speech = v != 0
        return int((self.predict(weights)[speech] == v[speech]).sum()), int(speech.sum())

    def save(self, path: Path) -> None:
        import torch

        from ..atomic import atomic_path
        with atomic_path(path) as tmp:
            torch.save({"format": "evp-anim-lip-judge", "state": self.net.state_dict(), "info": self.info}, tmp)


def _judge_net():
    import dataclasses

    from ..models.emote import EmoteConfig, LipReader
    return LipReader(dataclasses.replace(EmoteConfig(), reader_hidden=96), basis_dim=60)


def train_lip_judge(feats, weights: Sequence[np.ndarray], rig, *, steps: int = 800, batch: int = 32,
                    crop: int = 64, seed: int = 1234, progress: Callable[[float], None] | None = None) -> LipJudge:
    """Train the judge on the ground-truth coefficients of the train split (Adam, random crops)."""
    import torch
    import torch.nn.functional as F

    from ..models.emote import rig_bases
    idx = np.asarray(feats.split("train"))
    if not len(idx):
        raise EvpError("the corpus has no train clips to train the lip-reading judge on")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _judge_net()
    basis = rig_bases(rig)["mouth_lm_deltas"]
    net.basis.copy_(torch.from_numpy(basis))
    sample = np.concatenate([weights[i] for i in idx[::max(1, len(idx) // 500)]])
    net.scale.copy_(torch.tensor(float((sample @ basis).std()) + 1e-3))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    for step in range(steps):
        pick = rng.choice(idx, batch)
        length = min(crop, min(len(weights[i]) for i in pick))
        ws, vs = [], []
        for i in pick:
            s = int(rng.integers(0, len(weights[i]) - length + 1))
            ws.append(weights[i][s:s + length])
            vs.append(feats.visemes[i][s:s + length])
        w = torch.from_numpy(np.stack(ws))
        w = w + 0.02 * torch.randn_like(w)
        logits = net(w)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(np.stack(vs)).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        for g in opt.param_groups:
            g["lr"] = 2e-3 * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * (step + 1) / steps)))
        if progress and step % 20 == 0:
            progress((step + 1) / steps)
    return LipJudge(net, {"steps": steps, "seed": seed})


def _train_hash(feats) -> str:
    h = hashlib.sha256()
    for i in feats.split("train"):
        r = feats.rows[i]
        h.update(f"{r.clip_id}|{r.track}\n".encode())
    return h.hexdigest()


def corpus_lip_judge(corpus: Path, feats, weights, rig, steps: int = 800, progress=None) -> LipJudge:
    """The corpus's judge from ``<corpus>/cache/emote_lipjudge_v1.pt``, trained and cached when absent
    or trained on other clips."""
    import torch
    path = Path(corpus) / "cache" / JUDGE_CACHE
    want = _train_hash(feats)
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            info = blob.get("info", {})
            if (blob.get("format") == "evp-anim-lip-judge" and info.get("train_hash") == want
                    and info.get("steps") == steps):
                net = _judge_net()
                net.load_state_dict(blob["state"])
                if progress:
                    progress(1.0)
                return LipJudge(net, blob["info"])
        except Exception:  # noqa: BLE001 - a damaged cache is retrained
            pass
    judge = train_lip_judge(feats, weights, rig, steps=steps, progress=progress)
    judge.info["train_hash"] = want
    judge.save(path)
    return judge


# ------------------------------------------------------------------------------ context
class EmoteContext:
    """Corpus features + rig weights + rig + judges, shared by all methods (wraps report.EvalContext)."""

    def __init__(self, corpus: Path, sfm_dir: Path, rep, classifier_path=None, base=None, judge_steps: int = 800):
        from ..face.rig import FaceRig
        from ..models.emote import rig_bases
        from ..train.emote_trainer import load_rig_weights
        from .report import EvalContext
        self.base = base or EvalContext(Path(corpus), Path(sfm_dir), rep, classifier_path)
        self.feats = self.base.feats
        self.rep = rep
        rep.start("eval-rig-weights", description="ground-truth rig weights")
        self.weights = load_rig_weights(corpus, self.feats.rows, progress=rep.fraction)
        rep.success()
        self.rig = FaceRig(sfm_dir)
        self.lips = rig_bases(self.rig)["lip_vertices"]
        self._gt_lips: dict[int, np.ndarray] = {}
        rep.start("eval-lip-judge", description="lip-reading judge")
        self.judge = corpus_lip_judge(Path(corpus), self.feats, self.weights, self.rig, steps=judge_steps,
                                      progress=rep.fraction)
        rep.success()

    def identity(self, i: int):
        ident = self.base.identity(i)
        return ident if ident is not None and ident.size == self.rig.num_identity else None

    def lip_verts(self, i: int, weights: np.ndarray) -> np.ndarray:
        """(T, L, 3) lip vertices (mm) of clip ``i``'s speaker wearing ``weights`` (T, 42)."""
        ident = self.identity(i)
        base = self.rig.vertices(ident)[self.lips].reshape(-1)
        delta = self.rig.deltas[:, self.lips].reshape(self.rig.num_channels, -1)
        return (base[None] + np.asarray(weights, np.float32) @ delta).reshape(len(weights), -1, 3)

    def gt_lip_verts(self, i: int) -> np.ndarray:
        """Ground-truth lip vertices of clip ``i`` (cached)."""
        if i not in self._gt_lips:
            self._gt_lips[i] = self.lip_verts(i, self.weights[i])
        return self._gt_lips[i]


# ------------------------------------------------------------------------------ methods
def _emote_method(model, ctx: EmoteContext):
    from ..models.emote import label_condition

    def gen(i: int) -> dict:
        f = ctx.feats
        r = f.rows[i]
        onehot, inten = label_condition(r.emotion, r.intensity)
        w = model.predict(f.windows[i], onehot, inten, model.speaker_id(r.speaker))
        return {"weights": w}
    return gen


def _evp_method(model, ctx: EmoteContext):
    from ..face.solve import weights_from_landmarks

    def gen(i: int) -> dict:
        f = ctx.feats
        r = f.rows[i]
        lm3d = np.asarray(model.predict_lm3d(f.windows[i], f.reference[i],
                                             model.label_code(r.emotion, r.intensity)), np.float32)
        w = weights_from_landmarks(ctx.rig, lm3d, ctx.identity(i))
        return {"weights": w, "lm3d": lm3d}
    return gen


def _rule_method(ctx: EmoteContext):
    from ..audio.io import load_audio

    def gen(i: int) -> dict:
        r = ctx.feats.rows[i]
        audio = load_audio(ctx.base.corpus / r.audio)
        n = len(ctx.weights[i])
        w, source = ctx.base.animator.weights(audio, n, phones=ctx.base.phones(i, audio))
        return {"weights": w, "source": source}
    return gen


def _gt_method(ctx: EmoteContext):
    return lambda i: {"weights": ctx.weights[i]}


def run_method(ctx: EmoteContext, name: str, gen: Callable[[int], dict], idx: Sequence[int], task: str) -> dict:
    """All figures of one method on clips ``idx``."""
    from ..face.projection import aligned_landmarks
    f = ctx.feats
    rep = ctx.rep
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    rep.start(f"{task}/{slug}", total=len(idx), description=f"{task}: {name}")
    lve, mld, mlvd, seqs, refs, sources = [], [], [], [], [], {}
    correct = counted = 0
    t0 = time.perf_counter()
    for k, i in enumerate(idx):
        out = gen(i)
        w = np.asarray(out["weights"], np.float32)
        gt_w = ctx.weights[i]
        if w.shape != gt_w.shape:
            raise EvpError(f"{name} gave rig weights {w.shape} for clip {f.rows[i].clip_id}, expected {gt_w.shape}")
        lve.append(lip_vertex_error(ctx.lip_verts(i, w), ctx.gt_lip_verts(i)))
        lm3d = out.get("lm3d")
        if lm3d is None:
            lm3d = ctx.rig.landmarks_3d(ctx.identity(i), w)
        gen2d = aligned_landmarks(lm3d).astype(np.float32)
        m = clip_metrics(gen2d, f.aligned(i))
        mld.append(m["M-LD"])
        mlvd.append(m["M-LVD"])
        seqs.append(gen2d)
        refs.append(f.reference_aligned(i))
        c, n = ctx.judge.accuracy(w, f.visemes[i])
        correct, counted = correct + c, counted + n
        if "source" in out:
            sources[out["source"]] = sources.get(out["source"], 0) + 1
        rep.update(k + 1)
    seconds = time.perf_counter() - t0
    labels = f.emotion_index[list(idx)]
    pred = ctx.base.classifier.predict_proba_many(seqs, refs).argmax(1) if seqs else np.zeros(0, int)
    rep.success()
    nanmean = lambda v: float(np.nanmean(v)) if len(v) else float("nan")  # noqa: E731
    res: dict[str, Any] = {"LVE": nanmean(lve), "M-LD": nanmean(mld), "M-LVD": nanmean(mlvd),
                           "lip_acc": correct / counted if counted else float("nan"),
                           "emotion_acc": float((pred == labels).mean()) if len(labels) else float("nan"),
                           "n_clips": len(idx), "seconds": round(seconds, 2)}
    if sources:
        res["sources"] = sources
    return res


# ------------------------------------------------------------------------------ evaluate
def evaluate_emote(corpus: str | Path, model, sfm_dir: str | Path, *, evp_model=None,
                   splits: Sequence[str] = ("test_speaker", "test_sentence"), max_clips: int | None = None,
                   baselines: bool = True, classifier_path=None, reporter=None,
                   out: Callable[[str], None] | None = print, context: EmoteContext | None = None) -> dict:
    """EMOTE vs EVP (lifted to the rig) vs the rule-based baseline vs ground truth on ``splits``.

    ``model``: an :class:`~evp_anim.models.emote.EmoteModel`; ``evp_model``: an EvpModel or None.
    Returns ``{"corpus", "model", "splits": {split: {"n_clips", "methods": {name: figures}}}}`` with
    figures as in :data:`COLUMNS` (``lip_rel`` = lip_acc / the ground truth's), and prints a table.
    """
    from ..data.manifest import SPLITS
    from .report import QuietReporter, select_clips
    for s in splits:
        if s not in SPLITS:
            raise EvpError(f"unknown split {s!r}: expected one of {', '.join(SPLITS)}")
    rep = reporter or QuietReporter()
    t_start = time.perf_counter()
    ctx = context or EmoteContext(Path(corpus), Path(sfm_dir), rep, classifier_path)
    methods: dict[str, Callable] = {EMOTE: _emote_method(model, ctx)}
    if evp_model is not None:
        methods[EVP_LIFTED] = _evp_method(evp_model, ctx)
    if baselines:
        methods[RULE] = _rule_method(ctx)
    methods[GROUND_TRUTH] = _gt_method(ctx)
    result: dict[str, Any] = {"corpus": str(corpus), "model": str(getattr(model, "name", "emote")),
                              "max_clips": max_clips, "splits": {}}
    try:
        for split in splits:
            idx = select_clips(ctx.feats, split, max_clips)
            entry: dict[str, Any] = {"n_clips": len(idx), "methods": {}}
            for name, gen in methods.items():
                if idx:
                    entry["methods"][name] = run_method(ctx, name, gen, idx, f"eval-emote-{split}")
            gt = entry["methods"].get(GROUND_TRUTH, {}).get("lip_acc")
            for m in entry["methods"].values():
                m["lip_rel"] = m["lip_acc"] / gt if gt else float("nan")
            result["splits"][split] = entry
    finally:
        ctx.base.save_caches()
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    if out is not None:
        out(format_emote(result))
    return result


def emote_ablation(ctx: EmoteContext, models: Mapping[str, Any], split: str = "test_speaker",
                   max_clips: int | None = None, out: Callable[[str], None] | None = print) -> dict:
    """One row per EMOTE model (``{name: EmoteModel}``, e.g. full / w/o lip / w/o exchange / w/o prior)
    on the same clips of ``split``, plus the ground truth."""
    from .report import select_clips
    if not models:
        raise EvpError("the ablation table needs at least one model (name=path)")
    idx = select_clips(ctx.feats, split, max_clips)
    if not idx:
        raise EvpError(f"the corpus has no '{split}' clips")
    rows = {name: run_method(ctx, name, _emote_method(m, ctx), idx, f"ablation-{split}") for name, m in models.items()}
    rows[GROUND_TRUTH] = run_method(ctx, GROUND_TRUTH, _gt_method(ctx), idx, f"ablation-{split}")
    gt = rows[GROUND_TRUTH]["lip_acc"]
    for m in rows.values():
        m["lip_rel"] = m["lip_acc"] / gt if gt else float("nan")
    res = {"split": split, "n_clips": len(idx), "rows": rows}
    if out is not None:
        out(format_emote_ablation(res))
    return res


# ------------------------------------------------------------------------------ formatting
def _fmt(v, pct: bool = False) -> str:
    import math
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def _table(rows: Sequence[tuple[str, Mapping]], first: str = "method") -> list[str]:
    head = (f"{first:<22}{'LVE mm':>9}{'M-LD':>9}{'M-LVD':>9}{'lip-read':>10}{'vs GT':>8}{'emo-acc':>9}")
    lines = [head, "-" * len(head)]
    for name, m in rows:
        lines.append(f"{name:<22}{_fmt(m.get('LVE')):>9}{_fmt(m.get('M-LD')):>9}{_fmt(m.get('M-LVD')):>9}"
                     f"{_fmt(m.get('lip_acc'), True):>10}{_fmt(m.get('lip_rel'), True):>8}"
                     f"{_fmt(m.get('emotion_acc'), True):>9}")
    return lines


def format_emote(result: Mapping) -> str:
    lines = []
    for split, entry in result["splits"].items():
        lines.append("")
        lines.append(f"{split}: {entry['n_clips']} clips — EMOTE path; LVE = max lip-vertex error per frame "
                     f"(mm, SFM mesh), M-LD/M-LVD in px of the 256×256 crop (lower is better); lip-read = "
                     f"independent judge's viseme accuracy on speech frames")
        lines.extend(_table(list(entry["methods"].items())))
        for name, m in entry["methods"].items():
            if m.get("sources"):
                lines.append(f"  {name}: mouth from " + ", ".join(f"{k} ({v} clips)" for k, v in m["sources"].items()))
    lines.append(f"\n(EMOTE evaluation took {result.get('seconds', float('nan')):.0f} s)")
    return "\n".join(lines)


def format_emote_ablation(res: Mapping) -> str:
    order = sorted(res["rows"], key=lambda n: (ABLATION_ORDER.index(n) if n in ABLATION_ORDER
                                               else (100 if n == GROUND_TRUTH else 99)))
    lines = [f"EMOTE ablation on {res['split']} ({res['n_clips']} clips, label control):"]
    lines.extend(_table([(n, res["rows"][n]) for n in order], first="model"))
    return "\n".join(lines)
