"""Face rig speed: landmark evaluation, the rig solve and preview rendering, as ratios to real
time (25 fps).

The rig solve (landmarks → weights, ``evp_anim.face.solve.weights_from_landmarks``) runs on 60 s
of real EVP landmarks (assets/sample_speech.wav tiled, animated with the shipped model), beside
the previous solver (500 FISTA steps on all frames, kept below as the reference) in the same run;
it prints both times, their ratio and how far apart the answers are.

    .venv/bin/python benchmarks/bench_rig.py
"""

import os
import time

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np

from evp_anim.assets import find_sfm_dir
from evp_anim.face.raster import FaceRenderer
from evp_anim.face.rig import FaceRig
from evp_anim.tracks import DEFAULT_FPS


def best_of(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def fista_reference(rig, landmarks_3d, identity=None, ridge=1e-2, iterations=500):
    """The solver ``weights_from_landmarks`` used before issue 17: accelerated projected gradient
    on all frames at once, a fixed number of steps (not converged on this rig: its normal matrix
    has condition number ~2e6). (T, K) float32."""
    lm = np.asarray(landmarks_3d, np.float64)
    ident = None if identity is None else np.asarray(identity, np.float32)
    base = np.asarray(rig.landmarks_3d(ident), np.float64).reshape(-1)
    a = np.asarray(rig.deltas, np.float64)[:, rig.landmark_vertices].reshape(len(rig.channels), -1).T
    b = lm.reshape(len(lm), -1) - base
    ata = a.T @ a + ridge * np.eye(a.shape[1])
    atb = b @ a
    step = 1.0 / np.linalg.eigvalsh(ata).max()
    w = np.clip(np.linalg.solve(ata, atb.T).T, 0.0, 1.0)
    y, t = w.copy(), 1.0
    for _ in range(int(iterations)):
        w_next = np.clip(y - step * (y @ ata - atb), 0.0, 1.0)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = w_next + ((t - 1) / t_next) * (w_next - w)
        w, t = w_next, t_next
    return w.astype(np.float32)


def evp_landmarks(seconds: float = 60.0) -> np.ndarray:
    """(T, 68, 3) mm: the shipped EVP model's landmarks for the sample speech tiled to ``seconds``."""
    from pathlib import Path

    from evp_anim.audio.features import SAMPLE_RATE
    from evp_anim.audio.io import load_audio
    from evp_anim.models.animate import EmotionSpec, animate, default_model_path
    from evp_anim.models.evp import EvpModel

    root = Path(__file__).resolve().parents[1]
    x = load_audio(root / "assets" / "sample_speech.wav")
    x = np.tile(x, int(np.ceil(seconds * SAMPLE_RATE / x.size)))[: int(seconds * SAMPLE_RATE)]
    return animate(x, EvpModel.load(default_model_path()), EmotionSpec("happy", 0.7)).landmarks_3d


def bench_solve(rig) -> None:
    from evp_anim.face.solve import weights_from_landmarks

    lm = evp_landmarks(60.0)
    t_new = best_of(lambda: weights_from_landmarks(rig, lm), repeats=3)
    t_old = best_of(lambda: fista_reference(rig, lm), repeats=3)
    new, old = weights_from_landmarks(rig, lm), fista_reference(rig, lm)
    print(f"rig solve, {len(lm)} frames (60 s): batched active set {t_new * 1e3:.1f} ms "
          f"({60.0 / t_new:.0f}x real time), previous FISTA {t_old * 1e3:.1f} ms; "
          f"old/new time ratio {t_old / t_new:.1f}; max |w_new - w_old| {np.abs(new - old).max():.4f}")


def main() -> None:
    rig = FaceRig(find_sfm_dir(os.environ.get("EVP_ANIM_SFM_DIR")))
    bench_solve(rig)
    rng = np.random.default_rng(0)
    ident = rig.sample_identity(rng)
    w = rng.uniform(0, 1, (1500, len(rig.channels))).astype(np.float32)
    t = best_of(lambda: rig.landmarks_3d(ident, w))
    print(f"landmarks_3d, 1500 frames (60 s): {t * 1e3:.2f} ms -> {60.0 / t:.0f}x real time")
    for ss in (1, 2):
        r = FaceRenderer(rig, supersample=ss)
        t = best_of(lambda: r.render(ident, w[0], (0.0, 0.2, 0.0), 256), repeats=10)
        print(f"shaded 256 px render (supersample {ss}): {t * 1e3:.1f} ms/frame -> "
              f"{1.0 / t:.1f} fps = {1.0 / t / DEFAULT_FPS:.2f}x real time")


if __name__ == "__main__":
    main()
