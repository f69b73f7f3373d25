"""Rig weights from 3D landmarks (numpy-only): how a landmark-only track drives the SFM head.

``evp-anim animate`` (EVP) predicts pose-invariant 3D landmarks, not blendshape weights. To put
such a track on the shape-key head (and into ARKit exports) each frame's weights are solved from
the rig's landmark rows, a linear model:

    landmarks_3d[t] ≈ base(identity) + Σ_k w[t, k] · deltas[k, landmark_vertices]

as a box-constrained ridge least squares, ``0 ≤ w ≤ 1``, per frame, all frames at once
(accelerated projected gradient on the shared K×K normal matrix). Channels that move no landmark
(or move them like another channel) are held near 0 by the ridge term.

Used by ``animate`` (lifting EVP landmarks to the rig), ``evp-anim export`` and the Blender
add-on; numpy-only, so it also runs inside a stock Blender on the rig cache
(:class:`evp_anim.export.rigdata.RigData`).
"""

from __future__ import annotations

import numpy as np

from ..errors import EvpError


def weights_from_landmarks(rig, landmarks_3d: np.ndarray, identity: np.ndarray | None = None,
                           ridge: float = 1e-2, iterations: int = 500) -> np.ndarray:
    """(T, K) float32 rig weights in [0, 1] whose landmarks best match ``landmarks_3d``.

    Args:
        rig: a FaceRig or RigData (``landmarks_3d(identity, weights)``, ``deltas``,
            ``landmark_vertices``, ``channels``).
        landmarks_3d: (T, 68, 3) mm, pose-invariant (the SFM frame).
        identity: (S,) identity of the face the landmarks belong to (None / empty: mean face).
        ridge: weight of the ||w||² term, in mm² per unit weight (keeps redundant channels at 0).
        iterations: projected-gradient steps.
    """
    lm = np.asarray(landmarks_3d, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 3):
        raise EvpError(f"landmarks_3d must have shape (T, 68, 3), got {lm.shape}")
    ident = None if identity is None or np.asarray(identity).size == 0 else np.asarray(identity, np.float32)
    base = np.asarray(rig.landmarks_3d(ident), np.float64).reshape(-1)            # (204,)
    a = np.asarray(rig.deltas, np.float64)[:, rig.landmark_vertices].reshape(len(rig.channels), -1).T  # (204, K)
    b = lm.reshape(len(lm), -1) - base                                             # (T, 204)
    ata = a.T @ a + ridge * np.eye(a.shape[1])
    atb = b @ a                                                                    # (T, K)
    step = 1.0 / np.linalg.eigvalsh(ata).max()
    w = np.clip(np.linalg.solve(ata, atb.T).T, 0.0, 1.0)                           # warm start
    y, t = w.copy(), 1.0
    for _ in range(int(iterations)):                                               # FISTA
        w_next = np.clip(y - step * (y @ ata - atb), 0.0, 1.0)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = w_next + ((t - 1) / t_next) * (w_next - w)
        w, t = w_next, t_next
    return w.astype(np.float32)
