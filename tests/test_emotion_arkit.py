"""The sfm_* → ARKit emotion table: it is the fit of the real rig's geometry, and an ARKit export of
an emotion carried by sfm_* channels shows it in ARKit channels."""

import subprocess
import sys

import numpy as np
import pytest

from evp_anim.export.arkit import ARKIT_52, CHANNEL_TO_ARKIT, NEVER_PRODUCED, to_arkit52, unmapped_channels
from evp_anim.export.emotion_arkit import (FACS_CANDIDATES, MIN_TERM, SFM_TO_ARKIT, SFM_TO_ARKIT_RESIDUAL,
                                           fit_sfm_to_arkit)
from evp_anim.export.formats import read_arkit_csv, read_livelink_csv, write_arkit_csv, write_livelink_csv
from evp_anim.face.channels import RIG_CHANNELS, SFM_EMOTION_CHANNELS
from evp_anim.tracks import Track


@pytest.fixture(scope="module")
def fits(sfm_dir):
    from evp_anim.face.rig import FaceRig
    return fit_sfm_to_arkit(FaceRig(sfm_dir))


def test_table_is_the_fit_of_the_rig_geometry(fits):
    assert list(fits) == list(SFM_EMOTION_CHANNELS) == list(SFM_TO_ARKIT)
    for sfm, fit in fits.items():
        assert fit.weights == pytest.approx(SFM_TO_ARKIT[sfm], abs=0.011), sfm
        assert set(fit.weights) == set(SFM_TO_ARKIT[sfm]), sfm
        assert (fit.residual_mesh, fit.residual_landmarks, fit.residual_all) == \
            pytest.approx(SFM_TO_ARKIT_RESIDUAL[sfm], abs=0.003), sfm
        # the restricted fit can only explain less than the one over all channels, and does something
        assert fit.residual_all <= fit.residual_mesh + 1e-9 and fit.residual_mesh < 1.0


def test_table_terms_are_bounded_symmetric_and_from_the_candidates():
    for sfm, row in SFM_TO_ARKIT.items():
        allowed = FACS_CANDIDATES[sfm]
        for name, w in row.items():
            assert name in RIG_CHANNELS and name in ARKIT_52       # a shape the rig itself has
            assert MIN_TERM <= w <= 1.0
            base = name.removesuffix("Left").removesuffix("Right")
            assert base in allowed, (sfm, name)
            for twin in (base + "Left", base + "Right"):
                if name != base:
                    assert row[twin] == w                          # Left and Right alike
    assert set(CHANNEL_TO_ARKIT) >= set(SFM_EMOTION_CHANNELS)
    assert unmapped_channels(RIG_CHANNELS) == []


def test_each_emotion_reaches_its_signature_shapes():
    """FACS signatures the geometry fit must reproduce: a smile with raised cheeks, lowered brows and
    narrowed eyes, a wrinkled nose and raised upper lip, raised inner brows, a dropped jaw."""
    s = SFM_TO_ARKIT
    assert s["sfm_happiness"]["mouthSmileLeft"] >= 0.8 and s["sfm_happiness"]["cheekSquintRight"] >= 0.8
    assert s["sfm_anger"]["browDownLeft"] > 0.2 and s["sfm_anger"]["eyeSquintRight"] > 0.5
    assert s["sfm_disgust"]["noseSneerLeft"] >= 0.8 and s["sfm_disgust"]["mouthUpperUpRight"] >= 0.8
    assert s["sfm_sadness"]["browInnerUp"] > 0.5 and s["sfm_fear"]["browInnerUp"] > 0.5
    assert s["sfm_fear"]["mouthStretchLeft"] > 0.5
    assert s["sfm_surprise"]["jawOpen"] >= 0.8 and s["sfm_surprise"]["browOuterUpLeft"] >= 0.8
    # no emotion smiles but happiness
    assert all("mouthSmileLeft" not in row for sfm, row in s.items() if sfm != "sfm_happiness")


def test_happiness_only_track_smiles_in_the_arkit_and_livelink_csv(tmp_path):
    n = 40
    names = list(RIG_CHANNELS)
    expr = np.zeros((n, len(names)), np.float32)
    expr[:, names.index("sfm_happiness")] = 0.6
    tr = Track.new(np.zeros((n, 68, 2), np.float32), expression=expr, expression_names=names)
    table = read_arkit_csv(write_arkit_csv(tr, tmp_path / "h.csv"))
    col = {c: i for i, c in enumerate(table.names)}
    for ch in ("mouthSmileLeft", "mouthSmileRight", "cheekSquintLeft", "cheekSquintRight"):
        assert table.values[:, col[ch]].mean() > 0.3, ch
        assert table.values[:, col[ch]] == pytest.approx(0.6 * SFM_TO_ARKIT["sfm_happiness"][ch], abs=1e-6)
    for ch in ("browDownLeft", "mouthFrownLeft", "noseSneerLeft", "tongueOut", "eyeLookOutLeft"):
        assert np.all(table.values[:, col[ch]] == 0), ch
    ll = read_livelink_csv(write_livelink_csv(tr, tmp_path / "h_ll.csv"), fps=25)
    np.testing.assert_allclose(ll.values, table.values, atol=1e-6)


def test_happy_rig_expression_keeps_its_smile_and_clips():
    from evp_anim.face.rig import EMOTION_TABLE
    names = list(RIG_CHANNELS)
    w = np.zeros((1, len(names)), np.float32)
    for ch, v in EMOTION_TABLE["happy"].items():
        w[0, names.index(ch)] = v
    out = to_arkit52(w, names)[0]
    col = {c: i for i, c in enumerate(ARKIT_52)}
    # own 0.8 + 0.7 × 1 is clipped to 1; cheeks 0.6 + 0.7 × 1 likewise
    assert out[col["mouthSmileLeft"]] == 1.0 and out[col["cheekSquintRight"]] == 1.0
    assert out.max() <= 1.0 and out.min() >= 0.0


def test_never_produced_channels_stay_zero_for_any_rig_weights():
    rng = np.random.default_rng(3)
    w = rng.uniform(0, 1, (50, len(RIG_CHANNELS))).astype(np.float32)
    out = to_arkit52(w, list(RIG_CHANNELS))
    produced = {ARKIT_52[j] for j in range(52) if np.any(out[:, j] > 0)}
    eye_look = {n for n in ARKIT_52 if n.startswith("eyeLook")}
    assert produced == set(ARKIT_52) - set(NEVER_PRODUCED) - eye_look   # eye looks come from gaze only


def test_csv_writers_do_not_load_scipy_or_the_rig():
    code = ("import sys, numpy as np; from evp_anim.export import formats; "
            "from evp_anim.tracks import Track; import time; "
            "tr = Track.new(np.zeros((3000, 68, 2), np.float32), expression=np.full((3000, 2), 0.5, np.float32), "
            "expression_names=['sfm_happiness', 'jawOpen'], gaze=np.zeros((3000, 2), np.float32)); "
            "t = time.perf_counter(); formats.to_arkit52(tr.expression, tr.expression_names, tr.gaze); "
            "dt = time.perf_counter() - t; "
            "print(any(m == 'scipy' or m.startswith('scipy.') for m in sys.modules), "
            "'evp_anim.face.rig' in sys.modules, dt)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    scipy_loaded, rig_loaded, dt = r.stdout.split()
    assert scipy_loaded == "False" and rig_loaded == "False" and float(dt) < 0.5
