"""DTW pseudo pairs: paths recover time stretches, obey EVP's step constraint, and round-trip via pairs.npz."""

import numpy as np
import pytest
import soundfile as sf

from evp_anim.data.manifest import ClipRow
from evp_anim.data.pairs import (PAIRS_FILE, align_pair, build_pairs, dtw_path, load_pairs, plan_pairs)
from evp_anim.emotions import level_to_intensity
from evp_anim.errors import EvpError


def smooth_sequence(rng, n, d=6):
    """A random smooth trajectory (n, d): distinct enough everywhere for DTW to lock onto."""
    x = np.cumsum(rng.standard_normal((n, d)), axis=0)
    return x - x.mean(axis=0)


def stretch(x, factor):
    """Resample (n, d) along time to round(n * factor) frames by linear interpolation."""
    n = len(x)
    m = int(round(n * factor))
    src = np.linspace(0, n - 1, m)
    return np.stack([np.interp(src, np.arange(n), x[:, k]) for k in range(x.shape[1])], axis=1)


def steps_of(path):
    return {tuple(s) for s in np.diff(path, axis=0)}


@pytest.mark.parametrize("factor", [1.5, 0.6])
def test_dtw_recovers_a_time_stretch(factor):
    rng = np.random.default_rng(0)
    a = smooth_sequence(rng, 120)
    b = stretch(a, factor)
    path = dtw_path(a, b)
    assert path[0].tolist() == [0, 0] and path[-1].tolist() == [len(a) - 1, len(b) - 1]
    slope = np.polyfit(path[:, 0], path[:, 1], 1)[0]
    assert slope == pytest.approx((len(b) - 1) / (len(a) - 1), rel=0.03)
    # Every matched b frame lies within ~1 frame of where the stretch put it.
    assert np.abs(path[:, 1] - path[:, 0] * (len(b) - 1) / (len(a) - 1)).max() <= 1.5


def test_dtw_steps_are_unit_and_monotone():
    rng = np.random.default_rng(1)
    a, b = smooth_sequence(rng, 50), smooth_sequence(rng, 80)
    path = dtw_path(a, b)
    assert path.dtype == np.int64 and path.shape[1] == 2
    assert steps_of(path) <= {(1, 0), (0, 1), (1, 1)}
    assert max(len(a), len(b)) <= len(path) <= len(a) + len(b) - 1


def test_dtw_of_identical_sequences_is_the_diagonal():
    x = smooth_sequence(np.random.default_rng(2), 40)
    np.testing.assert_array_equal(dtw_path(x, x), np.stack([np.arange(40)] * 2, axis=1))


def test_dtw_rejects_mismatched_dims():
    with pytest.raises(EvpError, match="same D"):
        dtw_path(np.zeros((5, 3)), np.zeros((5, 4)))


def test_align_pair_gives_equal_lengths_indexed_along_the_path():
    rng = np.random.default_rng(3)
    wa = rng.standard_normal((30, 28, 12)).astype(np.float32)
    wb = wa[np.repeat(np.arange(30), 2)] + 0.01 * rng.standard_normal((60, 28, 12)).astype(np.float32)
    a_al, b_al, path = align_pair(wa, wb)
    assert a_al.shape == b_al.shape == (len(path), 28, 12)
    np.testing.assert_array_equal(a_al, wa[path[:, 0]])
    np.testing.assert_array_equal(b_al, wb[path[:, 1]])
    # wb frame j is a copy of wa frame j // 2, and DTW finds it.
    np.testing.assert_array_equal(path[:, 0], path[:, 1] // 2)
    assert len(path) == 60
    with pytest.raises(EvpError, match=r"\(T, 28, 12\)"):
        align_pair(wa[:, :20], wb)


def _row(clip_id, speaker, sentence, emotion, audio=""):
    return ClipRow(clip_id=clip_id, speaker=speaker, sentence_id=sentence, emotion=emotion, level=1,
                   intensity=level_to_intensity(1), split="train", audio=audio)


def _tiny_manifest():
    rows = []
    for spk in ("s1", "s2"):
        for sen in ("a", "b"):
            for emo in ("neutral", "happy", "sad"):
                rows.append(_row(f"{spk}_{sen}_{emo}", spk, sen, emo))
    rows.append(_row("s1_a_happy2", "s1", "a", "happy"))  # same emotion as s1_a_happy: never paired with it
    rows.append(_row("s3_c_neutral", "s3", "c", "neutral"))  # alone in its group: no pair
    return rows


def test_plan_pairs_same_speaker_and_sentence_different_emotion():
    plan = plan_pairs(_tiny_manifest())
    ids = {(a.clip_id, b.clip_id) for a, b in plan}
    assert len(plan) == 3 * 3 + 5  # three groups of 3 emotions, one of 4 clips with a repeated emotion
    assert ("s1_a_happy", "s1_a_happy2") not in ids
    assert all(a.speaker == b.speaker and a.sentence_id == b.sentence_id and a.emotion != b.emotion
               and a.clip_id < b.clip_id for a, b in plan)


def test_plan_pairs_sampling_is_deterministic_and_capped():
    rows = _tiny_manifest()
    p1 = plan_pairs(rows, max_pairs_per_group=2, seed=5)
    p2 = plan_pairs(list(reversed(rows)), max_pairs_per_group=2, seed=5)
    assert [(a.clip_id, b.clip_id) for a, b in p1] == [(a.clip_id, b.clip_id) for a, b in p2]
    assert len(p1) == 4 * 2
    full = {(a.clip_id, b.clip_id) for a, b in plan_pairs(rows)}
    assert {(a.clip_id, b.clip_id) for a, b in p1} <= full


def test_build_pairs_with_a_custom_loader_round_trips(tmp_path):
    rng = np.random.default_rng(4)
    base = {sen: smooth_sequence(rng, 40, d=28 * 12) for sen in ("a", "b")}
    rate = {"neutral": 1.0, "happy": 0.8, "sad": 1.3}
    rows = _tiny_manifest()[:-2]

    def load(row):
        return stretch(base[row.sentence_id], rate[row.emotion]).reshape(-1, 28, 12).astype(np.float32)

    fractions = []
    out = build_pairs(tmp_path, rows, load_windows=load, progress=fractions.append)
    assert out == tmp_path / PAIRS_FILE and out.is_file()
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    pairs = load_pairs(out)
    assert len(pairs) == 12
    for p in pairs:
        emo_a, emo_b = p.clip_a.split("_")[2], p.clip_b.split("_")[2]
        assert p.frames_a == round(40 * rate[emo_a]) and p.frames_b == round(40 * rate[emo_b])
        assert p.path[0].tolist() == [0, 0] and p.path[-1].tolist() == [p.frames_a - 1, p.frames_b - 1]
        assert steps_of(p.path) <= {(1, 0), (0, 1), (1, 1)}
        slope = np.polyfit(p.path[:, 0], p.path[:, 1], 1)[0]
        assert slope == pytest.approx((p.frames_b - 1) / (p.frames_a - 1), rel=0.08)
    # Threads give the same file content.
    again = load_pairs(build_pairs(tmp_path, rows, load_windows=load, workers=3))
    assert [(p.clip_a, p.clip_b, p.path.tolist()) for p in again] == \
        [(p.clip_a, p.clip_b, p.path.tolist()) for p in pairs]


def test_build_pairs_default_loader_reads_audio(tmp_path):
    rng = np.random.default_rng(5)
    sr = 16000
    sig = np.convolve(rng.standard_normal(sr), np.ones(4) / 4, mode="same") * 0.3
    env = (np.sin(2 * np.pi * 3 * np.arange(sr) / sr) > 0).astype(float)
    clip = (sig * env).astype(np.float32)
    slow = np.interp(np.linspace(0, sr - 1, int(sr * 1.4)), np.arange(sr), clip).astype(np.float32)
    (tmp_path / "wav").mkdir()
    sf.write(tmp_path / "wav" / "n.wav", clip, sr)
    sf.write(tmp_path / "wav" / "s.wav", slow, sr)
    rows = [_row("x_neutral", "x", "1", "neutral", "wav/n.wav"), _row("x_sad", "x", "1", "sad", "wav/s.wav")]
    (pair,) = load_pairs(build_pairs(tmp_path, rows))
    assert (pair.clip_a, pair.clip_b) == ("x_neutral", "x_sad")
    assert (pair.frames_a, pair.frames_b) == (25, 35)
    assert pair.path[-1].tolist() == [24, 34]


def test_build_pairs_without_any_pair_is_an_error(tmp_path):
    with pytest.raises(EvpError, match="no DTW pairs"):
        build_pairs(tmp_path, [_row("a", "s", "1", "happy"), _row("b", "s", "2", "sad")])
    assert not (tmp_path / PAIRS_FILE).exists()


def test_load_pairs_missing_file(tmp_path):
    with pytest.raises(EvpError, match="not found"):
        load_pairs(tmp_path / PAIRS_FILE)
