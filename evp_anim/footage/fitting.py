"""Fit the Surrey Face Model to tracked landmarks: one identity per video, pose + expression per frame.

Two stages (``fit_landmarks`` runs both):

1. **Identity (eos-py, then joint).** ``eos.fitting.fit_shape_and_pose`` (shape, blendshapes and
   camera, with eos's contour landmarks for the jawline) runs on up to ``identity_frames`` frames
   spread over the clip and their shape coefficients (63, SFM std units) are averaged. That
   average starts :func:`fit_identity_joint`, which refits the identity on up to ``joint_frames``
   frames at once with this module's landmark definition: many views of one face pin down its
   depth, which a single frame cannot (it halves the reprojection error on synthetic footage).
   One identity per video keeps the face from "breathing" between frames.
2. **Pose and expression per frame (fast path, numpy, batched over all frames).** With the
   identity fixed: a linear affine camera projected to the nearest scaled rotation starts the
   pose (as eos's ``estimate_orthographic_projection_linear``), then joint Gauss-Newton steps on
   pose and expression minimise the reprojection error, the blendshape weights kept in [0, 1.5]
   (non-negative, as eos's NNLS). Frames are independent, so all are solved at once (~1000 fits/s
   on one core, against ~10/s for eos's full ``fit_shape_and_pose``).

Conventions (see :mod:`evp_anim.face.projection`): rotation radians [pitch, yaw, roll],
translation px, scale px/mm, such that ``project(landmarks_3d, rotation, translation, scale)``
reproduces the 2D landmarks.

Landmark convention. dlib does not put its 68 points exactly on the SFM landmark vertices (its
jawline sits on or outside the silhouette, its inner-lip and brow points a few mm off). Left as
is, the identity fit absorbs that bias into the face's shape and the pose tilts to match it. So
the fit matches dlib's points to the landmark vertices plus a fixed per-point 3D offset in the
model frame (:data:`DLIB_LANDMARK_OFFSETS`, learnt on synthetic clips disjoint from the ones the
benchmark measures; ``FitOptions.landmark_offsets=None`` turns it off for landmarks that are the
vertices themselves). The track's ``landmarks_3d`` stay the bare vertices (the rig's landmark
definition, which EVP Eq. 8 re-poses), so ``project(landmarks_3d, pose)`` lies a few px from
dlib's points (``FitResult.reprojection_fixed``), while ``FitResult.reprojection`` is the error
of the points the fit matched.

Jawline. A detector's jawline in a turned head follows the silhouette, which slides over the
mesh. The fit down-weights the jawline points (``jaw_weight``); :class:`ContourCandidates`
(``FitOptions.contour``) instead re-matches them per frame to the silhouette for the current
pose, as eos's contour fitting does. On dlib-tracked synthetic footage (256 px faces) the
silhouette matching did not lower the error (dlib's near-side jawline lies outside the mesh's
silhouette), so it is off by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import EvpError
from ..tracks import DEFAULT_FPS
from ..face.channels import RIG_CHANNELS, SFM_EMOTION_CHANNELS
from ..face.projection import euler_to_matrix, matrix_to_euler, project

# Upper bound of a fitted blendshape weight (nominal range [0, 1]; a little slack for strong faces).
# Bounding it also keeps the pose/expression alternation from trading scale against expression.
MAX_WEIGHT = 1.5

# dlib's 68-point convention against the SFM landmark vertices: (68, 3) mm, model frame (x to the
# subject's left, y up, z towards the camera), mean removed. Learnt by
# ``benchmarks/bench_fitting.py --calibrate``: dlib run on synthetic footage (seeds 21-24, 256 px
# faces) and, with the true pose, identity and expression, the per-point 3D offset that best
# explains dlib's points (least squares over all frames). The accuracy benchmark measures on
# other clips (seeds 0, 3, 5, 11). Without it the identity fit absorbs dlib's bias into the face
# shape and the pose and reprojection errors grow (2.3 deg yaw, 3.0 px on 256 px faces).
DLIB_LANDMARK_OFFSETS = np.array([
    [-4.8, 4.6, 3.6], [-5.6, 3.9, 6.3], [-5.5, 0.0, 13.2], [-7.2, 0.9, 14.4],
    [-2.6, -0.4, 15.3], [1.0, -0.0, 13.2], [0.6, 1.5, 8.8], [1.7, 0.5, 6.6],
    [-1.2, 0.2, -3.0], [-3.5, 0.3, 8.0], [-3.1, 0.8, 7.7], [-3.6, -1.2, 11.5],
    [0.1, -2.1, 14.2], [4.1, -1.1, 14.6], [3.4, -2.5, 16.8], [3.3, 0.3, 8.9],
    [1.8, -0.2, 4.9], [-1.4, 1.8, -2.3], [1.3, 2.8, -4.3], [2.9, 2.5, -7.8],
    [4.9, 1.0, -6.2], [2.8, -0.3, -3.6], [-0.6, -0.1, -1.2], [-3.2, 1.1, -2.8],
    [-1.8, 1.9, -4.7], [-0.1, 1.6, -6.1], [2.1, 0.0, -6.5], [0.8, -6.3, -1.5],
    [0.6, -0.9, -2.7], [0.6, 1.8, -5.0], [0.9, 1.2, -3.2], [-0.5, 2.2, -1.1],
    [0.6, 2.1, -0.5], [0.6, 1.9, -0.3], [0.6, 2.4, -0.7], [1.3, 2.3, -0.8],
    [2.4, -0.5, -4.6], [0.3, 0.1, -6.6], [0.3, -0.8, -5.9], [0.0, 0.4, -5.4],
    [2.0, 0.7, -4.5], [-0.9, -0.3, -5.3], [-0.9, 0.3, -5.1], [-0.8, -1.1, -5.9],
    [-0.7, -0.1, -7.6], [-3.0, -1.6, -5.5], [0.4, -0.9, -6.6], [-2.7, 0.3, -5.9],
    [1.0, -0.5, -4.4], [3.5, -1.2, -1.5], [-0.3, -0.1, -2.6], [0.8, -0.9, -3.1],
    [2.4, -0.2, -3.2], [-1.8, -1.1, -2.8], [-0.8, -0.5, -4.5], [-1.6, -3.0, -2.2],
    [-1.2, -0.8, -2.5], [0.2, -0.5, -3.0], [2.2, -0.9, -1.6], [2.6, -2.9, -0.6],
    [5.2, -1.3, -2.9], [7.6, -1.2, 2.4], [0.4, 0.2, -1.5], [-5.7, -0.5, 0.5],
    [-4.3, -1.3, -3.3], [-5.8, -1.7, 0.8], [0.5, -0.2, -1.5], [7.5, -2.0, 2.7]])


# iBUG jawline points except the chin (point 9): unreliable under yaw (silhouette vs fixed vertex)
_JAW_SIDES = np.r_[0:8, 9:17]


@dataclass
class FitOptions:
    """Fitting settings.

    channels: expression channels to fit (rig names; default the six SFM blendshapes ``sfm_*``).
    identity_frames: frames given to eos for the identity (spread over the clip).
    identity_iterations, lambda_identity: eos ``fit_shape_and_pose`` settings.
    identity_method: ``"joint"`` refines eos's averaged identity by a joint fit over
        ``joint_frames`` frames (:func:`fit_identity_joint`, prior ``lambda_identity_joint``);
        ``"eos"`` keeps eos's average.
    iterations: joint Gauss-Newton steps of the per-frame fit (3-4 converge).
    lambda_expression: Tikhonov weight on expression coefficients (px^2 per unit weight^2).
    jaw_weight: relative weight of the jawline points (not the chin) in the identity fit, and in
        the per-frame fit without ``contour``.
    contour: match the jawline to the model's silhouette per frame (:class:`ContourCandidates`).
    contour_jaw_weight: weight of the jawline points in the per-frame fit with ``contour``.
    landmark_offsets: (68, 3) mm added to the model's landmark points in the fit: the detector's
        landmark convention (default :data:`DLIB_LANDMARK_OFFSETS`, for the dlib tracker; None
        for landmarks that are the SFM vertices themselves, e.g. synthetic ground truth).
    """

    channels: Sequence[str] = SFM_EMOTION_CHANNELS
    identity_frames: int = 12
    identity_method: str = "joint"
    joint_frames: int = 60
    lambda_identity_joint: float = 1.0
    identity_iterations: int = 5
    lambda_identity: float = 30.0
    iterations: int = 4
    lambda_expression: float = 20.0
    jaw_weight: float = 0.1
    contour: bool = False
    contour_jaw_weight: float = 1.0
    landmark_offsets: np.ndarray | None = field(default_factory=lambda: DLIB_LANDMARK_OFFSETS.copy())


@dataclass
class FitResult:
    """Per-frame SFM fit.

    rotation (T, 3) rad, translation (T, 2) px, scale (T,) px/mm, expression (T, K) weights
    (``channels`` order), landmarks_3d (T, 68, 3) mm pose-invariant, identity (63,) std units,
    reprojection (T, 68) px: distance between each tracked landmark and the model point the fit
    matched to it, projected with the fitted pose (eos's reprojection error: the jawline points
    are the silhouette points chosen for that frame when ``FitOptions.contour``, else the fixed
    jawline vertices).
    reprojection_fixed (T, 68) px: the same with the fixed landmark vertices throughout, i.e.
    ``project(landmarks_3d, rotation, translation, scale)`` against the tracked landmarks (equal
    to ``reprojection`` except on the jawline).
    """

    rotation: np.ndarray
    translation: np.ndarray
    scale: np.ndarray
    expression: np.ndarray
    channels: list[str]
    landmarks_3d: np.ndarray
    identity: np.ndarray
    reprojection: np.ndarray
    info: dict = field(default_factory=dict)
    reprojection_fixed: np.ndarray | None = None


class LandmarkModel:
    """The SFM restricted to the 68 landmark vertices: neutral base, identity and expression rows."""

    def __init__(self, rig, channels: Sequence[str] = SFM_EMOTION_CHANNELS):
        self.rig = rig
        self.channels = list(channels)
        bad = [c for c in self.channels if c not in RIG_CHANNELS]
        if bad:
            raise EvpError(f"unknown expression channels {bad}: see evp_anim.face.channels.RIG_CHANNELS")
        lv = rig.landmark_vertices
        self.mean = np.asarray(rig.mean[lv], np.float64)                       # (68, 3)
        self.identity_basis = np.asarray(rig.identity_basis[:, lv], np.float64)  # (63, 68, 3)
        rows = [rig.channel_index(c) for c in self.channels]
        self.expression_basis = np.asarray(rig.deltas[rows][:, lv], np.float64)  # (K, 68, 3)

    def neutral(self, identity: np.ndarray | None) -> np.ndarray:
        """(68, 3) mm landmarks of ``identity`` with no expression."""
        if identity is None or len(identity) == 0:
            return self.mean.copy()
        return self.mean + np.tensordot(np.asarray(identity, np.float64), self.identity_basis, 1)


def _point_weights(jaw_weight: float) -> np.ndarray:
    w = np.ones(68)
    w[_JAW_SIDES] = jaw_weight
    return w


def _affine_pose(y: np.ndarray, p: np.ndarray, pw: np.ndarray):
    """Initial scaled-orthographic pose: linear affine camera, projected to a scaled rotation.

    y (T, 68, 2) y-up px, p (T, 68, 3) mm, pw (68,) weights -> R (T, 3, 3), s (T,), c (T, 2).
    """
    n = y.shape[0]
    sw = np.sqrt(pw)[None, :, None]
    x = np.concatenate([p, np.ones((n, 68, 1))], 2) * sw                               # (T, 68, 4)
    a = np.linalg.solve(np.einsum("tpi,tpj->tij", x, x) + 1e-9 * np.eye(4),
                        np.einsum("tpi,tpj->tij", x, y * sw))                            # (T, 4, 2)
    m = np.swapaxes(a[:, :3, :], 1, 2)                                                  # (T, 2, 3)
    u, sv, vt = np.linalg.svd(m, full_matrices=False)
    r12 = u @ vt                                                                        # nearest orthonormal rows
    s = sv.mean(1)
    rmat = np.concatenate([r12, np.cross(r12[:, 0], r12[:, 1])[:, None, :]], 1)
    c = ((y - s[:, None, None] * np.einsum("tij,tpj->tpi", r12, p)) * pw[None, :, None]).sum(1) / pw.sum()
    return rmat, s, c


def _box_qp(lhs: np.ndarray, rhs: np.ndarray, w: np.ndarray, sweeps: int = 8) -> np.ndarray:
    """Minimise 0.5 w'Aw - b'w subject to 0 <= w <= MAX_WEIGHT, batched: (T, K, K), (T, K), start (T, K).

    Projected coordinate descent: each coordinate step is exact and feasible, so the objective never
    rises (clipping an unconstrained solution could raise it and make the alternation drift).
    """
    w = w.copy()
    diag = np.maximum(np.einsum("tkk->tk", lhs), 1e-12)
    for _ in range(sweeps):
        for j in range(w.shape[1]):
            g = rhs[:, j] - np.einsum("tk,tk->t", lhs[:, j], w)
            w[:, j] = np.clip(w[:, j] + g / diag[:, j], 0.0, MAX_WEIGHT)
    return w


def _rodrigues(omega: np.ndarray) -> np.ndarray:
    """(T, 3) rotation vectors -> (T, 3, 3) matrices."""
    theta = np.linalg.norm(omega, axis=1)
    k = omega / np.maximum(theta, 1e-12)[:, None]
    kx = np.zeros((len(omega), 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx = kx - np.swapaxes(kx, 1, 2)
    st, ct = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    return np.eye(3)[None] + st * kx + (1 - ct) * (kx @ kx)


def _pose_gauss_newton(y, p, rmat, s, c, pw, steps: int = 2):
    """Refine (R, s, c) by Gauss-Newton on the weighted reprojection error (y-up px).

    The rotation update is applied on the left, R <- exp([w]x) R, so d(Rp) = w x (Rp).
    """
    n = y.shape[0]
    for _ in range(steps):
        q = np.einsum("tij,tpj->tpi", rmat, p)                                          # (T, 68, 3)
        res = y - (s[:, None, None] * q[..., :2] + c[:, None, :])                       # (T, 68, 2)
        jac = np.zeros((n, 68, 2, 6))
        sq = s[:, None, None] * q
        jac[..., 0, 1], jac[..., 0, 2] = sq[..., 2], -sq[..., 1]                        # x row: w_y q_z - w_z q_y
        jac[..., 1, 0], jac[..., 1, 2] = -sq[..., 2], sq[..., 0]                        # y row: w_z q_x - w_x q_z
        jac[..., :, 3] = q[..., :2]
        jac[..., 0, 4] = 1.0
        jac[..., 1, 5] = 1.0
        jw = jac * pw[None, :, None, None]
        lhs = np.einsum("tpai,tpaj->tij", jw, jac) + 1e-9 * np.eye(6)
        rhs = np.einsum("tpai,tpa->ti", jw, res)
        d = np.linalg.solve(lhs, rhs[..., None])[..., 0]
        rmat = _rodrigues(d[:, :3]) @ rmat
        s = s + d[:, 3]
        c = c + d[:, 4:]
    return rmat, s, c


def fit_pose_expression(landmarks_2d: np.ndarray, neutral_3d: np.ndarray, expression_basis: np.ndarray,
                        iterations: int = 4, lambda_expression: float = 20.0, jaw_weight: float = 0.1,
                        contour: "ContourCandidates | None" = None,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched scaled-orthographic pose + bounded expression fit, identity fixed.

    The pose starts from a linear affine camera (as eos's
    ``estimate_orthographic_projection_linear``); then joint Gauss-Newton steps on pose and
    expression minimise the true reprojection error plus ``lambda_expression * |w|^2``, the
    weights projected to [0, 1.5] after each step. With ``contour`` the 17 jawline points are
    matched, before every step, to the model's silhouette for the current pose (see
    :class:`ContourCandidates`) instead of fixed vertices.

    Args:
        landmarks_2d: (T, 68, 2) px, y down.
        neutral_3d: (68, 3) mm, the identity's neutral landmarks.
        expression_basis: (K, 68, 3) mm per unit weight (K may be 0).
        contour: jawline candidates for this identity (:meth:`ContourCandidates.for_identity`).
    Returns:
        rotation (T, 3) rad, translation (T, 2) px, scale (T,) px/mm, weights (T, K) in [0, 1.5].
    """
    return _fit_pose_expression(landmarks_2d, neutral_3d, expression_basis, iterations, lambda_expression,
                                jaw_weight, contour)[:4]


def _fit_pose_expression(landmarks_2d, neutral_3d, expression_basis, iterations, lambda_expression, jaw_weight,
                         contour=None):
    """:func:`fit_pose_expression`, also returning the matched model points (T, 68, 3) mm."""
    y2 = np.asarray(landmarks_2d, np.float64)
    if y2.ndim != 3 or y2.shape[1:] != (68, 2):
        raise EvpError(f"landmarks must have shape (T, 68, 2), got {y2.shape}")
    n = y2.shape[0]
    neutral_3d = np.asarray(neutral_3d, np.float64)
    basis = np.asarray(expression_basis, np.float64).reshape(-1, 68, 3)
    k = basis.shape[0]
    # work in a y-up image frame so the camera is Y = s * R[:2] @ P + c
    y = y2 * np.array([1.0, -1.0])
    pw = _point_weights(jaw_weight)
    sw = np.sqrt(pw)[None, :, None]
    w = np.zeros((n, k))
    rmat, s, c = _affine_pose(y, np.broadcast_to(neutral_3d, (n, 68, 3)), pw)
    lam = lambda_expression * np.eye(k)
    nb = np.broadcast_to(neutral_3d, (n, 68, 3))
    bb = np.broadcast_to(basis, (n, k, 68, 3))

    def sub(spec: str, bt: np.ndarray) -> str:  # einsum spec for a per-frame or a shared basis
        return spec if bt.ndim == 4 else spec.replace("tkpj", "kpj")

    def matched(rmat, w):
        """Per-frame model points (T, 68, 3) and their expression basis (T, K, 68, 3)."""
        if contour is None:  # shared basis (K, 68, 3): cheaper products
            return neutral_3d[None] + np.einsum("tk,kpj->tpj", w, basis), basis
        cn, cb = contour.select(rmat, w)
        nt, bt = nb.copy(), bb.copy()
        nt[:, :17], bt[:, :, :17] = cn, cb
        return nt + np.einsum("tk,tkpj->tpj", w, bt), bt

    for _ in range(max(1, iterations)):
        # joint Gauss-Newton step on [rotation (3), scale, translation (2), weights (K)], weights
        # then projected to their bounds; the pose/expression coupling makes alternating slow
        p, bt = matched(rmat, w)                                                        # (T, 68, 3)
        q = np.einsum("tij,tpj->tpi", rmat, p)
        res = y - (s[:, None, None] * q[..., :2] + c[:, None, :])                       # (T, 68, 2)
        jac = np.zeros((n, 68, 2, 6 + k))
        sq = s[:, None, None] * q
        jac[..., 0, 1], jac[..., 0, 2] = sq[..., 2], -sq[..., 1]                        # d(w x q)_x
        jac[..., 1, 0], jac[..., 1, 2] = -sq[..., 2], sq[..., 0]                        # d(w x q)_y
        jac[..., :, 3] = q[..., :2]
        jac[..., 0, 4] = 1.0
        jac[..., 1, 5] = 1.0
        if k:
            jac[..., 6:] = s[:, None, None, None] * np.einsum(sub("tij,tkpj->tpik", bt), rmat[:, :2], bt)
        jw = jac * pw[None, :, None, None]
        lhs = np.einsum("tpai,tpaj->tij", jw, jac) + 1e-9 * np.eye(6 + k)
        rhs = np.einsum("tpai,tpa->ti", jw, res)
        if k:
            lhs[:, 6:, 6:] += lam
            rhs[:, 6:] -= w @ lam
        d = np.linalg.solve(lhs, rhs[..., None])[..., 0]
        rmat = _rodrigues(d[:, :3]) @ rmat
        s = s + d[:, 3]
        c = c + d[:, 4:6]
        if k:
            w = np.clip(w + d[:, 6:], 0.0, MAX_WEIGHT)
    if k:  # polish: exact bounded weights for the final pose, then the pose for those weights
        r12 = rmat[:, :2]
        p, bt = matched(rmat, w)
        p0 = p - np.einsum(sub("tk,tkpj->tpj", bt), w, bt)
        base = s[:, None, None] * np.einsum("tij,tpj->tpi", r12, p0) + c[:, None, :]
        r = ((y - base) * sw).reshape(n, -1)
        jac_w = (s[:, None, None, None] * np.einsum(sub("tij,tkpj->tkpi", bt), r12, bt) * sw[None]).reshape(n, k, -1)
        w = _box_qp(np.einsum("tka,tla->tkl", jac_w, jac_w) + lam, np.einsum("tka,ta->tk", jac_w, r), w)
    p, _ = matched(rmat, w)
    rmat, s, c = _pose_gauss_newton(y, p, rmat, s, c, pw, 2)
    p, _ = matched(rmat, w)
    rotation = matrix_to_euler(rmat)
    translation = np.stack([c[:, 0], -c[:, 1]], 1)
    return rotation, translation, s, w, p


class ContourCandidates:
    """Silhouette correspondence for the 17 iBUG jawline points (eos's contour fitting, batched).

    A detector puts the jawline on the face's outline, which slides over the head as it turns:
    on the far side of a yawed head it moves forward onto the cheek, under a raised chin it moves
    below the chin vertex. For each jawline point this holds a candidate curve: the cut of the
    mesh by the vertical plane through the point's vertex along its outward direction (the
    frontal jawline's normal in the image plane), from the front of the face back to the mesh
    edge, as points on mesh edges (two vertices and a blend, so identity and expression move
    them exactly as vertices). For a pose, :meth:`select` takes on every curve the point that
    projects furthest along the rotated outward direction: the curve's point on the silhouette.
    At a frontal pose these are the jawline vertices themselves, up to a few mm (mesh edges).

    Built from the whole mesh (``rig``); :meth:`for_identity` fixes the identity.
    """

    def __init__(self, rig, channels: Sequence[str], reach_mm: float = 60.0, inward_mm: float = 40.0):
        mean = np.asarray(rig.mean, np.float64)
        lv = rig.landmark_vertices
        tri = np.asarray(rig.triangles)
        edges = np.unique(np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), 1), axis=0)
        jaw = mean[lv[:17], :2]
        centre = np.array([0.0, jaw[:, 1].max()])  # between the jaw's top ends (frontal image plane)
        ia, ib, tt, outward = [], [], [], []
        for i in range(17):
            tan = jaw[min(i + 1, 16)] - jaw[max(i - 1, 0)]
            tan /= np.linalg.norm(tan)
            out = np.array([tan[1], -tan[0]])
            if out @ (jaw[i] - centre) < 0:
                out = -out
            pt = mean[lv[i]]
            da = (mean[edges[:, 0], :2] - pt[:2]) @ tan
            db = (mean[edges[:, 1], :2] - pt[:2]) @ tan
            cross = np.flatnonzero(da * db < 0)
            t = da[cross] / (da[cross] - db[cross])
            x = (1 - t)[:, None] * mean[edges[cross, 0]] + t[:, None] * mean[edges[cross, 1]]
            rel = x - pt
            keep = (np.linalg.norm(rel, axis=1) < reach_mm) & (rel[:, :2] @ out > -inward_mm)
            # the vertex itself is always a candidate
            ia.append(np.r_[lv[i], edges[cross[keep], 0]])
            ib.append(np.r_[lv[i], edges[cross[keep], 1]])
            tt.append(np.r_[0.0, t[keep]])
            outward.append(np.r_[out, 0.0])
        m = max(len(a) for a in ia)
        pad = lambda a: np.r_[a, np.repeat(a[:1], m - len(a))]  # noqa: E731 - repeats the vertex
        self.ia = np.stack([pad(a) for a in ia])                 # (17, M)
        self.ib = np.stack([pad(b) for b in ib])
        self.t = np.stack([pad(t) for t in tt])[..., None]       # (17, M, 1)
        self.outward = np.stack(outward)                         # (17, 3) model frame
        self._rig = rig
        self._rows = [rig.channel_index(ch) for ch in channels]
        self.neutral = self.basis = None

    def _blend(self, arr: np.ndarray) -> np.ndarray:
        """(..., N, 3) per-vertex values -> (..., 17, M, 3) at the candidate points."""
        return (1 - self.t) * arr[..., self.ia, :] + self.t * arr[..., self.ib, :]

    def for_identity(self, identity: np.ndarray | None) -> "ContourCandidates":
        """A copy with the candidate points of ``identity`` (63,) and the expression basis."""
        out = object.__new__(ContourCandidates)
        out.__dict__.update(self.__dict__)
        rig = self._rig
        verts = np.asarray(rig.mean, np.float64)
        if identity is not None and len(identity):
            ident = np.asarray(identity, np.float64)
            sub = np.unique(np.r_[self.ia.ravel(), self.ib.ravel()])
            full = verts.copy()
            full[sub] += np.tensordot(ident, np.asarray(rig.identity_basis[:len(ident)][:, sub], np.float64), 1)
            verts = full
        out.neutral = self._blend(verts)                                                   # (17, M, 3)
        out.basis = self._blend(np.asarray(rig.deltas[self._rows], np.float64))            # (K, 17, M, 3)
        return out

    def select(self, rmat: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Silhouette points for poses ``rmat`` (T, 3, 3) and weights ``w`` (T, K).

        Returns neutral points (T, 17, 3) mm and their expression basis (T, K, 17, 3).
        """
        pts = self.neutral[None] + np.einsum("tk,kcmj->tcmj", w, self.basis)             # (T, 17, M, 3)
        direction = np.einsum("tij,cj->tci", rmat[:, :2], self.outward)                  # (T, 17, 2)
        score = np.einsum("tij,tcmj,tci->tcm", rmat[:, :2], pts, direction)
        best = score.argmax(2)                                                            # (T, 17)
        cidx = np.arange(17)[None, :]
        neutral = self.neutral[cidx, best]                                                # (T, 17, 3)
        basis = np.moveaxis(self.basis[:, cidx, best], 0, 1)                             # (T, K, 17, 3)
        return neutral, basis


def fit_identity_joint(landmarks_2d: np.ndarray, model: "LandmarkModel", init: np.ndarray | None = None,
                       rounds: int = 8, lambda_identity: float = 1.0, lambda_expression: float = 20.0,
                       jaw_weight: float = 0.1, offsets: np.ndarray | None = None) -> np.ndarray:
    """One identity for many frames jointly (the views disambiguate the face's depth).

    Alternates the per-frame pose/expression fit (identity fixed) with a linear least-squares
    update of the 63 identity coefficients over all given frames at once. The prior weight is
    ``lambda_identity`` px^2 per frame per unit std^2.

    Args:
        landmarks_2d: (T, 68, 2) px of the frames to use (a few dozen spread over the clip).
        init: (63,) starting identity (e.g. eos's), default the mean face.
        offsets: (68, 3) mm added to the model's landmarks (the detector calibration,
            :data:`DLIB_LANDMARK_OFFSETS`), default none.
    Returns:
        (63,) float32 identity, SFM std units.
    """
    y2 = np.asarray(landmarks_2d, np.float64)
    n = y2.shape[0]
    basis_id = model.identity_basis                                                   # (S, 68, 3)
    n_id = basis_id.shape[0]
    ident = np.zeros(n_id) if init is None else np.asarray(init, np.float64).copy()
    y = y2 * np.array([1.0, -1.0])
    pw = _point_weights(jaw_weight)
    off = np.zeros((68, 3)) if offsets is None else np.asarray(offsets, np.float64).reshape(68, 3)
    for _ in range(max(1, rounds)):
        neutral = model.neutral(ident) + off
        rot, trans, s, w = fit_pose_expression(y2, neutral, model.expression_basis, 4, lambda_expression, jaw_weight)
        r12 = euler_to_matrix(rot)[:, :2]                                              # (T, 2, 3)
        c = np.stack([trans[:, 0], -trans[:, 1]], 1)
        p_fixed = (model.mean + off)[None] + np.einsum("tk,kpj->tpj", w, model.expression_basis)
        res = y - (s[:, None, None] * np.einsum("tij,tpj->tpi", r12, p_fixed) + c[:, None, :])   # (T, 68, 2)
        jac = s[:, None, None, None] * np.einsum("tij,kpj->tkpi", r12, basis_id)                 # (T, S, 68, 2)
        jw = jac * pw[None, None, :, None]
        lhs = np.einsum("tkpi,tlpi->kl", jw, jac) + lambda_identity * n * np.eye(n_id)
        rhs = np.einsum("tkpi,tpi->k", jw, res)
        ident = np.linalg.solve(lhs, rhs)
    return ident.astype(np.float32)


def _eos_setup(sfm_dir: Path):
    import eos

    from ..face.sfm import BLENDSHAPE_FILE, CONTOUR_FILE, IBUG_FILE, SHAPE_FILE

    d = Path(sfm_dir)
    edge = d / "sfm_3448_edge_topology.json"
    for f in (SHAPE_FILE, BLENDSHAPE_FILE, IBUG_FILE, CONTOUR_FILE, edge.name):
        if not (d / f).is_file():
            raise EvpError(f"SFM file {d / f} not found: run `evp-anim assets download` or pass --sfm-dir")
    model = eos.morphablemodel.load_model(str(d / SHAPE_FILE))
    blends = eos.morphablemodel.load_blendshapes(str(d / BLENDSHAPE_FILE))
    mm = eos.morphablemodel.MorphableModel(model.get_shape_model(), blends,
                                           color_model=eos.morphablemodel.PcaModel(),
                                           vertex_definitions=None,
                                           texture_coordinates=model.get_texture_coordinates())
    return (eos, mm, eos.core.LandmarkMapper(str(d / IBUG_FILE)),
            eos.morphablemodel.load_edge_topology(str(edge)),
            eos.fitting.ContourLandmarks.load(str(d / IBUG_FILE)),
            eos.fitting.ModelContour.load(str(d / CONTOUR_FILE)))


def fit_identity_eos(landmarks_2d: np.ndarray, image_size: tuple[int, int], sfm_dir: str | Path,
                     frames: Sequence[int] | None = None, n_frames: int = 12, iterations: int = 5,
                     lambda_identity: float = 30.0) -> np.ndarray:
    """One identity for a clip: eos ``fit_shape_and_pose`` on several frames, shape coefficients averaged.

    Args:
        landmarks_2d: (T, 68, 2) px.
        frames: frame indices to use (default: ``n_frames`` spread evenly).
    Returns:
        (63,) float32 identity in SFM std units.
    """
    eos, mm, mapper, edges, contour_lm, model_contour = _eos_setup(Path(sfm_dir))
    lm = np.asarray(landmarks_2d, np.float32)
    t = lm.shape[0]
    if frames is None:
        frames = np.unique(np.linspace(0, t - 1, min(n_frames, t)).round().astype(int))
    w, h = int(image_size[0]), int(image_size[1])
    coeffs = []
    for i in frames:
        pts = [eos.core.Landmark(str(j + 1), lm[i, j].reshape(2, 1)) for j in range(68)]
        _mesh, _pose, shape, _blend = eos.fitting.fit_shape_and_pose(
            mm, pts, mapper, w, h, edges, contour_lm, model_contour, num_iterations=iterations,
            lambda_identity=lambda_identity)
        coeffs.append(np.asarray(shape, np.float64))
    ident = np.mean(coeffs, 0)
    full = np.zeros(mm.get_shape_model().get_num_principal_components())
    full[:len(ident)] = ident
    return full.astype(np.float32)


def fit_landmarks(landmarks_2d: np.ndarray, image_size: tuple[int, int], sfm_dir: str | Path,
                  options: FitOptions | None = None, identity: np.ndarray | None = None,
                  valid: np.ndarray | None = None, rig=None) -> FitResult:
    """Fit the SFM to a clip's tracked landmarks (see the module docstring).

    Args:
        landmarks_2d: (T, 68, 2) px; image_size: (width, height) px.
        identity: (63,) to skip the eos identity fit (e.g. known, or from another clip).
        valid: (T,) bool, frames with a detected face (the identity is fitted on those only:
            with :func:`~.tracking.track_frames`, the frames showing the chosen person, so one
            person gives one identity whatever else the clip shows).

    Pose and expression are fitted per frame, independently (no smoothing in time here), so
    nothing crosses a shot cut; the frames where the face is absent get a fit of their filled-in
    landmarks, for continuity only.
    """
    from ..face.rig import FaceRig

    opt = options or FitOptions()
    lm = np.asarray(landmarks_2d, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2) or lm.shape[0] == 0:
        raise EvpError(f"landmarks must have shape (T, 68, 2), got {lm.shape}")
    rig = rig if rig is not None else FaceRig(sfm_dir)
    model = LandmarkModel(rig, opt.channels)
    given_identity = identity is not None
    off = None
    if opt.landmark_offsets is not None:
        off = np.asarray(opt.landmark_offsets, np.float64).reshape(68, 3)
        off = off - off.mean(0)  # a common shift is the translation's, not the landmarks'
    if identity is None:
        idx = np.flatnonzero(valid) if valid is not None else np.arange(len(lm))
        if len(idx) == 0:
            raise EvpError("no frame with a face to fit the identity on")
        pick = idx[np.unique(np.linspace(0, len(idx) - 1, min(opt.identity_frames, len(idx))).round().astype(int))]
        identity = fit_identity_eos(lm, image_size, sfm_dir, frames=pick, iterations=opt.identity_iterations,
                                    lambda_identity=opt.lambda_identity)
        if opt.identity_method == "joint":
            many = idx[np.unique(np.linspace(0, len(idx) - 1, min(opt.joint_frames, len(idx))).round().astype(int))]
            identity = fit_identity_joint(lm[many], model, identity, lambda_identity=opt.lambda_identity_joint,
                                          lambda_expression=opt.lambda_expression, jaw_weight=opt.jaw_weight,
                                          offsets=off)
    identity = np.asarray(identity, np.float32)
    neutral = model.neutral(identity)
    contour = ContourCandidates(rig, model.channels).for_identity(identity) if opt.contour else None
    neutral_fit = neutral
    if off is not None:
        neutral_fit = neutral + off
        if contour is not None:
            contour.neutral = contour.neutral + off[:17, None]
    rot, trans, scale, w, matched = _fit_pose_expression(
        lm, neutral_fit, model.expression_basis, opt.iterations, opt.lambda_expression,
        opt.contour_jaw_weight if opt.contour else opt.jaw_weight, contour)
    lm3d = neutral[None] + np.einsum("tk,kpj->tpj", w, model.expression_basis)
    reproj = np.linalg.norm(project(matched, rot, trans, scale) - lm, axis=2)
    reproj_fixed = np.linalg.norm(project(lm3d, rot, trans, scale) - lm, axis=2)
    info = {"fit": f"identity: {'given' if given_identity else opt.identity_method}; "
                   "pose + expression: batched Gauss-Newton", "channels": list(model.channels),
            "reprojection_px_median": round(float(np.median(reproj)), 3),
            "reprojection_px_median_no_jaw": round(float(np.median(reproj[:, 17:])), 3),
            "reprojection_px_median_fixed_jaw": round(float(np.median(reproj_fixed)), 3)}
    return FitResult(rot.astype(np.float32), trans.astype(np.float32), scale.astype(np.float32),
                     w.astype(np.float32), list(model.channels), lm3d.astype(np.float32), identity,
                     reproj.astype(np.float32), info, reproj_fixed.astype(np.float32))


def footage_track(tracking, fit: FitResult, fps: float, source: str | None = None):
    """Combine a :class:`~.tracking.TrackingResult` and a :class:`FitResult` into a Track."""
    from ..tracks import Track

    info = dict(tracking.info)
    info.update(fit.info)
    if source:
        info["video"] = str(source)
    return Track.new(
        tracking.landmarks, fps=fps, image_size=tracking.image_size, landmarks_3d=fit.landmarks_3d,
        pose_rotation=fit.rotation, pose_translation=fit.translation, pose_scale=fit.scale,
        identity=fit.identity, expression=fit.expression, expression_names=list(fit.channels),
        info=info, provenance={"model": "dlib-68 + eos-py SFM fit", "source_video": str(source or "")},
    )


def track_footage(video: str | Path, sfm_dir: str | Path, tracker_options=None, fit_options: FitOptions | None = None,
                  fps: float = DEFAULT_FPS, progress=None):
    """The whole target-footage stage: decode at ``fps``, track 68 landmarks, fit the SFM -> Track.

    ``tracker_options`` (:class:`~.tracking.TrackerOptions`) choose the person to follow; the
    Track's info carries the tracking's cuts, shots, absent frames and their explanations.
    ``progress(done_frames)`` is called while tracking. Raises EvpError for unusable footage.
    """
    from .tracking import track_video

    tracking = track_video(video, fps, tracker_options, progress)
    fit = fit_landmarks(tracking.landmarks, tracking.image_size, sfm_dir, fit_options, valid=tracking.valid)
    return footage_track(tracking, fit, fps, source=Path(video).name)
