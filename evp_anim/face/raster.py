"""A small vectorised CPU rasteriser (numpy + OpenCV) for previews of the face rig.

Screen space throughout: pixels, x to the right, y DOWN, z toward the viewer (larger z is nearer),
the centre of the top-left pixel at (0, 0). Meshes come from :func:`evp_anim.face.sfm.load_sfm`,
whose triangles are counter-clockwise seen from the front in a y-up frame; after the y flip a
front-facing triangle is clockwise on screen.

How it works: every triangle's bounding box is enumerated as candidate pixels (one flat numpy
array for all triangles, built with ``np.repeat``), barycentric coordinates decide
coverage, and a z-buffer (``np.maximum.at``) keeps the nearest surface per pixel. Colours and
normals are interpolated per pixel (Gouraud/Phong-like Lambert + ambient). Supersampling renders
``supersample`` x larger and averages blocks for anti-aliasing. A 256 x 256 face at 2x
supersampling takes roughly 15-30 ms on one CPU core.

:class:`FaceRenderer` can instead draw through OpenGL (moderngl on a headless EGL context: Mesa's
llvmpipe on a CPU), which gives the same picture about 10x faster; the numpy path stays as the
default and the fallback where no GL context can be made.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import EvpError
from .sfm import split_mouth_loop

# Light from the viewer's upper left, in a y-UP view frame (x right, y up, z toward viewer).
DEFAULT_LIGHT = (-0.35, 0.45, 1.0)
DEFAULT_AMBIENT = 0.38
# Colour given to the inside of surfaces seen from behind (BGR in [0, 1]): a dark mouth/throat red.
DEFAULT_BACK_COLOR = (0.06, 0.05, 0.16)

_CHUNK = 1 << 21  # candidate pixels per numpy block, bounds peak memory (~150 MB)


@dataclass
class Fragments:
    """Result of :func:`rasterize` on an (H, W) grid.

    tri: (H, W) int32 triangle index per pixel, -1 where nothing covers it.
    bary: (H, W, 3) float32 barycentric weights of the triangle's three vertices.
    depth: (H, W) float32 screen z of the nearest surface (-inf where empty).
    front: (H, W) bool, True where the visible triangle faces the viewer.
    """

    tri: np.ndarray
    bary: np.ndarray
    depth: np.ndarray
    front: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.tri >= 0


def rasterize(vertices_px: np.ndarray, triangles: np.ndarray, size: tuple[int, int]) -> Fragments:
    """Z-buffered coverage of a triangle mesh.

    Args:
        vertices_px: (N, 3) pixels (x right, y down, z toward the viewer; larger z wins).
        triangles: (F, 3) vertex indices.
        size: (H, W) of the pixel grid.
    Returns:
        :class:`Fragments` for the grid.
    """
    h, w = int(size[0]), int(size[1])
    v = np.asarray(vertices_px, dtype=np.float64)
    tris = np.asarray(triangles, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise EvpError(f"vertices must have shape (N, 3), got {v.shape}")
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise EvpError(f"triangles must have shape (F, 3), got {tris.shape}")
    if len(tris) == 0 or h <= 0 or w <= 0:
        return _empty(max(h, 0), max(w, 0))

    a, b, c = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    xs = np.stack([a[:, 0], b[:, 0], c[:, 0]], 1)
    ys = np.stack([a[:, 1], b[:, 1], c[:, 1]], 1)
    x0 = np.maximum(np.ceil(xs.min(1)), 0).astype(np.int64)
    x1 = np.minimum(np.floor(xs.max(1)), w - 1).astype(np.int64)
    y0 = np.maximum(np.ceil(ys.min(1)), 0).astype(np.int64)
    y1 = np.minimum(np.floor(ys.max(1)), h - 1).astype(np.int64)
    keep = (np.abs(area2) > 1e-12) & (x1 >= x0) & (y1 >= y0) & np.all(np.isfinite(v[tris]).reshape(len(tris), -1), 1)
    if not keep.any():
        return _empty(h, w)

    # Barycentric weight k is linear in (x, y): w_k = A_k x + B_k y + C_k (already / area).
    # Arrays are edge-major (3, ...) so every per-edge operation runs on contiguous 1-D data,
    # and np.take is used for gathers (several times faster than fancy indexing here).
    inv = np.where(keep, 1.0 / np.where(keep, area2, 1.0), 0.0)
    coef_a = np.empty((3, len(tris)))
    coef_b = np.empty((3, len(tris)))
    coef_c = np.empty((3, len(tris)))
    for k, (p, q) in enumerate(((b, c), (c, a), (a, b))):
        coef_a[k] = (p[:, 1] - q[:, 1]) * inv
        coef_b[k] = (q[:, 0] - p[:, 0]) * inv
        coef_c[k] = (p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]) * inv
    zs = np.stack([a[:, 2], b[:, 2], c[:, 2]])
    # z is linear in (x, y) too: z = sum_k w_k z_k = zA x + zB y + zC
    z_a = (coef_a * zs).sum(0)
    z_b = (coef_b * zs).sum(0)
    z_c = (coef_c * zs).sum(0)
    # y down flips orientation: a front-facing (CCW in y-up) triangle has negative area here
    is_front = area2 < 0

    # Scanline enumeration, vectorised over all triangles: for each (triangle, row) the covered
    # x-span follows from the three edge functions (w_k >= 0), so only covered pixels are made.
    idx_all = np.flatnonzero(keep)
    nrows = (y1 - y0 + 1)[idx_all]
    row_tri = np.repeat(idx_all, nrows)
    row_y = (np.arange(int(nrows.sum()), dtype=np.int64)
             - np.repeat(np.cumsum(nrows) - nrows, nrows) + np.take(y0, row_tri))
    row_yf = row_y.astype(np.float64)
    ca = np.take(coef_a, row_tri, axis=1)                                   # (3, R)
    cd = np.take(coef_b, row_tri, axis=1) * row_yf + np.take(coef_c, row_tri, axis=1)
    eps = 1e-7
    lo_b = np.take(x0, row_tri).astype(np.float64)
    hi_b = np.take(x1, row_tri).astype(np.float64)
    ok = np.ones(len(row_tri), bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(3):
            bound = (-eps - cd[k]) / ca[k]                     # x where edge k crosses the row
            pos, neg = ca[k] > 0, ca[k] < 0
            lo_b = np.where(pos, np.maximum(lo_b, bound), lo_b)
            hi_b = np.where(neg, np.minimum(hi_b, bound), hi_b)
            ok &= (pos | neg) | (cd[k] >= -eps)                # edges parallel to the row
    xl = np.ceil(lo_b)
    xr = np.floor(hi_b)
    npx = np.where(ok & (xr >= xl), xr - xl + 1, 0).astype(np.int64)
    za = np.take(z_a, row_tri).astype(np.float32)
    zd = (np.take(z_b, row_tri) * row_yf + np.take(z_c, row_tri)).astype(np.float32)
    xl_i = np.where(npx > 0, xl, 0).astype(np.int64)
    # first pixel index and depth of every row span; pixels then follow as +1 steps in x
    row_pix0 = row_y * w + xl_i
    row_z0 = za * xl_i.astype(np.float32) + zd
    pix_parts, row_parts, z_parts = [], [], []
    cum = np.cumsum(npx)
    lo = 0
    while lo < len(npx):
        base = cum[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(cum, base + _CHUNK, side="right")))
        cnt = npx[lo:hi]
        total = int(cnt.sum())
        if total:
            start = np.cumsum(cnt) - cnt
            step = np.arange(total, dtype=np.int64) - np.repeat(start, cnt)   # x offset in the span
            pix_parts.append(np.repeat(row_pix0[lo:hi], cnt) + step)
            row_parts.append(np.repeat(np.arange(lo, hi, dtype=np.int64), cnt))
            z_parts.append(np.repeat(row_z0[lo:hi], cnt) + np.repeat(za[lo:hi], cnt) * step.astype(np.float32))
        lo = hi
    if not pix_parts:
        return _empty(h, w)
    pix = np.concatenate(pix_parts) if len(pix_parts) > 1 else pix_parts[0]
    rows = np.concatenate(row_parts) if len(row_parts) > 1 else row_parts[0]
    z = np.concatenate(z_parts) if len(z_parts) > 1 else z_parts[0]

    depth_buf = np.full(h * w, -np.inf, np.float32)
    np.maximum.at(depth_buf, pix, z)
    win = np.flatnonzero(z >= np.take(depth_buf, pix))
    # ties (shared edges at equal depth) resolve to whichever write lands last: either is right
    row_buf = np.full(h * w, -1, np.int64)
    row_buf[np.take(pix, win)] = np.take(rows, win)
    covered = np.flatnonzero(row_buf >= 0)
    r = np.take(row_buf, covered)
    tri_cov = np.take(row_tri, r)
    xf = (covered % w).astype(np.float32)
    tri_buf = np.full(h * w, -1, np.int32)
    tri_buf[covered] = tri_cov
    bary_buf = np.zeros((3, h * w), np.float32)
    # spans were cut with a tiny tolerance, so weights can dip ~1e-7 below 0: harmless
    for k in range(3):
        bary_buf[k, covered] = (np.take(ca[k], r) * xf + np.take(cd[k], r)).astype(np.float32)
    front_buf = np.zeros(h * w, bool)
    front_buf[covered] = np.take(is_front, tri_cov)
    return Fragments(tri_buf.reshape(h, w), np.moveaxis(bary_buf.reshape(3, h, w), 0, -1),
                     depth_buf.reshape(h, w), front_buf.reshape(h, w))


def _empty(h: int, w: int) -> Fragments:
    return Fragments(np.full((h, w), -1, np.int32), np.zeros((h, w, 3), np.float32),
                     np.full((h, w), -np.inf, np.float32), np.zeros((h, w), bool))


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(N, 3) unit area-weighted vertex normals of a mesh given in a right-handed frame."""
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    fn = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    # scatter-add of face normals onto their corners; bincount is ~20x faster than np.add.at
    corner = t.T.reshape(-1)
    n = np.stack([np.bincount(corner, np.tile(fn[:, c], 3), minlength=len(v)) for c in range(3)], 1)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.maximum(norm, 1e-12)


def screen_normals(vertices_px: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Vertex normals of a y-down screen-space mesh, returned in the y-UP view frame (+z = viewer)."""
    v = np.asarray(vertices_px, dtype=np.float64) * np.array([1.0, -1.0, 1.0])
    return vertex_normals(v, triangles)


def lambert(normals: np.ndarray, light: tuple[float, float, float] = DEFAULT_LIGHT,
            ambient: float = DEFAULT_AMBIENT) -> np.ndarray:
    """(...,) shading factor ambient + (1 - ambient) * max(0, n . l) for (..., 3) unit normals (y-up frame)."""
    lv = np.asarray(light, np.float64)
    lv = lv / np.linalg.norm(lv)
    return ambient + (1.0 - ambient) * np.clip(normals @ lv, 0.0, None)


def _downsample(img: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter an (H*f, W*f, C) float32 image down by ``factor``."""
    if factor == 1:
        return img
    h, w = img.shape[0] // factor, img.shape[1] // factor
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def shade_fragments(frag: Fragments, triangles: np.ndarray, front_values: np.ndarray,
                    back_values: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(H, W, C) float32 image of per-vertex values interpolated over the visible triangles.

    ``front_values`` / ``back_values`` (N, C) are used where the visible side faces toward /
    away from the viewer; ``background`` (C,) fills uncovered pixels.
    """
    h, w = frag.tri.shape
    n_vert, chans = front_values.shape
    table = np.concatenate([np.asarray(front_values, np.float32), np.asarray(back_values, np.float32)])
    img = np.empty((h * w, chans), np.float32)
    img[:] = np.asarray(background, np.float32)
    flat_tri = frag.tri.reshape(-1)
    pix = np.flatnonzero(flat_tri >= 0)
    bary3 = np.ascontiguousarray(np.moveaxis(frag.bary, -1, 0)).reshape(3, -1)
    tri_t = np.ascontiguousarray(np.asarray(triangles).T)
    tid = np.take(flat_tri, pix)
    # back-facing pixels read the second half of the table
    offset = np.where(np.take(frag.front.reshape(-1), pix), 0, n_vert)
    acc = None
    for k in range(3):
        term = np.take(bary3[k], pix)[:, None] * np.take(table, np.take(tri_t[k], tid) + offset, axis=0)
        acc = term if acc is None else acc + term
    img[pix] = acc
    return img.reshape(h, w, chans)


def supersample_vertices(vertices_px: np.ndarray, factor: int) -> np.ndarray:
    """Map pixel coordinates onto a ``factor`` x finer grid (pixel centres stay pixel centres)."""
    v = np.array(vertices_px, dtype=np.float64, copy=True)
    v[:, :2] = (v[:, :2] + 0.5) * factor - 0.5
    v[:, 2] *= factor
    return v


def _as_bgr_float(color, what: str) -> np.ndarray:
    c = np.asarray(color, dtype=np.float64).reshape(-1)
    if c.shape != (3,):
        raise EvpError(f"{what} must be 3 numbers (B, G, R), got {color!r}")
    return c / 255.0 if c.max() > 1.0 else c


def render_mesh(vertices_px: np.ndarray, triangles: np.ndarray, size: tuple[int, int],
                vertex_colors: np.ndarray | None = None, background=(0, 0, 0),
                light: tuple[float, float, float] = DEFAULT_LIGHT, ambient: float = DEFAULT_AMBIENT,
                back_color=DEFAULT_BACK_COLOR, supersample: int = 2) -> np.ndarray:
    """Shaded render of a mesh -> (H, W, 3) uint8 BGR.

    Args:
        vertices_px: (N, 3) pixels, x right, y down, z toward the viewer (same scale as x, y).
        triangles: (F, 3) indices, counter-clockwise seen from the front in a y-up frame (as SFM).
        size: (H, W) output size in pixels.
        vertex_colors: (N, 3) BGR albedo in [0, 1]; None = light grey.
        background: BGR, 0-255 integers (or floats in [0, 1]).
        light, ambient: Lambert light direction (y-up view frame) and ambient fraction.
        back_color: BGR in [0, 1] for surfaces seen from behind (unlit), or None to shade them
            like front faces with the normal flipped.
        supersample: render at this factor and average (anti-aliasing); 1 disables it.
    """
    h, w = int(size[0]), int(size[1])
    ss = int(supersample)
    if ss < 1:
        raise EvpError(f"supersample must be >= 1, got {supersample}")
    v = np.asarray(vertices_px, dtype=np.float64)
    n_vert = v.shape[0]
    if vertex_colors is None:
        colors = np.full((n_vert, 3), 0.8)
    else:
        colors = np.asarray(vertex_colors, dtype=np.float64)
        if colors.shape != (n_vert, 3):
            raise EvpError(f"vertex_colors must have shape ({n_vert}, 3), got {colors.shape}")
    bg = _as_bgr_float(background, "background")
    tris = np.asarray(triangles, dtype=np.int64)
    frag = rasterize(supersample_vertices(v, ss), tris, (h * ss, w * ss))
    normals = screen_normals(v, tris)
    # Gouraud: light the vertices, interpolate the lit colour (front and back side separately)
    lit_front = (colors * lambert(normals, light, ambient)[:, None]).astype(np.float32)
    if back_color is None:
        lit_back = (colors * lambert(-normals, light, ambient)[:, None]).astype(np.float32)
    else:
        lit_back = np.broadcast_to(_as_bgr_float(back_color, "back_color").astype(np.float32), (n_vert, 3))
    img = shade_fragments(frag, tris, lit_front, lit_back, bg)
    out = _downsample(img, ss)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --- OpenGL path (moderngl on a headless EGL context, e.g. Mesa's llvmpipe) ---------------------

# The GL path draws what FaceRenderer's numpy path computes: the mesh at ``supersample`` x the
# output size into an 8-bit colour buffer with a depth buffer (larger screen z wins), each
# front-facing fragment coloured texture(uv) * shade with uv and shade interpolated linearly in
# screen space (noperspective, as the barycentrics of :func:`rasterize`), back-facing fragments
# one constant colour; the buffer is read back as BGR bytes (the channels are BGR throughout, GL
# never interprets them) and box-filtered by cv2.resize(INTER_AREA) as the numpy path does.
# 8-bit texture and buffer (instead of float) make llvmpipe ~1.5x faster and change pixels by at
# most ~1 level. A shader box filter was measured 3x slower than read-back + cv2.resize.
# Rows: NDC y is mapped so that GL's row 0 is the image's top row, so no flip is needed on
# read-back; the winding seen by GL is then the one :func:`rasterize` computes, in which a
# front-facing triangle is clockwise.
# Cost (llvmpipe, one free core): ~7-9 ms for a 384 x 384 face at 2x; it grows with the side,
# not the area (per triangle and 4x4 block), so it is mostly the 6,800 small triangles' edges.

_GL_MESH_VS = """
#version 330
uniform vec2 u_size;      // output (W, H) in pixels
uniform vec2 u_zrange;    // (centre, half-range) of screen z
in vec3 in_pos;           // output pixels: x right, y down, z toward the viewer
in float in_shade;        // Lambert factor
in vec2 in_uv;            // texel coordinates in the padded texture, texel centres at integers
noperspective out vec2 v_uv;
noperspective out float v_shade;
void main() {
    // pixel centres sit at integers; the supersampled grid keeps them (see supersample_vertices)
    gl_Position = vec4((in_pos.xy + 0.5) / u_size * 2.0 - 1.0, (in_pos.z - u_zrange.x) / u_zrange.y, 1.0);
    v_uv = in_uv;
    v_shade = in_shade;
}
"""

_GL_MESH_FS = """
#version 330
uniform sampler2D u_tex;
uniform vec2 u_tex_size;  // (W, H) texels
uniform vec3 u_back;      // colour of surfaces seen from behind
noperspective in vec2 v_uv;
noperspective in float v_shade;
out vec4 f_color;
void main() {
    vec3 c = gl_FrontFacing ? texture(u_tex, (v_uv + 0.5) / u_tex_size).rgb * v_shade : u_back;
    f_color = vec4(c, 1.0);
}
"""

# Most of the face is plain skin: its triangles (found once, from the static UVs) are drawn with a
# shader that multiplies the skin colour instead of sampling the texture, the same value the
# texture lookup returns there. Texture sampling was ~40% of llvmpipe's time per frame.
_GL_PLAIN_VS = """
#version 330
uniform vec2 u_size;
uniform vec2 u_zrange;
in vec3 in_pos;
in float in_shade;
noperspective out float v_shade;
void main() {
    gl_Position = vec4((in_pos.xy + 0.5) / u_size * 2.0 - 1.0, (in_pos.z - u_zrange.x) / u_zrange.y, 1.0);
    v_shade = in_shade;
}
"""

_GL_PLAIN_FS = """
#version 330
uniform vec3 u_skin;      // the texture's value over the plain-skin triangles
uniform vec3 u_back;
noperspective in float v_shade;
out vec4 f_color;
void main() {
    vec3 c = gl_FrontFacing ? u_skin * v_shade : u_back;
    f_color = vec4(c, 1.0);
}
"""

_GL_TEX_PAD = 2  # background texels around the texture: sampling past its edge blends to the background
_GL_PID: int | None = None   # the process that made the first GL context (see _GLFaceRaster.create)


def _mesh_box(px: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1): half-open output-pixel box holding every pixel that (N, 2+) vertices
    ``px`` can touch (1 px margin for the anti-aliasing), clipped to a ``size`` square frame.
    Non-finite vertices are left out (their triangles are not drawn); none left gives an empty box."""
    px = px[np.isfinite(px[:, :2]).all(1)]
    if len(px) == 0:
        return 0, 0, 0, 0
    x0 = int(np.clip(np.floor(px[:, 0].min()) - 1, 0, size))
    x1 = int(np.clip(np.ceil(px[:, 0].max()) + 2, 0, size))
    y0 = int(np.clip(np.floor(px[:, 1].min()) - 1, 0, size))
    y1 = int(np.clip(np.ceil(px[:, 1].max()) + 2, 0, size))
    return x0, x1, y0, y1


def _plain_triangles(tex8: np.ndarray, uv: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which triangles sample only plain skin, and that skin colour.

    Args:
        tex8: (H, W, 4) uint8 texture; uv: (N, 2) texel coordinates (texel centres at integers);
        triangles: (F, 3) vertex indices.
    Returns:
        (F,) bool: True where every texel a bilinear lookup inside the triangle's UV footprint can
        touch (its UV bounding box, 1 texel margin) has the texture's most common colour;
        and that colour, (3,) uint8.
    """
    rgb = tex8[..., :3]
    # Each colour as one integer (r·2¹⁶ + g·2⁸ + b): a 1-D unique is ~20x faster than np.unique's
    # row sort (0.9 s for the preview head's texture, paid by every preview), and the integers
    # sort as the rows do, so a tie between two colours goes the same way.
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    keys, counts = np.unique(packed.reshape(-1), return_counts=True)
    top = int(keys[counts.argmax()])
    skin = np.array([top >> 16, (top >> 8) & 255, top & 255], np.uint8)
    other = np.any(rgb != skin, axis=2).astype(np.int32)
    # summed-area table: texels of another colour in any box in O(1)
    sat = np.zeros((other.shape[0] + 1, other.shape[1] + 1), np.int64)
    sat[1:, 1:] = other.cumsum(0).cumsum(1)
    tuv = uv[triangles]                                           # (F, 3, 2)
    h, w = other.shape
    u0 = np.clip(np.floor(tuv[..., 0].min(1)) - 1, 0, w).astype(np.int64)
    u1 = np.clip(np.ceil(tuv[..., 0].max(1)) + 2, 0, w).astype(np.int64)
    v0 = np.clip(np.floor(tuv[..., 1].min(1)) - 1, 0, h).astype(np.int64)
    v1 = np.clip(np.ceil(tuv[..., 1].max(1)) + 2, 0, h).astype(np.int64)
    n_other = sat[v1, u1] - sat[v0, u1] - sat[v1, u0] + sat[v0, u0]
    plain = (n_other == 0) & (u1 > u0) & (v1 > v0) & np.isfinite(tuv).all((1, 2))
    return plain, skin


class _GLFaceRaster:
    """One FaceRenderer's mesh, texture and buffers on a headless OpenGL context.

    Built by :meth:`create`, which returns None when no context can be made (moderngl missing,
    no EGL/Mesa, ...); the caller then keeps the numpy path. A context belongs to the thread and
    process that made it, so the owner makes one of these per thread and process; :meth:`render`
    makes its context current for the call (several renderers may share a thread).
    """

    def __init__(self, ctx, texture: np.ndarray, uv: np.ndarray, triangles: np.ndarray,
                 background: np.ndarray, back_color: np.ndarray, supersample: int,
                 culled_triangles: np.ndarray | None = None):
        """``triangles``: (F, 3) drawn two-sided; ``culled_triangles``: (P, 3) or None, drawn after
        them with back faces culled (the head parts, whose back faces are never seen)."""
        self.ctx = ctx
        self.ss = int(supersample)
        self.n_vert = len(uv)
        pad = _GL_TEX_PAD
        tex = np.ones((texture.shape[0] + 2 * pad, texture.shape[1] + 2 * pad, 4), np.float32)
        tex[..., :3] = background.astype(np.float32)
        tex[pad:-pad, pad:-pad, :3] = texture
        tex8 = np.clip(tex * 255.0 + 0.5, 0, 255).astype(np.uint8)
        self.tex = ctx.texture((tex.shape[1], tex.shape[0]), 4, tex8.tobytes())
        self.tex.repeat_x = self.tex.repeat_y = False
        self.prog = ctx.program(vertex_shader=_GL_MESH_VS, fragment_shader=_GL_MESH_FS)
        self.prog["u_tex_size"].value = (float(tex.shape[1]), float(tex.shape[0]))
        self.prog["u_back"].value = tuple(float(c) for c in back_color)
        self.prog["u_tex"].value = 0
        self.plain = ctx.program(vertex_shader=_GL_PLAIN_VS, fragment_shader=_GL_PLAIN_FS)
        self.plain["u_back"].value = tuple(float(c) for c in back_color)
        uv_pad = np.asarray(uv, np.float64) + pad
        plain, skin = _plain_triangles(tex8, uv_pad, np.asarray(triangles, np.int64))
        self.plain["u_skin"].value = tuple(float(c) / 255.0 for c in skin)
        self.pos = ctx.buffer(reserve=self.n_vert * 16)          # (x, y, z, shade) float32 per vertex
        self.uv = ctx.buffer(np.ascontiguousarray(uv_pad, np.float32).tobytes())
        tris = np.asarray(triangles, np.int32)
        self.ibo = ctx.buffer(np.ascontiguousarray(tris[~plain]).tobytes())
        self.ibo_plain = ctx.buffer(np.ascontiguousarray(tris[plain]).tobytes())
        self.vao = ctx.vertex_array(self.prog, [(self.pos, "3f 1f", "in_pos", "in_shade"),
                                                (self.uv, "2f", "in_uv")],
                                    index_buffer=self.ibo, index_element_size=4)
        self.vao_plain = ctx.vertex_array(self.plain, [(self.pos, "3f 1f", "in_pos", "in_shade")],
                                          index_buffer=self.ibo_plain, index_element_size=4)
        self.n_textured, self.n_plain = int((~plain).sum()), int(plain.sum())
        self.n_culled = 0 if culled_triangles is None else len(culled_triangles)
        if self.n_culled:
            self.ibo_culled = ctx.buffer(np.ascontiguousarray(np.asarray(culled_triangles, np.int32)).tobytes())
            self.vao_culled = ctx.vertex_array(self.prog, [(self.pos, "3f 1f", "in_pos", "in_shade"),
                                                           (self.uv, "2f", "in_uv")],
                                               index_buffer=self.ibo_culled, index_element_size=4)
        self.bg = tuple(float(c) for c in background)
        self.bg_u8 = np.clip(np.asarray(background, np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        self._targets: dict = {}   # output size -> framebuffer at size * supersample
        self._blank: dict = {}     # output size -> (size, size, 3) uint8 background frame
        self._read_buf: np.ndarray | None = None   # read-back memory, reused frame to frame
        info = ctx.info
        self.max_side = min(int(info["GL_MAX_RENDERBUFFER_SIZE"]), int(info["GL_MAX_VIEWPORT_DIMS"][0]),
                            int(info["GL_MAX_VIEWPORT_DIMS"][1]))

    def _readback(self, n_bytes: int) -> np.ndarray:
        """A (≥ n_bytes,) uint8 buffer for read-backs, kept and grown as boxes need."""
        if self._read_buf is None or self._read_buf.size < n_bytes:
            self._read_buf = np.empty(n_bytes, np.uint8)
        return self._read_buf

    def fits(self, size: int) -> bool:
        """Whether a ``size`` square output (``size * supersample`` buffers) fits this driver."""
        return 0 < size * self.ss <= self.max_side

    @classmethod
    def create(cls, *args) -> "_GLFaceRaster | None":
        global _GL_PID
        import os

        # A forked child inherits the parent's Mesa state (its EGL display, and llvmpipe's thread
        # pool without the threads): a new context there could hang, so it keeps to numpy.
        if _GL_PID is not None and _GL_PID != os.getpid():
            return None
        try:
            import moderngl
        except ImportError:
            return None
        try:
            ctx = moderngl.create_standalone_context(backend="egl")
        except Exception:  # noqa: BLE001 - any failure to get a context means "use numpy"
            try:
                ctx = moderngl.create_standalone_context()
            except Exception:  # noqa: BLE001
                return None
        _GL_PID = os.getpid()
        try:
            with ctx:
                return cls(ctx, *args)
        except Exception:  # noqa: BLE001 - e.g. a driver that rejects the shaders
            ctx.release()
            return None

    def _target(self, size: int):
        if size not in self._targets:
            ctx, hi = self.ctx, size * self.ss
            self._targets[size] = ctx.framebuffer([ctx.renderbuffer((hi, hi), 4)], ctx.depth_renderbuffer((hi, hi)))
        return self._targets[size]

    def render(self, px: np.ndarray, shade: np.ndarray, size: int) -> np.ndarray:
        """(size, size, 3) uint8 BGR of the mesh at (N, 3) output pixels ``px`` with (N,) ``shade``."""
        import moderngl

        # Only the mesh's bounding box (in output pixels, 1 px margin) is read back and filtered;
        # the rest of the frame is background. (The clear is whole-buffer: llvmpipe clears a whole
        # buffer ~4x faster than a scissored part of it.)
        x0, x1, y0, y1 = _mesh_box(px, size)
        if size not in self._blank:
            self._blank[size] = np.ascontiguousarray(np.broadcast_to(self.bg_u8, (size, size, 3)))
        # a contiguous copy: ~10x faster than broadcasting the 3 background values into a new frame
        out = self._blank[size].copy()
        if x1 <= x0 or y1 <= y0:
            return out
        ss = self.ss
        box = (x0 * ss, y0 * ss, (x1 - x0) * ss, (y1 - y0) * ss)   # GL window rect: our rows, see above
        data = np.empty((self.n_vert, 4), np.float32)
        data[:, :3] = px
        data[:, 3] = shade
        z_lo, z_hi = float(px[:, 2].min()), float(px[:, 2].max())
        ctx = self.ctx
        # every GL call inside: entering makes this context current, leaving restores the previous
        # one (none, or another renderer's), after which GL calls would go nowhere
        with ctx:
            fbo = self._target(size)
            self.pos.write(data.tobytes())
            # a margin keeps the nearest and farthest surface strictly inside the depth range
            zrange = ((z_lo + z_hi) / 2, (z_hi - z_lo) / 2 * 1.01 + 1e-3)
            for prog in (self.prog, self.plain):
                prog["u_size"].value = (float(size), float(size))
                prog["u_zrange"].value = zrange
            fbo.use()
            fbo.clear(*self.bg, 1.0, depth=0.0)
            ctx.enable(moderngl.DEPTH_TEST)
            ctx.disable(moderngl.CULL_FACE | moderngl.BLEND)
            ctx.depth_func = ">"
            ctx.front_face = "cw"
            self.tex.use(0)
            if self.n_textured:
                self.vao.render(moderngl.TRIANGLES)
            if self.n_plain:
                self.vao_plain.render(moderngl.TRIANGLES)
            if self.n_culled:
                # last, so the face's depth rejects the hidden parts' fragments early; culling
                # skips their back faces (front faces are clockwise on screen, see above)
                ctx.enable(moderngl.CULL_FACE)
                ctx.cull_face = "back"
                self.vao_culled.render(moderngl.TRIANGLES)
                ctx.disable(moderngl.CULL_FACE)
            # RGBA read-back is ~2x cheaper than RGB (no repacking); cvtColor drops alpha (SIMD).
            # Read into a kept buffer: fbo.read() zeroes a new one and wraps it in bytes each
            # frame (~1.4 ms of a 768×768 box).
            img = self._readback(box[2] * box[3] * 4)[:box[2] * box[3] * 4].reshape(box[3], box[2], 4)
            fbo.read_into(img, viewport=box, components=4, alignment=1)
        if ss > 1:
            img = cv2.resize(img, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        out[y0:y1, x0:x1] = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        return out


# --- face renderer ------------------------------------------------------------------------------

# Albedo colours, BGR in [0, 1].
SKIN_BGR = (0.60, 0.71, 0.89)
LIP_BGR = (0.36, 0.36, 0.74)
SCLERA_BGR = (0.90, 0.92, 0.94)
IRIS_BGR = (0.17, 0.27, 0.38)
PUPIL_BGR = (0.03, 0.03, 0.04)
LASH_BGR = (0.10, 0.10, 0.13)
BROW_BGR = (0.20, 0.26, 0.36)
MOUTH_BGR = (0.07, 0.05, 0.22)
TEETH_BGR = (0.82, 0.87, 0.90)
# the head parts (parts=True): the eyeball's iris, the tongue, the cavity and the eye sockets
EYE_IRIS_BGR = (0.42, 0.30, 0.16)        # blue-grey, as the Blender head's iris
EYE_CORNER_BGR = (0.66, 0.69, 0.82)      # the eye surface left at the openings' corners: shadowed white
TONGUE_BGR = (0.36, 0.38, 0.72)
INTERIOR_BGR = (0.08, 0.06, 0.27)
SOCKET_BGR = (0.20, 0.22, 0.36)

_TEX_PX_PER_MM = 4.0
_TEX_MARGIN_MM = 4.0
_MOUTH_STRIP_H = 64          # texel rows below the face: the interior fan's teeth-to-dark ramp
# eyeball texture (parts=True): an azimuthal-equidistant map of the ball around its front pole,
# _EYE_TEX_R texels from the pole to _EYE_TEX_DEG degrees of arc; beyond that it is all sclera
_EYE_TEX_R = 120
_EYE_TEX_DEG = 100.0
_EYE_TEX_PAD = 4
_SWATCH = 12                 # side of a one-colour swatch (texels); parts sample its centre


class _HeadParts:
    """The eyeballs, eye sockets, teeth, tongue and mouth interior of a preview head.

    Meshes and placement are :mod:`evp_anim.face.head_parts`' (those of the Blender head), at a
    resolution for a few hundred pixels: 24 segments a ring, the ball closed at 120° from its
    front pole (the rest is never seen through the eye opening), 3 cross-sections a tooth.
    Vertices follow the face's (index ``n_face`` on); their order and triangles are the same for
    every identity, their rest positions are computed per identity (:meth:`rest`, the last one
    cached). Triangles are wound so the visible side is the front (outward for the closed parts,
    toward the opening for the bowls): back faces are never seen and are culled.

    The eye openings cut from the face (``holes``, (F,) bool over the rig's triangles) are the
    mean face's: the SFM meshes are in dense correspondence, so the eye surface is the same
    triangles for every identity, and one set keeps the GL index buffers fixed.
    """

    def __init__(self, rig, n_face: int, eye_uv, swatch_uv: dict):
        from . import head_parts as hp

        self.rig = rig
        self.n_face = int(n_face)
        self.jaw_k = list(rig.channels).index("jawOpen") if "jawOpen" in rig.channels else None
        lay = hp.rig_face_layout(rig, np.asarray(rig.vertices(None), np.float64))
        self.holes = lay.eye_holes
        meshes = self._meshes(lay)
        names, counts, tris, uvs = [], [], [], []
        start = 0
        for name, verts, faces in meshes:
            t = hp.triangulate(faces)
            v = np.asarray(verts, np.float64)
            fn = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
            if name.startswith(("socket", "interior")):
                # bowls: the inside (facing the opening, +z) is the visible side
                flip = fn[:, 2].sum() < 0
            else:
                # closed meshes: outward, i.e. a positive signed volume
                flip = np.einsum("ij,ij->", v[t[:, 0]], np.cross(v[t[:, 1]], v[t[:, 2]])) < 0
            tris.append((t[:, ::-1] if flip else t) + start)
            if name.startswith("eye"):
                uvs.append(eye_uv(v - lay.eye_centres[int(name[-1])]))
            else:
                uvs.append(np.broadcast_to(swatch_uv[name.split("_")[0]], (len(v), 2)))
            names.append(name)
            counts.append(len(v))
            start += len(v)
        self.n_vert = start
        self.triangles = np.concatenate(tris) + self.n_face          # (P, 3) in the whole mesh
        self.uv = np.concatenate(uvs).astype(np.float32)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        self.slices = {n: slice(int(a), int(b)) for n, a, b in zip(names, bounds[:-1], bounds[1:])}
        self._local_tris = self.triangles - self.n_face
        self._key = None
        self._rest = None

    @staticmethod
    def _meshes(lay):
        """[(name, verts (V, 3) mm, faces)] in vertex order; names end in the eye's index."""
        from . import head_parts as hp

        ev, ef, _ = hp.eye_geometry(back_deg=120.0, rings_behind=4, segments=24)
        out = [(f"eye_{i}", ev + c, ef) for i, c in enumerate(lay.eye_centres)]
        out += [(f"socket_{i}", *hp.socket_geometry(lay, i, rings=5, segments=16)) for i in range(2)]
        out.append(("teeth_upper", *hp.upper_teeth_geometry(lay, columns=3)))
        out.append(("teeth_lower", *hp.lower_teeth_geometry(lay, columns=3)))
        out.append(("tongue", *hp.tongue_geometry(lay, segments=16, rings=7)))
        iv, if_, _ = hp.interior_geometry(lay, rings=6, segments=24)
        out.append(("interior", iv, if_))
        return out

    def rest(self, identity):
        """Rest geometry for ``identity`` ((S,) or None: the mean face): a dict with the layout,
        verts (P, 3) mm, normals (P, 3) unit, ``opened`` (the interior at jawOpen = 1) and
        ``cavity`` (P,) light factor (1 at the front teeth, darker deeper in the mouth)."""
        from . import head_parts as hp

        key = None if identity is None else np.asarray(identity, np.float32).tobytes()
        if self._rest is not None and key == self._key:
            return self._rest
        lay = hp.rig_face_layout(self.rig, np.asarray(self.rig.vertices(identity), np.float64))
        meshes = self._meshes(lay)
        verts = np.concatenate([m[1] for m in meshes]).astype(np.float64)
        s = self.slices["interior"]
        _, _, w = hp.interior_geometry(lay, rings=6, segments=24)
        opened = hp.interior_opened(lay, verts[s], w)
        # light falls off into the mouth (little light reaches the back of the cavity): a factor
        # by depth behind the upper incisors' front, so back teeth and the throat go dark; the
        # sockets are in the lids' shadow
        depth = hp.teeth_front(lay) - verts[:, 2]
        cavity = np.ones(len(verts))
        for name, falloff, floor in (("teeth_upper", 40.0, 0.45), ("teeth_lower", 40.0, 0.45),
                                     ("tongue", 50.0, 0.5), ("interior", 60.0, 0.45)):
            sl = self.slices[name]
            cavity[sl] = np.clip(1.0 - depth[sl] / falloff, floor, 1.0)
        for i in range(2):
            cavity[self.slices[f"socket_{i}"]] = 0.6
        # ambient share of the Lambert light: teeth are translucent and their small bevelled
        # crowns would otherwise show every facet's normal
        ambient = np.full(len(verts), DEFAULT_AMBIENT)
        for name in ("teeth_upper", "teeth_lower"):
            ambient[self.slices[name]] = 0.7
        self._rest = dict(layout=lay, verts=verts, normals=vertex_normals(verts, self._local_tris),
                          opened=opened, cavity=cavity.astype(np.float32), ambient=ambient.astype(np.float32))
        self._key = key
        return self._rest

    def pose(self, identity, weights, gaze) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(verts (P, 3) mm, unit normals (P, 3), light factor (P,), ambient share (P,)) in the head
        frame for one frame: the eyes turned by ``gaze`` ((2,) radians [pitch, yaw], as the head pose; None:
        ahead), the lower teeth and tongue turned and the cavity's floor lowered by the frame's
        jawOpen weight (``weights``: (K,) rig weights or None)."""
        from . import head_parts as hp
        from .projection import euler_to_matrix

        r = self.rest(identity)
        lay = r["layout"]
        v, n = r["verts"], r["normals"]
        jaw = 0.0
        if weights is not None and self.jaw_k is not None:
            jaw = float(np.asarray(weights).reshape(-1)[self.jaw_k])
        g = np.zeros(2) if gaze is None else np.asarray(gaze, np.float64).reshape(-1)
        if g.shape != (2,) or not np.isfinite(g).all():
            raise EvpError(f"gaze must be 2 finite angles (pitch, yaw) in radians, got {gaze!r}")
        if jaw == 0.0 and not g.any():
            return v, n, r["cavity"], r["ambient"]
        v, n = v.copy(), n.copy()
        if g.any():
            rot = euler_to_matrix(np.array([g[0], g[1], 0.0]))
            for i in range(2):
                sl, c = self.slices[f"eye_{i}"], lay.eye_centres[i]
                v[sl] = (v[sl] - c) @ rot.T + c
                n[sl] = n[sl] @ rot.T
        if jaw != 0.0:
            a = jaw * lay.jaw_angle
            rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
            for name in ("teeth_lower", "tongue"):
                sl = self.slices[name]
                v[sl] = hp.jaw_rotate(v[sl], lay, jaw)
                n[sl] = n[sl] @ rx.T
            sl = self.slices["interior"]
            # the cavity's shape key, as in Blender (its normals stay the rest ones: it is dark)
            v[sl] = v[sl] + jaw * (r["opened"] - v[sl])
        return v, n, r["cavity"], r["ambient"]


class FaceRenderer:
    """Shaded preview renders of a :class:`~evp_anim.face.rig.FaceRig`.

    The face is textured procedurally in the mean face's frontal (x, y) coordinates, which serve
    as UVs, so the texture follows every deformation: skin, red lips, eyes and brows.

    ``parts=False`` (the default; the synthetic footage and contact sheets use it): the eyes are
    painted on the mask's eye surface (white, iris, pupil, dark lash line) and a blink collapses
    them under the upper lid; the mouth opening gets a dark interior with an upper row of teeth:
    a fan of extra triangles from the opening's rim, pushed back into the head, which only shows
    where the lips part.

    ``parts=True`` (the preview): the Blender head's parts (:mod:`evp_anim.face.head_parts`):
    24 mm eyeballs (white, blue-grey iris, pupil) behind openings cut into the eye surface,
    turned by ``render(gaze=...)``, the lids (eyeBlink) closing over them; upper and lower teeth,
    a tongue and a dark mouth cavity, the lower teeth, tongue and cavity floor following the
    frame's jawOpen weight; light falls off into the mouth. A closed mouth hides them all.

    Two backends draw the same picture (SSIM >= 0.999 between them, mean difference < 0.1 of a
    level; tests/test_preview_speed_render.py): ``"numpy"`` (:func:`rasterize` + ``cv2.remap``,
    ~100 ms a 384 x 384 frame on one core, the default, bit-stable) and ``"gl"`` (moderngl on a
    headless EGL context, i.e. Mesa's llvmpipe on a CPU: ~10 ms). ``backend="auto"`` (what the
    preview and the contact sheet use) takes GL when a context can be made and numpy otherwise;
    the environment variable ``EVP_ANIM_RASTER=numpy`` turns "auto" into numpy. :attr:`backend_used`
    says which one the last :meth:`render` took.

    ``skin``: the skin's albedo, BGR in [0, 1] (or 0-255 integers); the default is
    :data:`SKIN_BGR` (the synthetic film clip gives its two people different skin tones).
    """

    def __init__(self, rig, supersample: int = 2, background=(40, 40, 40), backend: str = "numpy",
                 parts: bool = False, skin=SKIN_BGR):
        if backend not in ("auto", "gl", "numpy"):
            raise EvpError(f"backend must be 'auto', 'gl' or 'numpy', got {backend!r}")
        self.rig = rig
        self.backend = backend
        self.backend_used: str | None = None
        self.parts = bool(parts)
        self._gl_local = None   # threading.local: this thread's GL backend and the pid that made it
        self.supersample = int(supersample)
        self.background = _as_bgr_float(background, "background")
        model = rig.model
        mean = np.asarray(model.mean, np.float64)
        lm = mean[model.landmark_vertices]
        self._loop = np.asarray(model.mouth_loop, np.int64)
        n = len(mean)
        m = len(self._loop)
        # UVs: texel coordinates of each vertex's rest (x, y), y flipped so the texture is upright
        lo = mean[:, :2].min(0) - _TEX_MARGIN_MM
        hi = mean[:, :2].max(0) + _TEX_MARGIN_MM
        k = _TEX_PX_PER_MM
        tex_w = int(np.ceil((hi[0] - lo[0]) * k)) + 1
        tex_h = int(np.ceil((hi[1] - lo[1]) * k)) + 1
        self._to_tex = lambda p: np.stack([(p[..., 0] - lo[0]) * k, (hi[1] - p[..., 1]) * k], -1)
        # a strip below the face holds the mouth interior: teeth at its top, dark below; with the
        # parts, a second one holds the eyeball's map and one-colour swatches
        strip_h = _MOUTH_STRIP_H
        eye_side = 2 * (_EYE_TEX_R + _EYE_TEX_PAD)
        parts_h = eye_side if self.parts else 0
        width = max(tex_w, eye_side + 5 * (_SWATCH + 4)) if self.parts else tex_w
        tex = np.empty((tex_h + strip_h + parts_h, width, 3), np.float32)
        tex[:] = _as_bgr_float(skin, "skin")   # lips, eyes and brows are painted over it
        self._paint_face(tex[:tex_h], self._to_tex(lm), painted_eyes=not self.parts)
        ramp = np.clip((np.arange(strip_h) - 14.0) / 6.0, 0.0, 1.0)[:, None, None]
        tex[tex_h:tex_h + strip_h] = ((1.0 - ramp) * np.asarray(TEETH_BGR, np.float32)
                                      + ramp * np.asarray(MOUTH_BGR, np.float32))
        # surfaces seen from behind show this texel (the strip's dark end) at 0.6 light
        self._back_uv = np.array([tex_w / 2.0, tex_h + strip_h - 2.0], np.float32)
        uv = self._to_tex(mean)
        if self.parts:
            y0 = tex_h + strip_h
            self._paint_eyeball(tex[y0:y0 + eye_side, :eye_side])
            swatch_uv = {}
            for i, (name, colour) in enumerate((("teeth", TEETH_BGR), ("tongue", TONGUE_BGR),
                                                ("interior", INTERIOR_BGR), ("socket", SOCKET_BGR))):
                x0 = eye_side + 4 + i * (_SWATCH + 4)
                tex[y0 + 4:y0 + 4 + _SWATCH, x0:x0 + _SWATCH] = colour
                # the swatch's centre: bilinear lookups there read its colour only
                swatch_uv[name] = np.array([x0 + (_SWATCH - 1) / 2.0, y0 + 4 + (_SWATCH - 1) / 2.0])
            centre_uv = np.array([_EYE_TEX_PAD + _EYE_TEX_R - 0.5, y0 + _EYE_TEX_PAD + _EYE_TEX_R - 0.5])

            def eye_uv(d):
                """(V, 2) texels of eyeball points ``d`` (V, 3) mm from its centre (looking +z)."""
                d = d / np.linalg.norm(d, axis=1, keepdims=True)
                theta = np.degrees(np.arccos(np.clip(d[:, 2], -1.0, 1.0)))
                rho = np.minimum(theta / _EYE_TEX_DEG, 1.0) * _EYE_TEX_R
                phi = np.arctan2(d[:, 1], d[:, 0])
                return centre_uv + np.stack([rho * np.cos(phi), -rho * np.sin(phi)], 1)

            self._parts = _HeadParts(rig, n, eye_uv, swatch_uv)
            self._face_tris = np.asarray(model.triangles, np.int64)[~self._parts.holes]
            self._uv = np.concatenate([uv, self._parts.uv]).astype(np.float32)
            # face normals over the whole mask (the cut eye surface included), so the lids shade
            # as they did before the openings were cut
            normal_tris = np.asarray(model.triangles, np.int64)
            self._triangles = self._face_tris
        else:
            self._parts = None
            # interior vertices: rim copies (m) and a centre (1); UVs in the strip
            rim_uv = np.stack([np.full(m, tex_w / 2.0), np.full(m, tex_h + 2.0)], 1)
            upper_arc, _, _ = split_mouth_loop(mean, self._loop)
            upper = np.isin(self._loop, upper_arc)
            rim_uv[~upper, 1] = tex_h + strip_h - 2.0  # lower rim and corners: dark (tongue/throat)
            centre_uv = self._back_uv[None].astype(np.float64)
            self._uv = np.concatenate([uv, rim_uv, centre_uv]).astype(np.float32)
            fan = np.stack([n + np.arange(m), n + (np.arange(m) + 1) % m, np.full(m, n + m)], 1)
            # orient the fan to face the viewer like the face (CCW seen from +z)
            rim = mean[self._loop]
            c = rim.mean(0)
            area_z = np.cross(rim[fan[:, 1] - n] - c, rim[fan[:, 0] - n] - c)[:, 2].sum()
            if area_z > 0:
                fan = fan[:, [1, 0, 2]]
            self._triangles = np.concatenate([np.asarray(model.triangles, np.int64), fan])
            normal_tris = self._triangles
        self.texture = tex
        self._n = n
        # for the per-frame vertex normals: the (N, F) incidence matrix that sums face normals onto
        # their vertices (one sparse product instead of a scatter-add), and the corners, edge-major
        from scipy.sparse import csr_matrix

        f = len(normal_tris)
        n_norm = n if self.parts else len(self._uv)
        self._incidence = csr_matrix((np.ones(3 * f), (normal_tris.T.reshape(-1), np.tile(np.arange(f), 3))),
                                     shape=(n_norm, f))
        self._tri_t = np.ascontiguousarray(normal_tris.T)
        # surfaces seen from behind show the mouth interior's texel at 0.6 light: one colour,
        # sampled here as the numpy path samples it
        c_uv = self._back_uv.reshape(1, 1, 2)
        bg = tuple(float(c) for c in self.background)
        self._back_color = cv2.remap(self.texture, c_uv[..., 0], c_uv[..., 1], cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=bg)[0, 0] * np.float32(0.6)

    @staticmethod
    def _paint_eyeball(tex: np.ndarray) -> None:
        """The eyeball's map into the (2(R+pad), 2(R+pad), 3) texture block ``tex``: sclera, an
        iris darkening to a limbal ring with faint radial fibres, and the pupil, anti-aliased over
        a texel; radius in texels is arc from the front pole (see ``_EYE_TEX_*``)."""
        from .head_parts import EYE_RADIUS_MM, IRIS_RADIUS_MM, PUPIL_RADIUS_MM

        side = tex.shape[0]
        c = _EYE_TEX_PAD + _EYE_TEX_R - 0.5
        yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
        rho = np.hypot(xx - c, yy - c)
        per_deg = _EYE_TEX_R / _EYE_TEX_DEG
        r_pupil = np.degrees(np.arcsin(PUPIL_RADIUS_MM / EYE_RADIUS_MM)) * per_deg
        r_iris = np.degrees(np.arcsin(IRIS_RADIUS_MM / EYE_RADIUS_MM)) * per_deg
        # inside-ness of each boundary, linear over one texel (anti-aliased edges)
        in_iris = np.clip(r_iris + 0.5 - rho, 0.0, 1.0)[..., None]
        in_pupil = np.clip(r_pupil + 0.5 - rho, 0.0, 1.0)[..., None]
        t = np.clip((rho - r_pupil) / max(r_iris - r_pupil, 1e-6), 0.0, 1.0)
        fibres = 1.0 + 0.12 * np.cos(np.arctan2(yy - c, xx - c) * 37.0)
        iris = np.asarray(EYE_IRIS_BGR, np.float32) * (1.15 - 0.65 * t ** 3)[..., None] * fibres[..., None]
        # the sclera greys a little toward the ball's side, where the lids shadow it
        sclera = np.asarray(SCLERA_BGR, np.float32) * np.clip(1.0 - 0.12 * rho / _EYE_TEX_R, 0.8, 1.0)[..., None]
        out = sclera * (1 - in_iris) + iris * in_iris
        tex[:] = out * (1 - in_pupil) + np.asarray(PUPIL_BGR, np.float32) * in_pupil

    def _paint_face(self, tex: np.ndarray, lm: np.ndarray, painted_eyes: bool = True) -> None:
        """Draw lips, eyes and brows into the (H, W, 3) texture; ``lm`` are (68, 2) texel points.
        ``painted_eyes``: iris and pupil painted on the eye surface (False: the eye surface only
        shows at the openings' corners, as white)."""
        k = _TEX_PX_PER_MM
        shift = 4
        fx = float(1 << shift)

        def pts(idx):
            return np.round(lm[list(idx)] * fx).astype(np.int32)

        def blend(mask, color, alpha=1.0):
            a = (mask.astype(np.float32) / 255.0 * alpha)[..., None]
            tex[:] = tex * (1.0 - a) + np.asarray(color, np.float32) * a

        h, w = tex.shape[:2]
        # lips: the outer lip outline, softened so the border is not a hard cut
        lips = np.zeros((h, w), np.uint8)
        cv2.fillPoly(lips, [pts(range(48, 60))], 255, cv2.LINE_AA, shift)
        lips = cv2.GaussianBlur(lips, (0, 0), 0.6 * k)
        blend(lips, LIP_BGR)
        for eye in (range(36, 42), range(42, 48)):
            idx = list(eye)
            eye_mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(eye_mask, [pts(idx)], 255, cv2.LINE_AA, shift)
            blend(eye_mask, SCLERA_BGR if painted_eyes else EYE_CORNER_BGR)
            if painted_eyes:
                centre = lm[[idx[1], idx[2], idx[4], idx[5]]].mean(0)
                opening = np.linalg.norm(lm[idx[1]] - lm[idx[5]])
                iris = np.zeros((h, w), np.uint8)
                cv2.circle(iris, tuple(np.round(centre * fx).astype(int)), int(round(0.62 * opening * fx)),
                           255, -1, cv2.LINE_AA, shift)
                blend(np.minimum(iris, eye_mask), IRIS_BGR)
                pupil = np.zeros((h, w), np.uint8)
                cv2.circle(pupil, tuple(np.round(centre * fx).astype(int)), int(round(0.25 * opening * fx)),
                           255, -1, cv2.LINE_AA, shift)
                blend(np.minimum(pupil, eye_mask), PUPIL_BGR)
            lash = np.zeros((h, w), np.uint8)
            cv2.polylines(lash, [pts(idx[:4])], False, 255, max(1, int(round(0.7 * k))), cv2.LINE_AA, shift)
            blend(lash, LASH_BGR, 0.9)
        for brow in (range(17, 22), range(22, 27)):
            bm = np.zeros((h, w), np.uint8)
            cv2.polylines(bm, [pts(brow)], False, 255, int(round(3.2 * k)), cv2.LINE_AA, shift)
            bm = cv2.GaussianBlur(bm, (0, 0), 0.8 * k)
            blend(bm, BROW_BGR, 0.85)

    def render(self, identity=None, weights=None, rotation=(0.0, 0.0, 0.0), size: int = 256,
               scale: float | None = None, translation=None, gaze=None) -> np.ndarray:
        """(size, size, 3) uint8 BGR render.

        Args:
            identity: (63,) std units or None; weights: (K,) rig weights or None (neutral).
            rotation: (3,) radians [pitch, yaw, roll] (see :mod:`evp_anim.face.projection`).
            size: output side in pixels.
            scale, translation: px/mm and (2,) px; default: the aligned crop of
                :func:`~evp_anim.face.projection.aligned_crop_transform`.
            gaze: (2,) radians [pitch, yaw] of the eyes in the head (a Track's ``gaze`` row; same
                axes as the head rotation: positive yaw looks toward the subject's left, i.e.
                the image's right); None looks ahead. Only drawn with ``parts=True``.
        """
        from .projection import aligned_crop_transform, euler_to_matrix

        size = int(size)
        if scale is None or translation is None:
            s0, t0 = aligned_crop_transform(size)
            scale = s0 if scale is None else scale
            translation = t0 if translation is None else translation
        verts = self.rig.vertices(identity, weights).astype(np.float64)
        if verts.ndim != 2:
            raise EvpError("FaceRenderer.render takes one frame: weights must have shape (K,)")
        rmat = euler_to_matrix(np.asarray(rotation, np.float64))
        if self._parts is not None:
            pv, pn, light, amb = self._parts.pose(identity, weights, gaze)
            allv = np.concatenate([verts, pv])
        else:
            rim = verts[self._loop] + np.array([0.0, 0.0, -2.5])
            centre = rim.mean(0, keepdims=True) + np.array([0.0, 0.0, -14.0])
            allv = np.concatenate([verts, rim, centre])
        rp = allv @ rmat.T
        t = np.asarray(translation, np.float64)
        px = np.stack([scale * rp[:, 0] + t[0], t[1] - scale * rp[:, 1], scale * rp[:, 2]], 1)
        if self._parts is not None:
            # per-vertex Lambert factor (Gouraud); the parts' normals are their rest normals turned
            # with them (rigid), in the y-up view frame as the face's
            shade = np.empty(len(px), np.float32)
            shade[:self._n] = lambert(self._normals(px[:self._n]))
            lv = np.asarray(DEFAULT_LIGHT, np.float64) / np.linalg.norm(DEFAULT_LIGHT)
            lit = np.clip((pn @ rmat.T) @ lv, 0.0, None)
            shade[self._n:] = (amb + (1.0 - amb) * lit) * light
        else:
            shade = lambert(self._normals(px)).astype(np.float32)
            shade[self._n:] = 0.75          # the interior fan gets a flat dim light
        gl = self._gl_raster() if np.isfinite(px).all() else None
        if gl is not None and gl.fits(size):
            self.backend_used = "gl"
            return gl.render(px, shade, size)
        self.backend_used = "numpy"
        return self._render_numpy(px, shade, size)

    def _visible_triangles(self, px: np.ndarray) -> np.ndarray:
        """(F', 3) triangles the numpy path rasterises for output pixels ``px``: the face's, and
        the parts' front-facing ones (their back faces are never seen; GL culls the same ones)."""
        if self._parts is None:
            return self._triangles
        t = self._parts.triangles
        a, b, c = px[t[:, 0]], px[t[:, 1]], px[t[:, 2]]
        area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        return np.concatenate([self._face_tris, t[area2 < 0]])   # y down: front faces are clockwise

    def _render_numpy(self, px: np.ndarray, shade: np.ndarray, size: int) -> np.ndarray:
        """(size, size, 3) uint8 BGR of (N, 3) output pixels ``px`` with (N,) ``shade`` by
        :func:`rasterize` and ``cv2.remap``, on the mesh's bounding box only (pasted onto the
        background), which is the same picture as the whole frame for ~2/3 of the work."""
        ss = self.supersample
        bg_u8 = np.clip(self.background * 255.0 + 0.5, 0, 255).astype(np.uint8)
        out = np.empty((size, size, 3), np.uint8)
        out[:] = bg_u8
        x0, x1, y0, y1 = _mesh_box(px, size)
        if x1 <= x0 or y1 <= y0:
            return out
        # whole output pixels of shift keep the supersampled grid aligned with the full frame's
        local = px - np.array([x0, y0, 0.0])
        tris = self._visible_triangles(px)
        frag = rasterize(supersample_vertices(local, ss), tris, ((y1 - y0) * ss, (x1 - x0) * ss))
        front_vals = np.concatenate([self._uv, shade[:, None]], 1)
        # surfaces seen from behind (inside of the lips when the head turns): mouth-interior dark
        back_vals = front_vals.copy()
        back_vals[:, :2] = self._back_uv
        back_vals[:, 2] = 0.6
        # uncovered pixels sample outside the texture, where remap returns the background
        attrs = shade_fragments(frag, tris, front_vals, back_vals, np.array([-10.0, -10.0, 1.0]))
        bg = tuple(float(c) for c in self.background)
        img = cv2.remap(self.texture, attrs[..., 0], attrs[..., 1], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=bg)
        np.multiply(img, attrs[..., 2:3], out=img)
        out[y0:y1, x0:x1] = np.clip(_downsample(img, ss) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return out

    def _normals(self, px: np.ndarray) -> np.ndarray:
        """(N, 3) unit vertex normals in the y-up view frame of (N, 3) screen pixels ``px``
        (as :func:`screen_normals`, with the corner table precomputed)."""
        # coordinate-major copies keep every step on contiguous 1-D arrays (np.cross on (F, 3)
        # rows is several times slower)
        x, y, z = np.ascontiguousarray(px.T)
        y = -y
        i0, i1, i2 = self._tri_t
        ex, ey, ez = x[i1] - x[i0], y[i1] - y[i0], z[i1] - z[i0]
        fx, fy, fz = x[i2] - x[i0], y[i2] - y[i0], z[i2] - z[i0]
        fn = np.stack([ey * fz - ez * fy, ez * fx - ex * fz, ex * fy - ey * fx], 1)
        n = self._incidence @ fn
        return n / np.maximum(np.sqrt((n * n).sum(1, keepdims=True)), 1e-12)

    def _gl_raster(self) -> "_GLFaceRaster | None":
        """The GL backend for this thread and process, made on first use; None for numpy."""
        import os
        import threading

        if self.backend == "numpy" or (self.backend == "auto" and os.environ.get("EVP_ANIM_RASTER") == "numpy"):
            return None
        if self._gl_local is None:
            self._gl_local = threading.local()
        local = self._gl_local
        # a context made in another thread, or in the parent of a forked process, is not usable here
        if getattr(local, "pid", None) != os.getpid():
            parts = self._parts.triangles if self._parts is not None else None
            local.gl = _GLFaceRaster.create(self.texture, self._uv, self._triangles, self.background,
                                            self._back_color, self.supersample, parts)
            local.pid = os.getpid()
            if local.gl is None and self.backend == "gl":
                raise EvpError("the GL renderer is not available (needs moderngl and an EGL OpenGL "
                               "driver such as Mesa's); use backend='numpy'")
        return local.gl
