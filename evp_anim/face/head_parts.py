"""Eyes, teeth, tongue and a mouth interior for the SFM head: where they go and their meshes.

The SFM head is a face mask: its eye openings are covered by a closed "eye surface" and its lips
part onto nothing. This module places the parts from one identity's neutral mesh and builds
their meshes; it is numpy-only (no bpy, no scipy), so the Blender add-on (inside a stock Blender,
through the bundled wheel) and the preview renderer (:class:`evp_anim.face.raster.FaceRenderer`)
share one geometry.

Frame and units: SFM millimetres, x to the subject's left, y up, z toward the viewer. Meshes are
(V, 3) float vertices and a list of faces (tuples of 3 to 6 vertex indices: triangles, quads and
the teeth's hexagonal caps; :func:`triangulate` fans them into triangles).

Motion (what the users of this module apply per frame):

* the eyes turn about their centres with the track's gaze, the same rotation as the head pose
  (``euler_to_matrix([pitch, yaw, 0])``);
* the lower teeth and the tongue turn with the jaw about ``FaceLayout.jaw_centre`` by
  ``jawOpen × FaceLayout.jaw_angle`` (:func:`jaw_rotate`);
* the mouth interior's floor follows the jaw: :func:`interior_geometry` gives each vertex a jaw
  weight and :func:`interior_opened` its position at jawOpen = 1 (a shape key);
* everything else is fixed to the skull.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EYE_RADIUS_MM = 12.0                # a 24 mm eyeball
IRIS_RADIUS_MM = 5.8                # radius of the iris disc seen from the front
PUPIL_RADIUS_MM = 2.0
EYE_BEHIND_LIDS_MM = 1.5            # eyeball front this far behind the lid line (lids rest on it)
EYE_HOLE_HALF_WIDTH_MM = 11.0       # the opening cut over each eyeball; the corners stay closed skin
TEETH_HEIGHT_MM, TEETH_THICK_MM = 9.5, 3.0
TEETH_BEHIND_LIP_MM = 3.0           # upper incisors' front this far behind the inner lip line
ARCH_CURVE = 0.04                   # dental arch depth z = front - ARCH_CURVE * x² (mm)
INTERIOR_BEHIND_SKIN_MM = 5.0       # the mouth interior's rim this far behind the skin
SOCKET_BEHIND_SKIN_MM = 2.5         # the eye socket's rim this far behind the skin
# crown widths (mm of arch) from the midline back: incisors, canine, premolars, molars
TOOTH_WIDTHS_MM = (8.5, 6.5, 7.5, 7.0, 7.0, 10.0)
LOWER_TOOTH_WIDTHS_MM = (5.5, 6.0, 7.0, 7.0, 7.5, 11.0)


@dataclass
class FaceLayout:
    """Where the parts go for one identity's neutral mesh (SFM mm; see :func:`face_layout`).

    eye_centres: (2, 3) eyeball centres, [subject's right (x < 0), subject's left (x > 0)].
    eye_holes: (F,) bool, head triangles inside the eye openings over the eyeballs (removed).
    jaw_centre: (3,) the point the lower jaw turns about, and jaw_angle: radians at jawOpen = 1
    (about +x), fitted to the rig's jawOpen delta on the chin.
    mouth: (3,) the inner-lip centre; mouth_corners: (2, 3); skin_depth: callable (x, y) → z of
    the neutral skin (mm) for the mouth interior's rim.
    """

    eye_centres: np.ndarray
    eye_holes: np.ndarray
    jaw_centre: np.ndarray
    jaw_angle: float
    mouth: np.ndarray
    mouth_corners: np.ndarray
    skin_depth: object


def _lid_curves(lm: np.ndarray, first: int):
    """(upper y(x), lower y(x), x range) of one eye from its six iBUG points (first = 36 or 42),
    piecewise linear (numpy only: a stock Blender has no scipy)."""
    upper = lm[[first, first + 1, first + 2, first + 3]]
    lower = lm[[first, first + 5, first + 4, first + 3]]
    def curve(pts):
        o = np.argsort(pts[:, 0])
        return lambda x: np.interp(x, pts[o, 0], pts[o, 1])
    xs = upper[:, 0]
    return curve(upper), curve(lower), (xs.min(), xs.max())


def _fit_jaw(base: np.ndarray, delta: np.ndarray, chin: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre (3,), angle) of the rotation about +x that moves the chin region like ``delta``
    (the jawOpen shape at weight 1): a 2D Procrustes fit in (y, z) of the vertices within 12 mm of
    the chin landmark, where the rig's jaw weight is 1. The rig's small condyle glide is folded
    into the centre (exact at jawOpen 0 and 1, well under a millimetre off between)."""
    near = np.linalg.norm(base - chin, axis=1) < 12.0
    p, q = base[near][:, 1:], (base + delta)[near][:, 1:]
    pc, qc = p - p.mean(0), q - q.mean(0)
    # angle of the best rotation (y, z) -> (c y - s z, s y + c z)
    ang = float(np.arctan2((pc[:, 0] * qc[:, 1] - pc[:, 1] * qc[:, 0]).sum(), (pc * qc).sum()))
    c, s = np.cos(ang), np.sin(ang)
    rot = np.array([[c, -s], [s, c]])
    t = q.mean(0) - rot @ p.mean(0)
    if abs(ang) < 1e-9:                             # no jaw motion: any centre will do
        return np.array([0.0, *p.mean(0)]), 0.0
    yz = np.linalg.solve(np.eye(2) - rot, t)        # the fixed point of the motion
    return np.array([0.0, yz[0], yz[1]]), ang


def face_layout(base: np.ndarray, triangles: np.ndarray, landmark_vertices: np.ndarray,
                jaw_delta: np.ndarray, skin_back: np.ndarray | None = None) -> FaceLayout:
    """The parts' placement for a neutral head ``base`` (N, 3) mm, from its iBUG landmarks.

    Eyeball centre: x midway between the eye corners, y the mean of the four lid points, z so that
    the 24 mm ball's front sits :data:`EYE_BEHIND_LIDS_MM` behind the lid points' mean depth.
    The triangles whose centroid lies between the lids, within :data:`EYE_HOLE_HALF_WIDTH_MM` of
    the centre, are the eye surface cut away so the eyeball shows; the blink shape keys bring
    the skin above the upper lid down onto the lower lid over it. ``jaw_delta``: (N, 3) mm, the
    jawOpen shape at weight 1 (zeros: no jaw motion). ``skin_back``: (N,) mm, how far each vertex
    can move back (≤ 0) under any one channel, so rims placed behind the skin stay behind it
    when the face moves.
    """
    lm = base[np.asarray(landmark_vertices)]
    tris = np.asarray(triangles)
    cen = base[tris].mean(1)
    centres, holes = [], np.zeros(len(tris), bool)
    for first in (36, 42):                      # subject's right eye (x < 0), then left
        yu, yl, (x0, x1) = _lid_curves(lm, first)
        lids = lm[[first + 1, first + 2, first + 4, first + 5]]
        cx = 0.5 * (x0 + x1)
        front = lids[:, 2].mean() - EYE_BEHIND_LIDS_MM
        centres.append([cx, lids[:, 1].mean(), front - EYE_RADIUS_MM])
        holes |= ((np.abs(cen[:, 0] - cx) < EYE_HOLE_HALF_WIDTH_MM) & (cen[:, 1] < yu(cen[:, 0]))
                  & (cen[:, 1] > yl(cen[:, 0])) & (cen[:, 2] > front - 6.0))
    jaw_centre, jaw_angle = _fit_jaw(base, jaw_delta, lm[8])
    inner = lm[60:68]
    mouth = np.array([0.5 * (inner[:, 0].min() + inner[:, 0].max()), inner[:, 1].mean(), inner[:, 2].max()])
    deepest = base[:, 2] + (skin_back if skin_back is not None else 0.0)
    front = base[:, 2] > base[:, 2].max() - 80.0
    front_verts = np.concatenate([base[front, :2], deepest[front, None]], 1)

    def skin_depth(x, y):
        """z (mm) of the skin at (x, y) (the deepest any one channel takes it): inverse-distance
        mean of the 4 nearest front vertices."""
        d = np.hypot(front_verts[:, 0] - x, front_verts[:, 1] - y)
        k = np.argsort(d)[:4]
        w = 1.0 / (d[k] + 0.5)
        return float((front_verts[k, 2] * w).sum() / w.sum())

    return FaceLayout(np.array(centres), holes, jaw_centre, jaw_angle, mouth, lm[[48, 54]], skin_depth)


def rig_face_layout(rig, base: np.ndarray) -> FaceLayout:
    """:func:`face_layout` for ``rig``'s head (a FaceRig or RigData: channels, deltas (K, N, 3) mm,
    triangles, landmark_vertices) with neutral vertices ``base`` (N, 3) mm."""
    k = list(rig.channels).index("jawOpen") if "jawOpen" in rig.channels else None
    jaw_delta = np.asarray(rig.deltas[k]) if k is not None else np.zeros_like(base)
    back = np.minimum(np.asarray(rig.deltas)[:, :, 2].min(0), 0.0)
    return face_layout(base, np.asarray(rig.triangles), np.asarray(rig.landmark_vertices), jaw_delta, back)


# ---------------------------------------------------------------------- meshes
def sphere(polar_deg, segments: int = 32):
    """Unit sphere with its pole on +z (SFM: toward the viewer), rings at ``polar_deg`` from
    that pole (ascending, excluding 0 and 180). Returns (verts (V, 3), faces, ring of each face):
    the front pole is vertex 0, the back pole the last vertex. The faces wind inward (Blender
    shades both sides; the preview renderer orients each part itself)."""
    th = np.radians(np.asarray(polar_deg, float))
    ph = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.sin(th)[:, None] * np.cos(ph), np.sin(th)[:, None] * np.sin(ph),
                     np.repeat(np.cos(th)[:, None], segments, 1)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 0, 1.0]], ring, [[0, 0, -1.0]]])
    n, s = len(th), segments
    faces, rings = [], []
    for j in range(s):
        faces.append((0, 1 + (j + 1) % s, 1 + j)); rings.append(0)
    for i in range(n - 1):
        for j in range(s):
            a, b = 1 + i * s + j, 1 + i * s + (j + 1) % s
            faces.append((a, b, b + s, a + s)); rings.append(i + 1)
    last = len(verts) - 1
    for j in range(s):
        faces.append((1 + (n - 1) * s + j, 1 + (n - 1) * s + (j + 1) % s, last)); rings.append(n)
    return verts, faces, np.array(rings)


def eye_polar_deg(back_deg: float = 170.0, rings_behind: int = 10) -> np.ndarray:
    """Ring angles (degrees from the front pole) of an eyeball: two inside the pupil, the pupil's
    edge, one in the iris, the iris's edge, one 6° beyond it, then ``rings_behind`` evenly from 15°
    past the iris to ``back_deg``."""
    r = EYE_RADIUS_MM
    a_pupil = np.degrees(np.arcsin(PUPIL_RADIUS_MM / r))
    a_iris = np.degrees(np.arcsin(IRIS_RADIUS_MM / r))
    return np.array([a_pupil * 0.5, a_pupil, 0.5 * (a_pupil + a_iris), a_iris, a_iris + 6,
                     *np.linspace(a_iris + 15, back_deg, rings_behind)])


def eye_geometry(back_deg: float = 170.0, rings_behind: int = 10, segments: int = 32):
    """Eyeball (mm, centred, looking along +z): (verts, faces, material per face: 2 pupil,
    1 iris, 0 sclera), with ring boundaries at the pupil's and iris's radii on the 12 mm ball."""
    verts, faces, rings = sphere(eye_polar_deg(back_deg, rings_behind), segments)
    # faces from the pole: ring 0, 1 pupil; 2, 3 iris; the rest sclera
    mats = np.where(rings < 2, 2, np.where(rings < 4, 1, 0))
    return verts * EYE_RADIUS_MM, faces, mats


def arch_z(x, front):
    """z (mm) of the dental arch at x (mm from the midline) whose front is at z = ``front``."""
    return front - ARCH_CURVE * np.asarray(x) ** 2


def arch_x_at(arc: float, front: float) -> float:
    """x (mm, ≥ 0) at arc length ``arc`` from the midline along the dental arch."""
    xs = np.linspace(0, 40, 401)
    seg = np.hypot(np.diff(xs), np.diff(arch_z(xs, front)))
    s = np.concatenate([[0], np.cumsum(seg)])
    return float(np.interp(arc, s, xs))


def teeth_geometry(front: float, edge_y: float, height: float, widths, thick: float, columns: int = 5):
    """One row of teeth along the arch (mm): a slightly bevelled curved box per crown, 0.35 mm
    apart, from ``edge_y`` (the biting edge) over ``height`` (negative: downward); ``columns``
    cross-sections per crown (≥ 2). Returns (verts (V, 3), faces: quads and hexagonal caps)."""
    verts, faces = [], []
    arc = 0.0
    steps = int(columns) - 1
    for w in widths:
        for side in (1.0, -1.0):
            xs = [side * arch_x_at(arc + 0.175 + (w - 0.35) * k / steps, front) for k in range(steps + 1)]
            base = len(verts)
            for x in xs:
                z = float(arch_z(x, front))
                # unit normal of the arch (outward) to offset the back face inward
                nx, nz = 2 * ARCH_CURVE * x, 1.0
                nn = np.hypot(nx, nz)
                nx, nz = nx / nn, nz / nn
                for dy, dt in ((0.0, 0.3), (0.25, 0.0), (1.0, 0.0), (1.0, 1.0), (0.25, 1.0), (0.0, 0.7)):
                    # front/back, with the biting edge a little thinner than the crown
                    t = dt * thick
                    verts.append((x - nx * t, edge_y + dy * height, z - nz * t))
            n = 6
            for k in range(steps):
                a, b = base + k * n, base + (k + 1) * n
                for m in range(n):
                    m2 = (m + 1) % n
                    f = (a + m, a + m2, b + m2, b + m)
                    faces.append(f if side > 0 else f[::-1])
            cap0, cap1 = [base + m for m in range(n)], [base + steps * n + m for m in range(n)]
            faces.append(tuple(cap0[::-1]) if side > 0 else tuple(cap0))
            faces.append(tuple(cap1) if side > 0 else tuple(cap1[::-1]))
        arc += w
    return np.array(verts, float), faces


def teeth_front(layout: FaceLayout) -> float:
    """z (mm) of the upper incisors' front: :data:`TEETH_BEHIND_LIP_MM` behind the inner lips."""
    return float(layout.mouth[2] - TEETH_BEHIND_LIP_MM)


def upper_teeth_geometry(layout: FaceLayout, columns: int = 5):
    """The upper row (mm, fixed to the skull), biting edge 1 mm below the inner-lip centre."""
    return teeth_geometry(teeth_front(layout), layout.mouth[1] - 1.0, TEETH_HEIGHT_MM, TOOTH_WIDTHS_MM,
                          TEETH_THICK_MM, columns)


def lower_teeth_geometry(layout: FaceLayout, columns: int = 5):
    """The lower row (mm, at jawOpen = 0): incisors close behind the upper ones, their edges 1.5 mm
    above the upper edges (overbite)."""
    return teeth_geometry(teeth_front(layout) - TEETH_THICK_MM - 0.3, layout.mouth[1] + 0.5,
                          -TEETH_HEIGHT_MM + 0.5, LOWER_TOOTH_WIDTHS_MM, TEETH_THICK_MM * 0.85, columns)


def ellipsoid(centre, radii, segments: int = 24, rings: int = 11):
    """Closed ellipsoid (mm) with ``rings`` rings of ``segments`` vertices: (verts, faces)."""
    verts, faces, _ = sphere(np.linspace(180 / (rings + 1), 180 - 180 / (rings + 1), rings), segments)
    return np.asarray(centre) + verts * np.asarray(radii), faces


def tongue_geometry(layout: FaceLayout, segments: int = 24, rings: int = 11):
    """The tongue (mm, at jawOpen = 0): a flattened ellipsoid on the floor of the mouth."""
    return ellipsoid((layout.mouth[0], layout.mouth[1] - 8.5, teeth_front(layout) - 27.0), (16.5, 5.0, 20.0),
                     segments, rings)


def bowl(skin_depth, centre, rim_radii, behind_skin: float, back_z: float, rings: int = 9,
         segments: int = 32):
    """A bowl open toward the viewer (mm): its rim an ellipse of ``rim_radii`` around ``centre``
    (x, y), ``behind_skin`` mm behind the skin, closing at depth ``back_z``; seen from the
    opening (its faces wind with their normals away from it: Blender shades both sides, the
    preview renderer orients them). Returns (verts, faces)."""
    cx, cy = centre[0], centre[1]
    ph = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    rim = np.stack([cx + rim_radii[0] * np.cos(ph), cy + rim_radii[1] * np.sin(ph)], 1)
    rim_z = np.array([skin_depth(x, y) for x, y in rim]) - behind_skin
    verts = []
    for i in range(rings):
        t = 0.5 * np.pi * i / rings
        for j in range(segments):
            verts.append((cx + (rim[j, 0] - cx) * np.cos(t), cy + (rim[j, 1] - cy) * np.cos(t),
                          rim_z[j] + (back_z - rim_z[j]) * np.sin(t)))
    verts.append((cx, cy, back_z))
    faces = []
    for i in range(rings - 1):
        for j in range(segments):
            a, b = i * segments + j, i * segments + (j + 1) % segments
            faces.append((a, a + segments, b + segments, b))
    last = len(verts) - 1
    for j in range(segments):
        a, b = (rings - 1) * segments + j, (rings - 1) * segments + (j + 1) % segments
        faces.append((a, last, b))
    return np.array(verts), faces


def socket_geometry(layout: FaceLayout, side: int, rings: int = 9, segments: int = 32):
    """A shallow eye socket behind eyeball ``side`` (0: subject's right, 1: left), seen past the
    ball at the eye's corners in place of the void behind the face mask: (verts, faces) in mm."""
    centre = layout.eye_centres[side]
    return bowl(layout.skin_depth, centre, (16.0, 11.0), SOCKET_BEHIND_SKIN_MM, centre[2] - 2.0, rings, segments)


def interior_geometry(layout: FaceLayout, rim_radii=(34.0, 24.0), depth: float = 45.0, rings: int = 9,
                      segments: int = 32):
    """The mouth's cavity (mm): a bowl whose rim circles the mouth :data:`INTERIOR_BEHIND_SKIN_MM`
    behind the skin, ``depth`` mm deep behind the lips. Returns (verts, faces, jaw weight per
    vertex: 1 from 4 mm below the lip line down, 0 from 4 mm above it up, smooth between)."""
    verts, faces = bowl(layout.skin_depth, layout.mouth, rim_radii, INTERIOR_BEHIND_SKIN_MM,
                        layout.mouth[2] - depth, rings, segments)
    u = np.clip((layout.mouth[1] + 4.0 - verts[:, 1]) / 8.0, 0.0, 1.0)
    return verts, faces, u * u * (3 - 2 * u)


def jaw_rotate(points: np.ndarray, layout: FaceLayout, jaw_open: float) -> np.ndarray:
    """(V, 3) mm ``points`` turned with the jaw: about +x through ``layout.jaw_centre`` by
    ``jaw_open`` × ``layout.jaw_angle`` radians (jaw_open: the rig's jawOpen weight)."""
    a = float(jaw_open) * layout.jaw_angle
    c, s = np.cos(a), np.sin(a)
    p = np.asarray(points, float) - layout.jaw_centre
    return np.stack([p[:, 0], c * p[:, 1] - s * p[:, 2], s * p[:, 1] + c * p[:, 2]], 1) + layout.jaw_centre


def interior_opened(layout: FaceLayout, verts: np.ndarray, jaw_weight: np.ndarray) -> np.ndarray:
    """The interior's vertices at jawOpen = 1 (its shape key): each of (V, 3) mm ``verts`` moved
    by its (V,) ``jaw_weight`` share of the jaw's turn, so the floor follows and the roof stays."""
    turned = jaw_rotate(verts, layout, 1.0)
    return verts + (turned - verts) * np.asarray(jaw_weight, float)[:, None]


def triangulate(faces) -> np.ndarray:
    """(F', 3) int64 triangles fanned from each face's first vertex (faces are convex polygons:
    triangles, quads, the teeth's hexagons), keeping each face's winding."""
    out = [(f[0], f[k], f[k + 1]) for f in faces for k in range(1, len(f) - 1)]
    return np.asarray(out, np.int64).reshape(-1, 3)
