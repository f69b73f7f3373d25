"""Figures of the no-training dubbing path (``dub --renderer warp``) on one target footage.

    .venv/bin/python scripts/eval_dub.py FOOTAGE.mp4 SPEECH.wav [--track T.npz] [--out DIR]
        [--emotion happy] [--json out.json]

1. Self-reenactment: the last 10% of the footage rebuilt from mouths of the frames before it,
   driven by its own tracked landmarks; face-region PSNR / SSIM on 256 px crops, mouth landmark
   distance of dlib re-detected on the output (crop px), re-detected vs driving lip-gap correlation
   (:func:`render.video_metrics.evaluate_warp_holdout`).
2. Dub: SPEECH animated (EVP, words front end) → aligned to the footage → warped; dlib re-detects
   the mouth on every output frame where the target is on screen: mouth landmark distance to the
   driving (aligned) landmarks in frame px and in 256-crop px, and the correlation of the
   re-detected lip gap with the driving one. The wall time of the whole dub (track included,
   nothing cached) is printed beside the clip's duration.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evp_anim.assets import find_sfm_dir  # noqa: E402
from evp_anim.face.rig import FaceRig  # noqa: E402
from evp_anim.footage.alignment import align_tracks  # noqa: E402
from evp_anim.footage.fitting import track_footage  # noqa: E402
from evp_anim.footage.video import iter_frames  # noqa: E402
from evp_anim.models.animate import EmotionSpec, animate_speech_file, default_model_path  # noqa: E402
from evp_anim.models.evp import EvpModel  # noqa: E402
from evp_anim.tracks import load_track  # noqa: E402
from render.guidance import footage_crops  # noqa: E402
from render.pipeline import render_warp  # noqa: E402
from render.video_metrics import evaluate_warp_holdout, redetected_mouth  # noqa: E402
from render.warp_dub import driving_landmarks, present_frames  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("footage", type=Path)
    ap.add_argument("speech", type=Path)
    ap.add_argument("--track", type=Path, help="the footage's track (default: tracked now, timed)")
    ap.add_argument("--emotion", default="neutral")
    ap.add_argument("--out", type=Path, help="folder for the dub and its PNG frames")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    sfm = find_sfm_dir()
    out_dir = a.out or Path(tempfile.mkdtemp(prefix="eval-dub-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict = {"footage": str(a.footage), "speech": str(a.speech), "emotion": a.emotion}

    t0 = time.perf_counter()
    target = load_track(a.track) if a.track else track_footage(a.footage, sfm)
    t_track = time.perf_counter() - t0
    model = EvpModel.load(default_model_path())
    sp = animate_speech_file(a.speech, model, EmotionSpec(a.emotion, 1.0), FaceRig(sfm), front_end="words")
    aligned = align_tracks(sp, target, identity="target", length_policy="loop", sfm_dir=sfm)
    dub_path = out_dir / "dub.mp4"
    render_warp(aligned, target, a.footage, dub_path, audio=a.speech)
    t_all = time.perf_counter() - t0
    res.update({"dub_seconds": round(t_all, 2), "track_seconds": round(t_track, 2) if not a.track else None,
                "speech_seconds": round(sp.duration, 2), "dub_frames": aligned.n_frames})

    frames = list(iter_frames(dub_path, aligned.fps, "bgr24"))[:aligned.n_frames]
    idx = np.asarray(aligned.info["target_frames"], np.int64)[:len(frames)]
    on = present_frames(target)[idx]
    crops = footage_crops(target.landmarks_2d, idx, 256, 1.9, fps=target.fps, cuts=target.info.get("cuts"))
    keep = np.flatnonzero(on)
    sel = [frames[i] for i in keep]
    drive = driving_landmarks(aligned, target)[keep]
    m_px = redetected_mouth(sel, drive, aligned.fps)
    m_crop = redetected_mouth(sel, drive, aligned.fps, 256.0 / crops.side[keep])
    m_raw = redetected_mouth(sel, aligned.landmarks_2d[keep], aligned.fps)   # the model's own convention
    res["dub"] = {"mouth_ld_frame_px": m_px["ld_px"], "mouth_ld_crop256_px": m_crop["ld_px"],
                  "mouth_open_corr": m_px["open_corr"], "frames_scored": int(len(keep)),
                  "frames_without_face": m_px["missing"],
                  "mouth_ld_frame_px_vs_model_convention": m_raw["ld_px"],
                  "mouth_open_corr_vs_model_convention": m_raw["open_corr"]}
    import cv2
    for i in range(0, len(frames), max(1, len(frames) // 6)):
        cv2.imwrite(str(out_dir / f"dub_{i:04d}.png"), frames[i])

    res["self_reenactment"] = evaluate_warp_holdout(target, a.footage, frames_out=out_dir / "holdout")
    print(json.dumps(res, indent=2))
    print(f"dub {res['dub_seconds']:.1f} s wall for {res['speech_seconds']:.1f} s of speech "
          f"(tracking {res['track_seconds']} s); dub mouth LD {m_px['ld_px']} frame px / {m_crop['ld_px']} crop px, "
          f"opening corr {m_px['open_corr']}; self-reenactment face PSNR "
          f"{res['self_reenactment']['psnr_face_db']} dB SSIM {res['self_reenactment']['ssim_face']} "
          f"({res['self_reenactment']['mode']}); frames in {out_dir}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
