"""The bpy scene builder: Tracks in and out of Blender (used by the operators, the CLI and scripts).

Conventions
-----------
* **Axes, units and head pose.** SFM millimetres map to Blender metres by
  ``(X, Y, Z) = 0.001 * (x, -z, y)`` and the head pose is keyed exactly as Euler mode ``'XZY'``
  with ``rotation_euler = (pitch, -roll, yaw)``; that math (and the landmark points, sketch
  edges, emotion keys and scene fps) is bpy-free in :mod:`evp_anim.export.blender_math`.
* **Time.** Track frame ``i`` sits on scene frame ``frame_start + i`` (``frame_start`` = 1 by
  default); scene fps is set from the track (25 → ``render.fps = 25``, ``fps_base = 1``;
  29.97 → ``30 / 1.001``).
* **Actions.** Every import writes a NEW slotted Action with an ``OBJECT`` slot (head
  rotation, emotion/intensity keys), a ``KEY`` slot (one F-curve per shape key) and, when the
  head has eyes, one ``OBJECT`` slot per eye (gaze: rotation X = pitch, Z = yaw) — through
  ``bpy_extras.anim_utils.action_ensure_channelbag_for_slot``. An Action the head already had
  is never modified: it keeps a fake user, and the new one becomes active (or an NLA strip).
* **Landmarks.** One mesh holds every frame's 68 points (T·68 vertices, sketch edges per frame,
  an int point attribute ``evp_frame``); a Geometry Nodes modifier keeps only the current
  frame's points (Scene Time → compare → Delete Geometry). Building it is a few numpy
  ``foreach_set`` calls (1,500 frames in milliseconds), it needs no handler or add-on at
  playback time, and it is saved with the .blend. With pose-invariant 3D landmarks it is
  parented to the head (so it follows the pose); with 2D-only tracks it is a flat sketch in
  the XZ plane beside the head.
* **Face parts** (``parts=True``): eyeballs (24 mm; sclera, iris, pupil) in sockets cut into
  the mask's eye surface, upper and lower teeth, a tongue, a dark mouth interior and eye
  sockets, all parented to the head and placed from the identity's landmarks
  (:func:`evp_anim.face.head_parts.face_layout`, bpy-free and shared with the preview). Lower
  teeth and tongue turn about the jaw centre fitted to the rig's jawOpen shape (drivers on the
  head's jawOpen key), the interior's floor follows through its own driven shape key; the blink
  keys close the lids over the eyeballs.

Errors a user can cause raise :class:`evp_anim.errors.EvpError`, always before the scene is
touched; a failure during building removes whatever the import had created.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from bpy_extras import anim_utils

from evp_anim.emotion_keys import EmotionKey, EmotionKeys
from evp_anim.emotions import EMOTIONS
from evp_anim.errors import EvpError
from evp_anim.export.blender_math import (emotion_keys_at, emotion_keys_from_track, emotion_of_curve_value,
                                          euler_xzy_to_pose, ibug_edges, landmark_points, pose_to_euler_xzy,
                                          scene_fps_settings, sfm_to_blender)
# the parts' placement and meshes are bpy-free and shared with the preview renderer; the layout
# names stay importable from here (builder.face_layout, builder.FaceLayout, ...)
from evp_anim.face.head_parts import (FaceLayout, eye_geometry, face_layout,  # noqa: F401
                                      interior_geometry, interior_opened, lower_teeth_geometry,
                                      rig_face_layout, socket_geometry, tongue_geometry, upper_teeth_geometry)
from evp_anim.tracks import Track, load_track

EVP_PROP = "evp"  # name of the PointerProperty the add-on attaches to objects
LANDMARK_ATTR = "evp_frame"


# ---------------------------------------------------------------------- inputs
_RIG_CACHE: dict[str, object] = {}


def load_rig(sfm_dir: str | os.PathLike | None = None):
    """The face rig for ``sfm_dir`` (else $EVP_ANIM_SFM_DIR / the per-user cache), cached per
    folder for the Blender session.

    With scipy importable (bpy from PyPI in the project's environment) this is the real
    :class:`evp_anim.face.rig.FaceRig`. Inside a stock Blender (numpy, no scipy) it is the
    numpy-only :class:`evp_anim.export.rigdata.RigData` read from the per-user rig cache, which
    is written once by running ``evp-anim export-rig`` (the CLI named by $EVP_ANIM_CLI, else
    ``evp-anim`` on PATH).
    """
    from evp_anim.assets import find_sfm_dir
    d = str(find_sfm_dir(sfm_dir))
    if d not in _RIG_CACHE:
        try:
            from evp_anim.face.rig import FaceRig
            rig = FaceRig(d)
        except ImportError:
            rig = _rig_from_cache(d)
        _RIG_CACHE[d] = rig
    return _RIG_CACHE[d]


def _rig_from_cache(sfm_dir: str):
    import shutil
    import subprocess
    from evp_anim.export.rigdata import load_rig_data, rig_cache_path
    cache = rig_cache_path(sfm_dir)
    if not cache.is_file():
        cli = os.environ.get("EVP_ANIM_CLI") or shutil.which("evp-anim")
        if not cli:
            raise EvpError("Blender's Python lacks scipy, so the face rig must be exported once: run "
                           f"`evp-anim export-rig --sfm-dir {sfm_dir}` (or put evp-anim on PATH)")
        # absolute paths: a folder named like an option ("-x") stays an argument
        r = subprocess.run([cli, "export-rig", "--sfm-dir", os.path.abspath(sfm_dir), "-o", os.path.abspath(cache)],
                           capture_output=True, text=True)
        if r.returncode != 0 or not cache.is_file():
            why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
            raise EvpError(f"`evp-anim export-rig` failed: {why}")
    return load_rig_data(cache)


def resolve_audio(track: Track, track_path: str | os.PathLike | None, audio=None) -> tuple[Path | None, str | None]:
    """(audio path or None, warning or None).

    An explicit ``audio`` that does not exist is an :class:`EvpError`; otherwise the track's
    ``info["audio"]`` (relative to the track's folder) or a .wav beside the track is used, and
    a missing one is a warning (the animation imports without sound).
    """
    if audio:
        p = Path(audio)
        if not p.is_file():
            raise EvpError(f"audio file not found: {p}")
        return p, None
    if track_path is None:
        return None, None
    tp = Path(track_path)
    cands = []
    if track.info.get("audio"):
        a = Path(str(track.info["audio"]))
        cands.append(a if a.is_absolute() else tp.parent / a)
    cands.append(tp.with_suffix(".wav"))
    for c in cands:
        if c.is_file():
            return c, None
    return None, f"no audio found for {tp.name} (looked for {', '.join(c.name for c in cands)}); imported without sound"


def check_channels(track: Track, rig_channels) -> None:
    """EvpError naming the track channels the rig lacks (the SFM head can only show its own)."""
    missing = [n for n in track.expression_names if n not in rig_channels]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise EvpError(f"track channels not in the face rig: {', '.join(missing[:5])}{more} "
                       "(use Retarget for a character with its own shape keys)")


# ---------------------------------------------------------------------- F-curves
def _fcurve(bag, data_path: str, frames: np.ndarray, values: np.ndarray, index: int = 0,
            interpolation: str = "LINEAR", group: str | None = None):
    """One F-curve on ``bag`` with a key at every frame (foreach_set: fast for long tracks)."""
    fc = bag.fcurves.new(data_path, index=index)
    if group:
        fc.group = bag.groups.get(group) or bag.groups.new(group)
    n = len(frames)
    fc.keyframe_points.add(n)
    co = np.empty(2 * n, np.float32)
    co[0::2], co[1::2] = frames, values
    fc.keyframe_points.foreach_set("co", co)
    interp = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items[interpolation].value
    fc.keyframe_points.foreach_set("interpolation", np.full(n, interp, np.int32))
    fc.update()
    return fc


def ensure_slot(action, id_type: str, name: str):
    """The slot of ``action`` for ``id_type`` named ``name`` (created when absent)."""
    for s in action.slots:
        if s.target_id_type == id_type and s.name_display == name:
            return s
    return action.slots.new(id_type=id_type, name=name)


def channelbag(action, slot):
    """The channelbag of ``slot`` in ``action`` (Blender 5: there is no ``Action.fcurves``)."""
    return anim_utils.action_ensure_channelbag_for_slot(action, slot)


def active_channelbag(id_data):
    """(action, channelbag) currently animating ``id_data``, or (None, None)."""
    ad = id_data.animation_data
    if ad is None or ad.action is None or ad.action_slot is None:
        return None, None
    return ad.action, anim_utils.action_get_channelbag_for_slot(ad.action, ad.action_slot)


def animating_channelbag(id_data):
    """(channelbag, frame offset) of what animates ``id_data``: the active Action, else the top
    unmuted NLA strip (offset maps scene frames to the strip's Action frames; scale and
    repeat are not undone). (None, 0) when nothing does."""
    _, bag = active_channelbag(id_data)
    if bag is not None:
        return bag, 0.0
    ad = id_data.animation_data
    for track in reversed(list(ad.nla_tracks) if ad else []):
        if track.mute or not track.strips:
            continue
        strip = track.strips[0]
        if strip.action is None or strip.action_slot is None:
            continue
        bag = anim_utils.action_get_channelbag_for_slot(strip.action, strip.action_slot)
        if bag is not None:
            return bag, float(strip.action_frame_start - strip.frame_start)
    return None, 0.0


def _assign(id_data, action, slot, nla: bool, frame_start: int):
    ad = id_data.animation_data or id_data.animation_data_create()
    if ad.action is not None and ad.action != action:
        ad.action.use_fake_user = True  # the artist's previous Action survives saving
        if nla:
            # keep the previous animation visible in the NLA editor (muted) instead of dropping it
            prev = ad.nla_tracks.new()
            prev.name = f"previous: {ad.action.name}"
            old_strip = prev.strips.new(ad.action.name, int(ad.action.frame_range[0]), ad.action)
            old_strip.action_slot = ad.action_slot
            prev.mute = True
    if nla:
        track = ad.nla_tracks.new()
        track.name = action.name
        strip = track.strips.new(action.name, int(frame_start), action)
        strip.action_slot = slot
        ad.action = None
    else:
        ad.action = action
        ad.action_slot = slot


# ---------------------------------------------------------------------- scene settings
def set_scene_timing(scene, fps: float, frame_start: int, n_frames: int) -> None:
    """Scene fps and frame range from a track (integer fps exact; NTSC-style rates via fps_base)."""
    scene.render.fps, scene.render.fps_base = scene_fps_settings(fps)
    scene.frame_start = int(frame_start)
    scene.frame_end = int(frame_start + n_frames - 1)


def scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


# ---------------------------------------------------------------------- import
@dataclass
class ImportResult:
    """What :func:`import_track` made: objects, the new Action, the sound strip, and warnings."""

    head: object
    action: object
    landmarks: object | None = None
    sound: object | None = None
    created: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def head_vertices(rig, identity: np.ndarray) -> np.ndarray:
    """(N, 3) mm neutral head for ``identity`` (the mean face when its size is not the rig's)."""
    return rig.vertices(identity if identity.size == rig.num_identity else None)


def _build_head(rig, identity: np.ndarray, name: str, collection, drop: np.ndarray | None = None):
    """The head mesh object with one shape key per rig channel; ``drop``: (F,) bool triangles
    left out (the eye surface over the eyeballs; vertices, and so the shape keys, are the rig's)."""
    base = head_vertices(rig, identity)
    verts = sfm_to_blender(base)
    mesh = bpy.data.meshes.new(name)
    tris = np.asarray(rig.triangles, np.int32)
    if drop is not None:
        tris = tris[~drop]
    mesh.vertices.add(len(verts))
    mesh.vertices.foreach_set("co", verts.ravel())
    mesh.loops.add(tris.size)
    mesh.loops.foreach_set("vertex_index", tris.ravel())
    mesh.polygons.add(len(tris))
    mesh.polygons.foreach_set("loop_start", np.arange(0, tris.size, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    mesh.validate()
    mesh.shade_smooth()
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    obj.shape_key_add(name="Basis", from_mix=False)
    for k, ch in enumerate(rig.channels):
        kb = obj.shape_key_add(name=ch, from_mix=False)
        kb.data.foreach_set("co", (verts + sfm_to_blender(rig.deltas[k])).ravel())
        kb.slider_min, kb.slider_max = -1.0, 2.0  # room for multipliers and overshoot edits
    mesh.shape_keys.use_relative = True
    mesh.shape_keys.name = f"{name} keys"
    obj.rotation_mode = "XZY"
    return obj


# ---------------------------------------------------------------------- face parts
# Eyes, teeth, tongue and a mouth interior for the SFM head, which is a face mask: its eye
# openings are covered by a closed "eye surface" and its lips part onto nothing. Where they go and
# their meshes (SFM millimetres, x right, y up, z toward the viewer) are bpy-free and shared with
# the preview renderer, in evp_anim.face.head_parts; here they become Blender objects (metres).
PART_PROP = "evp_part"              # custom property naming a part: eye_R, eye_L, teeth_upper, ...

_PART_COLOURS = {  # name: (RGB, roughness); dark, matte interior so an open mouth reads as a mouth
    "EVP sclera": ((0.86, 0.84, 0.80), 0.25),
    "EVP iris": ((0.16, 0.30, 0.42), 0.25),
    "EVP pupil": ((0.01, 0.01, 0.01), 0.15),
    "EVP teeth": ((0.90, 0.87, 0.78), 0.35),
    "EVP tongue": ((0.55, 0.18, 0.18), 0.6),
    "EVP mouth interior": ((0.045, 0.012, 0.012), 1.0),
    "EVP eye socket": ((0.20, 0.07, 0.06), 0.8),
}


def _material(name: str):
    """The shared material ``name`` of :data:`_PART_COLOURS`: the viewport/Workbench colour and a
    Principled BSDF with the same base colour for EEVEE/Cycles."""
    mat = bpy.data.materials.get(name)
    if mat is not None:
        return mat
    rgb, rough = _PART_COLOURS[name]
    mat = bpy.data.materials.new(name)
    mat.diffuse_color = (*rgb, 1.0)      # Workbench (color type Material) and the solid viewport
    mat.roughness = rough
    mat.metallic = 0.0
    if mat.node_tree is None:            # Blender 5 materials come with nodes; older ones may not
        mat.use_nodes = True
    bsdf = next((n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
        bsdf.inputs["Roughness"].default_value = rough
        if name == "EVP mouth interior" and "Specular IOR Level" in bsdf.inputs:
            bsdf.inputs["Specular IOR Level"].default_value = 0.0   # no highlights in the cavity
    return mat


def _part_object(name: str, verts_mm: np.ndarray, faces, materials, face_mats, head, collection,
                 origin_mm: np.ndarray, part: str):
    """A mesh object parented to ``head`` at ``origin_mm`` (SFM mm, head-local) whose vertices
    ``verts_mm`` are given in SFM mm (head-local); one material slot per name in ``materials``."""
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata((sfm_to_blender(verts_mm) - sfm_to_blender(origin_mm)).tolist(), [], [list(f) for f in faces])
    for m in materials:
        mesh.materials.append(_material(m))
    if face_mats is not None:
        mesh.polygons.foreach_set("material_index", np.asarray(face_mats, np.int32))
    mesh.update()
    mesh.validate()
    mesh.shade_smooth()
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    obj.parent = head                     # parent inverse stays identity: location is head-local
    obj.location = tuple(sfm_to_blender(origin_mm))
    obj.rotation_mode = "XZY"             # as the head: gaze keys use the pose's Euler mapping
    obj[PART_PROP] = part
    return obj


def _jaw_driver(target, data_path: str, index: int, key, scale: float) -> None:
    """Drive ``target.data_path[index]`` with ``scale`` × the head's jawOpen shape key (a simple
    expression: evaluated without Python scripts being allowed)."""
    fc = target.driver_add(data_path, index) if index >= 0 else target.driver_add(data_path)
    drv = fc.driver
    drv.type = "SCRIPTED"
    var = drv.variables.new()
    var.name, var.type = "jaw", "SINGLE_PROP"
    var.targets[0].id_type = "KEY"
    var.targets[0].id = key
    var.targets[0].data_path = 'key_blocks["jawOpen"].value'
    drv.expression = f"{scale:.9g} * jaw"


def _build_face_parts(head, lay: FaceLayout, collection) -> list:
    """Eyes, teeth, tongue and mouth interior for ``head`` placed by ``lay``, parented to it
    (the head mesh was built without the ``lay.eye_holes`` triangles). Returns the objects and
    meshes made."""
    made = []
    key = head.data.shape_keys
    ev, ef, em = eye_geometry()
    for i, (centre, side) in enumerate(zip(lay.eye_centres, "RL")):
        eye = _part_object(f"{head.name} eye {side}", ev + centre, ef, ("EVP sclera", "EVP iris", "EVP pupil"),
                           em, head, collection, centre, f"eye_{side}")
        # a shallow dark-pink socket behind the ball: seen past it at the eye's corners, in
        # place of the void behind the face mask
        sv, sf = socket_geometry(lay, i)
        socket = _part_object(f"{head.name} eye socket {side}", sv, sf, ("EVP eye socket",), None, head,
                              collection, centre, f"socket_{side}")
        made += [eye, eye.data, socket, socket.data]
    uv, uf = upper_teeth_geometry(lay)
    upper = _part_object(f"{head.name} teeth upper", uv, uf, ("EVP teeth",), None, head, collection,
                         lay.mouth, "teeth_upper")
    lv_, lf = lower_teeth_geometry(lay)
    lower = _part_object(f"{head.name} teeth lower", lv_, lf, ("EVP teeth",), None, head, collection,
                         lay.jaw_centre, "teeth_lower")
    tv, tf = tongue_geometry(lay)
    tongue = _part_object(f"{head.name} tongue", tv, tf, ("EVP tongue",), None, head, collection,
                          lay.jaw_centre, "tongue")
    iv, if_, w = interior_geometry(lay)
    interior = _part_object(f"{head.name} mouth interior", iv, if_, ("EVP mouth interior",), None, head,
                            collection, lay.mouth, "mouth_interior")
    made += [upper, upper.data, lower, lower.data, tongue, tongue.data, interior, interior.data]
    if key is not None and "jawOpen" in key.key_blocks:
        # lower teeth and tongue turn with the jaw about its fitted centre (their origin)
        for obj in (lower, tongue):
            _jaw_driver(obj, "rotation_euler", 0, key, lay.jaw_angle)   # SFM Rx(a) is Blender Rx(a)
        # the cavity's floor follows the jaw through a shape key, its roof stays with the skull
        opened = interior_opened(lay, iv, w)
        interior.shape_key_add(name="Basis", from_mix=False)
        kb = interior.shape_key_add(name="jawOpen", from_mix=False)
        kb.data.foreach_set("co", (sfm_to_blender(opened) - sfm_to_blender(lay.mouth)).ravel())
        kb.slider_min, kb.slider_max = -1.0, 2.0
        _jaw_driver(kb, "value", -1, key, 1.0)
    return made


def face_parts(head) -> dict:
    """The parts an import made for ``head``: {part name (eye_R, eye_L, socket_R, socket_L,
    teeth_upper, teeth_lower, tongue, mouth_interior): object}; empty for a head built without them."""
    return {c[PART_PROP]: c for c in head.children if PART_PROP in c}


def _key_gaze(action, track: Track, eyes, frames: np.ndarray, nla: bool, frame_start: int) -> None:
    """Key both eyes' rotation with the track's gaze (zeros without: the eyes look ahead), in
    ``action`` (one OBJECT slot per eye), with the head pose's Euler mapping (mode 'XZY':
    X = pitch, Z = yaw)."""
    gaze = track.gaze if track.gaze is not None else np.zeros((track.n_frames, 2), np.float32)
    eul = pose_to_euler_xzy(np.concatenate([gaze, np.zeros((len(gaze), 1), np.float32)], 1))
    for eye in eyes:
        slot = ensure_slot(action, "OBJECT", eye.name)
        bag = channelbag(action, slot)
        eye.rotation_mode = "XZY"
        for i in (0, 2):
            _fcurve(bag, "rotation_euler", frames, eul[:, i], index=i, group="Gaze")
        _assign(eye, action, slot, nla, frame_start)


def _landmark_group():
    """Geometry node group keeping only the points whose ``evp_frame`` is the current frame."""
    name = "EVP landmarks per frame"
    ng = bpy.data.node_groups.get(name)
    if ng is not None:
        return ng
    ng = bpy.data.node_groups.new(name, "GeometryNodeTree")
    ng.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    start = ng.interface.new_socket("First Frame", in_out="INPUT", socket_type="NodeSocketInt")
    last = ng.interface.new_socket("Last Index", in_out="INPUT", socket_type="NodeSocketInt")
    start.default_value, last.default_value = 1, 0
    ng.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    n = ng.nodes
    gin, gout = n.new("NodeGroupInput"), n.new("NodeGroupOutput")
    time_ = n.new("GeometryNodeInputSceneTime")
    sub = n.new("ShaderNodeMath")
    sub.operation = "SUBTRACT"
    rnd = n.new("ShaderNodeMath")
    rnd.operation = "FLOOR"  # frames between keys (subframes) show the earlier frame
    clamp = n.new("ShaderNodeClamp")
    attr = n.new("GeometryNodeInputNamedAttribute")
    attr.data_type = "INT"
    attr.inputs["Name"].default_value = LANDMARK_ATTR
    cmp_ = n.new("FunctionNodeCompare")
    cmp_.data_type, cmp_.operation = "FLOAT", "NOT_EQUAL"
    cmp_.inputs["Epsilon"].default_value = 0.5
    delete = n.new("GeometryNodeDeleteGeometry")
    delete.domain = "POINT"
    link = ng.links.new
    link(time_.outputs["Frame"], sub.inputs[0])
    link(gin.outputs["First Frame"], sub.inputs[1])
    link(sub.outputs[0], rnd.inputs[0])
    link(rnd.outputs[0], clamp.inputs["Value"])
    clamp.inputs["Min"].default_value = 0.0
    link(gin.outputs["Last Index"], clamp.inputs["Max"])
    link(attr.outputs["Attribute"], cmp_.inputs["A"])
    link(clamp.outputs[0], cmp_.inputs["B"])
    link(gin.outputs["Geometry"], delete.inputs["Geometry"])
    link(cmp_.outputs["Result"], delete.inputs["Selection"])
    link(delete.outputs["Geometry"], gout.inputs["Geometry"])
    return ng


def _landmark_mesh(track: Track, name: str):
    pts, parented = landmark_points(track)
    t = track.n_frames
    edges = ibug_edges()
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(t * 68)
    mesh.vertices.foreach_set("co", pts.reshape(-1))
    all_edges = (edges[None] + (np.arange(t, dtype=np.int32) * 68)[:, None, None]).reshape(-1)
    mesh.edges.add(t * len(edges))
    mesh.edges.foreach_set("vertices", all_edges)
    attr = mesh.attributes.new(LANDMARK_ATTR, "INT", "POINT")
    attr.data.foreach_set("value", np.repeat(np.arange(t, dtype=np.int32), 68))
    mesh.update()
    return mesh, parented


def _set_landmark_inputs(obj, frame_start: int, n_frames: int) -> None:
    mod = obj.modifiers.get("EVP frame")
    ident = {item.name: item.identifier for item in mod.node_group.interface.items_tree
             if item.item_type == "SOCKET" and item.in_out == "INPUT"}
    mod[ident["First Frame"]] = int(frame_start)
    mod[ident["Last Index"]] = int(n_frames - 1)
    obj.update_tag()


def _build_landmarks(track: Track, name: str, collection, frame_start: int):
    mesh, parented = _landmark_mesh(track, name)
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    mod = obj.modifiers.new("EVP frame", "NODES")
    mod.node_group = _landmark_group()
    _set_landmark_inputs(obj, frame_start, track.n_frames)
    return obj, parented


def landmark_child(head):
    """The landmark object an import parented to ``head`` (None when absent)."""
    for c in head.children:
        if c.type == "MESH" and c.modifiers.get("EVP frame") is not None:
            return c
    return None


def import_track(track: Track | str | os.PathLike, *, sfm_dir=None, scene=None, audio=None,
                 head=None, name: str | None = None, frame_start: int = 1, landmarks: bool = True,
                 nla: bool = False, sound: bool = True, fps: float | None = None,
                 source_path: str | os.PathLike | None = None, parts: bool = True) -> ImportResult:
    """Put a track into ``scene`` (default: the context scene).

    Args:
        track: a :class:`Track` or a path to a track ``.npz``.
        sfm_dir: SFM folder for the head mesh (default $EVP_ANIM_SFM_DIR / the per-user cache).
        audio: a wav to use as the sound strip (must exist); default: the track's own wav.
        head: an existing EVP head object to give a NEW Action (regenerate); the mesh is reused.
        frame_start: scene frame of track frame 0.
        landmarks: also build the animated 68-point landmark object.
        nla: put the new Action in NLA strips instead of making it active.
        sound: add the audio as a sound strip when found.
        fps: resample the track to this rate first (e.g. the scene's, to keep a 24 fps project
            at 24); default: keep the track's rate and set the scene to it.
        source_path: the track file recorded on the head as Export's source (identity, image
            size, phonemes…). Default: ``track`` when it is a path; for a :class:`Track` given in
            memory onto an existing ``head`` (Apply Adjustments), the head's current source.
        parts: give a new head eyes, teeth, a tongue and a mouth interior (its eye openings cut
            open); the eyes are keyed with the track's gaze (straight ahead without). An existing
            ``head``'s eyes get the new gaze keys either way.
    Returns:
        :class:`ImportResult`. Raises :class:`EvpError` (scene untouched) on bad input.
    """
    scene = scene or bpy.context.scene
    track_path = None
    if not isinstance(track, Track):
        track_path = Path(track)
        track = load_track(track_path)
    if fps is not None and abs(float(fps) - track.fps) > 1e-6:
        track = track.resample(float(fps))
    audio_path, warn = resolve_audio(track, track_path, audio) if sound else (None, None)
    rig = load_rig(sfm_dir)
    check_channels(track, rig.channels)
    solved = None
    if not track.expression_names:
        track, solved = with_solved_weights(track, rig)
    if head is not None and (head.type != "MESH" or head.data.shape_keys is None):
        raise EvpError(f"object {head.name!r} is not an EVP head (no shape keys)")
    name = name or (track_path.stem if track_path else "EVP")
    result = ImportResult(head=head, action=None)
    if warn:
        result.warnings.append(warn)
    if solved:
        result.warnings.append(solved)
    if source_path is None and track_path is not None:
        source_path = track_path
    elif source_path is None and head is not None:
        # an in-memory track onto an existing head (Apply Adjustments) is still that head's
        # animation: keep the file Export reads identity, image size and phonemes from
        source_path = head.get("evp_track_path", "") or None
    try:
        _build(result, track, source_path, rig, scene, audio_path, name, int(frame_start), landmarks, nla, parts)
    except Exception:
        _remove(result.created)
        raise
    return result


def with_solved_weights(track: Track, rig) -> tuple[Track, str]:
    """A landmark-only track (no expression channels, e.g. from ``evp-anim animate``) with the
    rig's channel weights solved from its 3D landmarks (:mod:`evp_anim.face.solve`), and a
    note saying so; unchanged (with a note) when it has no 3D landmarks either."""
    if track.landmarks_3d is None:
        return track, "track has neither expression channels nor 3D landmarks: the head stays neutral"
    from evp_anim.face.solve import weights_from_landmarks
    out = track.copy()
    ident = out.identity if out.identity.size == rig.num_identity else None
    out.expression = weights_from_landmarks(rig, out.landmarks_3d, ident)
    out.expression_names = list(rig.channels)
    return out.validate(), (f"track has no expression channels: solved the rig's {len(rig.channels)} "
                            "channel weights from its 3D landmarks")


def _build(result: ImportResult, track: Track, track_path, rig, scene, audio_path, name, frame_start,
           landmarks, nla, parts: bool = True) -> None:
    """Make the head (unless reusing ``result.head``), the new Action and the landmarks;
    ``track_path`` is the source file recorded on the head and the Action (None: none)."""
    collection = scene.collection
    made = result.created
    head = result.head
    if head is None:
        lay = rig_face_layout(rig, head_vertices(rig, track.identity)) if parts else None
        head = _build_head(rig, track.identity, f"{name} head", collection,
                           drop=lay.eye_holes if lay is not None else None)
        made += [head, head.data]
        result.head = head
        if lay is not None:
            made += _build_face_parts(head, lay, collection)
    key = head.data.shape_keys
    # Scene timing first: keys are written on frames, and fps decides what a frame is.
    set_scene_timing(scene, track.fps, frame_start, track.n_frames)
    frames = frame_start + np.arange(track.n_frames, dtype=np.float32)

    action = bpy.data.actions.new(f"EVP {name}")
    made.append(action)
    result.action = action
    obj_slot = ensure_slot(action, "OBJECT", head.name)
    key_slot = ensure_slot(action, "KEY", key.name)
    kbag = channelbag(action, key_slot)
    for k, ch in enumerate(track.expression_names):
        _fcurve(kbag, f'key_blocks["{ch}"].value', frames, track.expression[:, k], group="Shape keys")
    obag = channelbag(action, obj_slot)
    head.rotation_mode = "XZY"
    eul = pose_to_euler_xzy(track.pose_rotation)
    for i in range(3):
        _fcurve(obag, "rotation_euler", frames, eul[:, i], index=i, group="Head pose")
    ekeys = emotion_keys_from_track(track)
    kf = np.array([frame_start + i for i, _, _ in ekeys], np.float32)
    if hasattr(head, EVP_PROP):  # the add-on's properties are registered (not in a bare script)
        _fcurve(obag, f"{EVP_PROP}.emotion", kf, np.array([e for _, e, _ in ekeys], np.float32),
                interpolation="CONSTANT", group="Emotion")
        _fcurve(obag, f"{EVP_PROP}.intensity", kf, np.array([v for _, _, v in ekeys], np.float32),
                group="Emotion")
        props = getattr(head, EVP_PROP)
        props.is_head = True
        props.track_path = str(track_path) if track_path else ""
        props.frame_start = frame_start
        props.fps = track.fps
        if audio_path:
            props.audio_path = str(audio_path)
        if not props.multipliers:
            for ch in track.expression_names:
                props.multipliers.add().name = ch
    head["evp_track_path"] = str(track_path) if track_path else ""
    head["evp_frame_start"] = frame_start
    head["evp_fps"] = track.fps
    action["evp_track_path"] = str(track_path) if track_path else ""
    _assign(head, action, obj_slot, nla, frame_start)
    _assign(key, action, key_slot, nla, frame_start)
    eyes = [o for n, o in sorted(face_parts(head).items()) if n.startswith("eye_")]
    if eyes:
        _key_gaze(action, track, eyes, frames, nla, frame_start)

    existing = landmark_child(head) if result.head is not None and head not in made else None
    if landmarks and existing is not None:
        # regenerate: the head's landmark object shows the new track (its old mesh is ours to drop)
        mesh, _ = _landmark_mesh(track, existing.data.name)
        old_mesh, existing.data = existing.data, mesh
        if old_mesh.users == 0:
            bpy.data.meshes.remove(old_mesh)
        _set_landmark_inputs(existing, frame_start, track.n_frames)
        result.landmarks = existing
    elif landmarks:
        lm, parented = _build_landmarks(track, f"{name} landmarks", collection, frame_start)
        made += [lm, lm.data]
        if parented:
            lm.parent = head
        result.landmarks = lm
    if audio_path is not None:
        se = scene.sequence_editor or scene.sequence_editor_create()
        strip = se.strips.new_sound(f"{name} audio", str(audio_path), 1, frame_start)
        result.sound = strip
        scene.sync_mode = "AUDIO_SYNC"
    scene.frame_set(frame_start)


def _remove(ids) -> None:
    """Remove datablocks an aborted import created (objects first, then their data)."""
    for idb in ids:
        try:
            if isinstance(idb, bpy.types.Object):
                bpy.data.objects.remove(idb, do_unlink=True)
            elif isinstance(idb, bpy.types.Mesh):
                bpy.data.meshes.remove(idb)
            elif isinstance(idb, bpy.types.Action):
                bpy.data.actions.remove(idb)
        except ReferenceError:
            pass


# ---------------------------------------------------------------------- export
def head_settings(head) -> tuple[int, float, str]:
    """(frame_start, fps, source track path) stored on an imported head."""
    if head is None or head.type != "MESH" or head.data.shape_keys is None or "evp_frame_start" not in head:
        raise EvpError(f"{getattr(head, 'name', None)!r} is not an imported EVP head: import a track first")
    return int(head["evp_frame_start"]), float(head["evp_fps"]), str(head.get("evp_track_path", ""))


def _evaluate(fc, frames: np.ndarray) -> np.ndarray:
    return np.array([fc.evaluate(float(f)) for f in frames], np.float32)


def export_track(head, source: Track | str | os.PathLike | None = None, sfm_dir=None) -> Track:
    """The head's current animation as a Track, the artist's F-curve edits included.

    Each shape-key F-curve of the head's active Action (else its top unmuted NLA strip) is
    evaluated at every frame
    (``frame_start + i``); head pose comes from the rotation curves (mode 'XZY'), emotion and
    intensity from the ``evp.emotion`` / ``evp.intensity`` curves when keyed, gaze from the
    eyes' rotation curves (when the source had gaze or the eyes were turned). Everything else
    (identity, image size, translation, scale, phonemes, provenance) comes from ``source``
    (default: the track the head was imported from). When the channels are the rig's own, the
    3D landmarks are recomputed from the edited weights and the 2D landmarks re-projected, so a
    renderer that draws landmark sketches sees the edit too.
    """
    frame_start, fps, src_path = head_settings(head)
    if source is None:
        if not src_path:
            raise EvpError(f"{head.name!r} has no source track path: pass the source track")
        if not Path(bpy.path.abspath(src_path)).is_file():
            # e.g. a Regenerate result the cache clean-up removed (see the add-on README)
            raise EvpError(f"{head.name!r} exports from {src_path}, which no longer exists: "
                           "regenerate again or re-import the track")
        source = bpy.path.abspath(src_path)
    src = source if isinstance(source, Track) else load_track(source)
    if abs(src.fps - fps) > 1e-6:  # imported resampled to the scene's rate: export at that rate
        src = src.resample(fps)
    out = src.copy()
    key = head.data.shape_keys
    if not out.expression_names:
        # a landmark-only source (animate): the head's shape keys are the channels now
        out.expression_names = [kb.name for kb in key.key_blocks[1:]]
        out.expression = np.zeros((out.n_frames, len(out.expression_names)), np.float32)
    frames = frame_start + np.arange(src.n_frames, dtype=np.float64)
    kbag, koff = animating_channelbag(key)
    for k, ch in enumerate(out.expression_names):
        fc = kbag.fcurves.find(f'key_blocks["{ch}"].value') if kbag else None
        if fc is not None:
            out.expression[:, k] = _evaluate(fc, frames + koff)
        elif ch in key.key_blocks:
            out.expression[:, k] = key.key_blocks[ch].value
    obag, ooff = animating_channelbag(head)
    frames = frames + ooff
    if obag is not None:
        eul = pose_to_euler_xzy(out.pose_rotation)
        for i in range(3):
            fc = obag.fcurves.find("rotation_euler", index=i)
            if fc is not None:
                eul[:, i] = _evaluate(fc, frames)
        out.pose_rotation = euler_xzy_to_pose(eul)
        emo = obag.fcurves.find(f"{EVP_PROP}.emotion")
        inten = obag.fcurves.find(f"{EVP_PROP}.intensity")
        if emo is not None:
            idx = np.clip(np.round(_evaluate(emo, frames)).astype(int), 0, len(EMOTIONS) - 1)
            # only overwrite frames whose dominant emotion the artist changed: soft blends survive
            changed = idx != out.emotion.argmax(1)
            onehot = np.eye(len(EMOTIONS), dtype=np.float32)[idx]
            out.emotion[changed] = onehot[changed]
        if inten is not None:
            out.intensity = np.clip(_evaluate(inten, frames), 0.0, 1.0)
    eyes = [o for n, o in sorted(face_parts(head).items()) if n.startswith("eye_")]
    ebag, eoff = animating_channelbag(eyes[0]) if eyes else (None, 0.0)
    if ebag is not None:
        # gaze from the first eye's rotation curves (mode 'XZY': pitch = X, yaw = Z); kept
        # absent when the source had none and nobody turned the eyes
        eul = np.zeros((src.n_frames, 3), np.float32)
        for i in (0, 2):
            fc = ebag.fcurves.find("rotation_euler", index=i)
            if fc is not None:
                eul[:, i] = _evaluate(fc, frame_start + np.arange(src.n_frames, dtype=np.float64) + eoff)
        gaze = euler_xzy_to_pose(eul)[:, :2]
        if src.gaze is not None or np.abs(gaze).max() > 1e-6:
            out.gaze = np.ascontiguousarray(gaze, np.float32)
    try:
        rig = load_rig(sfm_dir)
    except EvpError:
        rig = None
    if rig is not None and tuple(out.expression_names) == tuple(rig.channels) and out.identity.size in (0, rig.num_identity):
        from evp_anim.face.projection import project
        ident = out.identity if out.identity.size else None   # no identity: the mean face (animate's default)
        out.landmarks_3d = rig.landmarks_3d(ident, out.expression)
        out.landmarks_2d = project(out.landmarks_3d, out.pose_rotation, out.pose_translation,
                                   out.pose_scale).astype(np.float32)
    out.provenance = dict(out.provenance, edited_in="blender", blender_version=bpy.app.version_string)
    return out.validate()


# ---------------------------------------------------------------------- emotion keys / adjust
def emotion_keys_from_head(head):
    """The head's keyed ``evp.emotion`` / ``evp.intensity`` as :class:`EmotionKeys` (times in
    seconds from track frame 0), with the panel's strength, smoothing and multipliers (only
    those != 1). Without keys: one key at 0 s with the panel's current values."""
    frame_start, fps, _ = head_settings(head)
    props = getattr(head, EVP_PROP)
    obag, _ = animating_channelbag(head)
    emo = obag.fcurves.find(f"{EVP_PROP}.emotion") if obag else None
    inten = obag.fcurves.find(f"{EVP_PROP}.intensity") if obag else None
    frames = [kp.co[0] for fc in (emo, inten) if fc is not None for kp in fc.keyframe_points]

    def emotion_at(f: float) -> str:
        return emotion_of_curve_value(emo.evaluate(f)) if emo else props.emotion

    def intensity_at(f: float) -> float:
        return float(np.clip(inten.evaluate(f), 0, 1)) if inten else float(props.intensity)

    keys = emotion_keys_at(frames, frame_start, fps, emotion_at, intensity_at)
    if not keys:
        keys = [EmotionKey(0.0, props.emotion, float(props.intensity))]
    mult = {m.name: float(m.multiplier) for m in props.multipliers if abs(m.multiplier - 1.0) > 1e-6}
    return EmotionKeys(keys, float(props.strength), int(props.smoothing), mult)


def _sfm_pref():
    """The add-on preferences' SFM folder when the add-on is enabled (None: env / cache)."""
    try:
        from .preferences import prefs
        return prefs().sfm_dir or None
    except Exception:  # noqa: BLE001 - preferences are optional for scripts
        return None


def adjust_from_head(head, track: Track) -> tuple[Track, list[str]]:
    """``track`` with the head panel's strength, per-channel multipliers (those != 1) and
    smoothing applied; a landmark-only track gets its rig weights solved first. Returns
    (track, multiplier names the track lacks)."""
    from evp_anim.export.adjust import adjust_track
    props = getattr(head, EVP_PROP)
    if not track.expression_names:  # landmark-only (animate): solve the weights the knobs act on
        track, _ = with_solved_weights(track, load_rig(_sfm_pref()))
    mult = {m.name: float(m.multiplier) for m in props.multipliers if abs(m.multiplier - 1.0) > 1e-6}
    out, unknown = adjust_track(track, props.strength, mult, props.smoothing)
    return out, unknown


# ---------------------------------------------------------------------- retarget
@dataclass
class RetargetReport:
    """Which track channels drove which shape keys, and which found nothing (never hidden).

    ``matched``: source channel → ["object:shape key", …]; ``missing``: ARKit channels the track
    moves that no shape key received; ``not_arkit``: track channels with no ARKit column that no
    mapping table sent anywhere (e.g. ``sfm_*``); ``unused_keys``: "object:shape key" names that
    matched no channel (candidates for a ``--map`` table); ``preset``: the naming preset used.
    """

    matched: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    not_arkit: list[str] = field(default_factory=list)
    unused_keys: list[str] = field(default_factory=list)
    preset: str = "arkit"
    actions: list = field(default_factory=list)

    @property
    def unmatched(self) -> list[str]:
        """Track channels that drove nothing: ARKit channels with no shape key, then the others."""
        return self.missing + self.not_arkit

    def summary(self) -> str:
        s = f"drove {len(self.matched)} channels ({self.preset} names)"
        if self.missing:
            s += f"; no shape key for {len(self.missing)}: {', '.join(self.missing[:8])}" + ("…" if len(self.missing) > 8 else "")
        if self.not_arkit:
            s += f"; not ARKit (skipped): {', '.join(self.not_arkit)}"
        if self.unused_keys:
            s += (f"; {len(self.unused_keys)} shape keys matched nothing: {', '.join(self.unused_keys[:6])}"
                  + ("…" if len(self.unused_keys) > 6 else ""))
        return s


def retarget(track: Track | str | os.PathLike, objects, scene=None, frame_start: int = 1,
             preset: str = "arkit", mapping=None) -> RetargetReport:
    """Drive the shape keys of ``objects`` (meshes) with a track.

    Shape-key names are matched to the track's ARKit channels by
    :mod:`evp_anim.export.retarget_names` (case, ``_L``/``Left``/``L`` sides and ``ARKit.`` /
    ``CC_``-style prefixes ignored; ``preset`` "arkit", "metahuman", "faceit" or "none" picks
    the naming convention); ``mouthSmirkLeft`` goes to mouthSmileLeft + mouthDimpleLeft.
    ``mapping`` (a path to a TOML/CSV table, or {source channel: [shape keys]}) sends named
    channels — ARKit or the track's own, e.g. ``sfm_happiness`` — to named shape keys and
    overrides the automatic match for those keys. A key driven by several channels gets their
    sum; values are clipped to 0–1. Each mesh's shape-key datablock gets a NEW Action; sets
    scene fps and range.

    Raises EvpError (scene untouched) on an unknown preset, a bad mapping table, a table naming
    channels the track lacks or shape keys no mesh has, or when nothing matches at all.
    """
    from evp_anim.export.arkit import ARKIT_52, unmapped_channels
    from evp_anim.export.retarget_names import (check_preset, plan_links, read_map, resolve_map_sources,
                                                source_curves)
    scene = scene or bpy.context.scene
    preset = check_preset(preset)
    user_map = read_map(mapping) if isinstance(mapping, (str, os.PathLike)) else dict(mapping or {})
    if not isinstance(track, Track):
        track = load_track(track)
    # the curves a source name stands for: ARKit columns (splits folded in), else raw channels
    values = source_curves(track.expression, track.expression_names, getattr(track, "gaze", None))
    present = [n for n in ARKIT_52 if n in values]
    user_map = resolve_map_sources(user_map, list(values))
    meshes = [(o, o.data.shape_keys) for o in objects
              if o.type == "MESH" and getattr(o.data, "shape_keys", None) is not None]
    all_keys = {kb.name for _, key in meshes for kb in key.key_blocks}
    absent = sorted({t for ts in user_map.values() for t in ts} - all_keys)
    if absent:
        raise EvpError(f"mapping table names shape keys no selected mesh has: {', '.join(absent[:8])}")
    report = RetargetReport(preset=preset)
    targets = []
    for obj, key in meshes:
        names = [kb.name for kb in key.key_blocks if kb != key.reference_key]
        links = plan_links(names, present, preset, user_map)
        report.unused_keys += [f"{obj.name}:{n}" for n in names if n not in links]
        if links:
            targets.append((obj, key, links))
    if not targets:
        raise EvpError("no selected mesh has shape keys matching the track's channels (ARKit names such as "
                       "jawOpen, a --preset's names, or a --map table): nothing to retarget")
    set_scene_timing(scene, track.fps, frame_start, track.n_frames)
    frames = frame_start + np.arange(track.n_frames, dtype=np.float32)
    for obj, key, links in targets:
        action = bpy.data.actions.new(f"EVP retarget {obj.name}")
        slot = ensure_slot(action, "KEY", key.name)
        bag = channelbag(action, slot)
        for kb_name, sources in links.items():
            curve = np.clip(np.sum([values[s] for s in sources], axis=0), 0.0, 1.0)
            _fcurve(bag, f'key_blocks["{kb_name}"].value', frames, curve, group="EVP retarget")
            for s in sources:
                report.matched.setdefault(s, []).append(f"{obj.name}:{kb_name}")
        _assign(key, action, slot, False, frame_start)
        report.actions.append(action)
    report.missing = [n for n in present if n not in report.matched]
    report.not_arkit = [n for n in unmapped_channels(track.expression_names) if n not in report.matched]
    return report


# ---------------------------------------------------------------------- files (CLI side)
def _enable(module: str) -> None:
    import addon_utils
    if module not in bpy.context.preferences.addons:
        addon_utils.enable(module, default_set=True)


def load_character(path: str | os.PathLike) -> list:
    """Open a character (.blend replaces the session's file; .glb/.gltf/.fbx import into an
    empty scene) and return its mesh objects."""
    p = Path(path)
    if not p.is_file():
        raise EvpError(f"character file not found: {p}")
    ext = p.suffix.lower()
    if ext == ".blend":
        bpy.ops.wm.open_mainfile(filepath=str(p))
    elif ext in (".glb", ".gltf"):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        _enable("io_scene_gltf2")
        with blender_chatter_held():
            bpy.ops.import_scene.gltf(filepath=str(p))
    elif ext == ".fbx":
        bpy.ops.wm.read_factory_settings(use_empty=True)
        _enable("io_scene_fbx")
        with blender_chatter_held():
            bpy.ops.import_scene.fbx(filepath=str(p))
    else:
        raise EvpError(f"character must be .blend, .glb, .gltf or .fbx, got {p.name!r}")
    return [o for o in bpy.context.scene.objects if o.type == "MESH"]


@contextlib.contextmanager
def blender_chatter_held():
    """Hold back what Blender's operators print to the process's stdout ("Info: Saved copy as …",
    the FBX and glTF exporters' progress lines) in a background session (the command line, the
    bpy module), so that ``--quiet`` is quiet and a command's stdout carries only its own output.
    If the operator fails, what it printed goes to stderr with the error. In Blender's UI
    (``bpy.app.background`` false) the console keeps it."""
    if not bpy.app.background:
        yield
        return
    import sys
    import tempfile
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        failed = True
        try:
            yield
            failed = False
        finally:
            try:
                sys.stdout.flush()          # an add-on's print() is buffered in Python first
            except (OSError, ValueError):
                pass
            os.dup2(saved, 1)
            os.close(saved)
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read().decode("utf-8", "replace")[-4000:])


def save_blend(path: str | os.PathLike) -> Path:
    """Save the session as ``path`` (.blend) via a unique temporary name in its folder, so a failure
    leaves no half file and two saves to one path do not collide."""
    import uuid
    p = Path(path).resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name that does not exist yet (an existing file would make Blender keep a .blend1 of it)
    tmp = str(p.with_name(f".{p.stem}.{uuid.uuid4().hex[:12]}.tmp.blend"))
    try:
        with blender_chatter_held():
            bpy.ops.wm.save_as_mainfile(filepath=tmp, copy=True, compress=False)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def export_scene(track_path: str | os.PathLike, fmt: str, output: str | os.PathLike, sfm_dir=None,
                 audio=None) -> ImportResult:
    """Build the track's scene in an empty session and write it as ``blend``, ``fbx`` or ``gltf``
    (.glb or .gltf by the output's suffix); shape-key animation included."""
    out = Path(output).resolve()
    if fmt not in ("blend", "fbx", "gltf"):
        raise EvpError(f"unknown Blender export format {fmt!r}: expected blend, fbx or gltf")
    track = load_track(track_path)  # validate (and fail) before the session is wiped
    check_channels(track, load_rig(sfm_dir).channels)
    if audio and not Path(audio).is_file():
        raise EvpError(f"audio file not found: {audio}")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if not hasattr(bpy.types.Object, EVP_PROP):
        # register the add-on's properties so the .blend opens as an editable EVP head
        from . import register
        register()
    # .blend keeps the add-on's convention (track frame 0 on scene frame 1); FBX and glTF store
    # seconds, so track frame i goes to frame i, i.e. i / fps seconds, and a clip starts at 0 s.
    # FBX and glTF get the head alone: the parts' jaw motion is drivers, which neither format
    # carries (the lower teeth would stay shut), and a second shape-keyed mesh (the mouth
    # interior) would be taken for the head by readers that pick the first one
    res = import_track(track_path, sfm_dir=sfm_dir, landmarks=(fmt == "blend"), sound=(fmt == "blend"),
                       frame_start=1 if fmt == "blend" else 0, audio=audio, parts=(fmt == "blend"))
    # The take (FBX AnimStack, glTF animation) is named after the clip, i.e. the track file's
    # stem: FBX names its one baked take after the scene, glTF its merged active actions after
    # the name passed below (both would otherwise say "Scene" / "Animation").
    clip = Path(track_path).stem
    bpy.context.scene.name = clip
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "blend":
        save_blend(out)
    elif fmt == "fbx":
        _enable("io_scene_fbx")
        with blender_chatter_held():
            bpy.ops.export_scene.fbx(filepath=str(out), use_selection=False, bake_anim=True,
                                     bake_anim_use_all_actions=False, bake_anim_use_nla_strips=False,
                                     add_leaf_bones=False, object_types={"MESH"}, bake_anim_simplify_factor=0.0)
    elif fmt == "gltf":
        _enable("io_scene_gltf2")
        fmt_ = "GLB" if out.suffix.lower() == ".glb" else "GLTF_SEPARATE"
        with blender_chatter_held():
            bpy.ops.export_scene.gltf(filepath=str(out), export_format=fmt_, export_animations=True,
                                      export_morph=True, export_morph_animation=True, export_apply=False,
                                      export_animation_mode="ACTIVE_ACTIONS", export_optimize_animation_size=False,
                                      export_force_sampling=True, export_nla_strips_merged_animation_name=clip)
    else:
        raise EvpError(f"unknown Blender export format {fmt!r}: expected blend, fbx or gltf")
    return res
