"""Disentanglement probes: how much emotion the content codes leak, and content the emotion codes.

A linear probe (standardised features → multinomial logistic regression) is fitted on the
``train`` split's codes and scored on ``test_speaker`` (the same sentences, new speakers):

* **emotion from content** — time-pooled content codes Ec (mean ‖ std over frames) → 8 emotions;
  a disentangled Ec gives chance (1/8).
* **sentence from emotion** — emotion codes Ee → sentence id; a disentangled Ee gives chance
  (1 / number of sentences).

The two "positive" probes (emotion from Ee, sentence from Ec) are reported beside them: they
show the codes do carry what they should, so a chance-level leak probe means disentanglement
rather than an empty code.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..emotions import EMOTIONS
from ..errors import EvpError


def probe_accuracy(train_x, train_y, test_x, test_y, *, c: float = 1.0, seed: int = 0) -> float:
    """Accuracy on (test_x, test_y) of a logistic-regression probe fitted on (train_x, train_y)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr = np.asarray(train_x, np.float64)
    xte = np.asarray(test_x, np.float64)
    ytr = np.asarray(train_y)
    yte = np.asarray(test_y)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise EvpError(f"probe features must be 2-D with equal widths, got {xtr.shape} and {xte.shape}")
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise EvpError("probe features and labels differ in length")
    if len(yte) == 0:
        return float("nan")
    classes = np.unique(ytr)
    if classes.size < 2:      # nothing to learn: always the one training class
        return float((yte == classes[0]).mean()) if classes.size else float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    clf.fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())


def pool_time(codes) -> np.ndarray:
    """(T, D) per-frame codes → (2D,) mean ‖ std over time."""
    c = np.asarray(codes, np.float64)
    if c.ndim != 2 or c.shape[0] == 0:
        raise EvpError(f"per-frame codes must have shape (T, D) with T ≥ 1, got {c.shape}")
    return np.concatenate([c.mean(0), c.std(0)])


def disentanglement_probes(model, feats, train_idx: Sequence[int], test_idx: Sequence[int],
                           progress: Callable[[float], None] | None = None) -> dict:
    """Probe accuracies of ``model``'s codes (see module docstring) with their chance levels.

    ``model`` has ``content_codes(windows) -> (T, Dc)`` and ``emotion_code(windows) -> (De,)``;
    ``feats`` is a :class:`~evp_anim.train.features.CorpusFeatures`.
    """
    idx = list(train_idx) + list(test_idx)
    if not train_idx or not test_idx:
        raise EvpError("disentanglement probes need clips in both the probe's train and test sets")
    content, emotion = [], []
    for k, i in enumerate(idx):
        w = feats.windows[i]
        content.append(pool_time(model.content_codes(w)))
        emotion.append(np.asarray(model.emotion_code(w), np.float64).reshape(-1))
        if progress and (k % 20 == 0 or k == len(idx) - 1):
            progress((k + 1) / len(idx))
    content = np.stack(content)
    emotion = np.stack(emotion)
    n_tr = len(train_idx)
    emo = feats.emotion_index[idx]
    sent = np.array([feats.rows[i].sentence_id for i in idx])
    n_sent = len(set(sent[:n_tr]) | set(sent[n_tr:]))
    return {
        "train_clips": n_tr,
        "test_clips": len(test_idx),
        "emotion_from_content": probe_accuracy(content[:n_tr], emo[:n_tr], content[n_tr:], emo[n_tr:]),
        "emotion_chance": 1.0 / len(EMOTIONS),
        "sentence_from_emotion": probe_accuracy(emotion[:n_tr], sent[:n_tr], emotion[n_tr:], sent[n_tr:]),
        "sentence_chance": 1.0 / max(n_sent, 1),
        "emotion_from_emotion": probe_accuracy(emotion[:n_tr], emo[:n_tr], emotion[n_tr:], emo[n_tr:]),
        "sentence_from_content": probe_accuracy(content[:n_tr], sent[:n_tr], content[n_tr:], sent[n_tr:]),
    }
