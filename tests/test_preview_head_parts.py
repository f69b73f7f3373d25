"""The preview head's eyes, teeth, tongue and mouth interior (FaceRenderer(parts=True), real SFM rig).

Pixels are counted by colour in boxes around the projected iBUG landmarks of the frame (384 px
renders, the preview's size): teeth are bright and grey, the cavity dark red, the iris blue,
the pupil near black; the background is (40, 40, 40). Both backends are checked against each
other; the numpy one is the one counted (it runs everywhere).
"""

import subprocess
import sys

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from evp_anim.face.projection import aligned_crop_transform, project
from evp_anim.face.raster import FaceRenderer
from evp_anim.face.rig import FaceRig

SIZE = 384
BG = 40
RIGHT_EYE, LEFT_EYE = range(36, 42), range(42, 48)     # subject's right eye is on the image's left


@pytest.fixture(scope="module")
def rig(sfm_dir):
    return FaceRig(sfm_dir)


@pytest.fixture(scope="module")
def ren(rig):
    return FaceRenderer(rig, backend="numpy", parts=True)


def _w(rig, **values):
    w = np.zeros(len(rig.channels), np.float32)
    for name, v in values.items():
        w[rig.channels.index(name)] = v
    return w


def _landmarks_px(rig, w, rot=(0.0, 0.0, 0.0)):
    """(68, 2) pixels of the frame's landmarks in a SIZE render at the default crop."""
    s, t = aligned_crop_transform(SIZE)
    return project(rig.landmarks_3d(None, w), np.asarray(rot, np.float64), t, s)


def _box(pts, margin=0):
    x0, y0 = np.floor(pts.min(0) - margin).astype(int)
    x1, y1 = np.ceil(pts.max(0) + margin).astype(int) + 1
    return slice(y0, y1), slice(x0, x1)


def _pupil(img):
    """(H, W) bool: near-black pixels (the pupil; the lash line and the background are lighter)."""
    return img.max(2) < 16


def _iris(img):
    """(H, W) bool: blue pixels (BGR: blue well above red)."""
    b, r = img[..., 0].astype(int), img[..., 2].astype(int)
    return b > r + 25


def _pupil_centre(img, rig, w, eye):
    ys, xs = _box(_landmarks_px(rig, w)[list(eye)], 4)
    m = _pupil(img[ys, xs])
    assert m.sum() >= 8, "no pupil in the eye box"
    yy, xx = np.nonzero(m)
    return np.array([xx.mean() + xs.start, yy.mean() + ys.start])


def test_open_mouth_shows_teeth_and_dark_interior(rig, ren):
    w = _w(rig, jawOpen=0.8)
    img = ren.render(None, w, (0.0, 0.0, 0.0), SIZE)
    lm = _landmarks_px(rig, w)
    ys, xs = _box(lm[60:68])                                   # the inner lip opening
    mouth = img[ys, xs].astype(int)
    h = mouth.shape[0]
    assert h >= 12                                            # the mouth is open (~20 px at 0.8)
    teeth = (mouth.min(2) > 140) & (mouth.max(2) - mouth.min(2) < 60)
    dark = (mouth.max(2) < 80) & (mouth[..., 2] > mouth[..., 0] + 10)   # dark red, not the grey background
    background = (np.abs(mouth - BG).max(2) <= 2)
    assert not background.any(), "the background shows through the open mouth"
    assert teeth.sum() >= 40 and dark.mean() > 0.3, (teeth.sum(), dark.mean())
    # upper teeth under the upper lip and lower teeth, turned down with the jaw, above the lower lip
    assert teeth[: h // 2].sum() >= 15 and teeth[h // 2:].sum() >= 15, (teeth[: h // 2].sum(), teeth[h // 2:].sum())


def test_lower_teeth_and_tongue_follow_the_jaw(rig, ren):
    """Rigidly with the rig's chin (as the Blender head's drivers turn them), upper teeth fixed."""
    parts = ren._parts
    rest, _, _, _ = parts.pose(None, _w(rig), None)
    opened, _, _, _ = parts.pose(None, _w(rig, jawOpen=1.0), None)
    sl = parts.slices
    drop = rest[sl["teeth_lower"], 1].mean() - opened[sl["teeth_lower"], 1].mean()
    chin = int(rig.landmark_vertices[8])
    chin_drop = rig.vertices(None)[chin, 1] - rig.vertices(None, _w(rig, jawOpen=1.0))[chin, 1]
    assert drop > 8.0 and 0.5 * chin_drop < drop < 1.2 * chin_drop, (drop, chin_drop)
    assert rest[sl["tongue"], 1].mean() - opened[sl["tongue"], 1].mean() > 5.0
    np.testing.assert_array_equal(rest[sl["teeth_upper"]], opened[sl["teeth_upper"]])
    # the cavity's floor goes down, its roof stays
    i = sl["interior"]
    assert rest[i, 1].min() - opened[i, 1].min() > 5.0 and rest[i, 1].max() == pytest.approx(opened[i, 1].max())


def test_eyes_show_iris_and_pupil(rig, ren):
    w = _w(rig)
    img = ren.render(None, w, (0.0, 0.0, 0.0), SIZE)
    lm = _landmarks_px(rig, w)
    for eye in (RIGHT_EYE, LEFT_EYE):
        box = img[_box(lm[list(eye)])]
        assert _iris(box).sum() >= 60 and _pupil(box).sum() >= 10, (_iris(box).sum(), _pupil(box).sum())


@pytest.mark.parametrize("axis", ["yaw", "pitch"])
def test_gaze_moves_the_pupils(rig, ren, axis):
    """15° of gaze moves each pupil the way the nose tip goes when the head turns the same way,
    by about the 12 mm ball's radius × sin 15° (~5 px at this scale), along that axis only."""
    w = _w(rig)
    angle = np.radians(15.0)
    gaze = (0.0, angle) if axis == "yaw" else (angle, 0.0)
    rot = (0.0, angle, 0.0) if axis == "yaw" else (angle, 0.0, 0.0)
    k = 0 if axis == "yaw" else 1
    nose = _landmarks_px(rig, w, rot)[30] - _landmarks_px(rig, w)[30]
    scale, _ = aligned_crop_transform(SIZE)
    want = scale * 12.0 * np.sin(angle)
    ahead = ren.render(None, w, (0.0, 0.0, 0.0), SIZE)
    turned = ren.render(None, w, (0.0, 0.0, 0.0), SIZE, gaze=gaze)
    for eye in (RIGHT_EYE, LEFT_EYE):
        shift = _pupil_centre(turned, rig, w, eye) - _pupil_centre(ahead, rig, w, eye)
        assert np.sign(shift[k]) == np.sign(nose[k]) != 0, (shift, nose)
        assert 0.6 * want < abs(shift[k]) < 1.4 * want, (shift, want)
        assert abs(shift[1 - k]) < 1.5, shift


def test_blink_hides_the_eyeball(rig, ren):
    w = _w(rig, eyeBlinkLeft=1.0)
    img = ren.render(None, w, (0.0, 0.0, 0.0), SIZE)
    lm = _landmarks_px(rig, w)
    shut = img[_box(lm[list(LEFT_EYE)], 3)]
    assert _pupil(shut).sum() == 0 and _iris(shut).sum() == 0
    # the other eye stays open
    assert _pupil(img[_box(lm[list(RIGHT_EYE)], 3)]).sum() >= 10
    both = ren.render(None, _w(rig, eyeBlinkLeft=1.0, eyeBlinkRight=1.0), (0.0, 0.0, 0.0), SIZE,
                      gaze=(0.0, np.radians(15.0)))
    for eye in (RIGHT_EYE, LEFT_EYE):
        assert _pupil(both[_box(lm[list(eye)], 3)]).sum() == 0


def test_closed_mouth_without_gaze_changes_only_the_eyes(rig, ren):
    """Against the renderer without parts (the preview before them): outside boxes around the
    eyes, only a few pixels on the closed lips' seam differ (the teeth instead of the old fan
    behind the slit between the lips)."""
    old = FaceRenderer(rig, backend="numpy")
    for w, rot in ((_w(rig), (0.0, 0.0, 0.0)), (_w(rig, mouthSmileLeft=0.6, mouthSmileRight=0.6), (0.0, 0.0, 0.0)),
                   (_w(rig, browInnerUp=0.5, mouthPressLeft=0.5, mouthPressRight=0.5), (0.2, 0.6, 0.1))):
        a, b = old.render(None, w, rot, SIZE), ren.render(None, w, rot, SIZE)
        lm = _landmarks_px(rig, w, rot)
        differ = np.abs(a.astype(int) - b).max(2) > 8
        eyes = np.zeros_like(differ)
        for eye in (RIGHT_EYE, LEFT_EYE):
            eyes[_box(lm[list(eye)], 6)] = True
        assert differ[eyes].sum() > 100                       # the eyes did change
        seam = np.zeros_like(differ)
        seam[_box(lm[60:68], 3)] = True
        assert not (differ & ~eyes & ~seam).any()
        assert (differ & seam).sum() <= 60, (differ & seam).sum()


def test_gl_and_numpy_draw_the_same_parts(rig, ren):
    gl = FaceRenderer(rig, backend="auto", parts=True)
    gl.render(None, None, (0, 0, 0), 32)
    if gl.backend_used != "gl":
        pytest.skip("no OpenGL context here (moderngl + Mesa EGL)")
    cases = [(_w(rig, jawOpen=0.8), (0.0, 0.0, 0.0), None),
             (_w(rig), (0.0, 0.0, 0.0), (0.1, np.radians(15.0))),
             (_w(rig, eyeBlinkLeft=1.0, jawOpen=0.3), (0.0, 0.0, 0.0), None),
             (_w(rig, jawOpen=0.6, mouthSmileLeft=0.5), (0.3, 0.2, -0.2), (0.0, -0.3)),
             (_w(rig, jawOpen=0.5), (-0.35, 1.1, 0.0), (0.0, 0.3)),
             (_w(rig, jawOpen=1.0), (0.2, -1.4, 0.3), None)]
    for w, rot, gaze in cases:
        a = gl.render(None, w, rot, SIZE, gaze=gaze)
        b = ren.render(None, w, rot, SIZE, gaze=gaze)
        # measured: SSIM >= 0.999, mean error < 0.1 levels (triangle-edge ties, 8-bit texture)
        assert structural_similarity(a, b, channel_axis=2) >= 0.99, (rot, gaze)
        assert np.abs(a.astype(int) - b).mean() < 0.3, (rot, gaze)


def test_other_identity_and_bad_gaze(rig, ren):
    """Parts are placed per identity (eyes in that face's openings); gaze must be 2 angles."""
    ident = rig.sample_identity(np.random.default_rng(3), 1.0)
    w = _w(rig)
    img = ren.render(ident, w, (0.0, 0.0, 0.0), SIZE)
    s, t = aligned_crop_transform(SIZE)
    lm = project(rig.landmarks_3d(ident, w), np.zeros(3), t, s)
    for eye in (RIGHT_EYE, LEFT_EYE):
        assert _pupil(img[_box(lm[list(eye)])]).sum() >= 10
    from evp_anim.errors import EvpError
    with pytest.raises(EvpError, match="gaze"):
        ren.render(None, w, (0.0, 0.0, 0.0), 64, gaze=(0.1, 0.2, 0.3))


def test_head_parts_module_needs_only_numpy():
    """A stock Blender has numpy but no scipy: the shared layout must import without it."""
    code = ("import sys; sys.modules['scipy'] = None; sys.modules['bpy'] = None\n"
            "import evp_anim.face.head_parts as hp\n"
            "import numpy as np\n"
            "v, f, m = hp.eye_geometry(); assert v.shape[1] == 3 and len(f) == len(m)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_preview_draws_the_parts_with_the_tracks_gaze(rig, sfm_dir, tmp_path, monkeypatch):
    """write_preview renders with parts and hands each frame's gaze row to the renderer."""
    from evp_anim import preview
    from evp_anim.face import raster
    from evp_anim.tracks import Track

    seen = []
    real = raster.FaceRenderer.render

    def spy(self, *args, **kwargs):
        seen.append((self.parts, kwargs.get("gaze")))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(raster.FaceRenderer, "render", spy)
    n = 3
    gaze = np.zeros((n, 2), np.float32)
    gaze[1] = (0.05, 0.25)
    lm = np.tile(_landmarks_px(rig, _w(rig)).astype(np.float32), (n, 1, 1))
    track = Track.new(lm, expression=np.zeros((n, len(rig.channels)), np.float32),
                      expression_names=list(rig.channels), gaze=gaze)
    preview.write_preview(track, tmp_path / "p.mp4", sfm_dir=sfm_dir, size=64)
    assert len(seen) == n and all(p for p, _ in seen)
    np.testing.assert_allclose(np.array([g for _, g in seen]), gaze)
