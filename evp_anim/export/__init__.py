"""Exports: Tracks to the formats animators and pipelines use, and readers for them (numpy-only).

* :mod:`.arkit` — the ARKit 52 names and the rig-channel → ARKit mapping.
* :mod:`.formats` — ARKit CSV, Live Link Face CSV, OpenFace 2 CSV and Rhubarb JSON writers/readers.
* :mod:`.keys` — the emotion-keys TOML file that the Blender add-on writes for ``animate``.
* :mod:`.adjust` — Audio2Face-style global strength, per-channel multipliers and smoothing.
* :mod:`.rigdata` — the evaluated face rig as plain arrays (for Blender, which lacks scipy).
* :mod:`.commands` — ``evp-anim export``, ``evp-anim export-rig`` and ``evp-anim retarget``.

``.blend`` / FBX / glTF go through bpy with the add-on's own scene builder
(:mod:`blender_addon.builder`), imported lazily; nothing here imports bpy.
"""
