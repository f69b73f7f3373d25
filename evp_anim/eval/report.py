"""The evaluation report: EVP's Table 1 / Table 2 figures, the emotion judge and Fig. 5.

:func:`evaluate` compares, on each requested split, the EVP model (when given) with the
baselines of :mod:`.baselines` (static face, rule-based visemes, and — as a reference point that
is given the emotion label — the static face wearing the label's expression) on EVP's landmark
metrics (:mod:`.metrics`) and on the emotion accuracy of the generated sequences as judged by
the landmark emotion classifier (:mod:`.emotion_classifier`, trained on the corpus's
ground-truth train split). The model's emotion comes from

* ``emotion_source="label"`` — ``model.label_code(row.emotion, row.intensity)``, or
* ``emotion_source="reference"`` — ``model.emotion_code`` of another clip of the same speaker,
  emotion and level but a different sentence (EVP's reference-audio control; the other clip's
  speech content must not leak into the mouth).

The disentanglement probes (:mod:`.probes`) and the classifier's accuracy on ground truth are
reported beside the tables. :func:`ablation_table` gives Table 2 rows for several models and
:func:`plot_emotion_codes` draws Fig. 5 (2-D projections of the emotion codes).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..emotions import EMOTIONS
from ..errors import EvpError
from .metrics import METRIC_NAMES, clip_metrics, mean_metrics

OURS = "EVP (ours)"
STATIC = "static face"
RULE = "rule-based visemes"
STATIC_EMOTION = "static + label emotion"
GROUND_TRUTH = "ground truth"
EMOTION_SOURCES = ("label", "reference")
PHONES_CACHE = "eval_phones_v1.json"
DEFAULT_SPLITS = ("test_speaker", "test_sentence")


# ------------------------------------------------------------------------------ helpers
class QuietReporter:
    """A do-nothing stand-in for :class:`~evp_anim.progress.Reporter`."""

    def start(self, *a, **k): pass
    def update(self, *a, **k): pass
    def fraction(self, *a, **k): pass
    def success(self, *a, **k): pass
    def info(self, *a, **k): pass


def load_model(model):
    """An EVP model from a checkpoint path (``EvpModel.load``), or ``model`` itself when it already
    has the model interface (``content_codes``, ``emotion_code``, ``label_code``, ``predict_lm3d``)."""
    if all(hasattr(model, a) for a in ("content_codes", "emotion_code", "label_code", "predict_lm3d")):
        return model
    path = Path(model)
    if not path.is_file():
        raise EvpError(f"model file not found: {path} (train one with `evp-anim train`)")
    try:
        from ..models.evp import EvpModel
    except ImportError as e:
        raise EvpError(f"the EVP model code is not available in this install ({e.name})") from None
    try:
        return EvpModel.load(path)
    except EvpError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to read a checkpoint is the file's fault
        raise EvpError(f"{path}: not a readable EVP model file ({type(e).__name__})") from None


def select_clips(feats, split: str, max_clips: int | None = None) -> list[int]:
    """Clip indices of ``split``; with ``max_clips`` an evenly spaced subset (the manifest is sorted
    by speaker, emotion, level and sentence, so the subset covers all of them)."""
    idx = feats.split(split)
    if max_clips is not None and max_clips < 1:
        raise EvpError(f"--max-clips must be at least 1, got {max_clips}")
    if max_clips is None or len(idx) <= max_clips:
        return idx
    pick = np.unique(np.round(np.linspace(0, len(idx) - 1, max_clips)).astype(int))
    return [idx[k] for k in pick]


def reference_clips(feats) -> dict[int, int]:
    """For every clip, another clip of the same speaker, emotion and level with a different sentence
    (the next sentence in id order, cyclically). Clips without such a partner are left out."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(feats.rows):
        groups.setdefault((r.speaker, r.emotion, r.level), []).append(i)
    out = {}
    for members in groups.values():
        members = sorted(members, key=lambda i: feats.rows[i].sentence_id)
        for k, i in enumerate(members):
            for step in range(1, len(members)):
                j = members[(k + step) % len(members)]
                if feats.rows[j].sentence_id != feats.rows[i].sentence_id:
                    out[i] = j
                    break
    return out


class EvalContext:
    """What every method shares: the corpus features, the rig-based animator, the judge, caches.

    Made once and passed as ``context`` to :func:`evaluate` and :func:`ablation_table` (and wrapped
    by :class:`~evp_anim.eval.emote_eval.EmoteContext`) so the work is not repeated."""

    def __init__(self, corpus: Path, sfm_dir: Path | None, rep, classifier_path=None, retrain=False):
        from ..train.features import load_features
        from .emotion_classifier import corpus_classifier
        self.corpus = Path(corpus)
        if not (self.corpus / "manifest.csv").is_file():
            raise EvpError(f"{self.corpus}: no manifest.csv (not a corpus; make one with `evp-anim synth`)")
        self.sfm_dir = sfm_dir
        self.rep = rep
        rep.start("eval-features", description="corpus features")
        self.feats = load_features(self.corpus, sfm_dir, progress=rep.fraction)
        rep.success()
        rep.start("eval-classifier", description="emotion classifier")
        self.classifier = corpus_classifier(self.corpus, self.feats, path=classifier_path, retrain=retrain,
                                            progress=rep.fraction)
        rep.success()
        self._animator = None
        self._identity: dict[str, np.ndarray] = {}
        self._phones_path = self.corpus / "cache" / PHONES_CACHE
        self._phones: dict[str, list] | None = None
        self._phones_dirty = 0
        self._refs: dict[int, int] | None = None

    # -- rule-based baseline pieces --
    @property
    def animator(self):
        if self._animator is None:
            from .baselines import RuleBasedAnimator
            if self.sfm_dir is None:
                raise EvpError("the rule-based baseline needs the SFM files: pass --sfm-dir")
            self._animator = RuleBasedAnimator(self.sfm_dir)
        return self._animator

    def identity(self, i: int) -> np.ndarray | None:
        from ..tracks import load_track
        r = self.feats.rows[i]
        if r.speaker not in self._identity:
            self._identity[r.speaker] = load_track(self.corpus / r.track).identity
        return self._identity[r.speaker]

    def phones(self, i: int, audio: np.ndarray) -> list | None:
        """Cached ARPAbet phones of clip ``i`` (None without pocketsphinx: the energy fallback)."""
        if not self.animator.use_pocketsphinx:
            return None
        from .baselines import recognize_phones
        if self._phones is None:
            self._phones = {}
            if self._phones_path.is_file():
                try:
                    self._phones = json.loads(self._phones_path.read_text())
                except (OSError, ValueError):
                    self._phones = {}
        r = self.feats.rows[i]
        key = f"{r.clip_id}|{r.audio}"
        if key not in self._phones:
            self._phones[key] = [[round(s, 3), round(e, 3), p] for s, e, p in recognize_phones(audio)]
            self._phones_dirty += 1
            if self._phones_dirty >= 200:       # keep the work of a long run if it is killed
                self.save_caches()
        return self._phones[key]

    def save_caches(self) -> None:
        if self._phones_dirty and self._phones is not None:
            from ..atomic import write_text_atomic
            write_text_atomic(self._phones_path, json.dumps(self._phones))
            self._phones_dirty = 0

    def reference_of(self, i: int) -> int:
        if self._refs is None:
            self._refs = reference_clips(self.feats)
        if i not in self._refs:
            r = self.feats.rows[i]
            raise EvpError(f"clip {r.clip_id}: no other sentence of {r.speaker} in {r.emotion} level "
                           f"{r.level} to take the reference emotion from; use --emotion-source label")
        return self._refs[i]


# ------------------------------------------------------------------------------ methods
def _static(ctx: EvalContext, i: int) -> tuple[np.ndarray, dict]:
    from .baselines import static_face
    return static_face(ctx.feats.reference_aligned(i), ctx.feats.lm3d[i].shape[0]), {}


def _static_emotion(ctx: EvalContext, i: int) -> tuple[np.ndarray, dict]:
    from .baselines import static_emotion_face
    r = ctx.feats.rows[i]
    return static_emotion_face(ctx.animator.rig, ctx.feats.reference[i], ctx.feats.lm3d[i].shape[0],
                               r.emotion, r.intensity), {}


def _rule_based(ctx: EvalContext, i: int) -> tuple[np.ndarray, dict]:
    from ..audio.io import load_audio
    r = ctx.feats.rows[i]
    audio = load_audio(ctx.corpus / r.audio)
    n = ctx.feats.lm3d[i].shape[0]
    lm, source = ctx.animator.animate(audio, n, identity=ctx.identity(i), reference=ctx.feats.reference[i],
                                      phones=ctx.phones(i, audio))
    return lm, {"source": source}


def _ours(model, emotion_source: str) -> Callable[[EvalContext, int], tuple[np.ndarray, dict]]:
    if emotion_source not in EMOTION_SOURCES:
        raise EvpError(f"emotion source must be one of {', '.join(EMOTION_SOURCES)}, got {emotion_source!r}")

    def generate(ctx: EvalContext, i: int) -> tuple[np.ndarray, dict]:
        from ..face.projection import aligned_landmarks
        f = ctx.feats
        r = f.rows[i]
        if emotion_source == "label":
            code = model.label_code(r.emotion, r.intensity)
        else:
            code = model.emotion_code(f.windows[ctx.reference_of(i)])
        lm3d = np.asarray(model.predict_lm3d(f.windows[i], f.reference[i], code), np.float32)
        t = f.lm3d[i].shape[0]
        if lm3d.shape != (t, 68, 3):
            raise EvpError(f"the model predicted landmarks of shape {lm3d.shape} for clip {r.clip_id}, "
                           f"expected ({t}, 68, 3)")
        return aligned_landmarks(lm3d).astype(np.float32), {}

    return generate


def _run_method(ctx: EvalContext, name: str, generate, idx: Sequence[int], task: str) -> dict:
    """Metrics and judged emotion accuracy of one method on clips ``idx``."""
    f = ctx.feats
    rep = ctx.rep
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    rep.start(f"{task}/{slug}", total=len(idx), description=f"{task}: {name}")
    per_clip, seqs, refs, sources = [], [], [], {}
    t0 = time.perf_counter()
    for k, i in enumerate(idx):
        gen, extra = generate(ctx, i)
        per_clip.append(clip_metrics(gen, f.aligned(i)))
        seqs.append(gen)
        refs.append(f.reference_aligned(i))
        if "source" in extra:
            sources[extra["source"]] = sources.get(extra["source"], 0) + 1
        rep.update(k + 1)
    seconds = time.perf_counter() - t0
    labels = f.emotion_index[list(idx)]
    proba = ctx.classifier.predict_proba_many(seqs, refs) if seqs else np.zeros((0, len(EMOTIONS)))
    pred = proba.argmax(1)
    rep.success()
    out: dict[str, Any] = dict(mean_metrics(per_clip))
    out["emotion_acc"] = float((pred == labels).mean()) if len(labels) else float("nan")
    # the judge's mean probability of the true emotion: graded where the accuracy saturates
    out["emotion_prob"] = float(proba[np.arange(len(labels)), labels].mean()) if len(labels) else float("nan")
    out["n_clips"] = len(idx)
    out["seconds"] = round(seconds, 2)
    out["confusion"] = _confusion(labels, pred)
    if sources:
        out["sources"] = sources
    return out


def _confusion(labels, pred) -> list[list[int]]:
    m = np.zeros((len(EMOTIONS), len(EMOTIONS)), np.int64)
    for a, b in zip(labels, pred):
        m[int(a), int(b)] += 1
    return m.tolist()


# ------------------------------------------------------------------------------ evaluate
def evaluate(corpus: str | Path, model_path=None, sfm_dir: str | Path | None = None,
             splits: Sequence[str] = DEFAULT_SPLITS, max_clips: int | None = None,
             emotion_source: str = "label", *, baselines: bool = True, probes: bool = True,
             probe_max_clips: int | None = 1000, classifier_path: str | Path | None = None,
             retrain_classifier: bool = False, reporter=None,
             out: Callable[[str], None] | None = print, context: EvalContext | None = None) -> dict:
    """EVP's quantitative evaluation of a model (``model_path``: a checkpoint, a loaded model, or
    None for the baselines only) on ``splits`` of the corpus; see the module docstring.

    Returns a JSON-ready dict (NaN where a figure is undefined)::

        {"corpus", "model", "emotion_source", "max_clips", "seconds",
         "classifier": {"path", "gt_accuracy": {split: acc}, "chance"},
         "splits": {split: {"n_clips", "methods": {name: {"M-LD", "M-LVD", "F-LD", "F-LVD",
                    "emotion_acc", "emotion_prob", "n_clips", "seconds", "confusion", ["sources"]}}}},
         "probes": {...} | None}

    and prints (through ``out``; None for silence) one table per split.
    """
    from ..data.manifest import SPLITS
    t_start = time.perf_counter()
    rep = reporter or QuietReporter()
    if emotion_source not in EMOTION_SOURCES:
        raise EvpError(f"emotion source must be one of {', '.join(EMOTION_SOURCES)}, got {emotion_source!r}")
    for s in splits:
        if s not in SPLITS:
            raise EvpError(f"unknown split {s!r}: expected one of {', '.join(SPLITS)}")
    model = load_model(model_path) if model_path is not None else None
    ctx = context or EvalContext(Path(corpus), Path(sfm_dir) if sfm_dir is not None else None, rep,
                           classifier_path, retrain_classifier)
    from .emotion_classifier import CACHE_NAME, gt_accuracy
    f = ctx.feats

    result: dict[str, Any] = {
        "corpus": str(corpus), "model": None if model is None else _model_name(model_path, model),
        "emotion_source": emotion_source if model is not None else None, "max_clips": max_clips,
        "classifier": {
            "path": str(classifier_path or ctx.corpus / "cache" / CACHE_NAME),
            "gt_accuracy": gt_accuracy(ctx.classifier, f, [s for s in SPLITS if f.split(s)]),
            "chance": 1.0 / len(EMOTIONS),
        },
        "splits": {},
    }
    methods: dict[str, Callable] = {}
    if model is not None:
        methods[OURS] = _ours(model, emotion_source)
    if baselines:
        methods[STATIC] = _static
        methods[RULE] = _rule_based
        methods[STATIC_EMOTION] = _static_emotion
    try:
        for split in splits:
            idx = select_clips(f, split, max_clips)
            entry: dict[str, Any] = {"n_clips": len(idx), "methods": {}}
            if idx:
                gt = ctx.classifier.accuracy([f.aligned(i) for i in idx], [f.reference_aligned(i) for i in idx],
                                             f.emotion_index[idx])
                entry["gt_emotion_acc"] = gt
                for name, gen in methods.items():
                    entry["methods"][name] = _run_method(ctx, name, gen, idx, f"eval-{split}")
            result["splits"][split] = entry
    finally:
        ctx.save_caches()
    result["probes"] = None
    if probes and model is not None:
        result["probes"] = run_probes(model, ctx, probe_max_clips)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    if out is not None:
        out(format_report(result))
    return result


def run_probes(model, ctx: EvalContext, max_clips: int | None = 1000) -> dict | None:
    """The disentanglement probes (train on ``train``, test on ``test_speaker``); None when the
    corpus lacks either split."""
    from .probes import disentanglement_probes
    f = ctx.feats
    tr, te = select_clips(f, "train", max_clips), select_clips(f, "test_speaker", max_clips)
    if not tr or not te:
        return None
    ctx.rep.start("eval-probes", description="disentanglement probes")
    res = disentanglement_probes(model, f, tr, te, progress=ctx.rep.fraction)
    ctx.rep.success()
    return res


def _model_name(model_path, model) -> str:
    if isinstance(model_path, (str, Path)):
        return str(model_path)
    return str(getattr(model, "name", type(model).__name__))


# ------------------------------------------------------------------------------ formatting
def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def _table(rows: Sequence[tuple[str, Mapping]], first: str = "method") -> list[str]:
    head = f"{first:<26}" + "".join(f"{c:>9}" for c in METRIC_NAMES) + f"{'emo-acc':>9}"
    lines = [head, "-" * len(head)]
    for name, m in rows:
        lines.append(f"{name:<26}" + "".join(f"{_fmt(m.get(c)):>9}" for c in METRIC_NAMES)
                     + f"{_fmt(m.get('emotion_acc'), True):>9}")
    return lines


def format_report(result: Mapping) -> str:
    """The human-readable tables of an :func:`evaluate` result."""
    lines = []
    clf = result["classifier"]
    accs = ", ".join(f"{s} {_fmt(a, True)}" for s, a in clf["gt_accuracy"].items())
    lines.append(f"emotion classifier on ground truth: {accs} (chance {_fmt(clf['chance'], True)})")
    src = result.get("emotion_source")
    for split, entry in result["splits"].items():
        lines.append("")
        lines.append(f"{split}: {entry['n_clips']} clips" + (f", model emotion from {src}" if src else "")
                     + " — landmark errors in px of the 256×256 aligned crop (lower is better)")
        rows = list(entry["methods"].items())
        if "gt_emotion_acc" in entry:
            rows.append((GROUND_TRUTH, {"emotion_acc": entry["gt_emotion_acc"]}))
        lines.extend(_table(rows))
        for name, m in entry["methods"].items():
            if m.get("sources"):
                lines.append(f"  {name}: mouth from " + ", ".join(f"{k} ({v} clips)" for k, v in m["sources"].items()))
    p = result.get("probes")
    if p:
        lines.append("")
        lines.append(f"disentanglement probes (logistic regression, train {p['train_clips']} → "
                     f"test_speaker {p['test_clips']} clips):")
        lines.append(f"  emotion from content codes  {_fmt(p['emotion_from_content'], True):>7}  "
                     f"(chance {_fmt(p['emotion_chance'], True)}; lower = better disentangled)")
        lines.append(f"  sentence from emotion codes {_fmt(p['sentence_from_emotion'], True):>7}  "
                     f"(chance {_fmt(p['sentence_chance'], True)}; lower = better disentangled)")
        lines.append(f"  emotion from emotion codes  {_fmt(p['emotion_from_emotion'], True):>7}  "
                     f"sentence from content codes {_fmt(p['sentence_from_content'], True)} (higher = codes carry it)")
    lines.append(f"\n(evaluation took {result.get('seconds', float('nan')):.0f} s)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ ablation
ABLATION_ORDER = ("full", "w/o L_cla", "w/o L_con", "w/o L_self", "w/o L_cross")


def ablation_table(corpus: str | Path, models: Mapping[str, Any], sfm_dir: str | Path | None = None,
                   split: str = "test_speaker", max_clips: int | None = None, emotion_source: str = "label",
                   *, reporter=None, out: Callable[[str], None] | None = print,
                   classifier_path=None, context: EvalContext | None = None) -> dict:
    """EVP Table 2: one row per model (``{name: checkpoint path or model}``, e.g. "full",
    "w/o L_cla", "w/o L_con", "w/o L_self", "w/o L_cross") × (M-LD, M-LVD, F-LD, F-LVD, emotion
    accuracy) on ``split``. Returns ``{"split", "n_clips", "rows": {name: metrics}}``."""
    if not models:
        raise EvpError("the ablation table needs at least one model (name=path)")
    rep = reporter or QuietReporter()
    ctx = context or EvalContext(Path(corpus), Path(sfm_dir) if sfm_dir is not None else None, rep, classifier_path)
    idx = select_clips(ctx.feats, split, max_clips)
    if not idx:
        raise EvpError(f"the corpus has no '{split}' clips")
    rows = {}
    for name, m in models.items():
        rows[name] = _run_method(ctx, name, _ours(load_model(m), emotion_source), idx, f"ablation-{split}")
    res = {"split": split, "n_clips": len(idx), "emotion_source": emotion_source, "rows": rows}
    if out is not None:
        out(format_ablation(res))
    return res


def format_ablation(res: Mapping) -> str:
    order = sorted(res["rows"], key=lambda n: (ABLATION_ORDER.index(n) if n in ABLATION_ORDER else 99))
    lines = [f"ablation on {res['split']} ({res['n_clips']} clips, emotion from {res['emotion_source']}):"]
    lines.extend(_table([(n, res["rows"][n]) for n in order], first="model"))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ Fig. 5
def emotion_codes(model, feats, idx: Sequence[int]) -> np.ndarray:
    """(N, De) emotion codes of clips ``idx``."""
    return np.stack([np.asarray(model.emotion_code(feats.windows[i]), np.float64).reshape(-1) for i in idx])


def project_2d(codes: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) → (N, 2) by PCA or t-SNE."""
    x = np.asarray(codes, np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    if method == "pca":
        from sklearn.decomposition import PCA
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE
        return TSNE(n_components=2, perplexity=min(30.0, max(2.0, (len(x) - 1) / 3)), init="pca",
                    random_state=seed).fit_transform(x)
    raise EvpError(f"projection must be 'pca' or 'tsne', got {method!r}")


def plot_emotion_codes(models: Mapping[str, Any], corpus: str | Path, out_png: str | Path,
                       sfm_dir: str | Path | None = None, split: str = "test_speaker",
                       max_clips: int | None = 600, method: str = "pca", feats=None) -> dict:
    """EVP Fig. 5: the emotion codes of ``split``'s clips projected to 2-D, coloured by emotion,
    one panel per model. Each panel's title gives the silhouette score of the codes grouped by
    emotion (in the full code space; higher = tighter emotion clusters). Returns {name: silhouette}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import silhouette_score

    if not models:
        raise EvpError("plot_emotion_codes needs at least one model (name=path)")
    if method not in ("pca", "tsne"):
        raise EvpError(f"projection must be 'pca' or 'tsne', got {method!r}")
    if feats is None:
        from ..train.features import load_features
        if not (Path(corpus) / "manifest.csv").is_file():
            raise EvpError(f"{corpus}: no manifest.csv (not a corpus)")
        feats = load_features(corpus, Path(sfm_dir) if sfm_dir is not None else None)
    idx = select_clips(feats, split, max_clips)
    if len(idx) < 3:
        raise EvpError(f"the corpus has too few '{split}' clips to plot ({len(idx)})")
    labels = feats.emotion_index[idx]
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 5.0), squeeze=False)
    scores = {}
    for ax, (name, m) in zip(axes[0], models.items()):
        codes = emotion_codes(load_model(m), feats, idx)
        xy = project_2d(codes, method)
        n_lab = len(set(labels.tolist()))
        sil = float(silhouette_score(codes, labels)) if 2 <= n_lab <= len(idx) - 1 else float("nan")
        scores[name] = sil
        for e, emo in enumerate(EMOTIONS):
            sel = labels == e
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=9, color=cmap(e), label=emo, alpha=0.8, linewidths=0)
        ax.set_title(f"{name}\nsilhouette {sil:.2f}", fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{method.upper()} 1")
        ax.set_ylabel(f"{method.upper()} 2")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, markerscale=2, frameon=False)
    fig.suptitle(f"emotion codes of {len(idx)} {split} clips", fontsize=12)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    from ..atomic import atomic_path
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return scores


def to_json(result: Any) -> Any:
    """``result`` with NaN/inf floats replaced by None (strict JSON)."""
    if isinstance(result, dict):
        return {k: to_json(v) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return [to_json(v) for v in result]
    if isinstance(result, (float, np.floating)):
        return float(result) if math.isfinite(result) else None
    if isinstance(result, np.integer):
        return int(result)
    return result
