"""Disentanglement probes: chance on codes without the label, high accuracy on codes with it."""

import numpy as np
import pytest

from evp_anim.data.manifest import ClipRow
from evp_anim.emotions import EMOTIONS
from evp_anim.errors import EvpError
from evp_anim.eval.probes import disentanglement_probes, pool_time, probe_accuracy
from evp_anim.train.features import CorpusFeatures


def test_random_codes_give_chance_and_labelled_codes_high_accuracy():
    rng = np.random.default_rng(0)
    ytr, yte = rng.integers(0, 8, 400), rng.integers(0, 8, 400)
    acc = probe_accuracy(rng.normal(size=(400, 16)), ytr, rng.normal(size=(400, 16)), yte)
    assert acc < 0.22                                                # chance is 0.125
    with_label = lambda y: np.concatenate([np.eye(8)[y] * 2.0, rng.normal(size=(len(y), 16))], 1)  # noqa: E731
    assert probe_accuracy(with_label(ytr), ytr, with_label(yte), yte) > 0.9


def test_probe_edge_cases():
    assert probe_accuracy(np.zeros((4, 2)), [1, 1, 1, 1], np.zeros((2, 2)), [1, 0]) == 0.5
    assert np.isnan(probe_accuracy(np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((0, 2)), []))
    with pytest.raises(EvpError):
        probe_accuracy(np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((2, 3)), [0, 1])
    assert pool_time(np.arange(6.0).reshape(3, 2)).tolist() == pytest.approx([2, 3, np.sqrt(8 / 3), np.sqrt(8 / 3)])


class _LeakFreeModel:
    """Content codes carry the sentence only, emotion codes the emotion only (plus noise)."""

    def __init__(self, feats):
        self.feats = feats
        self.rng = np.random.default_rng(1)

    def _row(self, windows):
        return self.feats.rows[int(windows[0, 0, 0])]

    def content_codes(self, windows):
        r = self._row(windows)
        t = len(windows)
        return np.eye(10)[int(r.sentence_id)][None].repeat(t, 0) + self.rng.normal(0, 0.3, (t, 10))

    def emotion_code(self, windows):
        r = self._row(windows)
        return np.eye(8)[EMOTIONS.index(r.emotion)] + self.rng.normal(0, 0.3, 8)


def test_disentanglement_probes_on_a_leak_free_model():
    rows, windows = [], []
    for spk in range(6):
        for sent in range(10):
            for emo in EMOTIONS:
                i = len(rows)
                rows.append(ClipRow(f"S{spk}_{emo}_{sent}", f"S{spk}", f"{sent:03d}", emo, 1, 1 / 3,
                                    "train" if spk < 4 else "test_speaker"))
                w = np.zeros((6, 28, 12), np.float32)
                w[0, 0, 0] = i                                      # lets the fake model find its row
                windows.append(w)
    feats = CorpusFeatures(rows, windows, [np.zeros((6, 68, 3))] * len(rows), np.zeros((len(rows), 68, 3)),
                           [np.zeros(6, np.int64)] * len(rows))
    res = disentanglement_probes(_LeakFreeModel(feats), feats, feats.split("train"), feats.split("test_speaker"))
    assert res["emotion_chance"] == 1 / 8 and res["sentence_chance"] == 1 / 10
    assert res["emotion_from_content"] < 0.25 and res["sentence_from_emotion"] < 0.2
    assert res["emotion_from_emotion"] > 0.9 and res["sentence_from_content"] > 0.9
    assert res["train_clips"] == 320 and res["test_clips"] == 160
