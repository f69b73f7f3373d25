"""Exports: Tracks to the formats animators and pipelines use, and readers for them (numpy-only).

* :mod:`.arkit` — the ARKit 52 names and the rig-channel → ARKit mapping.
* :mod:`.formats` — ARKit CSV, Live Link Face CSV, OpenFace 2 CSV and Rhubarb JSON writers/readers.
* :mod:`.registry` — one row per ``evp-anim export`` format (suffixes, writer, needs bpy).
* :mod:`.adjust` — Audio2Face-style global strength, per-channel multipliers and smoothing.
* :mod:`.rigdata` — the evaluated face rig as plain arrays (for Blender, which lacks scipy).
* :mod:`.blender_math` — the Blender scene's conventions as bpy-free math (axes, head-pose
  Euler angles, landmark points, sketch edges, emotion keys, scene fps).
* :mod:`.commands` — ``evp-anim export``, ``evp-anim export-rig`` and ``evp-anim retarget``.

``.blend`` / FBX / glTF go through bpy with the add-on's own scene builder
(:mod:`blender_addon.builder`), imported lazily; nothing here imports bpy. The emotion-keys
file the add-on writes for ``animate`` is :mod:`evp_anim.emotion_keys`.
"""
