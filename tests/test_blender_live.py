"""The add-on's Live mode (blender_addon/live.py) in real bpy 5.0.1: Live Link Face packets over
loopback UDP drive an imported EVP head, Record keys them into an Action, emotion control goes
out as OSC, and a port in use is one clear line.

Packets are built with the project's encoder (:func:`evp_anim.live.outputs.encode_livelink`), so
the add-on's own decoder (written from the public layout) is checked against it. Timers do not
run in background bpy, so the tests call :func:`blender_addon.live.tick` (the timer's callback)
themselves. Each test runs in a forked child (``@isolated``, see test_blender_support).
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evp_anim.export.blender_math import pose_to_euler_xzy
from evp_anim.export.formats import LIVELINK_BLENDSHAPES, LIVELINK_POSE
from evp_anim.live.outputs import encode_livelink
from evp_anim.tracks import Track
from test_blender_support import REPO, blender, isolated

IDX = {n: i for i, n in enumerate((*LIVELINK_BLENDSHAPES, *LIVELINK_POSE))}


def _values(**named) -> np.ndarray:
    """(61,) Live Link values, all 0 but ``named`` (Live Link names: JawOpen=0.6, HeadYaw=0.1)."""
    v = np.zeros(61, np.float32)
    for k, x in named.items():
        v[IDX[k]] = x
    return v


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _head(sfm_dir):
    """A fresh bpy with the add-on and an imported 5-frame head (with eyes), selected and active."""
    bpy, builder = blender(sfm_dir)
    rig = builder.load_rig()
    ex = np.zeros((5, len(rig.channels)), np.float32)
    ex[:, rig.channels.index("sfm_happiness")] = 0.5          # held at 0 while live
    ex[:, rig.channels.index("jawOpen")] = 0.2
    track = Track.new(np.zeros((5, 68, 2), np.float32), expression=ex, expression_names=list(rig.channels),
                      gaze=np.zeros((5, 2), np.float32))
    res = builder.import_track(track, sound=False, landmarks=False, name="T")
    bpy.context.view_layer.objects.active = res.head
    res.head.select_set(True)
    from blender_addon import live
    return bpy, builder, live, res


def _send(port: int, values, frame: int = 0, fps: int = 25) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(encode_livelink(values, frame, fps, "test-subject", "DEV-1"), ("127.0.0.1", port))


def _pump(live, want: int, timeout: float = 3.0) -> None:
    """Poll (the timer callback) until ``want`` packets in all have arrived."""
    s = live.session()
    deadline = time.monotonic() + timeout
    while s.receiver.packets < want and time.monotonic() < deadline:
        live.tick()
        time.sleep(0.002)
    assert s.receiver.packets >= want, f"only {s.receiver.packets} of {want} packets arrived"


def _key_curve(action, name):
    from bpy_extras import anim_utils
    slot = next(s for s in action.slots if s.target_id_type == "KEY")
    bag = anim_utils.action_get_channelbag_for_slot(action, slot)
    return bag.fcurves.find(f'key_blocks["{name}"].value')


@isolated
def test_decoder_reads_the_encoders_packets():
    from blender_addon import live
    assert live.LIVELINK_BLENDSHAPE_ORDER == LIVELINK_BLENDSHAPES      # written independently
    assert live.LIVELINK_ANGLES == LIVELINK_POSE
    rng = np.random.default_rng(3)
    v = rng.uniform(-1, 1, 61).astype(np.float32)
    pkt = live.decode_livelink(encode_livelink(v, 1234, 60, "Sübject", "DEV-ÜUID"))
    assert (pkt.version, pkt.device_id, pkt.subject) == (6, "DEV-ÜUID", "Sübject")
    assert (pkt.frame, pkt.fps, pkt.count) == (1234, 60.0, 61)
    np.testing.assert_array_equal(pkt.values, v)
    assert pkt.blendshape("jawOpen") == v[IDX["JawOpen"]]
    np.testing.assert_array_equal(pkt.head_pose, v[[IDX["HeadPitch"], IDX["HeadYaw"], IDX["HeadRoll"]]])
    data = encode_livelink(v, 1, 25, "s", "d")
    for bad in (b"", data[:20], data[:-1]):
        with pytest.raises(live.PacketError):
            live.decode_livelink(bad)


@isolated
def test_packets_drive_the_head_and_record_an_action(sfm_dir):
    bpy, builder, live, res = _head(sfm_dir)
    head, scene = res.head, bpy.context.scene
    eyes = {n: o for n, o in builder.face_parts(head).items() if n.startswith("eye_")}
    assert set(eyes) == {"eye_L", "eye_R"}
    port = _free_port()
    scene.evp_live.port = port
    assert bpy.ops.evp.live_start() == {"FINISHED"}
    s = live.session()
    assert s.receiver.port == port and head.animation_data.action is None   # import Action set aside
    kb = head.data.shape_keys.key_blocks

    pose = dict(HeadYaw=0.1, HeadPitch=0.05, HeadRoll=-0.02, LeftEyeYaw=0.2, LeftEyePitch=-0.1,
                RightEyeYaw=0.15, RightEyePitch=0.08)
    _send(port, _values(JawOpen=0.6, MouthSmileLeft=0.3, EyeBlinkRight=1.0, **pose), frame=7)
    _pump(live, 1)
    assert kb["jawOpen"].value == pytest.approx(0.6)
    assert kb["mouthSmileLeft"].value == pytest.approx(0.3)
    assert kb["eyeBlinkRight"].value == pytest.approx(1.0)
    assert kb["sfm_happiness"].value == 0.0              # its effect is inside the ARKit values
    # the builder's pose convention: [pitch, yaw, roll] → Euler XZY (pitch, -roll, yaw)
    want = pose_to_euler_xzy(np.array([[0.05, 0.1, -0.02]]))[0]
    assert head.rotation_mode == "XZY"
    np.testing.assert_allclose(head.rotation_euler, want, atol=1e-6)
    np.testing.assert_allclose(head.rotation_euler, [0.05, 0.02, 0.1], atol=1e-6)
    np.testing.assert_allclose(eyes["eye_L"].rotation_euler, [-0.1, 0.0, 0.2], atol=1e-6)
    np.testing.assert_allclose(eyes["eye_R"].rotation_euler, [0.08, 0.0, 0.15], atol=1e-6)
    # the head's evaluated mesh shows it (no Action overrides the live values)
    dg = bpy.context.evaluated_depsgraph_get()
    assert head.evaluated_get(dg).data.shape_keys.key_blocks["jawOpen"].value == pytest.approx(0.6)
    assert "packets/s, frame 7 @ 25 fps (test-subject)" in s.status()

    # several packets pending: all drained, the newest applied
    for f, x in ((8, 0.1), (9, 0.2), (10, 0.35)):
        _send(port, _values(JawOpen=x), frame=f)
    _pump(live, 4)
    live.tick()
    assert kb["jawOpen"].value == pytest.approx(0.35) and s.last.frame == 10

    # Record: keys at the scene's frame rate from the arrival times, from the current frame
    scene.frame_set(3)
    fps = builder.scene_fps(scene)
    scene.evp_live.record = True                          # the toggle's update starts the take
    sent = [0.6, 0.1, 0.9, 0.4]
    for i, x in enumerate(sent):
        _send(port, _values(JawOpen=x, HeadYaw=0.1 * i), frame=100 + i)
        _pump(live, 5 + i)
        time.sleep(2.0 / fps)                             # two scene frames apart
    assert bpy.ops.evp.live_stop() == {"FINISHED"}
    assert live.session() is None and scene.evp_live.record is False
    action = head.animation_data.action
    assert action is not None and action.get("evp_live") and action != res.action
    fc = _key_curve(action, "jawOpen")
    frames = [k.co[0] for k in fc.keyframe_points]
    np.testing.assert_allclose([k.co[1] for k in fc.keyframe_points], sent, atol=1e-6)
    assert frames[0] == 3 and all(b - a >= 1 for a, b in zip(frames, frames[1:]))
    assert head.data.shape_keys.animation_data.action == action
    assert all(e.animation_data.action == action for e in eyes.values())
    # playing the take back gives the values that arrived on each frame
    for f, x, i in zip(frames, sent, range(4)):
        scene.frame_set(int(f))
        assert kb["jawOpen"].value == pytest.approx(x, abs=1e-6)
        np.testing.assert_allclose(head.rotation_euler, [0.0, 0.0, 0.1 * i], atol=1e-6)
        assert kb["sfm_happiness"].value == 0.0
    assert res.action.use_fake_user                       # the imported Action survives


@isolated
def test_stop_without_recording_restores_the_animation_and_port_in_use_is_one_line(sfm_dir, tmp_path):
    bpy, builder, live, res = _head(sfm_dir)
    head, scene = res.head, bpy.context.scene
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("0.0.0.0", 0))
        scene.evp_live.port = taken.getsockname()[1]
        with pytest.raises(RuntimeError) as err:              # bpy turns an ERROR report into this
            bpy.ops.evp.live_start()
    msg = str(err.value)
    assert "already in use" in msg and "choose another port" in msg and "Traceback" not in msg
    assert live.session() is None and head.animation_data.action == res.action

    scene.evp_live.port = _free_port()
    assert bpy.ops.evp.live_start() == {"FINISHED"}
    with pytest.raises(live.LiveError, match="already running"):
        live.start(head, _free_port())
    _send(scene.evp_live.port, _values(JawOpen=0.9))
    _pump(live, 1)
    assert bpy.ops.evp.live_stop() == {"FINISHED"}
    assert head.animation_data.action == res.action           # nothing recorded: the import's Action back
    assert head.data.shape_keys.animation_data.action == res.action
    scene.frame_set(2)
    assert head.data.shape_keys.key_blocks["jawOpen"].value == pytest.approx(0.2)

    # loading a file while Live runs closes the socket (the port is free again), touches nothing
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "a.blend"))
    port = _free_port()
    live.start(head, port, timer=False)
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "a.blend"))
    assert live.session() is None and "another file" in live.last_error
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("0.0.0.0", port))


@isolated
def test_emotion_control_is_an_osc_message():
    from pythonosc.osc_message import OscMessage
    bpy, _ = blender()
    from blender_addon import live
    msg = OscMessage(live.emotion_message("happy", 0.7))
    assert msg.address == "/evp/emotion"
    assert msg.params[0] == "happy" and msg.params[1] == pytest.approx(0.7)
    assert len(live.emotion_message("happy", 0.7)) % 4 == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2.0)
        st = bpy.context.scene.evp_live
        st.control_host, st.control_port = "127.0.0.1", rx.getsockname()[1]
        st.intensity = 0.5                       # sent on change
        got = OscMessage(rx.recv(1024))
        assert (got.address, got.params[0], got.params[1]) == ("/evp/emotion", "neutral", 0.5)
        st.send_on_change = False
        st.emotion = "sad"
        assert bpy.ops.evp.live_send_emotion() == {"FINISHED"}
        got = OscMessage(rx.recv(1024))
        assert (got.params[0], got.params[1]) == ("sad", 0.5)
    with pytest.raises(live.LiveError, match="cannot resolve"):
        live.send_emotion("no-such-host.invalid", 9000, "happy", 1.0)


@isolated
def test_evp_anim_live_streams_into_the_head(sfm_dir, tmp_path):
    """End to end: `evp-anim live --wav … --fast` sends Live Link packets while bpy polls; every
    frame arrives (loopback, 50 packets fit the socket buffer) with the values --jsonl prints."""
    bpy, builder, live, res = _head(sfm_dir)
    from evp_anim.export.arkit import arkit_name
    port = _free_port()
    s = live.start(res.head, port, timer=False)
    got = []
    drain = s.receiver.drain

    def keep(*a):                          # what each poll drains, kept for the comparison
        new = drain(*a)
        got.extend(new)
        return new
    s.receiver.drain = keep
    out = tmp_path / "frames.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(out, "w") as f:
        wav = REPO / "assets" / "sample_speech.wav"
        proc = subprocess.Popen([sys.executable, "-m", "evp_anim", "live", "--wav", str(wav),
                                 "--fast", "--seconds", "2", "--livelink", f"127.0.0.1:{port}", "--jsonl",
                                 "--sfm-dir", str(sfm_dir)], stdout=f, stderr=subprocess.PIPE, cwd=REPO, env=env)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            s.poll()
            time.sleep(0.002)
        assert proc.wait(timeout=10) == 0, proc.stderr.read().decode()[-2000:]
    time.sleep(0.05)
    s.poll()
    lines = [json.loads(x) for x in Path(out).read_text().splitlines()]
    assert len(lines) == 50
    assert [p.frame for _, p in got] == [x["frame"] for x in lines]          # every frame, in order
    for (_, pkt), line in zip(got, lines):
        for name in LIVELINK_BLENDSHAPES:
            assert pkt.blendshape(name) == pytest.approx(line["arkit"][arkit_name(name)], abs=1e-5)
        np.testing.assert_allclose(pkt.head_pose, line["head"], atol=1e-5)
    kb = res.head.data.shape_keys.key_blocks
    last = lines[-1]
    assert kb["jawOpen"].value == pytest.approx(last["arkit"]["jawOpen"], abs=1e-5)
    np.testing.assert_allclose(res.head.rotation_euler, pose_to_euler_xzy(np.array([last["head"]]))[0], atol=1e-5)
    live.stop()
