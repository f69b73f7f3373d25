"""The "EVP" tab in the 3D view's sidebar (N panel)."""

from __future__ import annotations

import bpy

from . import builder


class EVP_UL_multipliers(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.label(text=item.name)
        row.prop(item, "multiplier", text="")


class _EvpPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "EVP"


class _HeadPanel(_EvpPanel):
    """Sub-panels shown only for an imported EVP head (or its landmark object)."""

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and (getattr(obj, builder.EVP_PROP).is_head or "evp_frame_start" in obj)


class EVP_PT_main(_EvpPanel, bpy.types.Panel):
    bl_label = "EVP Anim"
    bl_idname = "EVP_PT_main"

    def draw(self, context):
        layout = self.layout
        col = layout.column(align=True)
        col.operator("evp.import_track", icon="IMPORT")
        col.operator("evp.retarget", icon="MOD_DATA_TRANSFER")
        obj = context.active_object
        props = getattr(obj, builder.EVP_PROP, None) if obj else None
        if props is None or not (props.is_head or "evp_frame_start" in obj):
            layout.label(text="Select an imported EVP head to edit", icon="INFO")
            return
        layout.prop(props, "track_path")
        layout.prop(props, "audio_path")
        layout.label(text=f"{props.fps:g} fps, track frame 0 at scene frame {props.frame_start}")


class EVP_PT_emotion(_HeadPanel, bpy.types.Panel):
    bl_label = "Emotion"
    bl_parent_id = "EVP_PT_main"

    def draw(self, context):
        props = getattr(context.active_object, builder.EVP_PROP)
        col = self.layout.column()
        col.prop(props, "emotion")   # keyframeable: hover + I
        col.prop(props, "intensity")
        col.operator("evp.export_emotion_keys", icon="EXPORT")


class EVP_PT_adjust(_HeadPanel, bpy.types.Panel):
    bl_label = "Strength & Multipliers"
    bl_parent_id = "EVP_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        props = getattr(context.active_object, builder.EVP_PROP)
        col = self.layout.column()
        col.prop(props, "strength")
        col.prop(props, "smoothing")
        col.template_list("EVP_UL_multipliers", "", props, "multipliers", props, "multiplier_index", rows=6)
        row = col.row(align=True)
        row.operator("evp.apply_adjustments", icon="CHECKMARK")
        row.operator("evp.reset_multipliers", text="", icon="LOOP_BACK")


class EVP_PT_regenerate(_HeadPanel, bpy.types.Panel):
    bl_label = "Regenerate & Export"
    bl_parent_id = "EVP_PT_main"

    def draw(self, context):
        props = getattr(context.active_object, builder.EVP_PROP)
        col = self.layout.column()
        col.prop(props, "as_nla")
        col.operator("evp.regenerate", icon="FILE_REFRESH")
        if props.job_status:
            col.prop(props, "job_progress", text=props.job_status, slider=True)
            col.label(text="Esc cancels")
        col.operator("evp.export_track", icon="EXPORT")


class EVP_UL_unmatched(bpy.types.UIList):
    """One row per channel / shape key the last retarget left undriven, with the reason."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row()
        row.label(text=item.name, icon="ERROR" if item.kind != "unused shape key" else "SHAPEKEY_DATA")
        row.label(text=item.kind)


class EVP_PT_retarget(_EvpPanel, bpy.types.Panel):
    """The last retarget's outcome: channels driven, and the unmatched ones listed (never hidden)."""

    bl_label = "Last Retarget"
    bl_parent_id = "EVP_PT_main"

    @classmethod
    def poll(cls, context):
        res = getattr(context.scene, "evp_retarget", None)
        return res is not None and res.has_result

    def draw(self, context):
        res = context.scene.evp_retarget
        col = self.layout.column()
        col.label(text=f"{res.matched} channels driven", icon="CHECKMARK")
        if not len(res.unmatched):
            col.label(text="every channel found a shape key")
            return
        col.label(text=f"unmatched ({len(res.unmatched)}):", icon="ERROR")
        col.template_list("EVP_UL_unmatched", "", res, "unmatched", res, "unmatched_index", rows=6)
        col.label(text="Map them with a mapping table (Retarget › Mapping table)", icon="INFO")


class EVP_PT_live(_EvpPanel, bpy.types.Panel):
    """Live mode: Live Link Face packets drive the selected head; Record keys them; emotion control."""

    bl_label = "Live"
    bl_parent_id = "EVP_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        from . import live
        st = getattr(context.scene, "evp_live", None)
        if st is None:
            return
        s = live.session()
        col = self.layout.column()
        row = col.row(align=True)
        row.enabled = s is None          # the port of a running session cannot change
        row.prop(st, "port")
        row = col.row(align=True)
        if s is None:
            row.operator("evp.live_start", icon="PLAY")
        else:
            row.operator("evp.live_stop", icon="SNAP_FACE")
        row.prop(st, "record", icon="REC", toggle=True)
        if s is not None:
            col.label(text=f"{s.driver.head_name}: {s.status()}")
        elif live.last_error:
            col.label(text=live.last_error, icon="ERROR")
        box = col.box()
        box.label(text="Emotion control (evp-anim live --control-port)")
        row = box.row(align=True)
        row.prop(st, "control_host", text="")
        row.prop(st, "control_port", text="")
        box.prop(st, "emotion")
        box.prop(st, "intensity", slider=True)
        row = box.row(align=True)
        row.prop(st, "send_on_change")
        row.operator("evp.live_send_emotion", icon="EXPORT")
        if st.control_status:
            box.label(text=st.control_status)
