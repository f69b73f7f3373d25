"""Face rig on the Surrey Face Model: loading, landmarks, articulation channels, emotions."""

import os
from pathlib import Path

import numpy as np
import pytest

from evp_anim.errors import EvpError
from evp_anim.face.channels import ARTICULATION_CHANNELS, RIG_CHANNELS, SFM_EMOTION_CHANNELS
from evp_anim.face.rig import EMOTION_TABLE, FaceRig
from evp_anim.face.sfm import IBUG_MIRROR, load_sfm

MIRROR = np.array([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def rig(sfm_dir):
    return FaceRig(sfm_dir)


def _w(rig, **channels):
    return rig.weights_from_dict(channels)


def _lm(rig, **channels):
    return rig.landmarks_3d(None, _w(rig, **channels)).astype(np.float64)


def _delta(rig, name):
    return rig.deltas[rig.channel_index(name)].astype(np.float64)


def _mouth_vertices(rig):
    """Vertices of the lips and the skin right around them (mean face)."""
    p = rig.mean.astype(np.float64)
    lm = p[rig.landmark_vertices]
    c = 0.5 * (lm[48] + lm[54])
    half = 0.5 * (lm[54, 0] - lm[48, 0])
    r = np.hypot((p[:, 0] - c[0]) / (half + 6.0), (p[:, 1] - c[1]) / 16.0)
    return np.flatnonzero((r < 1.0) & (p[:, 2] > -45.0))


def _eye_vertices(rig, side):
    """Vertices within 8 mm of an eye's landmarks (side: 'right' = subject's right, -x)."""
    p = rig.mean.astype(np.float64)
    idx = range(36, 42) if side == "right" else range(42, 48)
    lm = p[rig.landmark_vertices[list(idx)]]
    lo, hi = lm.min(0) - 8.0, lm.max(0) + 8.0
    return np.flatnonzero(np.all((p >= lo) & (p <= hi), axis=1))


# --- the model --------------------------------------------------------------------------------

def test_load_sfm_arrays(sfm_dir):
    m = load_sfm(sfm_dir)
    n = m.num_vertices
    assert n == 3448
    assert m.mean.shape == (n, 3) and m.mean.dtype == np.float32
    assert m.identity_basis.shape == (63, n, 3) and m.identity_basis.dtype == np.float32
    assert m.expression_names == ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
    assert m.expression_basis.shape == (6, n, 3)
    assert m.triangles.shape == (6736, 3) and m.triangles.dtype == np.int32
    # face about 150 mm wide, nose tip in front
    width = m.mean[:, 0].max() - m.mean[:, 0].min()
    assert 130 < width < 170
    assert m.mean[m.landmark_vertices[30], 2] == pytest.approx(m.mean[:, 2].max(), abs=3.0)
    # first component is mm per std: a real, visible shape change
    assert 3.0 < np.linalg.norm(m.identity_basis[0], axis=1).max() < 40.0
    # cached per folder
    assert load_sfm(sfm_dir) is m
    assert load_sfm(str(sfm_dir) + "/") is m


def test_triangles_face_the_viewer(sfm_dir):
    m = load_sfm(sfm_dir)
    v = m.mean.astype(np.float64)
    t = m.triangles
    nz = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])[:, 2]
    assert (nz > 0).mean() > 0.95


def test_landmarks_defined_and_symmetric(sfm_dir):
    m = load_sfm(sfm_dir)
    lv = m.landmark_vertices
    assert lv.shape == (68,)
    assert lv.min() >= 0 and lv.max() < m.num_vertices
    assert sorted(IBUG_MIRROR) == list(range(68))
    # every point's mirror partner is its symmetric vertex
    assert all(m.symmetry[lv[i]] == lv[IBUG_MIRROR[i]] for i in range(68))
    lm = m.mean[lv].astype(np.float64)
    # subject's right (points 1-8, 37-42, 49) has x < 0; left has x > 0
    assert np.all(lm[0:8, 0] < -10) and np.all(lm[9:17, 0] > 10)
    assert lm[36, 0] < 0 < lm[45, 0] and lm[48, 0] < 0 < lm[54, 0]
    # the jawline runs top to bottom down to the chin (point 9 lowest)
    assert np.all(np.diff(lm[0:9, 1]) < 1.0)
    assert lm[8, 1] == pytest.approx(lm[:, 1].min(), abs=1.0)
    # jaw width spans most of the face
    assert lm[16, 0] - lm[0, 0] > 120


def test_symmetry_table(sfm_dir):
    m = load_sfm(sfm_dir)
    s = m.symmetry
    assert np.array_equal(s[s], np.arange(m.num_vertices))
    err = np.linalg.norm(m.mean * MIRROR - m.mean[s], axis=1)
    assert err.max() < 3.0 and err.mean() < 1.0


def test_mouth_is_a_hole(sfm_dir):
    m = load_sfm(sfm_dir)
    loop = m.mouth_loop
    assert 20 < len(loop) < 100
    lm = m.mean[m.landmark_vertices]
    centre = m.mean[loop].mean(0)
    assert abs(centre[0]) < 2 and abs(centre[1] - 0.5 * (lm[62, 1] + lm[66, 1])) < 3


def _link_sfm(src: Path, dst: Path, skip: str | None = None) -> None:
    dst.mkdir()
    for f in src.iterdir():
        if f.name != skip:
            os.symlink(f, dst / f.name)


def test_missing_file_is_user_error(sfm_dir, tmp_path):
    d = tmp_path / "sfm"
    _link_sfm(sfm_dir, d, skip="ibug_to_sfm.txt")
    with pytest.raises(EvpError, match="ibug_to_sfm.txt.*(assets download|--sfm-dir)"):
        load_sfm(d)
    with pytest.raises(EvpError, match="not found"):
        load_sfm(tmp_path / "nowhere")


def test_corrupt_file_is_user_error(sfm_dir, tmp_path):
    d = tmp_path / "sfm"
    _link_sfm(sfm_dir, d, skip="sfm_shape_3448.bin")
    (d / "sfm_shape_3448.bin").write_bytes(b"not a model" * 10)
    with pytest.raises(EvpError) as err:
        load_sfm(d)
    msg = str(err.value)
    assert "sfm_shape_3448.bin" in msg and "\n" not in msg and "--sfm-dir" in msg


# --- rig evaluation ---------------------------------------------------------------------------

def test_rig_channels_and_shapes(rig):
    assert rig.channels == RIG_CHANNELS
    k = len(RIG_CHANNELS)
    assert rig.deltas.shape == (k, 3448, 3) and rig.deltas.dtype == np.float32
    assert np.all(np.isfinite(rig.deltas))
    # the sfm_* rows are the SFM's own blendshapes
    m = rig.model
    for i, name in enumerate(SFM_EMOTION_CHANNELS):
        j = m.expression_names.index(name[4:])
        assert np.array_equal(rig.deltas[i], m.expression_basis[j])
    # every channel does something visible but not grotesque
    mags = np.linalg.norm(rig.deltas, axis=2).max(axis=1)
    assert np.all(mags > 1.5), [c for c, v in zip(RIG_CHANNELS, mags) if v <= 1.5]
    assert np.all(mags < 35.0)

    assert np.allclose(rig.vertices(), rig.mean)
    assert rig.vertices(None, np.zeros(k)).shape == (3448, 3)
    assert rig.vertices(None, np.zeros((5, k))).shape == (5, 3448, 3)
    with pytest.raises(EvpError):
        rig.vertices(None, np.zeros(k + 1))
    with pytest.raises(EvpError):
        rig.vertices(np.zeros(10))
    with pytest.raises(EvpError):
        rig.channel_index("mouthSmile")


def test_landmarks_match_vertices(rig):
    rng = np.random.default_rng(3)
    ident = rig.sample_identity(rng)
    w = rng.uniform(0, 1, (4, rig.num_channels)).astype(np.float32)
    v = rig.vertices(ident, w)
    lm = rig.landmarks_3d(ident, w)
    assert lm.shape == (4, 68, 3)
    np.testing.assert_allclose(lm, v[:, rig.landmark_vertices], atol=1e-3)
    np.testing.assert_allclose(rig.landmarks_3d(ident, w[0]), v[0, rig.landmark_vertices], atol=1e-3)


def test_sample_identity(rig):
    a = rig.sample_identity(np.random.default_rng(7))
    b = rig.sample_identity(np.random.default_rng(7))
    assert a.shape == (63,) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.abs(a).max() <= 2.5
    assert np.abs(rig.sample_identity(np.random.default_rng(7), scale=0.5) - 0.5 * a).max() < 1e-6
    v = rig.vertices(a)
    # a different but still face-sized face
    assert 0.5 < np.abs(v - rig.mean).max() < 40
    width = v[:, 0].max() - v[:, 0].min()
    assert 120 < width < 190


# --- articulation -----------------------------------------------------------------------------

def test_jaw_open_parts_lips_and_drops_chin(rig):
    rest, jaw = _lm(rig), _lm(rig, jawOpen=1.0)
    gap_rest = np.linalg.norm(rest[62] - rest[66])
    gap = np.linalg.norm(jaw[62] - jaw[66])
    assert gap_rest < 1.0
    assert 14.0 <= gap <= 24.0, gap
    assert jaw[8, 1] < rest[8, 1] - 8.0          # chin drops
    # the upper lip and everything above stays put
    assert np.abs(jaw[:48] - rest[:48])[17:48].max() < 0.2
    assert np.abs(jaw[62] - rest[62]).max() < 1.0
    # halfway is about half open
    half = _lm(rig, jawOpen=0.5)
    assert 0.4 * gap < np.linalg.norm(half[62] - half[66]) < 0.6 * gap


def test_mouth_close_closes_open_jaw(rig):
    jaw = _lm(rig, jawOpen=1.0)
    closed = _lm(rig, jawOpen=1.0, mouthClose=1.0)
    gap_open = np.linalg.norm(jaw[62] - jaw[66])
    gap_closed = np.linalg.norm(closed[62] - closed[66])
    assert gap_closed < 0.2 * gap_open and gap_closed < 2.0
    # the chin stays down: only the lips close
    assert closed[8, 1] == pytest.approx(jaw[8, 1], abs=0.5)


def test_smile_raises_and_widens_corners(rig):
    rest = _lm(rig)
    both = _lm(rig, mouthSmileLeft=1.0, mouthSmileRight=1.0)
    for c in (48, 54):
        assert both[c, 1] > rest[c, 1] + 4.0
    assert (both[54, 0] - both[48, 0]) > (rest[54, 0] - rest[48, 0]) + 5.0
    left = _lm(rig, mouthSmileLeft=1.0)
    assert left[54, 1] > rest[54, 1] + 4.0          # subject's left corner (+x) rises
    assert abs(left[48, 1] - rest[48, 1]) < 0.1     # the right one doesn't


def test_frown_lowers_corners(rig):
    rest = _lm(rig)
    frown = _lm(rig, mouthFrownLeft=1.0, mouthFrownRight=1.0)
    assert frown[48, 1] < rest[48, 1] - 3.0 and frown[54, 1] < rest[54, 1] - 3.0


@pytest.mark.parametrize("side,pairs,other", [
    ("Left", ((43, 47), (44, 46)), range(36, 42)),
    ("Right", ((37, 41), (38, 40)), range(42, 48)),
])
def test_blink_closes_one_eye(rig, side, pairs, other):
    rest = _lm(rig)
    blink = _lm(rig, **{f"eyeBlink{side}": 1.0})
    for up, low in pairs:
        assert np.linalg.norm(rest[up] - rest[low]) > 6.0
        assert np.linalg.norm(blink[up] - blink[low]) < 1.0
    # the other eye does not move
    assert np.abs(blink[list(other)] - rest[list(other)]).max() < 1e-4
    # the upper lid came down rather than the lower lid going up
    up, low = pairs[0]
    assert rest[up, 1] - blink[up, 1] > 2.5 * (blink[low, 1] - rest[low, 1])


def test_left_means_subject_left(rig):
    p = rig.mean.astype(np.float64)
    for name in ARTICULATION_CHANNELS:
        if name.endswith("Left"):
            mag = np.linalg.norm(_delta(rig, name), axis=1)
            # the subject's left is +x: nearly all of the motion happens there
            assert mag[p[:, 0] > 0].sum() > 0.85 * mag.sum(), name
            assert (mag * p[:, 0]).sum() / mag.sum() > 8.0, name


def test_left_right_are_mirror_images(rig):
    sym = rig.model.symmetry
    pairs = [(c, c[:-4] + "Right") for c in ARTICULATION_CHANNELS
             if c.endswith("Left") and c[:-4] + "Right" in ARTICULATION_CHANNELS]
    assert len(pairs) == 14
    for left, right in pairs:
        dl, dr = _delta(rig, left), _delta(rig, right)
        err = np.abs(dl - dr[sym] * MIRROR).max()
        assert err < 0.5, (left, err)
    # symmetric channels are symmetric themselves
    for name in ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthRollLower",
                 "mouthRollUpper", "browInnerUp"):
        d = _delta(rig, name)
        assert np.abs(d - d[sym] * MIRROR).max() < 0.5, name


def test_channels_are_local(rig):
    mouth = _mouth_vertices(rig)
    eyes = np.r_[_eye_vertices(rig, "right"), _eye_vertices(rig, "left")]
    assert len(mouth) > 50 and len(eyes) > 50
    for name in ("eyeBlinkLeft", "eyeBlinkRight", "eyeWideLeft", "eyeSquintRight", "browDownLeft",
                 "browInnerUp", "browOuterUpRight"):
        moved = np.linalg.norm(_delta(rig, name)[mouth], axis=1).max()
        assert moved < 0.1, (name, moved)
    for name in ("jawOpen", "mouthClose", "mouthSmileLeft", "mouthPucker", "mouthFunnel",
                 "mouthStretchRight", "mouthUpperUpLeft", "mouthLowerDownRight", "mouthRollUpper"):
        moved = np.linalg.norm(_delta(rig, name)[eyes], axis=1).max()
        assert moved < 0.1, (name, moved)
    # a left-side mouth channel leaves the right half of the mouth alone
    p = rig.mean
    right_mouth = mouth[p[mouth, 0] < -12.0]
    assert np.linalg.norm(_delta(rig, "mouthSmileLeft")[right_mouth], axis=1).max() < 0.1


def test_deltas_are_smooth(rig):
    p = rig.mean.astype(np.float64)
    e = rig.model.edges
    length = np.linalg.norm(p[e[:, 0]] - p[e[:, 1]], axis=1)
    n = len(p)
    deg = np.bincount(e.ravel(), minlength=n).astype(np.float64)
    for name in ARTICULATION_CHANNELS:
        d = _delta(rig, name)
        diff = np.linalg.norm(d[e[:, 0]] - d[e[:, 1]], axis=1)
        # no edge stretches or shrinks by more than 2.5x its own length (no tearing)...
        assert (diff / length).max() < 2.5, (name, (diff / length).max())
        # ...and no vertex sticks out from its neighbours' average (no spikes)
        nb = np.zeros((n, 3))
        np.add.at(nb, e[:, 0], d[e[:, 1]])
        np.add.at(nb, e[:, 1], d[e[:, 0]])
        spike = np.linalg.norm(d - nb / deg[:, None], axis=1).max()
        assert spike < 0.3 * np.linalg.norm(d, axis=1).max() + 0.5, (name, spike)


def test_brows_and_lids_move_the_right_way(rig):
    rest = _lm(rig)
    up = _lm(rig, browInnerUp=1.0)
    assert up[21, 1] > rest[21, 1] + 3 and up[22, 1] > rest[22, 1] + 3
    down = _lm(rig, browDownLeft=1.0)
    assert down[22:27, 1].mean() < rest[22:27, 1].mean() - 2.5
    outer = _lm(rig, browOuterUpRight=1.0)
    assert outer[17, 1] > rest[17, 1] + 3
    wide = _lm(rig, eyeWideLeft=1.0)
    assert np.linalg.norm(wide[43] - wide[47]) > np.linalg.norm(rest[43] - rest[47]) + 2.0
    squint = _lm(rig, eyeSquintRight=1.0)
    assert squint[41, 1] > rest[41, 1] + 1.5


def test_lip_channels(rig):
    rest = _lm(rig)
    pucker = _lm(rig, mouthPucker=1.0)
    assert pucker[54, 0] - pucker[48, 0] < rest[54, 0] - rest[48, 0] - 8.0
    assert pucker[51, 2] > rest[51, 2] + 4.0 and pucker[57, 2] > rest[57, 2] + 4.0
    funnel = _lm(rig, mouthFunnel=1.0)
    assert np.linalg.norm(funnel[62] - funnel[66]) > 4.0
    stretch = _lm(rig, mouthStretchLeft=1.0)
    assert stretch[54, 0] > rest[54, 0] + 4.0
    upper = _lm(rig, mouthUpperUpLeft=1.0, mouthUpperUpRight=1.0)
    assert upper[50, 1] > rest[50, 1] + 3.0 and upper[52, 1] > rest[52, 1] + 3.0
    lower = _lm(rig, mouthLowerDownLeft=1.0, mouthLowerDownRight=1.0)
    assert lower[56, 1] < rest[56, 1] - 3.0 and lower[58, 1] < rest[58, 1] - 3.0
    roll = _lm(rig, mouthRollLower=1.0)
    # the lower lip's visible height shrinks
    assert (roll[66, 1] - roll[57, 1]) < 0.7 * (rest[66, 1] - rest[57, 1])
    smirk = _lm(rig, mouthSmirkLeft=1.0)
    assert smirk[54, 1] > rest[54, 1] + 3.0 and abs(smirk[48, 1] - rest[48, 1]) < 0.1
    sneer = rig.vertices(None, _w(rig, noseSneerLeft=1.0)) - rig.mean
    nose_left = rig.landmark_vertices[35]
    assert sneer[nose_left, 1] > 2.0


# --- emotions ---------------------------------------------------------------------------------

def test_emotion_weights(rig):
    assert set(EMOTION_TABLE) == {"neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad",
                                  "surprised"}
    assert np.all(rig.emotion_weights("neutral", 1.0) == 0)
    happy = rig.emotion_weights("happy", 1.0)
    assert happy.shape == (rig.num_channels,) and happy.dtype == np.float32
    for ch in ("sfm_happiness", "mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft"):
        assert happy[rig.channel_index(ch)] > 0.3
    np.testing.assert_allclose(rig.emotion_weights("happy", 0.5), 0.5 * happy, rtol=1e-6)
    np.testing.assert_allclose(rig.emotion_weights("Happiness", 1 / 3), happy / 3, rtol=1e-6)
    sad = rig.emotion_weights("sad", 1.0)
    assert sad[rig.channel_index("browInnerUp")] > 0.3 and sad[rig.channel_index("mouthFrownLeft")] > 0.3
    contempt = rig.emotion_weights("contempt", 1.0)
    assert contempt[rig.channel_index("mouthSmirkLeft")] > 0.5
    assert contempt[rig.channel_index("browDownLeft")] > 0
    for emo in EMOTION_TABLE:
        w = rig.emotion_weights(emo, 1.0)
        assert np.all((w >= 0) & (w <= 1)), emo
    with pytest.raises(EvpError):
        rig.emotion_weights("bored", 1.0)
    with pytest.raises(EvpError):
        rig.emotion_weights("happy", 1.5)
    with pytest.raises(EvpError):
        rig.emotion_weights("happy", -0.1)


def test_emotions_move_the_face_plausibly(rig):
    rest = _lm(rig)
    happy = rig.landmarks_3d(None, rig.emotion_weights("happy", 1.0))
    assert happy[48, 1] > rest[48, 1] + 3 and happy[54, 1] > rest[54, 1] + 3
    sad = rig.landmarks_3d(None, rig.emotion_weights("sad", 1.0))
    assert sad[48, 1] < rest[48, 1] - 1 and sad[21, 1] > rest[21, 1] + 2
    surprised = rig.landmarks_3d(None, rig.emotion_weights("surprised", 1.0))
    assert np.linalg.norm(surprised[62] - surprised[66]) > 8 and surprised[19, 1] > rest[19, 1] + 3
    contempt = rig.landmarks_3d(None, rig.emotion_weights("contempt", 1.0))
    assert contempt[54, 1] - rest[54, 1] > contempt[48, 1] - rest[48, 1] + 2
    for emo in EMOTION_TABLE:
        v = rig.vertices(None, rig.emotion_weights(emo, 1.0))
        assert np.abs(v - rig.mean).max() < 30, emo


def test_cached_rig_equals_the_built_one_and_rebuilds_when_damaged(sfm_dir, tmp_path, monkeypatch):
    """FaceRig.cached: the same arrays as FaceRig(sfm_dir) from the per-user cache (written on
    first use), the SFM model loaded only when asked for; a damaged cache file is rebuilt."""
    import numpy as np
    from evp_anim.export.rigdata import rig_cache_path
    from evp_anim.face.rig import FaceRig
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built = FaceRig(sfm_dir)
    path = rig_cache_path(sfm_dir)
    assert not path.exists()
    first = FaceRig.cached(sfm_dir)             # builds and writes the cache
    assert path.is_file()
    again = FaceRig.cached(sfm_dir)             # reads it
    assert again._model is None
    w = np.random.default_rng(0).uniform(0, 1, (4, built.num_channels)).astype(np.float32)
    ident = np.random.default_rng(1).normal(0, 1, built.num_identity).astype(np.float32)
    for rig in (first, again):
        np.testing.assert_array_equal(rig.deltas, built.deltas)
        np.testing.assert_allclose(rig.landmarks_3d(ident, w), built.landmarks_3d(ident, w), atol=1e-5)
        np.testing.assert_allclose(rig.vertices(None, w), built.vertices(None, w), atol=1e-5)
    assert again.model.mean.shape == built.mean.shape      # the SFM model on demand
    path.write_bytes(b"not a zip")
    healed = FaceRig.cached(sfm_dir)
    np.testing.assert_array_equal(healed.deltas, built.deltas)
    assert FaceRig.cached(sfm_dir)._model is None          # the rewritten cache reads back
