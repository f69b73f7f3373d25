"""Face rig speed: landmark evaluation and preview rendering, as ratios to real time (25 fps).

    .venv/bin/python benchmarks/bench_rig.py
"""

import os
import time

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


def main() -> None:
    rig = FaceRig(find_sfm_dir(os.environ.get("EVP_ANIM_SFM_DIR")))
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
