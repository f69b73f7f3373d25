"""A landmark-sequence emotion classifier: the judge of the emotion of generated sequences.

EVP (§4) measures how well a method keeps the wanted emotion by running an emotion classifier,
trained on the training set's real videos, on the generated ones (90.2% on MEAD's real test
clips). Here the input is the landmark sequence itself: the (T, 68, 2) aligned landmarks minus
the speaker's neutral reference (so identity is removed and only expression and articulation
remain), standardised per coordinate, then

    Conv1d(136→C, k5) → GELU → Conv1d(C→C, k5, dilation 2) → GELU → Conv1d(C→C, k3, dilation 4)
    → GELU → [mean ‖ max over time] → dropout → Linear(2C → 8)

Training uses random crops of :data:`CROP` frames of ground-truth train-split clips (with a
little coordinate noise); prediction runs on whole clips (the pooling accepts any length ≥ 1).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..emotions import EMOTIONS
from ..errors import EvpError
from ..threads import torch_threads

FORMAT = "evp-anim-eval-emotion-classifier"
VERSION = 1
CROP = 40
CACHE_NAME = "eval_emotion_classifier_v1.pt"


def displacement_features(aligned, reference_aligned) -> np.ndarray:
    """(T, 136) float32: aligned landmarks (T, 68, 2) minus the neutral reference (68, 2), px."""
    a = np.asarray(aligned, np.float32)
    r = np.asarray(reference_aligned, np.float32)
    if a.ndim != 3 or a.shape[1:] != (68, 2) or r.shape != (68, 2):
        raise EvpError(f"classifier input must be (T, 68, 2) landmarks and a (68, 2) reference, "
                       f"got {a.shape} and {r.shape}")
    if a.shape[0] == 0:
        raise EvpError("cannot classify an empty landmark sequence")
    return (a - r[None]).reshape(a.shape[0], 136)


def _net(channels: int, dropout: float):
    import torch.nn as nn

    class _SeqClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = channels
            self.body = nn.Sequential(
                nn.Conv1d(136, c, 5, padding=2), nn.GELU(),
                nn.Conv1d(c, c, 5, padding=4, dilation=2), nn.GELU(),
                nn.Conv1d(c, c, 3, padding=4, dilation=4), nn.GELU(),
            )
            self.drop = nn.Dropout(dropout)
            self.head = nn.Linear(2 * c, len(EMOTIONS))

        def forward(self, x, mask=None):
            """x (B, T, 136) standardised; mask (B, T) bool of valid frames (None: all valid)."""
            import torch
            h = self.body(x.transpose(1, 2))                       # (B, C, T)
            if mask is None:
                mean = h.mean(dim=2)
                mx = h.amax(dim=2)
            else:
                m = mask[:, None, :].to(h.dtype)
                mean = (h * m).sum(2) / m.sum(2).clamp_min(1.0)
                mx = h.masked_fill(~mask[:, None, :], float("-inf")).amax(2)
            return self.head(self.drop(torch.cat([mean, mx], dim=1)))

    return _SeqClassifier()


class EmotionClassifier:
    """A trained classifier: :meth:`predict` / :meth:`predict_proba` on aligned landmark sequences."""

    def __init__(self, net, mean: np.ndarray, std: np.ndarray, config: dict, info: dict | None = None):
        self.net = net.eval()
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.config = dict(config)
        self.info = dict(info or {})   # e.g. train clip hash, GT accuracy per split

    @property
    def emotions(self) -> tuple[str, ...]:
        return EMOTIONS

    def _input(self, aligned, reference_aligned):
        import torch
        x = (displacement_features(aligned, reference_aligned) - self.mean) / self.std
        return torch.from_numpy(x)

    def predict_proba_many(self, sequences: Sequence[np.ndarray], references: Sequence[np.ndarray],
                           batch: int = 64) -> np.ndarray:
        """(N, 8) class probabilities of N sequences (each (T_i, 68, 2)) with their references."""
        import torch
        if len(sequences) != len(references):
            raise EvpError(f"{len(sequences)} sequences but {len(references)} references")
        out = np.zeros((len(sequences), len(EMOTIONS)), np.float32)
        with torch.no_grad(), torch_threads(1):
            for a in range(0, len(sequences), batch):
                xs = [self._input(s, r) for s, r in zip(sequences[a:a + batch], references[a:a + batch])]
                x = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)
                lens = torch.tensor([len(v) for v in xs])
                mask = torch.arange(x.shape[1])[None, :] < lens[:, None]
                out[a:a + len(xs)] = torch.softmax(self.net(x, mask), dim=1).numpy()
        return out

    def predict_proba(self, aligned, reference_aligned) -> np.ndarray:
        """(8,) class probabilities (EMOTIONS order) of one (T, 68, 2) sequence."""
        return self.predict_proba_many([aligned], [reference_aligned])[0]

    def predict_many(self, sequences, references) -> np.ndarray:
        """(N,) int64 predicted emotion index (EMOTIONS order) per sequence."""
        return self.predict_proba_many(sequences, references).argmax(1).astype(np.int64)

    def predict(self, aligned, reference_aligned) -> str:
        """The predicted emotion name of one (T, 68, 2) sequence."""
        return EMOTIONS[int(self.predict_proba(aligned, reference_aligned).argmax())]

    def accuracy(self, sequences, references, labels) -> float:
        """Fraction of sequences whose predicted emotion index equals ``labels``."""
        labels = np.asarray(labels, np.int64)
        if len(labels) == 0:
            return float("nan")
        return float((self.predict_many(sequences, references) == labels).mean())

    # -- persistence --
    def save(self, path: str | Path) -> Path:
        import torch
        from ..atomic import atomic_path
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {"format": FORMAT, "version": VERSION, "config": self.config, "info": self.info,
                # tensors, not numpy arrays: the file must load under torch.load(weights_only=True)
                "mean": torch.from_numpy(self.mean), "std": torch.from_numpy(self.std), "emotions": list(EMOTIONS),
                "state_dict": self.net.state_dict()}
        buf = io.BytesIO()
        torch.save(blob, buf)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EmotionClassifier":
        import torch
        path = Path(path)
        if not path.is_file():
            raise EvpError(f"emotion classifier not found: {path}")
        try:
            # weights_only: the cache sits in a corpus folder that may come from anyone; a pickle
            # that would build other objects than tensors and plain data is refused unbuilt.
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
            raise EvpError(f"{path} is not a readable emotion classifier ({type(e).__name__}); "
                           "delete it to retrain") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT or blob.get("version") != VERSION:
            raise EvpError(f"{path} is not an evp-anim emotion classifier (v{VERSION}); delete it to retrain")
        if list(blob.get("emotions", [])) != list(EMOTIONS):
            raise EvpError(f"{path} was trained on other emotion classes; delete it to retrain")
        cfg = blob["config"]
        net = _net(cfg["channels"], cfg["dropout"])
        try:
            net.load_state_dict(blob["state_dict"])
        except (RuntimeError, KeyError) as e:
            raise EvpError(f"{path}: classifier weights do not match its config ({e.__class__.__name__})") from None
        return cls(net, np.asarray(blob["mean"]), np.asarray(blob["std"]), cfg, blob.get("info"))


def train_classifier(sequences: Sequence[np.ndarray], references: Sequence[np.ndarray], labels,
                     *, epochs: int = 40, channels: int = 96, dropout: float = 0.2, batch: int = 64,
                     lr: float = 2e-3, noise_px: float = 0.3, seed: int = 0,
                     progress: Callable[[float], None] | None = None) -> EmotionClassifier:
    """Train on ground-truth (T_i, 68, 2) aligned sequences, their speakers' (68, 2) neutral
    references and emotion indices (EMOTIONS order). Runs on one CPU thread."""
    with torch_threads(1):
        return _train(sequences, references, labels, epochs=epochs, channels=channels, dropout=dropout,
                      batch=batch, lr=lr, noise_px=noise_px, seed=seed, progress=progress)


def _train(sequences, references, labels, *, epochs, channels, dropout, batch, lr, noise_px, seed,
           progress) -> EmotionClassifier:
    import torch
    import torch.nn.functional as F

    labels = np.asarray(labels, np.int64)
    if len(sequences) == 0:
        raise EvpError("no clips to train the emotion classifier on")
    if not (len(sequences) == len(references) == len(labels)):
        raise EvpError("sequences, references and labels differ in length")
    feats = [displacement_features(s, r) for s, r in zip(sequences, references)]
    allx = np.concatenate(feats)
    mean = allx.mean(0).astype(np.float32)
    std = (allx.std(0) + 0.05).astype(np.float32)        # 0.05 px floor: rigid points stay sane
    feats = [((f - mean) / std).astype(np.float32) for f in feats]
    noise = noise_px / std

    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    cfg = {"channels": channels, "dropout": dropout, "crop": CROP}
    net = _net(channels, dropout)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-3)
    n = len(feats)
    steps_per_epoch = max(1, int(np.ceil(n / batch)))
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
    y_all = torch.from_numpy(labels)
    noise_t = torch.from_numpy(noise.astype(np.float32))
    step = 0
    net.train()
    for _ in range(epochs):
        order = rng.permutation(n)
        for a in range(0, n, batch):
            idx = order[a:a + batch]
            crops = []
            for i in idx:
                f = feats[i]
                if len(f) > CROP:
                    s = int(rng.integers(0, len(f) - CROP + 1))
                    f = f[s:s + CROP]
                crops.append(torch.from_numpy(f))
            x = torch.nn.utils.rnn.pad_sequence(crops, batch_first=True)
            lens = torch.tensor([len(c) for c in crops])
            mask = torch.arange(x.shape[1])[None, :] < lens[:, None]
            x = x + torch.randn(x.shape, generator=g) * noise_t
            loss = F.cross_entropy(net(x, mask), y_all[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress and step % 10 == 0:
                progress(step / total)
    net.eval()
    if progress:
        progress(1.0)
    return EmotionClassifier(net, mean, std, cfg)


def _clip_hash(rows) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(f"{r.clip_id}|{r.emotion}|{r.track}\n".encode())
    return h.hexdigest()


def train_on_corpus(feats, *, split: str = "train", seed: int = 0, epochs: int = 40,
                    progress: Callable[[float], None] | None = None) -> EmotionClassifier:
    """Train on the ground-truth tracks of ``split`` of a :class:`CorpusFeatures`."""
    idx = feats.split(split)
    if not idx:
        raise EvpError(f"the corpus has no '{split}' clips to train the emotion classifier on")
    labels = feats.emotion_index[idx]
    clf = train_classifier([feats.aligned(i) for i in idx], [feats.reference_aligned(i) for i in idx],
                           labels, seed=seed, epochs=epochs, progress=progress)
    clf.info.update({"train_split": split, "train_clips": len(idx),
                     "train_hash": _clip_hash([feats.rows[i] for i in idx]), "seed": seed})
    return clf


def gt_accuracy(clf: EmotionClassifier, feats, splits: Sequence[str]) -> dict[str, float]:
    """The classifier's accuracy on the ground-truth clips of each split (NaN for an empty one)."""
    out = {}
    labels = feats.emotion_index
    for s in splits:
        idx = feats.split(s)
        out[s] = clf.accuracy([feats.aligned(i) for i in idx], [feats.reference_aligned(i) for i in idx],
                              labels[idx]) if idx else float("nan")
    return out


def corpus_classifier(corpus: str | Path, feats, *, path: str | Path | None = None, retrain: bool = False,
                      seed: int = 0, progress: Callable[[float], None] | None = None) -> EmotionClassifier:
    """The corpus's classifier: loaded from ``path`` (default ``<corpus>/cache/`` + CACHE_NAME) when it
    was trained on this corpus's train split, else trained and saved there."""
    path = Path(path) if path is not None else Path(corpus) / "cache" / CACHE_NAME
    want = _clip_hash([feats.rows[i] for i in feats.split("train")])
    if path.is_file() and not retrain:
        try:
            clf = EmotionClassifier.load(path)
        except EvpError:
            clf = None
        if clf is not None and clf.info.get("train_hash") == want:
            if progress:
                progress(1.0)
            return clf
    clf = train_on_corpus(feats, seed=seed, progress=progress)
    clf.save(path)
    return clf
