"""Live mode: Live Link Face UDP packets drive the EVP head in the viewport, and can be recorded.

``evp-anim live --livelink HOST:PORT`` (or the Live Link Face iPhone app) sends one UDP packet per
frame. :class:`LiveReceiver` reads them from a non-blocking socket; :class:`LiveSession` is polled
by ``bpy.app.timers`` at about 60 Hz (Blender never waits on the network), drains every pending
packet, applies the newest to the head (shape keys, head rotation, eyes) and, while recording,
keeps one sample per scene frame, written as a new Action when the take ends.

**Packet layout** (the public Live Link Face format that Unreal's Live Link Face source reads;
decoded here on its own, not through the project's encoder), all multi-byte fields big-endian:
uint8 version; int32 byte length + UTF-8 device id; int32 length + UTF-8 subject name; int32
frame number; float32 sub-frame; int32 frame-rate numerator, int32 denominator; uint8 value
count; count × float32 values: the 52 ARKit blendshapes in the app's order
(:data:`LIVELINK_BLENDSHAPE_ORDER`), then head yaw, pitch, roll and left / right eye yaw, pitch,
roll (radians).

**Mapping onto the head.** Each blendshape goes to the head's shape key with the same ARKit name
(any case), as the exporters map a head's ARKit-named channels to ARKit columns. The head's other
channels (the ``sfm_*`` emotion shapes, ``mouthSmirkLeft``) are held at 0: the stream already
carries their effect inside the ARKit values. Angles become a pose [pitch, yaw, roll] and go
through the builder's :func:`~evp_anim.export.blender_math.pose_to_euler_xzy` (Euler mode 'XZY',
``rotation_euler = (pitch, -roll, yaw)``), for the head and for each eye.

**Emotion control**: :func:`osc_message` builds an OSC 1.0 message by hand (Blender has no
python-osc) and :func:`send_emotion` sends ``/evp/emotion NAME INTENSITY`` to ``evp-anim live
--control-port``.
"""

from __future__ import annotations

import collections
import errno
import socket
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from evp_anim.export.blender_math import pose_to_euler_xzy
from evp_anim.face.channels import arkit_name

DEFAULT_PORT = 11111          # the Live Link Face app's default target port
DEFAULT_CONTROL_PORT = 9000   # a suggestion only: `evp-anim live` has no default --control-port
POLL_INTERVAL = 1.0 / 60.0    # s between timer polls (~60 Hz: smoother than any sender's rate)
MAX_DATAGRAM = 65535          # bytes; a Live Link packet is ~300

# The Live Link Face app's blendshape order (Apple's ARKit blendshapes as the app lists them: eyes
# left then right, jaw, mouth, brows, cheeks, nose, tongue), written out from the public format.
LIVELINK_BLENDSHAPE_ORDER: tuple[str, ...] = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft",
    "EyeSquintLeft", "EyeWideLeft",
    "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight",
    "JawForward", "JawRight", "JawLeft", "JawOpen",
    "MouthClose", "MouthFunnel", "MouthPucker", "MouthRight", "MouthLeft",
    "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight",
    "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper",
    "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight",
    "MouthUpperUpLeft", "MouthUpperUpRight",
    "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight",
    "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight",
    "TongueOut",
)
LIVELINK_ANGLES: tuple[str, ...] = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch",
                                    "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
N_BLEND = len(LIVELINK_BLENDSHAPE_ORDER)                       # 52
N_VALUES = N_BLEND + len(LIVELINK_ANGLES)                      # 61


class LiveError(Exception):
    """A user-facing problem with one clear line (port in use, bad host, no head)."""


class PacketError(ValueError):
    """A datagram that is not a Live Link Face packet (counted and skipped, never raised to bpy)."""


# ---------------------------------------------------------------------- decoding (bpy-free)
@dataclass
class LivePacket:
    """One decoded Live Link Face packet. ``values``: (61,) float32 — 52 blendshape weights
    (nominally 0–1) then 9 angles in radians; a shorter packet is padded with zeros (``count``
    says how many it carried). ``frame`` counts frames at ``fps_num / fps_den`` per second."""

    version: int
    device_id: str
    subject: str
    frame: int
    sub_frame: float
    fps_num: int
    fps_den: int
    count: int
    values: np.ndarray

    @property
    def fps(self) -> float:
        """Sender's frame rate (frames/s); 0 when the packet gives none."""
        return self.fps_num / self.fps_den if self.fps_den else 0.0

    def blendshape(self, name: str) -> float:
        """Weight of the blendshape ``name`` (Live Link or ARKit spelling, any case)."""
        return float(self.values[_BLEND_INDEX[name.lower()]])

    @property
    def head_pose(self) -> np.ndarray:
        """(3,) radians [pitch, yaw, roll] — the Track's pose order (packets carry yaw, pitch, roll)."""
        return _ypr_to_pose(self.values[N_BLEND:N_BLEND + 3])

    @property
    def left_eye_pose(self) -> np.ndarray:
        """(3,) radians [pitch, yaw, roll] of the subject's left eye."""
        return _ypr_to_pose(self.values[N_BLEND + 3:N_BLEND + 6])

    @property
    def right_eye_pose(self) -> np.ndarray:
        """(3,) radians [pitch, yaw, roll] of the subject's right eye."""
        return _ypr_to_pose(self.values[N_BLEND + 6:N_BLEND + 9])


_BLEND_INDEX = {n.lower(): i for i, n in enumerate(LIVELINK_BLENDSHAPE_ORDER)}


def _ypr_to_pose(ypr) -> np.ndarray:
    return np.array([ypr[1], ypr[0], ypr[2]], np.float32)


def _take(data: bytes, pos: int, fmt: str):
    size = struct.calcsize(fmt)
    if pos + size > len(data):
        raise PacketError(f"truncated packet ({len(data)} bytes)")
    return struct.unpack_from(fmt, data, pos), pos + size


def _string(data: bytes, pos: int) -> tuple[str, int]:
    (n,), pos = _take(data, pos, ">i")
    if n < 0 or pos + n > len(data):
        raise PacketError(f"bad string length {n}")
    return data[pos:pos + n].decode("utf-8", "replace"), pos + n


def decode_livelink(data: bytes) -> LivePacket:
    """A Live Link Face UDP datagram → :class:`LivePacket` (the layout in the module docstring).
    Raises :class:`PacketError` for anything else (too short, bad lengths, > 61 values)."""
    (version,), pos = _take(data, 0, ">B")
    device, pos = _string(data, pos)
    subject, pos = _string(data, pos)
    (frame, sub, num, den), pos = _take(data, pos, ">ifii")
    (count,), pos = _take(data, pos, ">B")
    if count > N_VALUES:
        raise PacketError(f"{count} values (a Live Link Face packet has at most {N_VALUES})")
    if pos + 4 * count > len(data):
        raise PacketError(f"truncated packet: {count} values announced, {(len(data) - pos) // 4} present")
    values = np.zeros(N_VALUES, np.float32)
    values[:count] = np.frombuffer(data, ">f4", count, pos)
    return LivePacket(version, device, subject, frame, sub, num, den, count, values)


# ---------------------------------------------------------------------- OSC (bpy-free)
def _osc_string(s: str) -> bytes:
    """OSC-string: UTF-8, NUL-terminated, padded with NULs to a multiple of 4 bytes."""
    b = s.encode("utf-8") + b"\0"
    return b + b"\0" * (-len(b) % 4)


def osc_message(address: str, *args) -> bytes:
    """An OSC 1.0 message: address, type-tag string (',' + one tag per argument), then the
    arguments big-endian — str → 's', float → 'f' (float32), int → 'i' (int32)."""
    tags, payload = ",", b""
    for a in args:
        if isinstance(a, str):
            tags, payload = tags + "s", payload + _osc_string(a)
        elif isinstance(a, bool) or not isinstance(a, (int, float)):
            raise TypeError(f"OSC argument {a!r}: only str, int and float are sent")
        elif isinstance(a, int):
            tags, payload = tags + "i", payload + struct.pack(">i", a)
        else:
            tags, payload = tags + "f", payload + struct.pack(">f", a)
    return _osc_string(address) + _osc_string(tags) + payload


def emotion_message(emotion: str, intensity: float) -> bytes:
    """``/evp/emotion NAME INTENSITY`` (",sf") for ``evp-anim live --control-port``; intensity 0–1."""
    return osc_message("/evp/emotion", str(emotion), float(intensity))


def send_emotion(host: str, port: int, emotion: str, intensity: float) -> None:
    """Send :func:`emotion_message` over UDP to ``host:port``. A bad host or port is a
    :class:`LiveError`; nobody listening is not an error (UDP does not say)."""
    if not 0 < int(port) < 65536:
        raise LiveError(f"control port {port} is out of range (1-65535)")
    try:
        info = socket.getaddrinfo(host or "127.0.0.1", int(port), type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as e:
        raise LiveError(f"cannot resolve control host {host!r} ({getattr(e, 'strerror', None) or e})") from None
    family, _, _, _, addr = info[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(emotion_message(emotion, intensity), addr)
        except OSError as e:
            raise LiveError(f"cannot send to {host}:{port}: {e.strerror or e}") from None


# ---------------------------------------------------------------------- receiving (bpy-free)
class LiveReceiver:
    """Live Link Face packets on UDP ``host:port`` (default all interfaces: an iPhone on the
    network reaches it), read without blocking. A port in use is a one-line :class:`LiveError`."""

    def __init__(self, port: int = DEFAULT_PORT, host: str = "0.0.0.0"):
        if not 0 < int(port) < 65536:
            raise LiveError(f"Live port {port} is out of range (1-65535)")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, int(port)))
        except OSError as e:
            self.sock.close()
            in_use = e.errno in (errno.EADDRINUSE, 48, 10048)
            reason = ("already in use (another receiver, or a second Live session?)" if in_use
                      else (e.strerror or str(e)))
            raise LiveError(f"cannot listen on UDP port {port}: {reason}; choose another port") from None
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.packets = 0          # good packets received
        self.bad = 0              # datagrams that were not Live Link packets
        self._times: collections.deque[float] = collections.deque()   # arrival times of the last second

    def drain(self, limit: int = 10000) -> list[tuple[float, LivePacket]]:
        """Every pending packet as (arrival time on ``time.monotonic()``, s; packet), oldest first.
        The arrival time is the read time: polled at 60 Hz it is late by < 17 ms."""
        out = []
        for _ in range(limit):
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break             # e.g. ICMP errors reported on some platforms: try again next poll
            now = time.monotonic()
            try:
                pkt = decode_livelink(data)
            except PacketError:
                self.bad += 1
                continue
            self.packets += 1
            self._times.append(now)
            out.append((now, pkt))
        return out

    def rate(self, now: float | None = None) -> float:
        """Packets per second over the last second."""
        now = time.monotonic() if now is None else now
        while self._times and self._times[0] < now - 1.0:
            self._times.popleft()
        return float(len(self._times))

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------- the head (bpy)
@dataclass
class _Take:
    """A recording: one 61-value sample per scene frame (the last packet to arrive on it)."""

    start_frame: int
    fps: float                               # scene frames per second
    t0: float | None = None                  # arrival time of the first packet (monotonic s)
    samples: dict[int, np.ndarray] = field(default_factory=dict)

    def add(self, t: float, values: np.ndarray) -> int:
        if self.t0 is None:
            self.t0 = t
        f = self.start_frame + int(round((t - self.t0) * self.fps))
        self.samples[f] = values
        return f


class HeadDriver:
    """Sets an EVP head's shape keys, rotation and eyes from packets. ``key_map``: Live Link
    value index → the head's shape-key name (ARKit names matched in any case)."""

    def __init__(self, head):
        from . import builder
        if head is None or head.type != "MESH" or head.data.shape_keys is None:
            raise LiveError("select an imported EVP head (a mesh with the rig's shape keys) to drive")
        self.head_name = head.name
        keys = head.data.shape_keys.key_blocks
        by_arkit = {arkit_name(kb.name): kb.name for kb in keys[1:] if arkit_name(kb.name)}
        self.key_map = {i: by_arkit[arkit_name(n)] for i, n in enumerate(LIVELINK_BLENDSHAPE_ORDER)
                        if arkit_name(n) in by_arkit}
        # the rig's non-ARKit channels (sfm_*, mouthSmirkLeft): their effect is already in the
        # streamed ARKit values, so they are held at 0 rather than added a second time
        mapped = set(self.key_map.values())
        self.other_keys = [kb.name for kb in keys[1:] if kb.name not in mapped]
        parts = builder.face_parts(head)
        self.eyes = {side: parts[f"eye_{side}"].name for side in ("L", "R") if f"eye_{side}" in parts}

    def head(self):
        import bpy
        obj = bpy.data.objects.get(self.head_name)
        if obj is None or obj.data.shape_keys is None:
            raise LiveError(f"the head {self.head_name!r} was removed")
        return obj

    def eye_objects(self) -> dict:
        import bpy
        return {s: bpy.data.objects[n] for s, n in self.eyes.items() if n in bpy.data.objects}

    def apply(self, values: np.ndarray) -> None:
        """Set the head from one packet's (61,) values (weights; radians)."""
        head = self.head()
        kb = head.data.shape_keys.key_blocks
        for i, name in self.key_map.items():
            kb[name].value = float(values[i])
        for name in self.other_keys:
            if kb[name].value != 0.0:
                kb[name].value = 0.0
        head.rotation_mode = "XZY"
        head.rotation_euler = [float(x) for x in head_euler(values)]
        for side, eye in self.eye_objects().items():
            eye.rotation_mode = "XZY"
            eye.rotation_euler = [float(x) for x in eye_euler(values, side)]


def head_euler(values: np.ndarray) -> np.ndarray:
    """(3,) Blender ``rotation_euler`` (mode 'XZY') of the head for a packet's (61,) values."""
    return pose_to_euler_xzy(_ypr_to_pose(values[N_BLEND:N_BLEND + 3])[None])[0]


def eye_euler(values: np.ndarray, side: str) -> np.ndarray:
    """(3,) ``rotation_euler`` (mode 'XZY') of the eye on ``side`` ('L' = subject's left, 'R')."""
    at = N_BLEND + (3 if side == "L" else 6)
    return pose_to_euler_xzy(_ypr_to_pose(values[at:at + 3])[None])[0]


def _detach(id_data) -> tuple | None:
    """Take ``id_data``'s animation off (Action, slot, NLA on) so live values are not overwritten
    by the depsgraph's animation evaluation; returns what :func:`_reattach` restores."""
    ad = id_data.animation_data
    if ad is None:
        return None
    saved = (ad.action, ad.action_slot, ad.use_nla)
    if ad.action is not None:
        ad.action.use_fake_user = True        # survives a save made while Live runs
    ad.action = None
    ad.use_nla = False
    return saved


def _reattach(id_data, saved: tuple | None) -> None:
    if saved is None:
        return
    ad = id_data.animation_data or id_data.animation_data_create()
    action, slot, use_nla = saved
    ad.action = action
    if action is not None and slot is not None:
        ad.action_slot = slot
    ad.use_nla = use_nla


class LiveSession:
    """A running Live mode: the receiver, the head it drives, the current take, statistics."""

    def __init__(self, head, port: int = DEFAULT_PORT, host: str = "0.0.0.0", scene=None):
        import bpy
        self.driver = HeadDriver(head)
        self.receiver = LiveReceiver(port, host)
        self.scene_name = (scene or bpy.context.scene).name
        self.take: _Take | None = None
        self.actions: list = []           # Actions recorded in this session, oldest first
        self.last: LivePacket | None = None
        self.last_values: np.ndarray | None = None
        self.error = ""
        # the head's, its shape keys' and its eyes' animation are off while Live runs
        self._saved = {("OBJECT", head.name): _detach(head),
                       ("KEY", head.data.shape_keys.name): _detach(head.data.shape_keys)}
        for eye in self.driver.eye_objects().values():
            self._saved[("OBJECT", eye.name)] = _detach(eye)

    @property
    def scene(self):
        import bpy
        return bpy.data.scenes.get(self.scene_name) or bpy.context.scene

    @property
    def recording(self) -> bool:
        return self.take is not None

    def poll(self) -> int:
        """Read every pending packet, apply the newest, record them; returns how many arrived."""
        got = self.receiver.drain()
        if not got:
            return 0
        if self.take is not None:
            for t, pkt in got:
                self.take.add(t, pkt.values)
        self.last = got[-1][1]
        self.last_values = self.last.values
        self.driver.apply(self.last_values)
        return len(got)

    def start_recording(self) -> None:
        """Start a take at the scene's current frame (keys at the scene's frame rate)."""
        from . import builder
        if self.take is None:
            scene = self.scene
            self.take = _Take(scene.frame_current, builder.scene_fps(scene))

    def stop_recording(self):
        """End the take: a new Action with its keys (fake user; the head gets it at :meth:`close`).
        Returns the Action, or None when no packet arrived during the take."""
        take, self.take = self.take, None
        if take is None or not take.samples:
            return None
        action = self._write_action(take)
        self.actions.append(action)
        return action

    def _write_action(self, take: _Take):
        import bpy

        from . import builder
        head = self.driver.head()
        frames = np.array(sorted(take.samples), np.float32)
        vals = np.stack([take.samples[int(f)] for f in frames])                  # (N, 61)
        action = bpy.data.actions.new(f"EVP live {head.name}")
        action.use_fake_user = True
        action["evp_live"] = True
        key = head.data.shape_keys
        kbag = builder.channelbag(action, builder.ensure_slot(action, "KEY", key.name))
        for i, name in self.driver.key_map.items():
            builder._fcurve(kbag, f'key_blocks["{name}"].value', frames, vals[:, i], group="Shape keys")
        ends = frames[[0, -1]]
        for name in self.driver.other_keys:   # held at 0 live: keyed so the take plays as it was seen
            builder._fcurve(kbag, f'key_blocks["{name}"].value', ends, np.zeros(2, np.float32), group="Shape keys")
        obag = builder.channelbag(action, builder.ensure_slot(action, "OBJECT", head.name))
        eul = pose_to_euler_xzy(np.stack([_ypr_to_pose(v[N_BLEND:N_BLEND + 3]) for v in vals]))
        for i in range(3):
            builder._fcurve(obag, "rotation_euler", frames, eul[:, i], index=i, group="Head pose")
        for side, eye in self.driver.eye_objects().items():
            ebag = builder.channelbag(action, builder.ensure_slot(action, "OBJECT", eye.name))
            eul = np.stack([eye_euler(v, side) for v in vals])
            for i in range(3):
                builder._fcurve(ebag, "rotation_euler", frames, eul[:, i], index=i, group="Gaze")
        scene = self.scene
        scene.frame_end = max(scene.frame_end, int(frames[-1]))
        return action

    def close(self):
        """Stop: end any take, close the socket; the head gets the last recorded Action (its
        earlier ones keep a fake user), or its previous animation back when nothing was recorded.
        Returns the Action now on the head from this session, or None."""
        try:
            self.stop_recording()
        except (LiveError, ReferenceError):
            self.take = None                  # the head is gone: nothing to key
        self.receiver.close()
        action = self.actions[-1] if self.actions else None
        for (kind, name), saved in self._saved.items():
            try:
                self._give_back(kind, name, saved, action)
            except ReferenceError:
                pass                  # an undo freed what was saved: leave that ID as it is
        return action

    @staticmethod
    def _give_back(kind: str, name: str, saved, action) -> None:
        import bpy
        idb = bpy.data.objects.get(name) if kind == "OBJECT" else bpy.data.shape_keys.get(name)
        if idb is None:
            return
        slot = None if action is None else next(
            (s for s in action.slots if s.target_id_type == kind and s.name_display == name), None)
        if slot is None:              # nothing recorded (or an eye added after the take): as it was
            _reattach(idb, saved)
            return
        ad = idb.animation_data or idb.animation_data_create()
        ad.action = action
        ad.action_slot = slot
        if saved is not None:
            ad.use_nla = saved[2]

    def status(self) -> str:
        """One line for the panel: packets/s, last frame (and its rate), subject, recording."""
        rate = self.receiver.rate()
        if self.last is None:
            s = f"listening on UDP {self.receiver.port}, no packets yet"
        else:
            s = f"{rate:.0f} packets/s, frame {self.last.frame} @ {self.last.fps:g} fps ({self.last.subject})"
        if self.receiver.bad:
            s += f", {self.receiver.bad} bad"
        if self.take is not None:
            s += f", recording {len(self.take.samples)} frames"
        return s


# ---------------------------------------------------------------------- the running session (bpy)
_session: LiveSession | None = None
_last_redraw = 0.0
last_error = ""                  # why the last session ended on its own (shown in the panel)


def session() -> LiveSession | None:
    """The running Live session, or None."""
    return _session


def start(head, port: int = DEFAULT_PORT, host: str = "0.0.0.0", record: bool = False, scene=None,
          timer: bool = True) -> LiveSession:
    """Start Live on ``head`` (raises :class:`LiveError`, leaving nothing running); ``timer``
    registers the 60 Hz ``bpy.app.timers`` poll (tests call :func:`tick` themselves)."""
    global _session, last_error
    import bpy
    if _session is not None:
        raise LiveError(f"Live is already running on UDP {_session.receiver.port}: stop it first")
    _session = LiveSession(head, port, host, scene)
    last_error = ""
    if record:
        _session.start_recording()
    if timer and not bpy.app.timers.is_registered(tick):
        # persistent: a file load does not silently leave the socket open without a poll
        bpy.app.timers.register(tick, first_interval=0.0, persistent=True)
    return _session


def stop():
    """Stop Live (see :meth:`LiveSession.close`); returns the Action now on the head, or None."""
    global _session
    import bpy
    s, _session = _session, None
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    return s.close() if s is not None else None


def _on_load_pre(*_args) -> None:
    """Before a .blend loads: drop the session without touching the scene (its objects and
    Actions are about to be freed; restoring them would write into the next file)."""
    global _session, last_error
    import bpy
    s, _session = _session, None
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    if s is not None:
        s.receiver.close()
        last_error = "Live stopped: another file was loaded"


def on_load_pre_handler():
    """:func:`_on_load_pre` marked persistent (kept across file loads), for ``load_pre``."""
    from bpy.app.handlers import persistent
    return persistent(_on_load_pre)


def tick() -> float | None:
    """The timer callback: poll, redraw the sidebar a few times a second; None ends the timer."""
    global _last_redraw, last_error
    s = _session
    if s is None:
        return None
    try:
        s.poll()
    except (LiveError, ReferenceError) as e:
        # the head went away: stop cleanly, keep the reason for the panel
        last_error = s.error = f"Live stopped: {e}"
        stop()
        return None
    now = time.monotonic()
    if now - _last_redraw > 0.25:
        _last_redraw = now
        _redraw_sidebars()
    return POLL_INTERVAL


def _redraw_sidebars() -> None:
    import bpy
    wm = bpy.context.window_manager
    for win in (wm.windows if wm else ()):
        for area in win.screen.areas:
            if area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type == "UI":
                        region.tag_redraw()
