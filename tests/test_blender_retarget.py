"""Retarget onto characters whose shape keys use other spellings, presets and mapping tables
(issue 16 item 4): the builder under bpy 5.0.1, the operator and its panel, and the CLI.

bpy tests run in forked children (``@isolated``); the fixture track is a real 42-channel
'happy' take from `evp-anim speak`.
"""

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from evp_anim.tracks import load_track

from test_blender_support import REPO, blender, isolated, make_say_track


@pytest.fixture(scope="module")
def track_path(tmp_path_factory, sfm_dir):
    return make_say_track(tmp_path_factory.mktemp("say"), sfm_dir)


def _character(bpy, names, obj_name="Char"):
    bpy.ops.mesh.primitive_cube_add()
    char = bpy.context.active_object
    char.name = obj_name
    char.shape_key_add(name="Basis")
    for n in names:
        char.shape_key_add(name=n)
    return char


def _curve(builder, char, key_name, frames):
    _, bag = builder.active_channelbag(char.data.shape_keys)
    fc = bag.fcurves.find(f'key_blocks["{key_name}"].value')
    assert fc is not None, key_name
    return np.array([fc.evaluate(float(f)) for f in frames])


@isolated
def test_retarget_matches_sides_prefixes_and_case(track_path, sfm_dir):
    bpy, builder = blender(sfm_dir)
    tr = load_track(track_path)
    char = _character(bpy, ["mouthSmile_R", "MouthSmileLeft", "ARKit.mouthFunnel", "CC_Base_Jaw_Open",
                            "eyeBlink.L", "Smile"])
    rep = builder.retarget(track_path, [char])
    assert rep.matched == {"mouthSmileRight": ["Char:mouthSmile_R"], "mouthSmileLeft": ["Char:MouthSmileLeft"],
                           "mouthFunnel": ["Char:ARKit.mouthFunnel"], "jawOpen": ["Char:CC_Base_Jaw_Open"],
                           "eyeBlinkLeft": ["Char:eyeBlink.L"]}
    frames = np.arange(tr.n_frames)
    smile = _curve(builder, char, "mouthSmile_R", 1 + frames)
    np.testing.assert_allclose(smile, builder_arkit(tr, "mouthSmileRight"), atol=1e-6)
    np.testing.assert_allclose(_curve(builder, char, "ARKit.mouthFunnel", 1 + frames),
                               builder_arkit(tr, "mouthFunnel"), atol=1e-6)
    assert smile.max() > 0.1   # a happy take: the curve carries a smile
    # what drove nothing is listed: the channels, and the key no name matched
    assert "mouthSmileRight" not in rep.missing and "browInnerUp" in rep.missing
    assert rep.unused_keys == ["Char:Smile"]
    assert rep.unmatched == rep.missing + rep.not_arkit and "Char:Smile" in rep.summary()


@isolated
def test_metahuman_preset_and_a_mapping_table(track_path, sfm_dir, tmp_path):
    bpy, builder = blender(sfm_dir)
    tr = load_track(track_path)
    char = _character(bpy, ["CTRL_expressions_mouthCornerPullL", "CTRL_expressions_browRaiseInL",
                            "CTRL_expressions_browRaiseInR", "CTRL_expressions_jawOpen", "Happy", "Open"])
    table = tmp_path / "map.csv"
    table.write_text("source,target\nsfm_happiness,Happy\njawOpen,Open\njawOpen,CTRL_expressions_jawOpen\n")
    rep = builder.retarget(track_path, [char], preset="metahuman", mapping=table)
    frames = 1 + np.arange(tr.n_frames)
    np.testing.assert_allclose(_curve(builder, char, "CTRL_expressions_mouthCornerPullL", frames),
                               builder_arkit(tr, "mouthSmileLeft"), atol=1e-6)
    inner = np.clip(tr.channel("browInnerUp"), 0, 1)
    np.testing.assert_allclose(_curve(builder, char, "CTRL_expressions_browRaiseInL", frames), inner, atol=1e-6)
    np.testing.assert_allclose(_curve(builder, char, "CTRL_expressions_browRaiseInR", frames), inner, atol=1e-6)
    # the table sends the rig's emotion channel to a key of the user's choosing
    np.testing.assert_allclose(_curve(builder, char, "Happy", frames), np.clip(tr.channel("sfm_happiness"), 0, 1),
                               atol=1e-6)
    assert tr.channel("sfm_happiness").mean() > 0.2
    assert sorted(rep.matched["jawOpen"]) == ["Char:CTRL_expressions_jawOpen", "Char:Open"]
    assert "sfm_happiness" in rep.matched and "sfm_happiness" not in rep.not_arkit
    assert rep.preset == "metahuman" and rep.unused_keys == []


def builder_arkit(tr, name):
    """The ARKit curve a retarget should write for ``name`` (smirk folded into the left smile)."""
    from evp_anim.export.arkit import ARKIT_52, to_arkit52
    return to_arkit52(tr.expression, tr.expression_names)[:, ARKIT_52.index(name)]


@isolated
def test_bad_presets_and_tables_leave_the_scene_alone(track_path, sfm_dir, tmp_path):
    bpy, builder = blender(sfm_dir)
    from evp_anim.errors import EvpError
    char = _character(bpy, ["jawOpen"])
    bad = tmp_path / "bad.toml"
    bad.write_text("jawOpen = [\n")
    absent_src, absent_key = tmp_path / "src.toml", tmp_path / "key.toml"
    absent_src.write_text('browLowerer = "jawOpen"\n')
    absent_key.write_text('jawOpen = "Mouth_Open"\n')
    cases = [({"preset": "unreal"}, "unknown retarget preset"), ({"mapping": bad}, "not valid TOML"),
             ({"mapping": absent_src}, "names channels the track does not have: browLowerer"),
             ({"mapping": absent_key}, "names shape keys no selected mesh has: Mouth_Open"),
             ({"preset": "none"}, "nothing to retarget")]
    for kw, msg in cases:
        with pytest.raises(EvpError, match=msg):
            builder.retarget(track_path, [char], **kw)
        assert len(bpy.data.actions) == 0 and char.data.shape_keys.animation_data is None


class _Layout:
    """A stand-in UILayout recording labels and lists (checks named properties exist)."""

    def __init__(self, log):
        self.log = log

    def _sub(self, *a, **k):
        return self

    column = row = box = _sub

    def label(self, text="", **kw):
        self.log.append(("label", text))

    def prop(self, data, name, **kw):
        assert name in data.bl_rna.properties, name
        self.log.append(("prop", name))

    def operator(self, idname, **kw):
        self.log.append(("operator", idname))

    def template_list(self, listtype, list_id, data, prop, active_data, active_prop, **kw):
        assert prop in data.bl_rna.properties and active_prop in active_data.bl_rna.properties
        self.log.append(("list", listtype, [(i.name, i.kind) for i in getattr(data, prop)]))


@isolated
def test_operator_lists_unmatched_channels_in_the_panel(track_path, sfm_dir, tmp_path):
    bpy, builder = blender(sfm_dir)
    from blender_addon import panels
    char = _character(bpy, ["jawOpen", "mouthSmile_L", "Grin"])
    table = tmp_path / "map.toml"
    table.write_text('sfm_happiness = "Grin"\n')
    assert not panels.EVP_PT_retarget.poll(bpy.context)        # nothing to show before a retarget
    assert bpy.ops.evp.retarget(filepath=str(track_path), preset="arkit", map_path=str(table)) == {"FINISHED"}
    res = bpy.context.scene.evp_retarget
    listed = [(i.name, i.kind) for i in res.unmatched]
    assert res.matched == 3   # jawOpen, mouthSmileLeft (the smirk folded in), sfm_happiness
    assert ("mouthSmileRight", "no shape key") in listed and ("browInnerUp", "no shape key") in listed
    from evp_anim.export.arkit import unmapped_channels
    others = [n for n in unmapped_channels(load_track(track_path).expression_names) if n != "sfm_happiness"]
    assert [n for n, k in listed if k == "not ARKit"] == others and ("sfm_happiness", "not ARKit") not in listed
    assert not any(n in ("jawOpen", "mouthSmileLeft") for n, _ in listed)
    assert panels.EVP_PT_retarget.poll(bpy.context)
    log = []
    panels.EVP_PT_retarget.draw(types.SimpleNamespace(layout=_Layout(log)), bpy.context)
    assert ("label", "3 channels driven") in log
    rows = next(e[2] for e in log if e[0] == "list")
    assert rows == listed and ("label", f"unmatched ({len(listed)}):") in log
    np.testing.assert_allclose(_curve(builder, char, "Grin", [11]),
                               np.clip(load_track(track_path).channel("sfm_happiness")[[10]], 0, 1), atol=1e-6)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "evp_anim", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO)


@isolated
def test_retarget_cli_preset_map_and_bad_input(track_path, sfm_dir, tmp_path):
    bpy, builder = blender(sfm_dir)
    _character(bpy, ["CTRL_expressions_mouthCornerPull_L", "Smile"], obj_name="Cube")
    char_path = builder.save_blend(tmp_path / "char.blend")
    table = tmp_path / "map.toml"
    table.write_text('sfm_happiness = "Smile"\n')
    out = tmp_path / "driven.blend"
    r = _cli("--machine-readable", "retarget", track_path, "--mesh", char_path, "-o", out, "--preset", "metahuman",
             "--map", table)
    assert r.returncode == 0, r.stderr[-2000:]
    done = [json.loads(line) for line in r.stderr.splitlines() if line.startswith('{"event": "success"')][0]
    assert done["matched"] == ["mouthSmileLeft", "sfm_happiness"] and done["preset"] == "metahuman"
    assert "mouthSmileRight" in done["missing"] and "sfm_happiness" not in done["not_arkit"]
    assert done["unused_keys"] == []
    bpy.ops.wm.open_mainfile(filepath=str(out))
    key = bpy.data.objects["Cube"].data.shape_keys
    fc = builder.active_channelbag(key)[1].fcurves.find('key_blocks["Smile"].value')
    tr = load_track(track_path)
    assert fc.evaluate(11.0) == pytest.approx(min(tr.channel("sfm_happiness")[10], 1.0), abs=1e-6)

    bad = tmp_path / "bad.csv"
    bad.write_text("sfm_happiness,Smile,extra\n")
    ghost = tmp_path / "ghost.toml"
    ghost.write_text('browLowerer = "Smile"\n')
    nokey = tmp_path / "nokey.toml"
    nokey.write_text('jawOpen = "Mouth_Open"\n')
    cases = [(["--preset", "unreal"], "unknown retarget preset 'unreal'"),
             (["--map", bad], "line 1: expected 'source_channel,target_shape_key'"),
             (["--map", tmp_path / "absent.toml"], "mapping table not found"),
             (["--map", ghost], "names channels the track does not have: browLowerer"),
             (["--map", nokey], "names shape keys no selected mesh has: Mouth_Open")]
    for extra, expect in cases:
        out2 = tmp_path / "never.blend"
        r = _cli("retarget", track_path, "--mesh", char_path, "-o", out2, *extra)
        assert r.returncode == 2, (extra, r.stderr[-1000:])
        assert r.stderr.startswith("error: ") and expect in r.stderr, (extra, r.stderr[-1000:])
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert not out2.exists()
