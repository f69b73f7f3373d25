"""Benchmark: import a 60-second (1,500-frame, 25 fps) track into headless Blender (bpy 5.0.1).

    .venv/bin/python benchmarks/bench_blender_import.py [--sfm-dir DIR] [--seconds 60]

Builds a long track by tiling a real `evp-anim speak` clip, then times, in one process:
the SFM rig load (once per session), and ``blender_addon.builder.import_track`` (head mesh +
42 shape keys, one Action with 42 shape-key and 3 rotation F-curves keyed on every frame, the
68-point landmark object for all frames, the sound strip, scene fps). Also times
``export_track`` (reading every F-curve back at every frame). The target is at most 10 s for
the import; the ratio printed is import time / clip duration (below 1 = faster than real time).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sfm-dir", default=os.environ.get("EVP_ANIM_SFM_DIR", str(REPO.parent / "shared" / "sfm")))
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from evp_anim.tracks import concat, load_track, save_track

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "say.npz"
        subprocess.run([sys.executable, "-m", "evp_anim", "speak", "Bring the map back before lunch.",
                        "--emotion", "happy", "-o", str(clip), "--sfm-dir", args.sfm_dir],
                       check=True, capture_output=True, cwd=REPO)
        one = load_track(clip)
        n = int(round(args.seconds * one.fps))
        long = concat([one] * (n // one.n_frames + 1)).slice(0, n)
        long.info["audio"] = str(clip.with_suffix(".wav"))
        path = save_track(long, Path(tmp) / "long.npz")

        import bpy
        from blender_addon import builder
        bpy.ops.wm.read_factory_settings(use_empty=True)
        t0 = time.perf_counter()
        builder.load_rig(args.sfm_dir)
        t_rig = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = builder.import_track(path, sfm_dir=args.sfm_dir)
        t_import = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = builder.export_track(res.head, sfm_dir=args.sfm_dir)
        t_export = time.perf_counter() - t0
        assert back.n_frames == n

    dur = n / one.fps
    print(f"track: {n} frames at {one.fps:g} fps = {dur:.1f} s, {len(one.expression_names)} channels")
    print(f"rig load (once per session):      {t_rig:6.2f} s")
    print(f"import_track:                     {t_import:6.2f} s  ratio to real time {t_import / dur:.3f} "
          f"({'within' if t_import <= 10 else 'OVER'} the 10 s target)")
    print(f"export_track (F-curves -> Track): {t_export:6.2f} s  ratio to real time {t_export / dur:.3f}")


if __name__ == "__main__":
    main()
