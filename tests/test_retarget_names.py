"""Shape-key name matching for retarget (evp_anim.export.retarget_names): no Blender needed."""

import numpy as np
import pytest

from evp_anim.errors import EvpError
from evp_anim.export.arkit import ARKIT_52
from evp_anim.export.retarget_names import (PRESETS, ChannelMatcher, check_preset, name_keys, plan_links, read_map,
                                            resolve_map_sources, source_curves, split_side)


@pytest.mark.parametrize("name, channel", [
    ("mouthSmile_R", "mouthSmileRight"),
    ("MouthSmileRight", "mouthSmileRight"),
    ("mouth_smile_r", "mouthSmileRight"),
    ("R_mouthSmile", "mouthSmileRight"),
    ("mouthSmileR", "mouthSmileRight"),
    ("mouthsmileleft", "mouthSmileLeft"),
    ("ARKit.mouthFunnel", "mouthFunnel"),
    ("CC_mouthFunnel", "mouthFunnel"),
    ("blendShape1.jawOpen", "jawOpen"),
    ("Face:JAWOPEN", "jawOpen"),
    ("CC_Base_Eye_Blink_L", "eyeBlinkLeft"),
    ("eyeLookIn.L", "eyeLookInLeft"),
    ("Mouth_L", "mouthLeft"),            # ARKit's mouth-moves-left, spelt with a side suffix
    ("jawRight", "jawRight"),
])
def test_arkit_names_match_whatever_the_spelling(name, channel):
    assert ChannelMatcher("arkit").match(name) == (channel,)


@pytest.mark.parametrize("name", ["notARKit", "Basis", "mouthSmile", "smile_L", "eyeBlink_X", ""])
def test_names_that_stand_for_no_channel_match_nothing(name):
    assert ChannelMatcher("arkit").match(name) == ()


def test_sides_never_cross_over():
    m = ChannelMatcher("arkit")
    assert m.match("mouthSmile_L") == ("mouthSmileLeft",)
    assert m.match("Left_mouthSmile") == ("mouthSmileLeft",)
    assert m.match("mouthLeft") == ("mouthLeft",) and m.match("mouthRight") == ("mouthRight",)
    assert split_side("eyeBlinkLeft") == (["eyeBlink"], "left")
    assert split_side("CTRL_expressions_mouthCornerPullL") == (["CTRL", "expressions", "mouthCornerPull"], "left")
    assert split_side("jawChinRaiseDL") == (["jawChinRaiseDL"], None)   # DL is a lip quadrant, not a side
    assert name_keys("ARKit.mouthSmile_R") == ["arkitmouthsmile|right", "mouthsmile|right"]


def test_metahuman_preset_reads_its_curve_names():
    m = ChannelMatcher("metahuman")
    assert m.match("CTRL_expressions_mouthCornerPullL") == ("mouthSmileLeft",)
    assert m.match("CTRL_expressions_mouthCornerPull_R") == ("mouthSmileRight",)
    assert m.match("CTRL_expressions_browRaiseInR") == ("browInnerUp",)
    assert m.match("CTRL_expressions_mouthFunnelDL") == ("mouthFunnel",)
    assert m.match("CTRL_expressions_eyeLookRightL") == ("eyeLookInLeft",)   # left eye towards the nose
    assert m.match("CTRL_expressions_noseWrinkleL") == ("noseSneerLeft",)
    assert m.match("jawOpen") == ("jawOpen",)                               # ARKit names still work
    # the ARKit preset does not know MetaHuman's names
    assert ChannelMatcher("arkit").match("CTRL_expressions_mouthCornerPullL") == ()
    # every ARKit channel has at least one MetaHuman curve, and no curve serves two channels
    seen = {}
    for ch, names in PRESETS["metahuman"].items():
        assert names
        for n in names:
            assert seen.setdefault(name_keys(n)[0], ch) == ch, n


def test_faceit_uses_arkit_names_and_none_matches_nothing():
    assert ChannelMatcher("faceit").match("eyeBlinkLeft") == ("eyeBlinkLeft",)
    assert ChannelMatcher("none").match("eyeBlinkLeft") == ()
    assert check_preset("MetaHuman") == "metahuman"
    with pytest.raises(EvpError, match="unknown retarget preset 'unreal'.*arkit, metahuman, faceit"):
        check_preset("unreal")


def test_plan_links_map_overrides_and_fills_the_rest():
    keys = ["Basis_junk", "JawOpen", "mouthSmile_L", "Smile", "mouthSmile_R"]
    links = plan_links(keys, ["jawOpen", "mouthSmileLeft", "sfm_happiness"], "arkit",
                       {"sfm_happiness": ["Smile", "mouthSmile_L"]})
    assert links == {"JawOpen": ["jawOpen"], "mouthSmile_L": ["sfm_happiness"], "Smile": ["sfm_happiness"]}
    # a channel the track does not move (mouthSmileRight here) drives nothing
    assert "mouthSmile_R" not in links


def test_source_curves_fold_splits_and_keep_the_rigs_own_channels():
    names = ["jawOpen", "mouthSmileLeft", "mouthSmirkLeft"]
    expr = np.array([[0.5, 0.7, 0.6], [0.0, 0.0, 0.0]], np.float32)
    cur = source_curves(expr, names)
    assert list(cur) == ["jawOpen", "mouthDimpleLeft", "mouthSmileLeft", "mouthSmirkLeft"]
    np.testing.assert_allclose(cur["mouthSmileLeft"], [1.0, 0.0])       # 0.7 + 0.6 clipped
    np.testing.assert_allclose(cur["mouthDimpleLeft"], [0.6, 0.0])
    np.testing.assert_allclose(cur["mouthSmirkLeft"], [0.6, 0.0])       # the rig's own, raw
    # an emotion channel stays available by its own name, unclipped (whatever ARKit makes of it)
    cur = source_curves(np.array([[0.3], [1.4]], np.float32), ["sfm_happiness"])
    np.testing.assert_allclose(cur["sfm_happiness"], [0.3, 1.4])
    assert set(cur) <= set(ARKIT_52) | {"sfm_happiness"}


def test_read_map_toml_and_csv(tmp_path):
    t = tmp_path / "m.toml"
    t.write_text('jawOpen = "Mouth_Open"\nsfm_happiness = ["Smile_L", "Smile_R"]\n')
    assert read_map(t) == {"jawOpen": ["Mouth_Open"], "sfm_happiness": ["Smile_L", "Smile_R"]}
    c = tmp_path / "m.csv"
    c.write_text("source,target\n# comment\njawOpen, Mouth_Open\n\nsfm_happiness,Smile_L\nsfm_happiness,Smile_R\n")
    assert read_map(c) == read_map(t)


@pytest.mark.parametrize("name, text, expect", [
    ("bad.toml", "jawOpen = \n", "not valid TOML"),
    ("num.toml", "jawOpen = 3\n", "must name a shape key"),
    ("empty.toml", "# nothing\n", "maps nothing"),
    ("three.csv", "jawOpen,Mouth_Open,2\n", "line 1: expected 'source_channel,target_shape_key'"),
    ("map.json", "{}", "must be .toml or .csv"),
])
def test_read_map_rejects_bad_tables_in_one_line(tmp_path, name, text, expect):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(EvpError, match=expect) as e:
        read_map(p)
    assert "\n" not in str(e.value)
    with pytest.raises(EvpError, match="mapping table not found"):
        read_map(tmp_path / "absent.toml")


def test_map_sources_must_be_track_channels():
    chans = ["jawOpen", "mouthSmileLeft", "sfm_happiness"]
    assert resolve_map_sources({"JAWOPEN": ["a"], "sfm_happiness": ["b"]}, chans) == {"jawOpen": ["a"],
                                                                                       "sfm_happiness": ["b"]}
    with pytest.raises(EvpError, match="names channels the track does not have: browLowerer, sfm_joy"):
        resolve_map_sources({"browLowerer": ["x"], "jawOpen": ["a"], "sfm_joy": ["y"]}, chans)


def test_source_curves_carry_gaze_into_eye_look_channels():
    """A track looking 10° to the character's left drives eyeLookOutLeft / eyeLookInRight."""
    from evp_anim.export.retarget_names import source_curves
    expr = np.zeros((3, 1), np.float32)
    gaze = np.zeros((3, 2), np.float32)
    gaze[1, 1] = np.deg2rad(10.0)
    curves = source_curves(expr, ["jawOpen"], gaze)
    np.testing.assert_allclose(curves["eyeLookOutLeft"], [0, 10 / 30, 0], atol=1e-5)
    np.testing.assert_allclose(curves["eyeLookInRight"], [0, 10 / 30, 0], atol=1e-5)
    assert "eyeLookOutLeft" not in source_curves(expr, ["jawOpen"])
