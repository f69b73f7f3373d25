"""Workbench renders of the imported head (headless bpy from PyPI renders with EGL).

Writes /tmp/blender_shots/jaw_open.png and /tmp/blender_shots/smile.png (kept for people to look
at) and checks that the head fills the frame and that the mouth region differs between them.
"""

from pathlib import Path

import numpy as np
import pytest

from evp_anim.tracks import load_track
from test_blender_support import blender, isolated, make_say_track

SHOTS = Path("/tmp/blender_shots")


@pytest.fixture(scope="module")
def track_path(tmp_path_factory, sfm_dir):
    return make_say_track(tmp_path_factory.mktemp("say"), sfm_dir)


def _camera(bpy, scene, head):
    """A front camera looking along +Y at the head, framing it (orthographic, 40 cm tall view)."""
    cam_data = bpy.data.cameras.new("EVP camera")
    cam_data.type = "ORTHO"
    cam_data.ortho_scale = 0.26
    cam = bpy.data.objects.new("EVP camera", cam_data)
    scene.collection.objects.link(cam)
    cam.location = (0.0, -1.0, 0.01)
    cam.rotation_euler = (np.pi / 2, 0.0, 0.0)
    scene.camera = cam
    return cam


def _render(bpy, scene, frame: int, path: Path) -> np.ndarray:
    scene.frame_set(frame)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(str(path), check_existing=False)
    px = np.array(img.pixels[:], np.float32).reshape(img.size[1], img.size[0], 4)[::-1]  # top row first
    bpy.data.images.remove(img)
    return px


@isolated
def test_workbench_shots_at_jaw_open_and_smile(track_path, sfm_dir):
    bpy, builder = blender(sfm_dir)
    tr = load_track(track_path)
    res = builder.import_track(track_path, landmarks=False, sound=False)
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = scene.render.resolution_y = 384
    scene.render.film_transparent = False
    world = bpy.data.worlds.new("EVP world")
    world.color = (0.05, 0.05, 0.06)
    scene.world = world
    scene.display.shading.light = "STUDIO"
    scene.display.shading.show_cavity = True
    _camera(bpy, scene, res.head)
    SHOTS.mkdir(parents=True, exist_ok=True)
    jaw_i = int(np.argmax(tr.channel("jawOpen")))
    smile = tr.channel("mouthSmileLeft") + tr.channel("mouthSmileRight") - 2 * tr.channel("jawOpen")
    smile_i = int(np.argmax(smile))
    jaw = _render(bpy, scene, 1 + jaw_i, SHOTS / "jaw_open.png")
    smiling = _render(bpy, scene, 1 + smile_i, SHOTS / "smile.png")
    for img in (jaw, smiling):
        lum = img[..., :3].mean(-1)
        face = np.abs(lum - lum[0, 0]) > 0.05    # anything that is not the backdrop
        assert 0.2 < face.mean() < 0.8           # the head fills the frame without being cut off
        rows = np.where(face.any(1))[0]
        assert rows[0] > 0 and rows[-1] < img.shape[0] - 1
    # the mouth area (lower middle of the frame) differs between the jaw-open and smile frames
    h, w = jaw.shape[:2]
    mouth = (slice(int(0.55 * h), int(0.85 * h)), slice(int(0.3 * w), int(0.7 * w)))
    assert np.abs(jaw[mouth][..., :3] - smiling[mouth][..., :3]).mean() > 0.01
