"""Add-on preferences: the regenerate command and the SFM folder."""

from __future__ import annotations

import bpy
from bpy.props import StringProperty

from .jobs import DEFAULT_COMMAND


class EVP_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    command: StringProperty(
        name="Regenerate command", default=DEFAULT_COMMAND,
        description="CLI run by Regenerate; {audio}, {keys}, {output} and {python} are filled in")
    sfm_dir: StringProperty(
        name="SFM folder", subtype="DIR_PATH", default="",
        description="Surrey Face Model files (empty: $EVP_ANIM_SFM_DIR or the evp-anim cache)")

    def draw(self, context):
        col = self.layout.column()
        col.prop(self, "command")
        col.prop(self, "sfm_dir")


def prefs(context=None):
    """The preferences, or an object with the defaults when the add-on is not enabled by name
    (scripts and tests that call register() directly)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    if addon is not None and addon.preferences is not None:
        return addon.preferences

    class _Defaults:
        command = DEFAULT_COMMAND
        sfm_dir = ""
    return _Defaults()
