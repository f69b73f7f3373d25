"""Temporal smoothing of tracked landmarks: the One-Euro filter (Casiez et al., CHI 2012).

A first-order low-pass whose cut-off rises with the signal's speed: when a landmark sits still
the cut-off is low and jitter is removed; when the head moves fast the cut-off rises, so the
filtered points do not lag behind real motion. Also :func:`interpolate_missing` for frames where
no face was found (within each shot: never across a cut).
"""

from __future__ import annotations

import numpy as np

from ..errors import EvpError


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


def one_euro(x: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 4.0,
             d_cutoff: float = 1.0, scale: float | np.ndarray = 1.0, zero_phase: bool = False,
             ) -> np.ndarray:
    """One-Euro filter along axis 0.

    A causal One-Euro filter still lags slow steady motion by about ``1 / (2 pi min_cutoff)`` s.
    Offline (a whole clip at hand) ``zero_phase=True`` runs it forward, then backward over the
    result, so the two delays cancel: no lag at all, and jitter is removed twice.

    Args:
        x: (T, ...) samples at ``fps`` frames per second (e.g. (T, 68, 2) px).
        min_cutoff: Hz, cut-off when still (lower = smoother).
        beta: speed coefficient (higher = less lag in fast motion), per unit of ``x / scale`` per s.
        d_cutoff: Hz, cut-off of the speed estimate.
        scale: divides the speed before ``beta`` is applied, so the same beta works for faces of
            any size: pass the face size in px (scalar, or (T,) per frame).
        zero_phase: forward-backward filtering (offline use).
    Returns:
        (T, ...) float64 filtered samples; frame 0 is unchanged (unless ``zero_phase``).
    """
    if zero_phase:
        sc = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (np.shape(x)[0],))
        fwd = one_euro(x, fps, min_cutoff, beta, d_cutoff, sc)
        return one_euro(fwd[::-1], fps, min_cutoff, beta, d_cutoff, sc[::-1])[::-1]
    x = np.asarray(x, np.float64)
    if x.ndim == 0 or x.shape[0] == 0:
        raise EvpError("one_euro needs a (T, ...) array with T >= 1")
    if fps <= 0 or min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
        raise EvpError("one_euro: fps, min_cutoff and d_cutoff must be > 0 and beta >= 0")
    dt = 1.0 / fps
    sc = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (x.shape[0],))
    out = np.empty_like(x)
    out[0] = x[0]
    dx_prev = np.zeros_like(x[0])
    a_d = _alpha(d_cutoff, dt)
    for i in range(1, x.shape[0]):
        dx = (x[i] - out[i - 1]) / dt
        dx_hat = a_d * dx + (1 - a_d) * dx_prev
        cutoff = min_cutoff + beta * np.abs(dx_hat) / max(sc[i], 1e-9)
        a = _alpha(cutoff, dt)
        out[i] = a * x[i] + (1 - a) * out[i - 1]
        dx_prev = dx_hat
    return out


def interpolate_missing(x: np.ndarray, valid: np.ndarray, cuts=()) -> np.ndarray:
    """Fill frames where ``valid`` is False by linear interpolation in time (ends are held).

    With ``cuts`` (frame indices where a new shot starts) each shot is filled on its own, never
    from another shot's frames; a shot without any valid frame holds, frame by frame, the
    nearest valid frame of the clip (it shows no face to follow; the values only keep the
    track continuous).

    Args:
        x: (T, ...) values (anything for invalid frames).
        valid: (T,) bool, at least one True.
        cuts: frame indices (0 < c < T) where shots start.
    Returns:
        (T, ...) float64 with invalid frames replaced.
    """
    x = np.asarray(x, np.float64)
    valid = np.asarray(valid, bool)
    if not valid.any():
        raise EvpError("no valid frame to interpolate from")
    if valid.all():
        return x.copy()
    n = len(valid)
    edges = [0] + sorted(int(c) for c in set(cuts) if 0 < int(c) < n) + [n]
    flat = x.reshape(n, -1)
    out = flat.copy()
    good = np.flatnonzero(valid)
    for a, b in zip(edges[:-1], edges[1:]):
        v = valid[a:b]
        if v.all():
            continue
        if v.any():
            t = np.arange(a, b)
            g = a + np.flatnonzero(v)
            for j in range(flat.shape[1]):
                out[a:b, j] = np.interp(t, g, flat[g, j])
        else:
            t = np.arange(a, b)
            pos = np.clip(np.searchsorted(good, t), 1, max(len(good) - 1, 1))
            before, after = good[np.clip(pos - 1, 0, len(good) - 1)], good[np.clip(pos, 0, len(good) - 1)]
            out[a:b] = flat[np.where(np.abs(t - before) <= np.abs(after - t), before, after)]
    return out.reshape(x.shape)
