"""The Track contract: round trips, validation errors, resampling, slicing, concatenation."""

import json
import zipfile

import numpy as np
import pytest

from evp_anim.emotions import EMOTIONS
from evp_anim.errors import EvpError
from evp_anim.tracks import SCHEMA_VERSION, Track, concat, load_track, save_track


def make_track(t=50, fps=25.0, k=3, seed=0, with_3d=True) -> Track:
    rng = np.random.default_rng(seed)
    emo = rng.random((t, 8)).astype(np.float32)
    emo /= emo.sum(1, keepdims=True)
    return Track.new(
        rng.uniform(0, 256, (t, 68, 2)),
        fps=fps,
        image_size=(256, 256),
        landmarks_3d=rng.normal(size=(t, 68, 3)).astype(np.float32) if with_3d else None,
        pose_rotation=rng.normal(scale=0.1, size=(t, 3)).astype(np.float32),
        pose_translation=rng.normal(size=(t, 2)).astype(np.float32),
        pose_scale=np.full(t, 1.3, np.float32),
        expression=rng.random((t, k)).astype(np.float32),
        expression_names=[f"ch{i}" for i in range(k)],
        emotion=emo,
        intensity=rng.random(t).astype(np.float32),
        identity=rng.normal(size=63).astype(np.float32),
        phonemes=[(0.0, 0.5, "_"), (0.5, 1.0, "a")],
        provenance={"command": "test"},
        info={"speaker": "S001"},
    )


def test_save_load_round_trip_preserves_every_field(tmp_path):
    tr = make_track()
    p = save_track(tr, tmp_path / "a.npz")
    back = load_track(p)
    for name, arr in tr.arrays().items():
        np.testing.assert_array_equal(getattr(back, name), arr)
    np.testing.assert_array_equal(back.identity, tr.identity)
    assert back.fps == 25.0 and back.image_size == (256, 256)
    assert back.expression_names == ["ch0", "ch1", "ch2"]
    assert back.phonemes == [(0.0, 0.5, "_"), (0.5, 1.0, "a")]
    assert back.provenance == {"command": "test"} and back.info == {"speaker": "S001"}


def test_optional_3d_landmarks_may_be_absent(tmp_path):
    back = load_track(save_track(make_track(with_3d=False), tmp_path / "a.npz"))
    assert back.landmarks_3d is None


def test_save_is_atomic_and_leaves_no_temp_on_failure(tmp_path):
    tr = make_track()
    tr.landmarks_2d[3, 5, 0] = np.nan
    with pytest.raises(EvpError, match="landmarks_2d has NaN.*frame 3"):
        save_track(tr, tmp_path / "bad.npz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field,value,message", [
    ("landmarks_2d", np.zeros((10, 67, 2), np.float32), "landmarks_2d has shape"),
    ("emotion", np.zeros((50, 8), np.float32), "sum to 1"),
    ("intensity", np.full(50, 1.5, np.float32), r"intensity must lie in \[0, 1\]"),
    ("expression", np.zeros((50, 3), np.int32), "floating point"),
    ("pose_scale", np.zeros(50, np.float32), "pose_scale must be positive"),
])
def test_validation_rejects_bad_fields(field, value, message):
    tr = make_track()
    setattr(tr, field, value)
    with pytest.raises(EvpError, match=message):
        tr.validate()


def test_duplicate_channel_names_are_rejected():
    tr = make_track()
    tr.expression_names = ["a", "b", "a"]
    with pytest.raises(EvpError, match="duplicates"):
        tr.validate()


def test_bad_fps_is_rejected():
    tr = make_track()
    tr.fps = 0
    with pytest.raises(EvpError, match="fps"):
        tr.validate()


def _rewrite_meta(path, **changes):
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(bytes(data["meta"]).decode())
    meta.update(changes)
    data["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **data)


def test_newer_schema_version_gives_upgrade_message(tmp_path):
    p = save_track(make_track(), tmp_path / "a.npz")
    _rewrite_meta(p, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(EvpError, match="newer.*upgrade"):
        load_track(p)


def test_wrong_format_tag_and_corrupt_file_are_rejected(tmp_path):
    p = save_track(make_track(), tmp_path / "a.npz")
    _rewrite_meta(p, format="something-else")
    with pytest.raises(EvpError, match="not an evp-anim track"):
        load_track(p)
    q = tmp_path / "junk.npz"
    q.write_bytes(b"not a zip at all")
    with pytest.raises(EvpError, match="not a readable track"):
        load_track(q)
    with pytest.raises(EvpError, match="not found"):
        load_track(tmp_path / "missing.npz")


def test_truncated_file_is_rejected(tmp_path):
    p = save_track(make_track(), tmp_path / "a.npz")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(EvpError):
        load_track(p)


def test_frame_count_mismatch_in_meta_is_rejected(tmp_path):
    p = save_track(make_track(), tmp_path / "a.npz")
    _rewrite_meta(p, n_frames=49)
    with pytest.raises(EvpError, match="meta says 49 frames"):
        load_track(p)


def test_zero_frame_track_is_rejected():
    with pytest.raises(EvpError, match="0 frames"):
        Track.new(np.zeros((0, 68, 2), np.float32))


def test_resample_preserves_duration_and_linear_motion():
    t = 50
    tr = make_track(t=t)
    # A landmark moving linearly in time must stay exactly linear after resampling.
    tr.landmarks_2d[:, 0, 0] = np.arange(t) * 2.0  # 2 px per frame at 25 fps = 50 px/s
    r = tr.resample(50.0)
    assert r.n_frames == 100 and r.fps == 50.0
    assert r.duration == pytest.approx(tr.duration)
    np.testing.assert_allclose(r.landmarks_2d[:98, 0, 0], np.arange(98) * 1.0, atol=1e-4)
    np.testing.assert_allclose(r.emotion.sum(1), 1.0, atol=1e-5)
    back = r.resample(25.0)
    np.testing.assert_allclose(back.landmarks_2d[:49], tr.landmarks_2d[:49], atol=1e-3)


def test_resample_from_30_fps_matches_sample_times():
    tr = make_track(t=30, fps=30.0)
    tr.pose_scale[:] = np.linspace(1, 2, 30)
    r = tr.resample(25.0)
    assert r.n_frames == 25
    expected = np.interp(np.arange(25) / 25.0, np.arange(30) / 30.0, tr.pose_scale)
    np.testing.assert_allclose(r.pose_scale, expected, atol=1e-5)


def test_slice_and_concat_invert_each_other():
    tr = make_track(t=50)
    a, b = tr.slice(0, 20), tr.slice(20)
    assert a.n_frames == 20 and b.n_frames == 30
    assert b.phonemes[0][0] == 0.0  # the segment running over frame 20 is clipped to the new start
    joined = concat([a, b])
    for name, arr in tr.arrays().items():
        np.testing.assert_array_equal(getattr(joined, name), arr)
    assert joined.phonemes[-1][1] == pytest.approx(1.0)


def test_concat_refuses_mismatched_fps_and_channels():
    a = make_track()
    with pytest.raises(EvpError, match="resample first"):
        concat([a, make_track(fps=30.0)])
    with pytest.raises(EvpError, match="expression channels"):
        concat([a, make_track(k=4)])


def test_slice_out_of_range_is_an_error():
    with pytest.raises(EvpError, match="outside"):
        make_track(t=10).slice(5, 20)


def test_emotion_columns_follow_mead_order(tmp_path):
    p = save_track(make_track(), tmp_path / "a.npz")
    with zipfile.ZipFile(p) as z:
        meta = json.loads(np.load(z.open("meta.npy")).tobytes().decode())
    assert meta["emotion_names"] == list(EMOTIONS)
    assert meta["format"] == "evp-anim-track" and meta["schema_version"] == SCHEMA_VERSION
