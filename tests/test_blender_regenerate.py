"""Regenerate: the CLI subprocess machinery and the operator, with a stand-in for `evp-anim animate`.

The stand-in speaks the same JSON-lines protocol on stderr (start / progress / success /
failure) and writes a real track (a copy of the fixture track), so everything but the model is
the real path. Each test runs in a forked child (``@isolated``).
"""

import time
from pathlib import Path

import numpy as np
import pytest

from evp_anim.tracks import load_track
from test_blender_support import blender, isolated, make_say_track

STAND_IN = r'''
import json, os, shutil, sys, time, tomllib
audio, keys, output, mode, source = sys.argv[1:6]
def emit(**o):
    sys.stderr.write(json.dumps(o) + "\n"); sys.stderr.flush()
emit(event="start", task="animate", total=None)
doc = tomllib.load(open(keys, "rb"))        # the add-on's keys file must parse as TOML
if os.environ.get("EVP_TEST_KEYS_SEEN"):     # let the test read the keys after the add-on removed them
    shutil.copy(keys, os.environ["EVP_TEST_KEYS_SEEN"])
assert os.path.isfile(audio)
if mode == "fail":
    emit(event="failure", task="animate", error="model weights not found: run evp-anim train")
    sys.exit(2)
for i in range(1, 4):
    emit(event="progress", task="animate", progress=i / 4, done=i, total=4)
    time.sleep(0.05)
if mode == "slow":
    open(output, "wb").write(b"partial")      # a half-written output the cancel must remove
    time.sleep(60)
tmp = os.path.join(os.path.dirname(output), "." + os.path.basename(output) + ".tmp")
shutil.copy(source, tmp); os.replace(tmp, output)
emit(event="success", task="animate", output=output)
'''


@pytest.fixture(scope="module")
def track_path(tmp_path_factory, sfm_dir):
    return make_say_track(tmp_path_factory.mktemp("say"), sfm_dir)


@pytest.fixture
def stand_in(tmp_path):
    p = tmp_path / "stand_in_animate.py"
    p.write_text(STAND_IN)
    return p


def _command(stand_in, mode, source):
    return f'{{python}} "{stand_in}" {{audio}} {{keys}} {{output}} {mode} "{source}"'


@isolated
def test_job_reports_progress_and_success_without_blocking(stand_in, track_path, tmp_path):
    blender()
    from blender_addon.jobs import CliJob, build_argv
    out = tmp_path / "new.npz"
    keys = tmp_path / "k.toml"
    keys.write_text('[[key]]\ntime = 0.0\nemotion = "sad"\nintensity = 1.0\n')
    argv = build_argv(_command(stand_in, "ok", track_path), audio=str(track_path.with_suffix(".wav")),
                      keys=str(keys), output=str(out))
    job = CliJob(argv, out).start()
    seen, slowest = [], 0.0
    while True:
        t = time.perf_counter()
        state = job.poll()
        slowest = max(slowest, time.perf_counter() - t)
        seen.append(job.progress)
        if state != "running":
            break
        time.sleep(0.01)
    assert state == "success" and out.is_file()
    assert 0.25 in seen and 0.5 in seen and seen[-1] == 1.0
    assert slowest < 0.05   # poll never waits for the subprocess
    np.testing.assert_array_equal(load_track(out).expression, load_track(track_path).expression)


@isolated
def test_job_cancel_kills_process_and_removes_partial_output(stand_in, track_path, tmp_path):
    blender()
    from blender_addon.jobs import CliJob, build_argv
    out = tmp_path / "new.npz"
    keys = tmp_path / "k.toml"
    keys.write_text('[[key]]\ntime = 0.0\nemotion = "sad"\nintensity = 1.0\n')
    argv = build_argv(_command(stand_in, "slow", track_path), audio=str(track_path.with_suffix(".wav")),
                      keys=str(keys), output=str(out))
    job = CliJob(argv, out).start()
    deadline = time.monotonic() + 20
    while not out.exists() and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.02)
    assert out.exists() and job.progress == 0.75
    job.cancel()
    assert job.state == "cancelled" and not out.exists()
    assert job._proc.poll() is not None   # the subprocess is gone


@isolated
def test_job_failure_carries_the_cli_message(stand_in, track_path, tmp_path):
    blender()
    from blender_addon.jobs import CliJob, build_argv
    keys = tmp_path / "k.toml"
    keys.write_text('[[key]]\ntime = 0.0\nemotion = "sad"\nintensity = 1.0\n')
    argv = build_argv(_command(stand_in, "fail", track_path), audio=str(track_path.with_suffix(".wav")),
                      keys=str(keys), output=str(tmp_path / "x.npz"))
    job = CliJob(argv, tmp_path / "x.npz").start()
    while job.poll() == "running":
        time.sleep(0.02)
    assert job.state == "failure" and job.error == "model weights not found: run evp-anim train"
    with pytest.raises(ValueError, match="not found"):
        build_argv("no-such-evp-binary {audio}", audio="a", keys="k", output="o")


@isolated
def test_regenerate_operator_imports_a_new_action(stand_in, track_path, sfm_dir, tmp_path):
    import os
    cache = tmp_path / "cache"
    os.environ["XDG_CACHE_HOME"] = str(cache)             # the forked child's own environment
    os.environ["EVP_TEST_KEYS_SEEN"] = str(tmp_path / "seen.keys.toml")
    bpy, builder = blender(sfm_dir)
    from evp_anim.emotion_keys import read_emotion_keys
    assert bpy.ops.evp.import_track(filepath=str(track_path)) == {"FINISHED"}
    beside = sorted(p.name for p in Path(track_path).parent.iterdir())
    head = bpy.context.active_object
    old = head.animation_data.action
    head.evp.emotion, head.evp.intensity = "sad", 0.4
    head.keyframe_insert("evp.emotion", frame=11)
    head.keyframe_insert("evp.intensity", frame=11)
    head.evp.strength = 0.5
    before = {a.name for a in bpy.data.actions}
    r = bpy.ops.evp.regenerate(command=_command(stand_in, "ok", track_path))
    assert r == {"FINISHED"}
    new = head.animation_data.action
    assert new != old and old.name in bpy.data.actions and old.use_fake_user
    assert {a.name for a in bpy.data.actions} - before == {new.name}
    # the keys file the CLI got holds the artist's key at 0.4 s
    got = [(round(k.time, 6), k.emotion, round(k.intensity, 6))
           for k in read_emotion_keys(tmp_path / "seen.keys.toml").keys]
    assert (0.4, "sad", 0.4) in got
    # the result, with the panel's strength 0.5 applied, is what the head now plays
    src = load_track(track_path)
    _, bag = builder.active_channelbag(head.data.shape_keys)
    fc = bag.fcurves.find('key_blocks["jawOpen"].value')
    np.testing.assert_allclose([fc.evaluate(1 + i) for i in (5, 20)], 0.5 * src.channel("jawOpen")[[5, 20]],
                               atol=1e-6)
    # issue 16: nothing new beside the artist's track; the result sits in the per-user cache
    # (the keys file, only the CLI's input, is gone) and is what Export reads from
    assert sorted(p.name for p in Path(track_path).parent.iterdir()) == beside
    regen = cache / "evp-anim" / "regen"
    assert [p.name for p in regen.iterdir()] == [Path(head.evp.track_path).name]
    assert Path(head.evp.track_path).parent == regen and Path(head.evp.track_path).name.startswith("say.regen-")
    assert head["evp_track_path"] == head.evp.track_path
    out = tmp_path / "exported.npz"
    assert bpy.ops.evp.export_track(filepath=str(out)) == {"FINISHED"}
    np.testing.assert_allclose(load_track(out).channel("jawOpen"), 0.5 * src.channel("jawOpen"), atol=1e-6)
    # a second run: still nothing beside the track, and the first result (still this head's
    # export source until the new one arrives) is not cleaned away while in use
    first = head.evp.track_path
    assert bpy.ops.evp.regenerate(command=_command(stand_in, "ok", track_path)) == {"FINISHED"}
    assert sorted(p.name for p in Path(track_path).parent.iterdir()) == beside
    assert head.evp.track_path != first and Path(first).is_file() and Path(head.evp.track_path).is_file()
    # a result the clean-up removed is named in one line, not a bare "file not found"
    Path(head.evp.track_path).unlink()
    with pytest.raises(RuntimeError, match="which no longer exists: regenerate again or re-import"):
        bpy.ops.evp.export_track(filepath=str(out))


@isolated
def test_regen_cache_clean_up_keeps_recent_and_used_results(tmp_path):
    import os
    os.environ["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    os.environ.pop("EVP_ANIM_REGEN_DIR", None)
    blender()   # the add-on package imports bpy: only in the forked child
    from blender_addon.jobs import prune_regen_cache, regen_cache_dir, regen_paths
    d = regen_cache_dir()
    assert d == tmp_path / "xdg" / "evp-anim" / "regen" and d.is_dir()
    out, keys = regen_paths("say.regen-20250101-000000-abcdef")
    assert out.parent == d and out.name.startswith("say.regen-") and out.suffix == ".npz"
    assert keys.name == out.name[:-4] + ".keys.toml" and regen_paths("say")[0] != out
    day = 86400
    files = {"old_used": ("say.regen-a.npz", 30 * day), "old": ("say.regen-b.npz", 30 * day),
             "recent": ("say.regen-c.npz", 2 * day), "old_keys": ("say.regen-d.keys.toml", 2 * 3600),
             "new_keys": ("say.regen-e.keys.toml", 60), "tmp": (".say.regen-f.npz.tmp", 2 * 3600),
             "foreign": ("notes.txt", 90 * day)}
    now = time.time()
    for name, age in files.values():
        (d / name).write_bytes(b"x")
        os.utime(d / name, (now - age, now - age))
    gone = prune_regen_cache(keep=[d / files["old_used"][0]])
    assert sorted(p.name for p in gone) == sorted(files[k][0] for k in ("old", "old_keys", "tmp"))
    assert sorted(p.name for p in d.iterdir()) == sorted(files[k][0] for k in ("old_used", "recent", "new_keys",
                                                                                "foreign"))
    os.environ["EVP_ANIM_REGEN_DIR"] = str(tmp_path / "mine")
    assert regen_cache_dir() == tmp_path / "mine"


@isolated
def test_regenerate_failure_is_reported_and_scene_kept(stand_in, track_path, sfm_dir, tmp_path):
    import os
    os.environ["EVP_ANIM_REGEN_DIR"] = str(tmp_path / "regen")
    bpy, builder = blender(sfm_dir)
    bpy.ops.evp.import_track(filepath=str(track_path))
    head = bpy.context.active_object
    old = head.animation_data.action
    before = sorted(a.name for a in bpy.data.actions)
    with pytest.raises(RuntimeError, match="regenerate failed: model weights not found"):
        bpy.ops.evp.regenerate(command=_command(stand_in, "fail", track_path))
    assert sorted(a.name for a in bpy.data.actions) == before and head.animation_data.action == old
    assert list((tmp_path / "regen").iterdir()) == []   # neither keys nor a partial result stay behind
    head.evp.audio_path = "/nowhere/speech.wav"
    with pytest.raises(RuntimeError, match="audio file not found"):
        bpy.ops.evp.regenerate(command=_command(stand_in, "ok", track_path))


class _Recorder:
    """A stand-in for a UILayout that checks every property and operator a panel names."""

    def __init__(self, bpy, log):
        self.bpy, self.log = bpy, log

    def _sub(self, *a, **k):
        return self

    column = row = box = split = _sub

    def prop(self, data, name, **kw):
        assert name in data.bl_rna.properties, name
        self.log.append(("prop", name))

    def operator(self, idname, **kw):
        cat, op = idname.split(".")
        assert hasattr(getattr(self.bpy.ops, cat), op), idname
        self.log.append(("operator", idname))

    def label(self, **kw):
        self.log.append(("label", kw.get("text", "")))

    def template_list(self, listtype, list_id, data, prop, active_data, active_prop, **kw):
        assert prop in data.bl_rna.properties and active_prop in active_data.bl_rna.properties
        self.log.append(("list", prop))


def _tick(op_cls, fake, context, kind):
    import types
    return op_cls.modal(fake, context, types.SimpleNamespace(type=kind))


def _fake_operator(op_cls, job, head, reports):
    import types
    fake = types.SimpleNamespace(_job=job, _head_name=head.name, _timer=None,
                                 report=lambda kind, msg: reports.append((set(kind), msg)))
    fake._stop_ui = types.MethodType(op_cls._stop_ui, fake)
    fake._finish = types.MethodType(op_cls._finish, fake)
    return fake


@isolated
def test_modal_polls_on_timer_and_esc_cancels(stand_in, track_path, sfm_dir, tmp_path):
    # background bpy has no window to run a modal handler, so the modal() method is driven with
    # TIMER / ESC events directly: the same code Blender calls
    bpy, builder = blender(sfm_dir)
    from blender_addon.jobs import CliJob, build_argv
    from blender_addon.operators import EVP_OT_regenerate
    bpy.ops.evp.import_track(filepath=str(track_path))
    head = bpy.context.active_object
    keys = tmp_path / "k.toml"
    keys.write_text('[[key]]\ntime = 0.0\nemotion = "sad"\nintensity = 1.0\n')
    out = tmp_path / "slow.npz"
    argv = build_argv(_command(stand_in, "slow", track_path), audio=str(track_path.with_suffix(".wav")),
                      keys=str(keys), output=str(out))
    reports = []
    fake = _fake_operator(EVP_OT_regenerate, CliJob(argv, out).start(), head, reports)
    deadline = time.monotonic() + 20
    while not out.exists() and time.monotonic() < deadline:
        assert _tick(EVP_OT_regenerate, fake, bpy.context, "TIMER") == {"PASS_THROUGH"}
        time.sleep(0.02)
    assert _tick(EVP_OT_regenerate, fake, bpy.context, "MOUSEMOVE") == {"PASS_THROUGH"}  # UI stays live
    assert head.evp.job_status == "animate 75%" and head.evp.job_progress == pytest.approx(0.75)
    assert _tick(EVP_OT_regenerate, fake, bpy.context, "ESC") == {"CANCELLED"}
    assert not out.exists() and fake._job._proc.poll() is not None
    assert reports[-1][0] == {"WARNING"} and "cancelled" in reports[-1][1]

    # and a run to the end imports the result as a new Action
    old = head.animation_data.action
    out2 = tmp_path / "done.npz"
    argv = build_argv(_command(stand_in, "ok", track_path), audio=str(track_path.with_suffix(".wav")),
                      keys=str(keys), output=str(out2))
    fake = _fake_operator(EVP_OT_regenerate, CliJob(argv, out2).start(), head, reports)
    result = {"PASS_THROUGH"}
    while result == {"PASS_THROUGH"} and time.monotonic() < deadline + 20:
        result = _tick(EVP_OT_regenerate, fake, bpy.context, "TIMER")
        time.sleep(0.02)
    assert result == {"FINISHED"} and head.animation_data.action != old


@isolated
def test_panels_name_real_properties_and_operators(track_path, sfm_dir):
    bpy, builder = blender(sfm_dir)
    import types
    from blender_addon import panels
    bpy.ops.evp.import_track(filepath=str(track_path))
    log = []
    for cls in (panels.EVP_PT_main, panels.EVP_PT_emotion, panels.EVP_PT_adjust, panels.EVP_PT_regenerate):
        assert cls.bl_space_type == "VIEW_3D" and cls.bl_region_type == "UI" and cls.bl_category == "EVP"
        if hasattr(cls, "poll"):
            assert cls.poll(bpy.context)
        cls.draw(types.SimpleNamespace(layout=_Recorder(bpy, log)), bpy.context)
    names = {n for _, n in log}
    assert {"emotion", "intensity", "strength", "smoothing", "multipliers", "evp.regenerate",
            "evp.export_track", "evp.export_emotion_keys", "evp.import_track", "evp.retarget"} <= names
    # emotion and intensity are animatable (keyframes go into the head's Action)
    head = bpy.context.active_object
    assert head.keyframe_insert("evp.emotion", frame=3) and head.keyframe_insert("evp.intensity", frame=3)
