"""EVP Anim — Blender 5.0 extension for evp-anim tracks.

Import a track (SFM head with one shape key per rig channel, a new slotted Action, animated
68-point landmarks, the audio, scene fps), edit it (F-curves, keyed emotion/intensity,
strength and per-channel multipliers), regenerate it through the evp-anim CLI (modal, Esc
cancels), export it back to a track, and retarget it onto any character's shape keys (ARKit,
MetaHuman or Faceit names in any spelling, or a user mapping table), and drive it live from
Live Link Face packets (``evp-anim live --livelink``), recording takes into Actions (:mod:`.live`).

The bpy-free parts (Track I/O, formats, emotion keys) live in the ``evp_anim`` package, bundled
as a wheel in ``wheels/``; :mod:`.builder` is the scene builder the CLI reuses.
"""

from __future__ import annotations

import bpy

from . import live, operators, panels, preferences, properties

classes = (
    preferences.EVP_AddonPreferences,
    properties.EVP_PG_channel,
    properties.EVP_PG_head,
    properties.EVP_PG_unmatched,
    properties.EVP_PG_retarget,
    properties.EVP_PG_live,
    operators.EVP_OT_import_track,
    operators.EVP_OT_export_track,
    operators.EVP_OT_export_emotion_keys,
    operators.EVP_OT_regenerate,
    operators.EVP_OT_apply_adjustments,
    operators.EVP_OT_retarget,
    operators.EVP_OT_reset_multipliers,
    operators.EVP_OT_live_start,
    operators.EVP_OT_live_stop,
    operators.EVP_OT_live_send_emotion,
    panels.EVP_UL_multipliers,
    panels.EVP_PT_main,
    panels.EVP_PT_emotion,
    panels.EVP_PT_adjust,
    panels.EVP_PT_regenerate,
    panels.EVP_UL_unmatched,
    panels.EVP_PT_retarget,
    panels.EVP_PT_live,
)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)
_load_pre = None   # the Live mode's load_pre handler while registered


def register():
    _register_classes()
    bpy.types.Object.evp = bpy.props.PointerProperty(type=properties.EVP_PG_head)
    bpy.types.Scene.evp_retarget = bpy.props.PointerProperty(type=properties.EVP_PG_retarget)
    bpy.types.Scene.evp_live = bpy.props.PointerProperty(type=properties.EVP_PG_live)
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)
    bpy.types.TOPBAR_MT_file_export.append(operators.menu_export)
    global _load_pre
    _load_pre = live.on_load_pre_handler()
    bpy.app.handlers.load_pre.append(_load_pre)


def unregister():
    bpy.types.TOPBAR_MT_file_export.remove(operators.menu_export)
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    if _load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_load_pre)
    live.stop()   # close the socket and the timer before the classes go
    del bpy.types.Scene.evp_live
    del bpy.types.Scene.evp_retarget
    del bpy.types.Object.evp
    _unregister_classes()
