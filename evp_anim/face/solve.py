"""Rig weights from 3D landmarks (numpy-only): how a landmark-only track drives the SFM head.

``evp-anim animate`` (EVP) predicts pose-invariant 3D landmarks, not blendshape weights. To put
such a track on the shape-key head (and into ARKit exports) each frame's weights are solved from
the rig's landmark rows, a linear model:

    landmarks_3d[t] ≈ base(identity) + Σ_k w[t, k] · deltas[k, landmark_vertices]

as a box-constrained ridge least squares, ``0 ≤ w ≤ 1``, per frame. Every frame shares the K×K
normal matrix ``Q = AᵀA + ridge·I``, so the solve is one batched computation (:func:`box_qp`):
``Q⁻¹`` once, the unconstrained solutions of all frames in one product, then primal-dual
active-set sweeps on all frames at once, each of which only solves a small system over the
channels held at a bound. The result is the exact minimiser (KKT conditions to rounding), not an
iterate. Channels that move no landmark (or move them like another channel) are held near 0 by
the ridge term.

Used by ``animate`` (lifting EVP landmarks to the rig), ``evp-anim export`` and the Blender
add-on; numpy-only, so it also runs inside a stock Blender on the rig cache
(:class:`evp_anim.export.rigdata.RigData`).
"""

from __future__ import annotations

import numpy as np

from ..errors import EvpError
from ..threads import one_blas_thread

# box_qp catches a row that goes round a cycle of up to CYCLE_SWEEPS - 1 bound sets as soon as it
# comes round (longer cycles run to max_sweeps); a 3-channel problem goes round four sets
# (tests/test_rig_solve.py).
CYCLE_SWEEPS = 6
# Frames per block: bounds the float64 temporaries (T×204 targets, T×n×n bound systems) to a few
# MB however long the track is (an hour at 25 fps is 90,000 frames).
_BLOCK = 4096
_ROWS = 256      # rows per gather of their bound-set systems in box_qp ((_ROWS, n, n) float64)


def weights_from_landmarks(rig, landmarks_3d: np.ndarray, identity: np.ndarray | None = None,
                           ridge: float = 1e-2, iterations: int = 100) -> np.ndarray:
    """(T, K) float32 rig weights in [0, 1] whose landmarks best match ``landmarks_3d``.

    Args:
        rig: a FaceRig or RigData (``landmarks_3d(identity, weights)``, ``deltas``,
            ``landmark_vertices``, ``channels``).
        landmarks_3d: (T, 68, 3) mm, pose-invariant (the SFM frame).
        identity: (S,) identity of the face the landmarks belong to (None / empty: mean face).
        ridge: weight of the ||w||² term, in mm² per unit weight (keeps redundant channels at 0).
        iterations: batched active-set sweeps before the few frames still changing their active
            set finish one by one (:func:`box_qp`); the answer is exact either way.
    """
    lm = np.asarray(landmarks_3d)
    if lm.ndim != 3 or lm.shape[1:] != (68, 3):
        raise EvpError(f"landmarks_3d must have shape (T, 68, 3), got {lm.shape}")
    ident = None if identity is None or np.asarray(identity).size == 0 else np.asarray(identity, np.float32)
    base = np.asarray(rig.landmarks_3d(ident), np.float64).reshape(-1)            # (204,)
    # The landmark rows first, then float64: converting all 3,448 vertices costs more than the solve's set-up.
    a = np.asarray(np.asarray(rig.deltas)[:, rig.landmark_vertices], np.float64).reshape(len(rig.channels), -1).T  # (204, K)
    q = a.T @ a + ridge * np.eye(a.shape[1])
    q_inv = np.linalg.inv(q)
    out = np.empty((len(lm), a.shape[1]), np.float32)
    # The work is thousands of tiny (≤ 42×42) solves and products: BLAS threads only add
    # hand-over cost (one thread is ~3× faster here on 2 cores).
    with one_blas_thread():
        for t0 in range(0, len(lm), _BLOCK):
            b = lm[t0:t0 + _BLOCK].reshape(-1, base.size).astype(np.float64)         # (n, 204) mm
            b -= base
            out[t0:t0 + len(b)] = box_qp(q, b @ a, max_sweeps=iterations, q_inv=q_inv)
    return out


def box_qp(q: np.ndarray, c: np.ndarray, max_sweeps: int = 100, q_inv: np.ndarray | None = None) -> np.ndarray:
    """Minimise ``½ wᵀ q w − c[t]ᵀ w`` subject to ``0 ≤ w ≤ 1`` for every row t: (T, K) float64.

    ``q`` (K, K) symmetric positive definite, shared by all rows; ``c`` (T, K). Primal-dual
    active-set method (Hintermüller, Ito & Kunisch 2002), all rows at once: start from the
    unconstrained minimisers ``c Q⁻¹`` clipped to the box; each sweep fixes the channels of the
    current bound set B at their bounds and solves for the rest in Schur form — with
    ``u = Q⁻¹c``, ``w = u + Q⁻¹[:, B] μ`` where ``Q⁻¹[B, B] μ = bounds_B − u_B`` — so the system
    is only |B|×|B| and ``μ`` is the gradient on B (its KKT multiplier). A free channel outside the
    box joins B; a bound channel whose multiplier has the wrong sign leaves it; a row is done when
    its sets stop changing, and then satisfies the KKT conditions. Rows still changing after
    ``max_sweeps``, or caught going round a cycle of sets (the method can cycle: :data:`CYCLE_SWEEPS`),
    finish with :func:`_primal_active_set`, all together.

    Rows of an animation share few bound sets (1,500 frames of speech: 60–120 distinct sets per
    sweep), so each sweep inverts ``Q⁻¹[B, B]`` once per distinct B (one batched inverse) and
    applies it to all the rows that have that B, instead of one solve per row.
    """
    q = np.asarray(q, np.float64)
    c = np.asarray(c, np.float64)
    k = q.shape[0]
    q_inv = np.linalg.inv(q) if q_inv is None else q_inv
    u = c @ q_inv                                          # unconstrained minimisers (T, K)
    lower, upper = u < 0.0, u > 1.0
    out = np.clip(u, 0.0, 1.0)
    # Multipliers are gradients (units of c); this many of them counts as zero (rounding noise).
    tol = 1e-10 * max(1.0, float(np.abs(c).max(initial=0.0)))
    todo = np.flatnonzero(lower.any(1) | upper.any(1))    # rows inside the box are already exact
    # A bound set as one integer (bit k: channel k is bound), to find the rows that share it.
    bits = np.left_shift(np.int64(1), np.arange(k, dtype=np.int64)) if k <= 63 else None
    history: list[tuple[np.ndarray, np.ndarray]] = []   # each todo row's sets, this sweep's first
    cycling: list[np.ndarray] = []
    for _ in range(int(max_sweeps)):
        if todo.size == 0:
            break
        lo, hi = lower[todo], upper[todo]
        bound = lo | hi
        n_b = int(bound.sum(1).max())
        if bits is not None:
            _, first, group = np.unique(bound @ bits, return_index=True, return_inverse=True)
        else:                                              # > 63 channels: rows compared whole
            _, first, group = np.unique(bound, axis=0, return_index=True, return_inverse=True)
        group = group.reshape(-1)
        # Each set's bound channels first (stable order), padded to n_b with inert identity rows;
        # sorted once per set, not per row.
        ig = np.argsort(~bound[first], axis=1, kind="stable")[:, :n_b]            # (G, n_b)
        vg = np.take_along_axis(bound[first], ig, 1)
        idx, valid = ig[group], vg[group]                                         # (n, n_b)
        ut = u[todo]
        target = np.take_along_axis(hi, idx, 1).astype(np.float64)                # 1 upper, 0 lower
        rhs = np.where(valid, target - np.take_along_axis(ut, idx, 1), 0.0)
        s = q_inv[ig[:, :, None], ig[:, None, :]]                                 # (G, n_b, n_b)
        s = np.where(vg[:, :, None] & vg[:, None, :], s, np.eye(n_b)[None])
        s_inv = np.linalg.inv(s)
        mu = np.empty_like(rhs)                                                   # (n, n_b)
        for r in range(0, len(rhs), _ROWS):    # each row's system gathered _ROWS at a time: ≤ 1.3 MB
            mu[r:r + _ROWS] = np.matmul(s_inv[group[r:r + _ROWS]], rhs[r:r + _ROWS, :, None])[:, :, 0]
        mu *= valid
        grad = np.zeros_like(ut)                                                  # 0 on free channels
        np.put_along_axis(grad, idx, mu, 1)
        w = ut + grad @ q_inv                  # = u + Q⁻¹[:, B] μ (Q⁻¹ is symmetric): one product
        free = ~bound
        new_lo = np.where(free, w < 0.0, lo & (grad >= -tol))   # lower bound keeps g ≥ 0
        new_hi = np.where(free, w > 1.0, hi & (grad <= tol))    # upper bound keeps g ≤ 0
        done = (new_lo == lo).all(1) & (new_hi == hi).all(1)
        out[todo[done]] = np.clip(w[done], 0.0, 1.0)
        lower[todo], upper[todo] = new_lo, new_hi
        # A row's next sets depend only on its sets, so a row back at sets it had a few sweeps
        # ago goes round that cycle for good (the method can cycle): it goes to the primal method
        # now. (60 s of speech: at surprise 1.0 3 rows, at neutral 61 went round until max_sweeps,
        # most of the solve's time.) The sets are kept packed, 8 channels a byte.
        history = [(np.packbits(lo, axis=1), np.packbits(hi, axis=1))] + history[:CYCLE_SWEEPS - 2]
        packed_lo, packed_hi = np.packbits(new_lo, axis=1), np.packbits(new_hi, axis=1)
        again = ~done
        for old_lo, old_hi in history[1:]:
            again &= ~((packed_lo == old_lo).all(1) & (packed_hi == old_hi).all(1))
        cycle = ~done & ~again
        cycling.append(todo[cycle])
        out[todo[cycle]] = np.clip(w[cycle], 0.0, 1.0)     # the primal method starts from the last sweep's answer
        history = [(h_lo[again], h_hi[again]) for h_lo, h_hi in history]
        todo = todo[again]
    rest = np.concatenate([todo, *cycling])              # rare: rows whose sweeps cycled
    if rest.size:
        out[rest] = _primal_active_set(q, c[rest], out[rest], tol)
    return out


def _primal_active_set(q: np.ndarray, c: np.ndarray, w: np.ndarray, tol: float) -> np.ndarray:
    """Rows of :func:`box_qp` by the classic primal active-set method (one bound changes per row
    and step, the objective never rises, so it terminates), all rows at once: (m, K) float64 for
    ``c`` (m, K) and starts ``w`` (m, K) in the box. Each step solves every row's system over its
    free channels (padded to the widest with inert identity rows, one batched solve)."""
    w = np.clip(np.array(w, np.float64, ndmin=2), 0.0, 1.0)
    c = np.array(c, np.float64, ndmin=2)
    m, k = w.shape
    lower, upper = w <= 0.0, w >= 1.0
    active = np.arange(m)
    for _ in range(50 * k + 100):
        if active.size == 0:
            break
        lo, hi, wa, ca = lower[active], upper[active], w[active], c[active]
        free = ~(lo | hi)
        bounds = hi.astype(np.float64)                                  # 1 upper, 0 lower and free
        n_f = int(np.count_nonzero(free, axis=1).max())
        target = bounds.copy()
        if n_f:
            idx = np.argsort(~free, axis=1, kind="stable")[:, :n_f]        # free channels first
            valid = np.take_along_axis(free, idx, 1)
            pair = valid[:, :, None] & valid[:, None, :]
            sys_ff = np.where(pair, q[idx[:, :, None], idx[:, None, :]], np.eye(n_f)[None])
            rhs = np.where(valid, np.take_along_axis(ca - bounds @ q, idx, 1), 0.0)  # c_F − Q_FB bounds_B
            x = np.linalg.solve(sys_ff, rhs[:, :, None])[:, :, 0]
            on_free = np.zeros_like(target)
            np.put_along_axis(on_free, idx, np.where(valid, x, 0.0), 1)
            target = np.where(free, on_free, bounds)
        step = target - wa
        # Longest step towards each row's face minimiser that stays in the box.
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(free & (target < 0.0), -wa / step,
                             np.where(free & (target > 1.0), (1.0 - wa) / step, np.inf))
        j = np.argmin(ratio, axis=1)
        r = np.arange(len(active))
        shortest = ratio[r, j]
        blocked = shortest < 1.0
        # rows whose step is blocked: go as far as the box allows and hold the blocking channel
        wb = wa[blocked] + np.maximum(shortest[blocked], 0.0)[:, None] * step[blocked]
        jb, below = j[blocked], target[blocked, j[blocked]] < 0.0
        wb[np.arange(len(jb)), jb] = np.where(below, 0.0, 1.0)
        rows_b = active[blocked]
        w[rows_b] = wb
        lower[rows_b, jb], upper[rows_b, jb] = below, ~below
        # the others reach their face's minimiser: done unless a bound's multiplier has the wrong sign
        rows_f = active[~blocked]
        w[rows_f] = target[~blocked]
        grad = w[rows_f] @ q - c[rows_f]
        wrong = np.where(lower[rows_f], -grad, np.where(upper[rows_f], grad, 0.0))
        jf = np.argmax(wrong, axis=1)
        release = wrong[np.arange(len(jf)), jf] > tol
        lower[rows_f[release], jf[release]] = upper[rows_f[release], jf[release]] = False
        active = np.concatenate([rows_b, rows_f[release]])
    return np.clip(w, 0.0, 1.0)
