"""Operators: import / export tracks, emotion keys, regenerate (modal CLI job), adjust, retarget, Live.

Every operator turns :class:`evp_anim.errors.EvpError` into ``self.report({'ERROR'}, msg)`` and
``{'CANCELLED'}``; the builder validates before it touches the scene, so a failed import leaves
the artist's objects and Actions as they were.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from evp_anim.errors import EvpError

from . import builder
from .jobs import CliJob, build_argv, prune_regen_cache, regen_paths
from .preferences import prefs


def _sfm(context) -> str | None:
    return prefs(context).sfm_dir or None


def _head(context):
    """The active object if it is an imported EVP head (by the add-on or by a script)."""
    obj = context.active_object
    if obj is None or obj.type != "MESH" or "evp_frame_start" not in obj:
        return None
    props = getattr(obj, builder.EVP_PROP)
    if not props.is_head:  # imported by a script before the add-on was enabled: adopt it
        try:
            props.is_head = True
        except AttributeError:  # drawing context: ID writes are not allowed there
            pass
    return obj


class _HeadOperator:
    @classmethod
    def poll(cls, context):
        return _head(context) is not None


class EVP_OT_import_track(bpy.types.Operator, ImportHelper):
    """Import an evp-anim track: SFM head with shape keys, a new Action, landmarks and audio"""

    bl_idname = "evp.import_track"
    bl_label = "Import EVP Track"
    bl_options = {"REGISTER", "UNDO"}
    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})
    audio: StringProperty(name="Audio", subtype="FILE_PATH", default="",
                          description="Speech file (default: the wav named in the track / beside it)")
    landmarks: BoolProperty(name="Landmarks", default=True, description="Also add the animated 68-point landmarks")
    frame_start: IntProperty(name="First frame", default=1)
    keep_scene_fps: BoolProperty(name="Keep scene fps", default=False,
                                 description="Resample the track to the scene's frame rate instead of "
                                 "setting the scene to the track's")

    def execute(self, context):
        fps = builder.scene_fps(context.scene) if self.keep_scene_fps else None
        try:
            res = builder.import_track(self.filepath, sfm_dir=_sfm(context), audio=self.audio or None,
                                       landmarks=self.landmarks, frame_start=self.frame_start,
                                       scene=context.scene, fps=fps)
        except EvpError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        for w in res.warnings:
            self.report({"WARNING"}, w)
        for o in context.view_layer.objects:
            o.select_set(False)
        res.head.select_set(True)
        context.view_layer.objects.active = res.head
        self.report({"INFO"}, f"imported {Path(self.filepath).name}: {context.scene.frame_end - context.scene.frame_start + 1} "
                    f"frames at {builder.scene_fps(context.scene):g} fps")
        return {"FINISHED"}


class EVP_OT_export_track(_HeadOperator, bpy.types.Operator, ExportHelper):
    """Write the head's animation (with your F-curve edits) as an evp-anim track"""

    bl_idname = "evp.export_track"
    bl_label = "Export EVP Track"
    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})

    def execute(self, context):
        from evp_anim.tracks import save_track
        try:
            track = builder.export_track(_head(context), sfm_dir=_sfm(context))
            save_track(track, self.filepath)
        except EvpError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"wrote {self.filepath} ({track.n_frames} frames)")
        return {"FINISHED"}


class EVP_OT_export_emotion_keys(_HeadOperator, bpy.types.Operator, ExportHelper):
    """Write the keyed emotion/intensity (and strength knobs) as an emotion-keys TOML file"""

    bl_idname = "evp.export_emotion_keys"
    bl_label = "Export Emotion Keys"
    filename_ext = ".toml"
    filter_glob: StringProperty(default="*.toml", options={"HIDDEN"})

    def execute(self, context):
        from evp_anim.emotion_keys import write_emotion_keys
        try:
            keys = builder.emotion_keys_from_head(_head(context))
            write_emotion_keys(keys, self.filepath)
        except EvpError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"wrote {len(keys.keys)} emotion keys to {self.filepath}")
        return {"FINISHED"}


def _import_result(op, context, head, path: Path) -> set:
    """Load the regenerated track, apply the panel's knobs, and give the head a NEW Action."""
    from evp_anim.tracks import load_track
    try:
        track, unknown = builder.adjust_from_head(head, load_track(path))
        props = getattr(head, builder.EVP_PROP)
        res = builder.import_track(track, head=head, sfm_dir=_sfm(context), sound=False, landmarks=True,
                                   nla=props.as_nla, frame_start=props.frame_start, name=path.stem,
                                   scene=context.scene, fps=float(head["evp_fps"]), source_path=path)
    except EvpError as e:
        op.report({"ERROR"}, str(e))
        return {"CANCELLED"}
    if unknown:
        op.report({"WARNING"}, f"multipliers for channels the track lacks: {', '.join(unknown[:8])}")
    op.report({"INFO"}, f"regenerated: new Action {res.action.name!r}")
    return {"FINISHED"}


def _exported_from() -> set[str]:
    """Track files the open session's heads and Actions export from (kept by the cache clean-up)."""
    paths = set()
    for idb in (*bpy.data.objects, *bpy.data.actions):
        p = idb.get("evp_track_path")
        if p:
            paths.add(bpy.path.abspath(str(p)))
    return paths


class EVP_OT_regenerate(_HeadOperator, bpy.types.Operator):
    """Run the evp-anim CLI on the head's audio with the keyed emotions; Esc cancels"""

    bl_idname = "evp.regenerate"
    bl_label = "Regenerate"
    bl_options = {"REGISTER"}
    timeout: IntProperty(name="Timeout (s)", default=600, min=1,
                         description="Blocking (scripted) runs give up after this long")
    command: StringProperty(name="Command", default="", options={"SKIP_SAVE"},
                            description="Override the preferences' command for this run (empty: use them)")

    _job: CliJob | None = None
    _timer = None

    def _start(self, context) -> bool:
        from evp_anim.emotion_keys import write_emotion_keys
        head = _head(context)
        props = getattr(head, builder.EVP_PROP)
        audio = Path(bpy.path.abspath(props.audio_path)) if props.audio_path else None
        if audio is None or not audio.is_file():
            self.report({"ERROR"}, f"audio file not found: {audio or '(none set)'}: set Audio in the EVP panel")
            return False
        try:
            keys = builder.emotion_keys_from_head(head)
        except EvpError as e:
            self.report({"ERROR"}, str(e))
            return False
        base = Path(bpy.path.abspath(props.track_path)) if props.track_path else audio
        try:
            # results and keys go to the per-user regenerate cache, never beside the artist's
            # files; old results nobody in this session exports from are cleaned up first
            prune_regen_cache(keep=_exported_from())
            out, keys_path = regen_paths(base.stem)
            write_emotion_keys(keys, keys_path)
        except (OSError, EvpError) as e:
            self.report({"ERROR"}, f"cannot write the emotion keys in the regenerate cache: {e}")
            return False
        self._keys_path = keys_path
        try:
            argv = build_argv(self.command or prefs(context).command, audio=str(audio), keys=str(keys_path), output=str(out))
            self._job = CliJob(argv, out).start()
        except (ValueError, OSError) as e:
            with contextlib.suppress(OSError):
                keys_path.unlink()   # no run will read it
            self.report({"ERROR"}, str(e).splitlines()[0])
            return False
        self._head_name = head.name
        props.job_progress, props.job_status = 0.0, "starting"
        return True

    def _finish(self, context) -> set:
        job = self._job
        keys_path = getattr(self, "_keys_path", None)
        if keys_path is not None:  # the keys were only the CLI's input
            with contextlib.suppress(OSError):
                keys_path.unlink()
        head = bpy.data.objects.get(self._head_name)
        props = getattr(head, builder.EVP_PROP) if head else None
        if props is not None:
            props.job_status = job.state
        if job.state == "success" and head is not None:
            return _import_result(self, context, head, job.output)
        if job.state == "success":
            self.report({"ERROR"}, f"the head was removed while regenerating; the result is in {job.output}")
        elif job.state == "cancelled":
            self.report({"WARNING"}, "regenerate cancelled; partial output removed")
        else:
            self.report({"ERROR"}, f"regenerate failed: {job.error}")
        return {"CANCELLED"}

    def execute(self, context):
        # Blocking path for scripts and background mode (no event loop for a modal handler).
        if not self._start(context):
            return {"CANCELLED"}
        deadline = time.monotonic() + self.timeout
        while self._job.poll() == "running":
            if time.monotonic() > deadline:
                self._job.cancel()
                break
            time.sleep(0.05)
        return self._finish(context)

    def invoke(self, context, event):
        if not self._start(context):
            return {"CANCELLED"}
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        return {"RUNNING_MODAL"}

    def _stop_ui(self, context) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()

    def modal(self, context, event):
        if event.type == "ESC":
            self._job.cancel()
            self._stop_ui(context)
            return self._finish(context)
        if event.type != "TIMER":
            return {"PASS_THROUGH"}  # Blender stays usable while the CLI works
        state = self._job.poll()
        head = bpy.data.objects.get(self._head_name)
        if head is not None:
            props = getattr(head, builder.EVP_PROP)
            props.job_progress = self._job.progress
            props.job_status = f"{self._job.task or 'running'} {self._job.progress:.0%}"
        context.window_manager.progress_update(int(self._job.progress * 100))
        if context.area:
            context.area.tag_redraw()
        if state == "running":
            return {"PASS_THROUGH"}
        self._stop_ui(context)
        return self._finish(context)


class EVP_OT_apply_adjustments(_HeadOperator, bpy.types.Operator):
    """Apply strength, per-channel multipliers and smoothing to the current animation as a NEW Action"""

    bl_idname = "evp.apply_adjustments"
    bl_label = "Apply Adjustments"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        head = _head(context)
        try:
            track, unknown = builder.adjust_from_head(head, builder.export_track(head, sfm_dir=_sfm(context)))
            props = getattr(head, builder.EVP_PROP)
            res = builder.import_track(track, head=head, sfm_dir=_sfm(context), sound=False, landmarks=False,
                                       nla=props.as_nla, frame_start=props.frame_start,
                                       name=f"{head.name} adjusted", scene=context.scene)
        except EvpError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        if unknown:
            self.report({"WARNING"}, f"multipliers for channels the track lacks: {', '.join(unknown[:8])}")
        self.report({"INFO"}, f"new Action {res.action.name!r}")
        return {"FINISHED"}


PRESET_ITEMS = [
    ("arkit", "ARKit", "Apple's 52 names (any case, _L/_R or Left/Right sides, ARKit./CC_-style prefixes)"),
    ("metahuman", "MetaHuman", "MetaHuman CTRL_expressions_* curve names (mouthCornerPullL …) and ARKit names"),
    ("faceit", "Faceit", "Faceit's ARKit expression set (Apple's names verbatim)"),
    ("none", "Mapping table only", "No automatic matching: only the mapping table drives shape keys"),
]


def store_retarget_report(scene, rep, track_path: str = "") -> None:
    """Keep ``rep`` (a :class:`builder.RetargetReport`) on ``scene.evp_retarget`` so the panel can
    list what drove nothing after the operator's one-line report has scrolled away."""
    res = getattr(scene, "evp_retarget", None)
    if res is None:  # properties not registered (a bare script): nothing to show
        return
    res.has_result = True
    res.track_path = str(track_path)
    res.summary = rep.summary()
    res.matched = len(rep.matched)
    res.unmatched.clear()
    for name, kind in ([(n, "no shape key") for n in rep.missing] + [(n, "not ARKit") for n in rep.not_arkit]
                       + [(n, "unused shape key") for n in rep.unused_keys]):
        item = res.unmatched.add()
        item.name, item.kind = name, kind


class EVP_OT_retarget(bpy.types.Operator, ImportHelper):
    """Drive the selected meshes' shape keys with a track (ARKit, MetaHuman or Faceit names, or a mapping table)"""

    bl_idname = "evp.retarget"
    bl_label = "Retarget Track to Selected"
    bl_options = {"REGISTER", "UNDO"}
    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})
    preset: EnumProperty(name="Names", items=PRESET_ITEMS, default="arkit",
                         description="Naming convention of the character's shape keys")
    map_path: StringProperty(name="Mapping table", subtype="FILE_PATH", default="",
                             description="Optional .toml or .csv of source_channel → target_shape_key pairs "
                             "(e.g. jawOpen = \"Mouth_Open\"); its keys get only the channels it sends them")

    @classmethod
    def poll(cls, context):
        return any(o.type == "MESH" for o in context.selected_objects)

    def execute(self, context):
        mapping = bpy.path.abspath(self.map_path) if self.map_path else None
        try:
            rep = builder.retarget(self.filepath, context.selected_objects, scene=context.scene,
                                   preset=self.preset, mapping=mapping)
        except EvpError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        store_retarget_report(context.scene, rep, self.filepath)
        self.report({"WARNING"} if rep.unmatched else {"INFO"}, rep.summary())
        return {"FINISHED"}


class EVP_OT_reset_multipliers(_HeadOperator, bpy.types.Operator):
    """Set strength and every channel multiplier back to 1 and smoothing to 0"""

    bl_idname = "evp.reset_multipliers"
    bl_label = "Reset Multipliers"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        props = getattr(_head(context), builder.EVP_PROP)
        props.strength, props.smoothing = 1.0, 0
        for m in props.multipliers:
            m.multiplier = 1.0
        return {"FINISHED"}


class EVP_OT_live_start(_HeadOperator, bpy.types.Operator):
    """Receive Live Link Face packets (evp-anim live --livelink, or the iPhone app) on the Live
    port and drive the selected EVP head with them"""

    bl_idname = "evp.live_start"
    bl_label = "Start Live"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        from . import live
        return live.session() is None and _head(context) is not None

    def execute(self, context):
        from . import live
        settings = context.scene.evp_live
        try:
            s = live.start(_head(context), settings.port, record=settings.record, scene=context.scene,
                           timer=not bpy.app.background)   # no timers without an event loop
        except live.LiveError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Live: listening on UDP {s.receiver.port}, driving {s.driver.head_name!r}")
        return {"FINISHED"}


class EVP_OT_live_stop(bpy.types.Operator):
    """Stop Live; a recorded take becomes the head's Action (otherwise its previous one returns)"""

    bl_idname = "evp.live_stop"
    bl_label = "Stop Live"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        from . import live
        return live.session() is not None

    def execute(self, context):
        from . import live
        action = live.stop()
        # Record off: the next Start does not record unless asked; the update does nothing now
        context.scene.evp_live.record = False
        if action is not None:
            self.report({"INFO"}, f"Live stopped: recorded Action {action.name!r} is on the head")
        else:
            self.report({"INFO"}, "Live stopped")
        return {"FINISHED"}


class EVP_OT_live_send_emotion(bpy.types.Operator):
    """Send /evp/emotion NAME INTENSITY (OSC over UDP) to evp-anim live's --control-port"""

    bl_idname = "evp.live_send_emotion"
    bl_label = "Send Emotion"

    def execute(self, context):
        from . import live
        st = context.scene.evp_live
        try:
            live.send_emotion(st.control_host, st.control_port, st.emotion, st.intensity)
        except live.LiveError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        st.control_status = f"sent /evp/emotion {st.emotion} {st.intensity:.2f}"
        self.report({"INFO"}, f"{st.control_status} to {st.control_host}:{st.control_port}")
        return {"FINISHED"}


def menu_import(self, context):
    self.layout.operator(EVP_OT_import_track.bl_idname, text="EVP Track (.npz)")


def menu_export(self, context):
    self.layout.operator(EVP_OT_export_track.bl_idname, text="EVP Track (.npz)")
