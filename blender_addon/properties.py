"""Property groups the add-on attaches to objects (``Object.evp``) and scenes (``Scene.evp_retarget``,
``Scene.evp_live``) in register()."""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       StringProperty)

from evp_anim.emotions import EMOTIONS
from evp_anim.tracks import DEFAULT_FPS

EMOTION_ITEMS = [(e, e.capitalize(), f"MEAD emotion '{e}'", i) for i, e in enumerate(EMOTIONS)]


class EVP_PG_channel(bpy.types.PropertyGroup):
    """Per-channel multiplier (Audio2Face-style); ``name`` is the rig channel."""

    multiplier: FloatProperty(name="Multiplier", default=1.0, min=0.0, soft_max=2.0,
                              description="Scale of this channel's weights on import/regenerate")


class EVP_PG_head(bpy.types.PropertyGroup):
    """Settings of an imported EVP head. ``emotion`` and ``intensity`` are animatable: their keys
    are the emotion keys exported for Regenerate (times = (frame - frame_start) / fps s)."""

    is_head: BoolProperty(name="EVP head", default=False, options={"HIDDEN"})
    track_path: StringProperty(name="Track", subtype="FILE_PATH", description="Track this head was imported from")
    audio_path: StringProperty(name="Audio", subtype="FILE_PATH", description="Speech the track was made from")
    frame_start: IntProperty(name="First frame", default=1, description="Scene frame of track frame 0")
    fps: FloatProperty(name="fps", default=DEFAULT_FPS, min=1.0)
    emotion: EnumProperty(name="Emotion", items=EMOTION_ITEMS, default="neutral",
                          description="Emotion at this frame (keyframe it: I over the field)")
    intensity: FloatProperty(name="Intensity", default=1.0, min=0.0, max=1.0,
                             description="Emotion intensity at this frame, 0–1 (keyframeable)")
    strength: FloatProperty(name="Strength", default=1.0, min=0.0, soft_max=2.0,
                            description="Global scale of all channel weights (Audio2Face-style)")
    smoothing: IntProperty(name="Smoothing", default=0, min=0, soft_max=15,
                           description="Centred moving average over this many frames (0 = none)")
    multipliers: CollectionProperty(type=EVP_PG_channel)
    multiplier_index: IntProperty(default=0)
    as_nla: BoolProperty(name="As NLA strip", default=False,
                         description="Put regenerated animation in NLA strips instead of the active Action")
    job_progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                                options={"SKIP_SAVE"})
    job_status: StringProperty(name="Status", default="", options={"SKIP_SAVE"})


def _record_changed(self, context):
    # Record toggled while Live runs: start a take, or end it as a new Action
    from . import live
    s = live.session()
    if s is None:
        return
    try:
        if self.record:
            s.start_recording()
        else:
            action = s.stop_recording()
            if action is not None:
                self.control_status = f"take recorded: {action.name!r} (on the head at Stop)"
    except live.LiveError as e:
        self.control_status = str(e)


def _emotion_changed(self, context):
    # the emotion / intensity fields steer `evp-anim live --control-port` as they change
    if self.send_on_change:
        from . import live
        try:
            live.send_emotion(self.control_host, self.control_port, self.emotion, self.intensity)
            self.control_status = f"sent /evp/emotion {self.emotion} {self.intensity:.2f}"
        except live.LiveError as e:
            self.control_status = str(e)


class EVP_PG_live(bpy.types.PropertyGroup):
    """Live mode settings (``Scene.evp_live``): the Live Link port, Record, and the emotion
    control sent as OSC to ``evp-anim live --control-port``."""

    port: IntProperty(name="Port", default=11111, min=1, max=65535,
                      description="UDP port to receive Live Link Face packets on (evp-anim live --livelink HOST:PORT)")
    record: BoolProperty(name="Record", default=False, update=_record_changed,
                         description="Record the live stream as keyframes at the scene's frame rate, from "
                         "the current frame; the take becomes a new Action on the head at Stop")
    control_host: StringProperty(name="Control host", default="127.0.0.1",
                                 description="Host running evp-anim live --control-port")
    control_port: IntProperty(name="Control port", default=9000, min=1, max=65535,
                              description="evp-anim live's --control-port (OSC over UDP)")
    emotion: EnumProperty(name="Emotion", items=EMOTION_ITEMS, default="neutral", update=_emotion_changed,
                          description="Emotion to send as /evp/emotion NAME INTENSITY")
    intensity: FloatProperty(name="Intensity", default=1.0, min=0.0, max=1.0, update=_emotion_changed,
                             description="Emotion intensity to send, 0–1")
    send_on_change: BoolProperty(name="Send on change", default=True,
                                 description="Send /evp/emotion whenever Emotion or Intensity changes")
    control_status: StringProperty(name="Control", default="", options={"SKIP_SAVE"})


class EVP_PG_unmatched(bpy.types.PropertyGroup):
    """One channel or shape key a retarget left undriven; ``name`` is it, ``kind`` says why."""

    kind: StringProperty(name="Why", default="")


class EVP_PG_retarget(bpy.types.PropertyGroup):
    """The last retarget in this scene (``Scene.evp_retarget``), listed in the EVP panel."""

    has_result: BoolProperty(default=False, options={"HIDDEN"})
    track_path: StringProperty(name="Track", subtype="FILE_PATH")
    summary: StringProperty(name="Summary", default="")
    matched: IntProperty(name="Channels driven", default=0)
    unmatched: CollectionProperty(type=EVP_PG_unmatched)
    unmatched_index: IntProperty(default=0)
