"""Authored ARKit-style articulation channels on the SFM mean mesh.

Every channel in :data:`~evp_anim.face.channels.ARTICULATION_CHANNELS` is one (N, 3) vertex delta
in millimetres (weight 1 = a strong, plausible expression). The deltas are computed
deterministically from the mesh geometry, never sculpted by hand, so they work with any
SFM-topology folder:

* A **symmetrised mean** ``P = (mean + mirror(mean[symmetry])) / 2`` is the rest shape every
  delta is authored on, so a "Left" channel is exactly the mirror image of its "Right" twin.
* **Landmarks** (the 68 iBUG points of :mod:`evp_anim.face.sfm`) place every region: mouth
  corners, lip lines, eyelid curves, brows, nostrils.
* A **jaw field** ``jaw_w`` in [0, 1] is a harmonic function on the mesh graph (uniform-weight
  Laplace equation) that is 0 on the upper lip's inner edge and everything well above the mouth /
  jaw line, 1 on the lower lip's inner edge and everything well below it. Because the mouth
  opening is a hole, the upper and lower lips are connected only through the corners, so the
  field splits the lips cleanly with no hand-drawn masks; elsewhere it gives a smooth ramp.
* **Falloffs** are compact and C1-smooth (``(1 - (d/r)^2)^3`` inside radius r), so each channel is
  exactly zero outside its region (a blink doesn't move the mouth at all).

Sides: "Left" is the subject's left, which is +x in SFM coordinates (ibug point 37, the
subject's right eye outer corner, is at x = -46 mm). Region code below is written for the
subject's right side with iBUG indices of that side; the left version mirrors the indices
through :data:`~evp_anim.face.sfm.IBUG_MIRROR` and flips x offsets.

Channel summary (weight 1):
    jawOpen: lower face rotated 12 deg about a hinge axis near the ears (x axis at y = +2, z = -92
        mm) plus a small forward glide (4 mm forward, 1.5 mm down), weighted by ``jaw_w``: the
        inner lips part ~17 mm at the middle (an oval opening), the chin drops ~12 mm and moves
        ~14 mm back.
    mouthClose: against an open jaw, closes the lips: the lower lip is carried 70 % of the way back
        up and the upper lip comes down 30 % of the jaw's opening; alone it pushes the lips
        together (and past each other: use it with jawOpen, as in ARKit).
    mouthFunnel / mouthPucker: lips forward and toward the midline; funnel opens a round gap.
    mouthRollLower / mouthRollUpper: the lip's red part turns in (back and toward the other lip).
    mouthPress*: lips pressed together and back on one side.
    mouthStretch*: corner pulled out, slightly down and back.
    mouthSmile*: corner 6 mm up, 5 mm out and 3 mm back; the cheek above it rises.
    mouthFrown*: corner pulled down.
    mouthDimple*: corner pulled back with a small dimple beside it.
    mouthUpperUp* / mouthLowerDown*: one side of the upper lip up / lower lip down.
    noseSneer*: nostril wing and nose side up, a little upper lip with it.
    cheekSquint*: cheek below the eye up and forward, lower lid up a little.
    browInnerUp, browDown*, browOuterUp*: brows up at the inner ends / down and inward / up outside.
    eyeBlink*: upper lid down onto the (slightly raised) lower lid: the eyelid landmarks meet.
    eyeWide*: upper lid up 35 % of the eye opening, lower lid down a little.
    eyeSquint*: lower lid up 30 %, upper lid down 10 %, cheek under the eye up.
    mouthSmirkLeft: one-sided smile on the subject's left (corner up/out, a little cheek) plus a
        dimple.
"""

from __future__ import annotations

import numpy as np

from .channels import ARTICULATION_CHANNELS
from .sfm import IBUG_MIRROR, SfmModel, mesh_edges, split_mouth_loop

# --- tunables (mm, degrees) ------------------------------------------------------------------
JAW_ANGLE_DEG = 12.0
JAW_HINGE_YZ = (2.0, -92.0)        # hinge axis (parallel to x) in SFM coordinates
JAW_GLIDE = (0.0, -1.5, 4.0)       # condyle glide at full opening (mm)
JAW_BAND = 11.0                    # half-width of the jaw line's transition band
JAW_LIP_PROFILE_POWER = 2.5        # shape of the lower lip's opening profile (higher = squarer)
MOUTH_CLOSE_UPPER_SHARE = 0.3      # part of the gap the upper lip covers in mouthClose
SMILE_CORNER = (-5.0, 6.0, -3.0)   # mouth-corner motion of a smile (x for the subject's right)


# --- small helpers ----------------------------------------------------------------------------

def bump(d: np.ndarray, radius: float) -> np.ndarray:
    """Compact smooth falloff: (1 - (d/r)^2)^3 for d < r, else 0 (value 1 and slope 0 at d = 0)."""
    t = np.clip(np.asarray(d, np.float64) / radius, 0.0, 1.0)
    return (1.0 - t * t) ** 3


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at e0 to 1 at e1 (works for e0 > e1 too)."""
    t = np.clip((np.asarray(x, np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def soft_union(*ws: np.ndarray) -> np.ndarray:
    """1 - prod(1 - w): combines overlapping falloffs without exceeding 1, smoothly."""
    out = np.ones_like(ws[0])
    for w in ws:
        out = out * (1.0 - w)
    return 1.0 - out


def _harmonic(n: int, edges: np.ndarray, fixed: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Solve the uniform graph Laplace equation with Dirichlet values on ``fixed`` vertices."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    i, j = edges[:, 0], edges[:, 1]
    adj = coo_matrix((np.ones(2 * len(i)), (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
    deg = np.asarray(adj.sum(axis=1)).ravel()
    lap = (coo_matrix((deg, (np.arange(n), np.arange(n))), shape=(n, n)) - adj).tocsr()
    out = np.zeros(n)
    out[fixed] = values
    free = np.setdiff1d(np.arange(n), fixed)
    rhs = -lap[free][:, fixed] @ values
    out[free] = spsolve(lap[free][:, free].tocsc(), rhs)
    return np.clip(out, 0.0, 1.0)


def _rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


class _Geometry:
    """Rest shape, landmarks and shared fields the channels are built from (all mm)."""

    def __init__(self, model: SfmModel):
        mean = model.mean.astype(np.float64)
        sym = model.symmetry
        mirror = np.array([-1.0, 1.0, 1.0])
        self.P = 0.5 * (mean + mean[sym] * mirror)
        self.n = len(self.P)
        self.edges = mesh_edges(model.triangles)
        self.L = self.P[model.landmark_vertices]
        self.lv = model.landmark_vertices
        self.x, self.y, self.z = self.P[:, 0], self.P[:, 1], self.P[:, 2]
        self._split_mouth(model.mouth_loop)
        self.jaw_w = self._jaw_field(sym)
        # elliptical mouth coordinate: 1 at about the outer lip line
        c = 0.5 * (self.L[48] + self.L[54])
        self.mouth_c = c
        self.mouth_half = 0.5 * (self.L[54, 0] - self.L[48, 0])
        up = self.L[51, 1] - c[1]
        down = c[1] - self.L[57, 1]
        ey = np.where(self.y >= c[1], (self.y - c[1]) / up, (c[1] - self.y) / down)
        self.mouth_r = np.hypot((self.x - c[0]) / self.mouth_half, ey)
        # only the front of the face (the mesh wraps back to the ears and under the chin)
        self.front = smoothstep(-60.0, -45.0, self.z)

    # -- mouth --
    def _split_mouth(self, loop: np.ndarray) -> None:
        self.upper_inner, self.lower_inner, self.mouth_corners_v = split_mouth_loop(self.P, loop)

    def _jaw_field(self, sym: np.ndarray) -> np.ndarray:
        x, y = self.x, self.y
        corner = 0.5 * (self.L[48] + self.L[54] * np.array([-1.0, 1.0, 1.0]))  # right corner, symmetric
        xc, yc = abs(corner[0]), corner[1]
        # jaw line: flat between the corners, then rising toward the hinge at the face's side
        ax = np.abs(x)
        y_line = np.where(ax <= xc, yc, yc + (ax - xc) / (74.0 - xc) * (JAW_HINGE_YZ[0] - 14.0 - yc))
        s = y - y_line
        fixed_lo = np.flatnonzero(s < -JAW_BAND)
        fixed_hi = np.flatnonzero(s > JAW_BAND)
        # Pin the lips' inner edges: the lower lip to a profile falling from 1 at the middle to 0.5
        # at the corners, the upper lip to 0 rising to 0.5 only right at the corners. The two
        # meet at the corners, so the opening is an oval with no tear at its ends.
        lo_in, up_in = self.lower_inner, self.upper_inner
        u_lo = np.clip(np.abs(self.P[lo_in, 0]) / xc, 0.0, 1.0)
        u_up = np.clip(np.abs(self.P[up_in, 0]) / xc, 0.0, 1.0)
        lo_val = 0.5 + 0.5 * np.sqrt(1.0 - u_lo ** JAW_LIP_PROFILE_POWER)
        up_val = 0.5 * u_up ** 8
        fixed = np.r_[fixed_lo, fixed_hi, lo_in, up_in]
        values = np.r_[np.ones(len(fixed_lo)), np.zeros(len(fixed_hi)), lo_val, up_val]
        fixed, first = np.unique(fixed, return_index=True)
        w = _harmonic(self.n, self.edges, fixed, values[first])
        w = 0.5 * (w + w[sym])  # exact symmetry
        return w

    # -- sides --
    def lm(self, i: int, side: int) -> np.ndarray:
        """Landmark i given as the subject's RIGHT-side index; side -1 = right, +1 = left."""
        return self.L[i] if side < 0 else self.L[IBUG_MIRROR[i]]

    def dist(self, p: np.ndarray, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
        d = (self.P - p) * np.asarray(scale)
        return np.linalg.norm(d, axis=1)

    def dist_xy(self, p: np.ndarray, sx: float = 1.0, sy: float = 1.0) -> np.ndarray:
        return np.hypot((self.x - p[0]) * sx, (self.y - p[1]) * sy)


# --- eyes -------------------------------------------------------------------------------------

def _eye_curves(g: _Geometry, side: int):
    """Cubic-spline eyelid curves y(x), z(x) through the eyelid landmarks of one eye."""
    from scipy.interpolate import CubicSpline

    outer, up1, up2, inner, lo2, lo1 = (g.lm(i, side) for i in (36, 37, 38, 39, 40, 41))

    def spline(points, k):
        pts = sorted(points, key=lambda p: p[0])
        return CubicSpline([p[0] for p in pts], [p[k] for p in pts], bc_type="natural")

    upper = [outer, up1, up2, inner]
    lower = [outer, lo1, lo2, inner]
    x_lo, x_hi = sorted((outer[0], inner[0]))
    return (spline(upper, 1), spline(lower, 1), spline(upper, 2), spline(lower, 2), x_lo, x_hi)


def _eyelids(g: _Geometry, side: int, upper_frac: float, lower_frac: float, close: bool = False,
             up_reach: float = 11.0, low_reach: float = 7.0) -> np.ndarray:
    """Move the upper lid by ``upper_frac`` and the lower lid by ``lower_frac`` of the eye opening.

    Vertices between the lids are interpolated linearly (the eye surface stretches or collapses),
    skin above / below follows with a falloff over ``up_reach`` / ``low_reach`` mm. With ``close``
    the upper lid instead lands exactly on the lower lid's new position, landmark on landmark
    (37 -> 41 and 38 -> 40, 0-based), depth included: a blink.
    """
    from scipy.interpolate import CubicSpline

    yu, yl, zu, zl, x_lo, x_hi = _eye_curves(g, side)
    half = 0.5 * (x_hi - x_lo)
    u = (g.x - 0.5 * (x_lo + x_hi)) / half
    taper = 1.0 - smoothstep(0.8, 1.08, np.abs(u))  # motion fades out at the eye corners

    def opening(x):
        return np.maximum(yu(x) - yl(x), 0.0)

    def lower_target(x):
        """Displacement of the lower lid point above x (y and z)."""
        return lower_frac * opening(x), np.zeros_like(x)

    x = np.clip(g.x, x_lo, x_hi)
    d_low_y, d_low_z = lower_target(x)
    if close:
        # x-warp taking each upper-lid landmark onto the lower-lid landmark it closes onto
        outer, inner = g.lm(36, side), g.lm(39, side)
        knots = sorted([(outer[0], 0.0), (inner[0], 0.0),
                        (g.lm(37, side)[0], g.lm(41, side)[0] - g.lm(37, side)[0]),
                        (g.lm(38, side)[0], g.lm(40, side)[0] - g.lm(38, side)[0])])
        warp = CubicSpline([k[0] for k in knots], [k[1] for k in knots], bc_type="natural")
        dx = warp(x)
        xt = np.clip(x + dx, x_lo, x_hi)
        ty, tz = lower_target(xt)
        d_up_x = dx
        d_up_y = (yl(xt) + ty) - yu(x)
        d_up_z = (zl(xt) + tz) - zu(x)
    else:
        d_up_x = np.zeros_like(x)
        d_up_y = upper_frac * opening(x)
        d_up_z = np.zeros_like(x)
    y_up, y_low = yu(x), yl(x)
    t = np.clip((g.y - y_low) / np.maximum(y_up - y_low, 1e-6), 0.0, 1.0)
    above = g.y >= y_up
    below = g.y <= y_low
    fall = np.where(above, bump(g.y - y_up, up_reach), np.where(below, bump(y_low - g.y, low_reach), 1.0))
    # share of the upper lid's motion (1 above the lid line, 0 below, linear across the eye)
    share = np.where(above, 1.0, np.where(below, 0.0, t))
    d = np.zeros((g.n, 3))
    d[:, 0] = share * d_up_x
    d[:, 1] = share * d_up_y + (1.0 - share) * d_low_y
    d[:, 2] = share * d_up_z + (1.0 - share) * d_low_z
    d *= (fall * taper)[:, None]
    # confine to this eye's neighbourhood, front of the face only
    near = (np.abs(u) < 1.2) & (g.y > y_low - low_reach - 1) & (g.y < y_up + up_reach + 1)
    return d * (near * g.front)[:, None]


# --- channel builders (each returns an (N, 3) delta) ------------------------------------------

def _jaw_open(g: _Geometry) -> np.ndarray:
    hinge = np.array([0.0, JAW_HINGE_YZ[0], JAW_HINGE_YZ[1]])
    rot = _rot_x(np.radians(JAW_ANGLE_DEG))
    moved = (g.P - hinge) @ rot.T + hinge + np.asarray(JAW_GLIDE)
    return (moved - g.P) * g.jaw_w[:, None]


def _lip_mask(g: _Geometry, inner: float = 1.0, outer: float = 1.6) -> np.ndarray:
    return (1.0 - smoothstep(inner, outer, g.mouth_r)) * g.front


def _mouth_close(g: _Geometry, jaw: np.ndarray) -> np.ndarray:
    share = MOUTH_CLOSE_UPPER_SHARE
    lip = _lip_mask(g, 1.05, 1.9)
    # the jaw's motion of the lower lip's inner edge, as a function of x, carried to the upper lip
    lo = g.lower_inner
    order = np.argsort(g.P[lo, 0])
    xs = g.P[lo, 0][order]
    d_low = np.stack([np.interp(g.x, xs, jaw[lo][order][:, k]) for k in range(3)], 1)
    lower_part = -(1.0 - share) * jaw * lip[:, None]
    upper_part = share * d_low * (lip * (1.0 - g.jaw_w))[:, None]
    return lower_part + upper_part


def _upper_lower(g: _Geometry):
    return 1.0 - g.jaw_w, g.jaw_w


def _mid_profile(g: _Geometry) -> np.ndarray:
    """1 at the mouth's middle, 0 at the corners (smooth)."""
    return bump(np.abs(g.x - g.mouth_c[0]), g.mouth_half * 1.15)


def _funnel(g: _Geometry) -> np.ndarray:
    lip = _lip_mask(g, 0.9, 1.7)
    up, low = _upper_lower(g)
    mid = _mid_profile(g)
    d = np.zeros((g.n, 3))
    d[:, 0] = -0.22 * (g.x - g.mouth_c[0]) * lip
    d[:, 1] = (3.2 * up - 3.8 * low) * mid * lip
    d[:, 2] = 5.5 * lip + 1.5 * mid * lip
    return d


def _pucker(g: _Geometry) -> np.ndarray:
    lip = _lip_mask(g, 0.9, 1.75)
    up, low = _upper_lower(g)
    mid = _mid_profile(g)
    d = np.zeros((g.n, 3))
    d[:, 0] = -0.36 * (g.x - g.mouth_c[0]) * lip
    d[:, 1] = (-0.8 * up + 0.8 * low) * lip
    d[:, 2] = 6.0 * lip + 2.5 * mid * lip
    return d


def _interp_curve(points: np.ndarray):
    """y(x) through (M, 2+) points by linear interpolation in x (flat beyond the ends)."""
    order = np.argsort(points[:, 0])
    xs, ys = points[order, 0], points[order, 1]
    return lambda x: np.interp(x, xs, ys)


def _roll(g: _Geometry, which: str) -> np.ndarray:
    """Turn one lip's red part inward: it narrows toward the mouth line and sinks back."""
    if which == "upper":
        inner = _interp_curve(g.P[g.upper_inner])
        outline = _interp_curve(g.L[48:55])
        sign = 1.0                                   # distance measured upward from the mouth line
    else:
        inner = _interp_curve(g.P[g.lower_inner])
        outline = _interp_curve(g.L[[54, 55, 56, 57, 58, 59, 48]])
        sign = -1.0
    lip_h = np.maximum(sign * (outline(g.x) - inner(g.x)), 0.0)      # red height above x
    depth = sign * (g.y - inner(g.x))                                # distance from the mouth line
    near = (depth >= -0.2) & (np.abs(g.x - g.mouth_c[0]) < g.mouth_half + 12.0)
    s = np.clip(depth / np.maximum(lip_h, 1e-6), 0.0, 1.0)
    beyond = np.where(depth > lip_h, bump(depth - lip_h, 9.0), 1.0)
    part = (1.0 - g.jaw_w) if which == "upper" else g.jaw_w
    w = near * beyond * part * g.front
    d = np.zeros((g.n, 3))
    # the outline comes 55 % of the way to the mouth line; the lip sinks back, most at its edge
    d[:, 1] = -sign * 0.55 * lip_h * s * w
    d[:, 2] = -(3.5 - 1.5 * s) * w * smoothstep(0.0, 2.0, lip_h)
    return d


def _side_mask(g: _Geometry, side: int, start: float = -6.0, end: float = 10.0) -> np.ndarray:
    """0 on the other side of the face, 1 from ``end`` mm past the midline on this side."""
    return smoothstep(start, end, side * g.x)


def _press(g: _Geometry, side: int) -> np.ndarray:
    up, low = _upper_lower(g)
    lip = _lip_mask(g, 0.85, 1.45) * _side_mask(g, side)
    d = np.zeros((g.n, 3))
    d[:, 0] = side * 1.2 * lip
    d[:, 1] = (-1.6 * up + 1.6 * low) * lip
    d[:, 2] = -1.8 * lip
    return d


def _corner_move(g: _Geometry, side: int, move, radius: float, sx: float = 1.0) -> np.ndarray:
    """Move the mouth corner by ``move`` (x given for the subject's right side) with a falloff."""
    corner = g.lm(48, side)
    w = bump(g.dist(corner, (sx, 1.0, 0.7)), radius) * g.front
    # x is written for the subject's right side (negative = outward); mirror it for the left
    mv = np.array([-side * move[0], move[1], move[2]])
    return w[:, None] * mv


def _stretch(g: _Geometry, side: int) -> np.ndarray:
    return _corner_move(g, side, (-7.0, -2.5, -2.0), 30.0)


def _smile(g: _Geometry, side: int, cheek: float = 1.0) -> np.ndarray:
    d = _corner_move(g, side, SMILE_CORNER, 31.0, sx=0.8)
    cheek_c = g.lm(48, side) + np.array([-side * -12.0, 22.0, 0.0])
    cheek_c[2] = g.z[np.argmin(g.dist_xy(cheek_c))]
    w = bump(g.dist(cheek_c, (1.0, 1.2, 0.6)), 24.0) * g.front * cheek
    d += w[:, None] * np.array([side * 1.0, 3.5, 1.5])
    return d


def _frown(g: _Geometry, side: int) -> np.ndarray:
    return _corner_move(g, side, (-1.5, -5.5, -0.5), 24.0)


def _dimple(g: _Geometry, side: int) -> np.ndarray:
    d = _corner_move(g, side, (-2.5, 0.5, -2.5), 18.0)
    pit = g.lm(48, side) + np.array([-side * -9.0, -1.0, 0.0])
    pit[2] = g.z[np.argmin(g.dist_xy(pit))]
    d[:, 2] -= 2.2 * bump(g.dist(pit), 7.0) * g.front
    return d


def _lip_side_profile(g: _Geometry, side: int) -> np.ndarray:
    """Peaks about 10 mm from the midline on ``side`` (over the canine), 0 past the corner."""
    return bump(np.abs(g.x - side * 0.45 * g.mouth_half), g.mouth_half * 0.95)


def _upper_up(g: _Geometry, side: int) -> np.ndarray:
    up, _ = _upper_lower(g)
    # the upper lip's red part and the skin up to below the nose
    reg = (1.0 - smoothstep(0.0, 10.0, g.y - g.L[51, 1])) * g.front
    w = up * reg * _lip_side_profile(g, side) * (g.y > g.mouth_c[1] - 4.0)
    d = np.zeros((g.n, 3))
    d[:, 1] = 5.0 * w
    d[:, 2] = 1.0 * w
    return d


def _lower_down(g: _Geometry, side: int) -> np.ndarray:
    _, low = _upper_lower(g)
    reg = (1.0 - smoothstep(0.0, 12.0, g.L[57, 1] - g.y)) * g.front
    w = low * reg * _lip_side_profile(g, side)
    d = np.zeros((g.n, 3))
    d[:, 1] = -5.0 * w
    d[:, 2] = 0.8 * w
    return d


def _nose_sneer(g: _Geometry, side: int) -> np.ndarray:
    wing = g.lm(31, side) + np.array([-side * -2.0, 5.0, 0.0])
    w = bump(g.dist(wing, (1.0, 0.8, 0.8)), 15.0) * g.front
    side_nose = g.lm(29, side) + np.array([-side * -7.0, 2.0, -8.0])
    w2 = bump(g.dist(side_nose, (1.0, 0.7, 1.0)), 13.0) * g.front
    d = np.zeros((g.n, 3))
    d += w[:, None] * np.array([side * 0.6, 4.5, 0.8])
    d += w2[:, None] * np.array([side * -0.6, 2.2, -1.0])
    # a little of the upper lip goes with it
    up, _ = _upper_lower(g)
    d[:, 1] += 1.0 * up * _lip_mask(g, 0.7, 1.5) * _lip_side_profile(g, side)
    return d


def _below_lower_lid(g: _Geometry, side: int, gap: float = 3.0) -> np.ndarray:
    """1 on skin more than ``gap`` mm below the eye's lower-lid curve, 0 at and above it."""
    eye_outer, eye_inner = g.lm(36, side), g.lm(39, side)
    _, yl, *_ = _eye_curves(g, side)
    lo, hi = sorted((eye_outer[0], eye_inner[0]))
    return smoothstep(0.0, gap, yl(np.clip(g.x, lo, hi)) - g.y)


def _cheek_squint(g: _Geometry, side: int) -> np.ndarray:
    eye_outer, eye_inner = g.lm(36, side), g.lm(39, side)
    c = 0.5 * (eye_outer + eye_inner) + np.array([-side * -4.0, -17.0, 0.0])
    c[2] = g.z[np.argmin(g.dist_xy(c))]
    # the cheek pushes up to the lower lid, which itself rises a little
    w = bump(g.dist(c, (1.0, 1.1, 0.7)), 22.0) * g.front * _below_lower_lid(g, side, 4.0)
    d = w[:, None] * np.array([side * 0.5, 3.5, 1.5])
    return d + _eyelids(g, side, 0.0, 0.12)


def _brow_line_dist(g: _Geometry, idx) -> np.ndarray:
    """Distance (x, y plane, vertical doubled below the brow) from a brow polyline."""
    pts = np.array([g.L[i] for i in idx])
    best = np.full(g.n, np.inf)
    for a, b in zip(pts[:-1], pts[1:]):
        ab = b[:2] - a[:2]
        t = np.clip(((g.P[:, :2] - a[:2]) @ ab) / (ab @ ab), 0.0, 1.0)
        q = a[:2] + t[:, None] * ab
        dy = g.y - q[:, 1]
        # the brow drags skin above it further than the eyelid below it
        dist = np.hypot(g.x - q[:, 0], np.where(dy < 0, 1.8 * dy, 0.8 * dy))
        best = np.minimum(best, dist)
    return best


def _brow_indices(side: int) -> list[int]:
    right = [17, 18, 19, 20, 21]  # outer -> inner, subject's right
    return right if side < 0 else [IBUG_MIRROR[i] for i in right]


def _brow_inner_up(g: _Geometry) -> np.ndarray:
    ws = []
    for side in (-1, 1):
        idx = _brow_indices(side)
        inner = g.L[idx[-1]]
        along = bump(np.abs(g.x - inner[0]), 22.0)  # strongest at the inner end
        ws.append(bump(_brow_line_dist(g, idx[2:]), 16.0) * along)
    w = soft_union(*ws) * g.front
    mid = bump(g.dist_xy(np.array([0.0, g.L[21, 1] + 4.0])), 16.0) * g.front
    w = soft_union(w, 0.6 * mid)
    d = np.zeros((g.n, 3))
    d[:, 1] = 7.0 * w
    d[:, 2] = 0.6 * w
    return d


def _brow_down(g: _Geometry, side: int) -> np.ndarray:
    idx = _brow_indices(side)
    w = bump(_brow_line_dist(g, idx), 15.0) * g.front
    inner_x = g.L[idx[-1], 0]
    outer_x = g.L[idx[0], 0]
    t = np.clip((g.x - outer_x) / (inner_x - outer_x), 0.0, 1.0)   # 0 outer -> 1 inner
    d = np.zeros((g.n, 3))
    d[:, 0] = -side * 2.5 * t * w                                # toward the midline
    d[:, 1] = -(3.0 + 2.5 * t) * w
    d[:, 2] = 0.8 * t * w
    return d


def _brow_outer_up(g: _Geometry, side: int) -> np.ndarray:
    idx = _brow_indices(side)
    outer = g.L[idx[0]]
    along = bump(np.abs(g.x - outer[0]), 30.0)
    w = bump(_brow_line_dist(g, idx[:4]), 16.0) * along * g.front
    d = np.zeros((g.n, 3))
    d[:, 1] = 6.0 * w
    d[:, 0] = side * 0.5 * w
    return d


def _blink(g: _Geometry, side: int) -> np.ndarray:
    return _eyelids(g, side, -0.85, 0.15, close=True)


def _wide(g: _Geometry, side: int) -> np.ndarray:
    return _eyelids(g, side, 0.35, -0.08)


def _squint(g: _Geometry, side: int) -> np.ndarray:
    d = _eyelids(g, side, -0.1, 0.3, low_reach=10.0)
    eye_outer, eye_inner = g.lm(36, side), g.lm(39, side)
    c = 0.5 * (eye_outer + eye_inner) + np.array([0.0, -12.0, 0.0])
    c[2] = g.z[np.argmin(g.dist_xy(c))]
    w = bump(g.dist(c, (1.0, 1.2, 0.7)), 15.0) * g.front * _below_lower_lid(g, side, 3.0)
    d[:, 1] += 1.5 * w
    return d


def _smirk_left(g: _Geometry) -> np.ndarray:
    side = 1
    d = _corner_move(g, side, (-3.5, 5.5, -2.0), 26.0)
    d += 0.5 * _smile(g, side, cheek=1.0) - 0.5 * _corner_move(g, side, SMILE_CORNER, 31.0, sx=0.8)
    d += 0.8 * _dimple(g, side)
    return d


def _build(g: _Geometry) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    jaw = _jaw_open(g)
    out["jawOpen"] = jaw
    out["mouthClose"] = _mouth_close(g, jaw)
    out["mouthFunnel"] = _funnel(g)
    out["mouthPucker"] = _pucker(g)
    out["mouthRollLower"] = _roll(g, "lower")
    out["mouthRollUpper"] = _roll(g, "upper")
    out["browInnerUp"] = _brow_inner_up(g)
    out["mouthSmirkLeft"] = _smirk_left(g)
    sided = {
        "mouthPress": _press, "mouthStretch": _stretch, "mouthSmile": _smile, "mouthFrown": _frown,
        "mouthDimple": _dimple, "mouthUpperUp": _upper_up, "mouthLowerDown": _lower_down,
        "noseSneer": _nose_sneer, "cheekSquint": _cheek_squint, "browDown": _brow_down,
        "browOuterUp": _brow_outer_up, "eyeBlink": _blink, "eyeWide": _wide, "eyeSquint": _squint,
    }
    for stem, fn in sided.items():
        out[stem + "Left"] = fn(g, 1)
        out[stem + "Right"] = fn(g, -1)
    missing = [c for c in ARTICULATION_CHANNELS if c not in out]
    assert not missing, missing  # a programming error, not a user error
    return out


_CACHE: dict[int, tuple[SfmModel, np.ndarray]] = {}


def articulation_basis(model: SfmModel) -> np.ndarray:
    """(len(ARTICULATION_CHANNELS), N, 3) float32 deltas in mm, in ARTICULATION_CHANNELS order.

    Computed once per model object (read-only array).
    """
    hit = _CACHE.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    deltas = _build(_Geometry(model))
    basis = np.stack([deltas[c] for c in ARTICULATION_CHANNELS]).astype(np.float32)
    basis.setflags(write=False)
    _CACHE[id(model)] = (model, basis)
    return basis


def articulation_geometry(model: SfmModel) -> _Geometry:
    """The rest shape, landmarks and jaw field the deltas were authored on (for tests/renderers)."""
    return _Geometry(model)
