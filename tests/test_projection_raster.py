"""Projection, rasteriser, face renderer, sketches and the contact sheet."""


import cv2
import numpy as np
import pytest

from evp_anim.errors import EvpError
from evp_anim.face import projection as proj
from evp_anim.face.contact_sheet import contact_sheet, sheet_entries
from evp_anim.face.projection import (aligned_crop_transform, aligned_landmarks, euler_to_matrix,
                                      matrix_to_euler, project)
from evp_anim.face.raster import FaceRenderer, rasterize, render_mesh
from evp_anim.face.rig import FaceRig
from evp_anim.face.sketch import IBUG_PARTS, draw_sketch, overlay_sketch


@pytest.fixture(scope="module")
def rig(sfm_dir):
    return FaceRig(sfm_dir)


@pytest.fixture(scope="module")
def renderer(rig):
    return FaceRenderer(rig)


# --- rotations and projection -----------------------------------------------------------------

def test_euler_matrix_round_trip():
    rng = np.random.default_rng(0)
    e = np.stack([rng.uniform(-np.pi, np.pi, 200), rng.uniform(-1.5, 1.5, 200),
                  rng.uniform(-np.pi, np.pi, 200)], 1)
    r = euler_to_matrix(e)
    assert r.shape == (200, 3, 3)
    np.testing.assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix_to_euler(r), e, atol=1e-9)
    # gimbal lock still gives back the same rotation
    lock = euler_to_matrix(np.array([0.3, np.pi / 2, 0.2]))
    np.testing.assert_allclose(euler_to_matrix(matrix_to_euler(lock)), lock, atol=1e-9)


def test_euler_order_and_signs():
    a, b, c = 0.3, -0.4, 0.5

    def rx(t):
        return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])

    def ry(t):
        return np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])

    def rz(t):
        return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])

    np.testing.assert_allclose(euler_to_matrix([a, b, c]), rz(c) @ ry(b) @ rx(a), atol=1e-12)
    # positive yaw brings the nose (+z) toward +x, i.e. the image's right
    np.testing.assert_allclose(euler_to_matrix([0, np.pi / 2, 0]) @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    with pytest.raises(EvpError):
        euler_to_matrix(np.zeros(2))


def test_project_known_values():
    pts = np.array([[[10.0, 20.0, 5.0], [0.0, 0.0, 0.0]]])
    # identity rotation: u = s x + tx, v = ty - s y
    out = project(pts, np.zeros((1, 3)), np.array([[100.0, 50.0]]), np.array([2.0]))
    np.testing.assert_allclose(out, [[[120.0, 10.0], [100.0, 50.0]]])
    # yaw 90 deg: x' = z, so the point lands at u = tx + s * 5
    out = project(pts, np.array([[0.0, np.pi / 2, 0.0]]), np.array([[0.0, 0.0]]), np.array([1.0]))
    np.testing.assert_allclose(out[0, 0], [5.0, -20.0], atol=1e-12)
    # roll 90 deg: (x, y) -> (-y, x) in y-up, so u = -20, v = -10
    out = project(pts, np.array([[0.0, 0.0, np.pi / 2]]), np.array([[0.0, 0.0]]), np.array([1.0]))
    np.testing.assert_allclose(out[0, 0], [-20.0, -10.0], atol=1e-12)
    # batched frames with different poses agree with single-frame calls
    rng = np.random.default_rng(1)
    p = rng.normal(size=(4, 7, 3))
    rot = rng.uniform(-0.5, 0.5, (4, 3))
    tr = rng.uniform(0, 100, (4, 2))
    s = rng.uniform(0.5, 2, 4)
    batch = project(p, rot, tr, s)
    for t in range(4):
        np.testing.assert_allclose(batch[t], project(p[t], rot[t], tr[t], s[t]), atol=1e-12)


def test_aligned_crop(rig):
    size = 256
    s, t = aligned_crop_transform(size)
    lm = aligned_landmarks(rig.landmarks_3d()[None], size)[0]
    assert lm.shape == (68, 2)
    width = lm[16, 0] - lm[0, 0]
    assert 0.6 * size < width < 0.7 * size
    centre = 0.5 * (lm.min(0) + lm.max(0))
    assert abs(centre[0] - size / 2) < 2 and abs(centre[1] - size / 2) < 0.1 * size
    assert np.all((lm > 0) & (lm < size))
    # eyes above the mouth in the image (y down)
    assert lm[36:48, 1].mean() < lm[48:68, 1].mean()
    # the built-in constants match the model they were measured on
    s2, t2 = aligned_crop_transform(size, rig.landmarks_3d())
    assert s2 == pytest.approx(s, rel=1e-3) and np.allclose(t2, t, atol=0.2)
    assert aligned_crop_transform(512)[0] == pytest.approx(2 * s)
    with pytest.raises(EvpError):
        aligned_crop_transform(0)
    assert proj.CROP_FACE_FRACTION == pytest.approx(width / size, abs=0.01)


# --- rasteriser -------------------------------------------------------------------------------

def _two_triangles(z_red, z_green):
    v = np.array([[10, 10, z_red], [50, 10, z_red], [10, 50, z_red],
                  [5, 5, z_green], [55, 5, z_green], [5, 55, z_green]], np.float64)
    t = np.array([[0, 2, 1], [3, 5, 4]])  # clockwise on screen = front-facing
    col = np.array([[0, 0, 1]] * 3 + [[0, 1, 0]] * 3, np.float64)  # BGR: red, green
    return v, t, col


@pytest.mark.parametrize("z_red,z_green,winner", [(5.0, 1.0, 2), (1.0, 5.0, 1)])
def test_zbuffer_keeps_nearest(z_red, z_green, winner):
    v, t, col = _two_triangles(z_red, z_green)
    for order in (t, t[::-1]):
        img = render_mesh(v, order, (64, 64), col, background=(0, 0, 0), ambient=1.0, supersample=1)
        px = img[20, 20]
        assert int(np.argmax(px)) == winner, (px, order)
        # outside the red triangle only green shows
        assert int(np.argmax(img[52, 7])) == 1


def test_rasterize_coverage_and_barycentrics():
    v = np.array([[0.0, 0.0, 1.0], [40.0, 0.0, 2.0], [0.0, 40.0, 3.0]])
    frag = rasterize(v, np.array([[0, 2, 1]]), (48, 48))
    covered = frag.mask.sum()
    assert abs(covered - 0.5 * 41 * 41) < 45   # about the triangle's area in pixel centres
    np.testing.assert_allclose(frag.bary[frag.mask].sum(1), 1.0, atol=1e-5)
    # depth interpolates linearly: z = 1 + x/40 + 2y/40
    ys, xs = np.nonzero(frag.mask)
    np.testing.assert_allclose(frag.depth[ys, xs], 1 + xs / 40 + 2 * ys / 40, atol=1e-4)
    assert frag.front[frag.mask].all()
    assert not rasterize(v, np.array([[0, 1, 2]]), (48, 48)).front[frag.mask].any()


def test_render_mesh_face(rig):
    s, t = aligned_crop_transform(128)
    v = rig.mean.astype(np.float64)
    uv = project(v, np.zeros(3), t, s)
    px = np.c_[uv, v[:, 2] * s]
    img = render_mesh(px, rig.triangles, (128, 128), background=(0, 0, 0))
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    lit = img.max(axis=2) > 0
    assert 0.3 < lit.mean() < 0.8
    # z-buffer: at the nose tip's pixel the visible surface is the nose tip itself
    frag = rasterize(px, rig.triangles, (128, 128))
    tip = px[rig.landmark_vertices[30]]
    x, y = int(round(tip[0])), int(round(tip[1]))
    assert frag.depth[y, x] == pytest.approx(tip[2], abs=2.0 * s)
    with pytest.raises(EvpError):
        render_mesh(px, rig.triangles, (64, 64), vertex_colors=np.zeros((3, 3)))


def test_turned_head_nose_occludes_cheek(rig):
    size = 160
    s, t = aligned_crop_transform(size)
    yaw = np.radians(35.0)
    v = rig.mean.astype(np.float64)
    rot = np.array([0.0, yaw, 0.0])
    rv = v @ euler_to_matrix(rot).T
    uv = project(v, rot, t, s)
    px = np.c_[uv, rv[:, 2] * s]
    col = np.full((len(v), 3), 0.7)
    tip = rig.landmark_vertices[30]
    nose = np.linalg.norm(v - v[tip], axis=1) < 6.0
    col[nose] = (0.0, 0.0, 1.0)
    # the nose tip's pixel is also covered by the far cheek; the z-buffer must keep the nose
    x, y = np.round(uv[tip]).astype(int)
    behind = (np.abs(uv[:, 0] - uv[tip, 0]) < 2) & (np.abs(uv[:, 1] - uv[tip, 1]) < 2) & ~nose
    assert behind.any()
    img = render_mesh(px, rig.triangles, (size, size), col, ambient=1.0, supersample=1)
    b, g, r = img[y, x].astype(int)
    assert r > 150 and g < 60 and b < 60


# --- face renderer ----------------------------------------------------------------------------

def test_face_renderer_neutral(rig, renderer):
    img = renderer.render(None, None, (0, 0, 0), 128)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    bg = np.round(renderer.background * 255).astype(int)
    not_bg = np.abs(img.astype(int) - bg).sum(2) > 10
    assert 0.3 < not_bg.mean() < 0.85
    lm = aligned_landmarks(rig.landmarks_3d()[None], 128)[0]
    # the lips are redder than the cheek, the pupil darker than the skin
    lip = img[int(lm[57, 1]) - 2, int(lm[57, 0])].astype(int)
    cheek = img[int(lm[29, 1]), int(0.5 * (lm[29, 0] + lm[2, 0]))].astype(int)
    assert lip[2] - lip[1] > cheek[2] - cheek[1] + 15
    eye = lm[[37, 38, 40, 41]].mean(0)
    assert img[int(round(eye[1])), int(round(eye[0]))].mean() < 0.6 * cheek.mean()


def test_blink_changes_only_the_eye(rig, renderer):
    size = 192
    w = rig.weights_from_dict({"eyeBlinkLeft": 1.0})
    a = renderer.render(None, None, (0, 0, 0), size).astype(int)
    b = renderer.render(None, w, (0, 0, 0), size).astype(int)
    changed = np.abs(a - b).max(axis=2) > 8
    assert changed.sum() > 30
    lm = aligned_landmarks(rig.landmarks_3d()[None], size)[0]
    eye = lm[42:48]
    lo = eye.min(0) - 0.04 * size
    hi = eye.max(0) + 0.06 * size
    ys, xs = np.nonzero(changed)
    inside = (xs >= lo[0]) & (xs <= hi[0]) & (ys >= lo[1] - 0.06 * size) & (ys <= hi[1])
    assert inside.all()
    # and it is the subject's left eye: the image's right side
    assert xs.min() > size / 2
    # the iris is hidden: the eye's centre got lighter (skin over the dark iris)
    c = np.round(eye[[1, 2, 4, 5]].mean(0)).astype(int)
    assert b[c[1], c[0]].mean() > a[c[1], c[0]].mean() + 40


def test_open_jaw_shows_dark_mouth(rig, renderer):
    size = 192
    w = rig.weights_from_dict({"jawOpen": 1.0})
    img = renderer.render(None, w, (0, 0, 0), size).astype(int)
    lm = aligned_landmarks(rig.landmarks_3d(None, w)[None], size)[0]
    mid = np.round(0.5 * (lm[62] + lm[66])).astype(int)
    assert img[mid[1], mid[0]].mean() < 50
    # turned head still renders the interior behind the lips only
    turned = renderer.render(None, w, (0, np.radians(25), 0), size)
    assert turned.shape == (size, size, 3)


# --- sketches ---------------------------------------------------------------------------------

def test_ibug_parts_cover_all_points():
    pts = sorted({i for _, idx, _ in IBUG_PARTS for i in idx})
    assert pts == list(range(68))
    closed = {name for name, _, c in IBUG_PARTS if c}
    assert closed == {"right_eye", "left_eye", "outer_lips", "inner_lips"}


def test_draw_sketch(rig):
    lm = aligned_landmarks(rig.landmarks_3d()[None], 128)[0]
    img = draw_sketch(lm, (128, 128))
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    on = img.max(axis=2) > 0
    assert 0.02 < on.mean() < 0.2
    for p in lm.round().astype(int):
        assert img[p[1] - 1:p[1] + 2, p[0] - 1:p[0] + 2].max() > 100
    # anti-aliased: intermediate grey levels exist
    assert len(np.unique(img)) > 10
    parts = draw_sketch(lm, 128, per_part_channels=True)
    assert parts.shape == (128, 128, len(IBUG_PARTS))
    for k, (name, idx, _) in enumerate(IBUG_PARTS):
        ch = parts[..., k]
        assert ch.max() >= 200, name
        p = lm[idx[0]].round().astype(int)
        assert ch[p[1] - 1:p[1] + 2, p[0] - 1:p[0] + 2].max() > 100, name
    # the jaw channel lies below the brows' channel on average (y down)
    ys = np.arange(128)[:, None]
    jaw_y = (parts[..., 0] * ys).sum() / parts[..., 0].sum()
    brow_y = (parts[..., 1] * ys).sum() / parts[..., 1].sum()
    assert jaw_y > brow_y
    thick = draw_sketch(lm, 128, thickness=3)
    assert (thick.max(axis=2) > 0).sum() > 2 * on.sum()
    colored = draw_sketch(lm, 128, colored=True)
    flat = colored.reshape(-1, 3)
    strong = flat[flat.max(1) >= 250]
    # several part colours (hue = which channel dominates and by how much)
    assert len({tuple(np.round(c / 64.0).astype(int)) for c in strong}) > 3
    with pytest.raises(EvpError):
        draw_sketch(lm[:60], 128)
    over = overlay_sketch(np.zeros((128, 128, 3), np.uint8), lm)
    assert over.max() > 100


# --- contact sheet ----------------------------------------------------------------------------

def test_contact_sheet(rig, tmp_path):
    out = contact_sheet(rig, tmp_path / "sheet.png", tile=64, columns=8)
    img = cv2.imread(str(out))
    n = len(sheet_entries(rig))
    assert n == 1 + len(rig.channels) + 8 + 2
    rows = -(-n // 8)
    assert img.shape == (rows * 64, 8 * 64, 3)
    assert not list(tmp_path.glob(".sheet.png.*"))   # no temporary file left behind
    with pytest.raises(EvpError):
        contact_sheet(rig, tmp_path / "sheet.jpg")
