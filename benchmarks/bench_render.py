"""Benchmark the renderers: the preview video (default) and the neural dubbing renderer (--target).

Preview (no --target): ``evp-anim preview``'s real pipeline (``write_preview``: landmark sketch,
shaded SFM head with its eyes, teeth and mouth interior, labels, H.264 + AAC) at 768x384 on a
track animated from assets/sample_speech.wav with the shipped EVP model, looped to ``--seconds``
(or ``--track``). Printed in one run: preview frames per second and the ratio to the track's
25 fps playback; the same for the pre-OpenGL reference (the numpy rasteriser,
``FaceRenderer(backend="numpy", parts=True)``, in the old frame loop: a little faster than the
original, which rendered the whole image) on ``--ref-frames`` frames, and the speed-up; CPU time
per frame of all threads (load-independent, unlike fps on cores shared with other jobs);
per-stage times (head render, sketch + labels, encode); what the head's parts cost (head render
with and without them, interleaved, same frames; issue 16: at most ~20%); and the SSIM (and
per-pixel error) of today's head renders against the reference renderer's, on frames of the
track and on turned heads. Target (issue 17): preview >= 3x playback, SSIM >= 0.95.

    OMP_NUM_THREADS=1 flock /tmp/evp_cpu.lock python benchmarks/bench_render.py [--seconds 20]

Neural renderer (--target): runs the real pipeline of ``evp-anim render run`` (decode the footage, crop, guidance map,
generator, paste back, H.264 encode) over the target footage looped to ``--seconds`` of output
(default 300 s = 7500 frames at 25 fps: a 5-minute dub), with a generator of the shipped
architecture (weights do not change the speed; pass ``--model`` to use a trained one).
Prints frames per second, the ratio against real time at 25 fps, and the process's resident
memory at intervals (it must stay flat: frames are streamed).

    OMP_WAIT_POLICY=PASSIVE flock /tmp/evp_cpu.lock python benchmarks/bench_render.py \
        --target footage.mp4 --track footage.npz [--seconds 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _sample_track(sfm_dir: Path):
    """The sample speech animated (happy) with the shipped EVP model and lifted to the rig."""
    from evp_anim.audio.io import load_audio
    from evp_anim.face.rig import FaceRig
    from evp_anim.models.animate import EmotionSpec, animate, default_model_path, lift_to_rig
    from evp_anim.models.evp import EvpModel

    rig = FaceRig(sfm_dir)
    audio = load_audio(REPO / "assets" / "sample_speech.wav")
    model = EvpModel.load(default_model_path())
    return lift_to_rig(animate(audio, model, EmotionSpec("happy", 1.0), reference=rig.landmarks_3d(None)), rig)


def _looped(track, n: int):
    """``track`` with its per-frame arrays repeated to ``n`` frames."""
    idx = np.arange(n) % track.n_frames
    out = track.copy()
    for name in ("landmarks_2d", "pose_rotation", "pose_translation", "pose_scale", "expression",
                 "emotion", "intensity", "landmarks_3d", "gaze"):
        v = getattr(track, name)
        if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == track.n_frames:
            setattr(out, name, v[idx])
    return out


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity
    return float(structural_similarity(a, b, channel_axis=2))


def _reference_preview(track, output: Path, audio, sfm_dir: Path, size: int) -> None:
    """The preview frame loop as it was before this change, with the reference renderer."""
    import cv2

    from evp_anim.emotions import EMOTIONS
    from evp_anim.face.raster import FaceRenderer
    from evp_anim.face.rig import FaceRig
    from evp_anim.face.sketch import draw_sketch
    from evp_anim.preview import _rig_weights, _sketch_transform
    from evp_anim.video_io import open_video_writer

    rig = FaceRig(sfm_dir)
    renderer = FaceRenderer(rig, backend="numpy", parts=True)
    weights = _rig_weights(track, tuple(rig.channels))
    ident = track.identity if track.identity.size == rig.num_identity else None
    scale, offset = _sketch_transform(track, size)
    emo = [EMOTIONS[i] for i in track.emotion.argmax(1)]

    def label(img, text, y):
        cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1, cv2.LINE_AA)

    with open_video_writer(output, track.fps, (2 * size, size), audio) as writer:
        for t in range(track.n_frames):
            left = draw_sketch(track.landmarks_2d[t] * scale + offset, (size, size), thickness=max(1, size // 256))
            right = renderer.render(ident, weights[t], track.pose_rotation[t], size=size,
                                    gaze=None if track.gaze is None else track.gaze[t])
            frame = np.concatenate([left, right], axis=1)
            label(frame, f"{t / track.fps:6.2f} s  frame {t}", 18)
            label(frame, f"{emo[t]} {track.intensity[t]:.2f}", 36)
            writer.write(np.ascontiguousarray(frame))


def bench_preview(args) -> None:
    import cv2

    from evp_anim.audio.io import load_audio
    from evp_anim.face.raster import FaceRenderer
    from evp_anim.face.rig import FaceRig
    from evp_anim.face.sketch import draw_sketch
    from evp_anim.preview import _rig_weights, _sketch_transform, write_preview
    from evp_anim.tracks import load_track
    from evp_anim.video_io import open_video_writer

    sfm_dir = args.sfm_dir or Path(os.environ.get("EVP_ANIM_SFM_DIR", REPO.parent / "shared" / "sfm"))
    size = args.size
    base = load_track(args.track) if args.track else _sample_track(sfm_dir)
    audio_path = REPO / "assets" / "sample_speech.wav"
    audio = load_audio(audio_path)
    n = int(round(args.seconds * base.fps))
    track = _looped(base, n)
    ref_track = _looped(base, min(args.ref_frames, n))
    rig = FaceRig(sfm_dir)
    renderer = FaceRenderer(rig, backend="auto", parts=True)   # as write_preview makes it
    ref = FaceRenderer(rig, backend="numpy", parts=True)
    no_parts = FaceRenderer(rig, backend="auto")                # the head before it had eyes and teeth
    weights = _rig_weights(base, tuple(rig.channels))
    ident = base.identity if base.identity.size == rig.num_identity else None
    gaze = base.gaze if base.gaze is not None else np.zeros((base.n_frames, 2), np.float32)
    renderer.render(ident, weights[0], base.pose_rotation[0], size)   # GL context, shaders
    no_parts.render(ident, weights[0], base.pose_rotation[0], size)
    print(f"preview at {2 * size}x{size}, head renderer backend: {renderer.backend_used}; "
          f"track {base.n_frames} frames looped to {n} ({n / base.fps:.1f} s), reference on {ref_track.n_frames}")

    with tempfile.TemporaryDirectory() as tmp:
        # end to end, both pipelines in one run (the machine's load is shared by both)
        # (CPU time is of all the process's threads: llvmpipe's and the encoder's included)
        t0, c0 = time.perf_counter(), time.process_time()
        write_preview(track, Path(tmp) / "new.mp4", audio_path=audio_path, sfm_dir=sfm_dir, size=size)
        new_dt, new_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        _reference_preview(ref_track, Path(tmp) / "ref.mp4", audio, sfm_dir, size)
        ref_dt, ref_cpu = time.perf_counter() - t0, time.process_time() - c0
        new_fps, ref_fps = n / new_dt, ref_track.n_frames / ref_dt
        play = base.fps
        print(f"preview (today):     {n:5d} frames in {new_dt:6.2f} s = {new_fps:6.1f} fps = "
              f"{new_fps / play:5.2f}x playback ({play:g} fps); CPU {new_cpu / n * 1e3:5.1f} ms/frame; "
              f"target >= 3x: {'met' if new_fps >= 3 * play else 'NOT met'}")
        print(f"preview (reference): {ref_track.n_frames:5d} frames in {ref_dt:6.2f} s = {ref_fps:6.1f} fps = "
              f"{ref_fps / play:5.2f}x playback ({play:g} fps); CPU {ref_cpu / ref_track.n_frames * 1e3:5.1f} ms/frame")
        print(f"speed-up: {new_fps / ref_fps:.1f}x in wall time, "
              f"{(ref_cpu / ref_track.n_frames) / (new_cpu / n):.1f}x in CPU time per frame; "
              f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

        # where a frame's time goes (serial, one stage at a time)
        k = min(base.n_frames, 50)
        sc, off = _sketch_transform(base, size)
        frames = []
        t0 = time.perf_counter()
        for t in range(k):
            renderer.render(ident, weights[t], base.pose_rotation[t], size, gaze=gaze[t])
        t_new = (time.perf_counter() - t0) / k
        t0 = time.perf_counter()
        for t in range(min(k, 10)):
            ref.render(ident, weights[t], base.pose_rotation[t], size, gaze=gaze[t])
        t_ref = (time.perf_counter() - t0) / min(k, 10)
        # the parts' cost: with and without them on the same frames, alternating in rounds so
        # both see the same load on shared cores
        t_with, t_without = 0.0, 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            for t in range(k):
                renderer.render(ident, weights[t], base.pose_rotation[t], size, gaze=gaze[t])
            t_with += time.perf_counter() - t0
            t0 = time.perf_counter()
            for t in range(k):
                no_parts.render(ident, weights[t], base.pose_rotation[t], size)
            t_without += time.perf_counter() - t0
        t0 = time.perf_counter()
        for t in range(k):
            img = np.empty((size, 2 * size, 3), np.uint8)
            img[:, :size] = draw_sketch(base.landmarks_2d[t] * sc + off, (size, size), thickness=max(1, size // 256))
            cv2.putText(img, f"{t / base.fps:6.2f} s  frame {t}", (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (230, 230, 230), 1, cv2.LINE_AA)
            frames.append(img)
        t_sketch = (time.perf_counter() - t0) / k
        with open_video_writer(Path(tmp) / "enc.mp4", base.fps, (2 * size, size), None) as writer:
            t0 = time.perf_counter()
            for img in frames:
                writer.write(img)
            t_enc = (time.perf_counter() - t0) / k
        print(f"per frame: head render {t_new * 1e3:.1f} ms (reference {t_ref * 1e3:.1f} ms, "
              f"{t_ref / t_new:.1f}x), sketch + labels {t_sketch * 1e3:.1f} ms, "
              f"H.264 encode {t_enc * 1e3:.1f} ms (overlapped with rendering in write_preview)")
        print(f"head parts (eyes, teeth, tongue, mouth interior): head render {t_with / (3 * k) * 1e3:.1f} ms "
              f"with them, {t_without / (3 * k) * 1e3:.1f} ms without ({renderer.backend_used}): "
              f"{(t_with / t_without - 1) * 100:+.0f}% (target <= +20%)")

    # look: today's head renders against the reference renderer's
    picks = np.linspace(0, base.n_frames - 1, min(base.n_frames, 20)).astype(int)
    turns = [(0.0, 0.5, 0.0), (0.0, -0.8, 0.1), (0.3, 0.2, -0.2), (-0.35, 1.1, 0.0), (0.2, -1.4, 0.3)]
    cases = [(weights[t], base.pose_rotation[t]) for t in picks]
    cases += [(weights[picks[i % len(picks)]], np.array(r)) for i, r in enumerate(turns)]
    scores, errs = [], []
    for w, rot in cases:
        a = renderer.render(ident, w, rot, size)
        b = ref.render(ident, w, rot, size)
        scores.append(_ssim(a, b))
        errs.append(np.abs(a.astype(np.int16) - b).mean())
    print(f"SSIM of head renders vs reference ({len(picks)} track frames + {len(turns)} turned heads): "
          f"min {min(scores):.4f}, mean {np.mean(scores):.4f} (target >= 0.95); "
          f"mean abs error {np.mean(errs):.3f} levels, worst frame {max(errs):.3f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=Path, default=None,
                    help="footage: benchmark the neural dubbing renderer instead of the preview")
    ap.add_argument("--track", type=Path, default=None)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="default: 20 (preview), 300 (dubbing)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=None, help="default: 384 (preview panel), 256 (dubbing)")
    ap.add_argument("--ref-frames", type=int, default=50, help="preview: frames for the slow reference")
    ap.add_argument("--sfm-dir", type=Path, default=None)
    args = ap.parse_args()
    if args.target is None:
        args.seconds = 20.0 if args.seconds is None else args.seconds
        args.size = 384 if args.size is None else args.size
        bench_preview(args)
        return
    if args.track is None:
        ap.error("--target needs --track")
    args.seconds = 300.0 if args.seconds is None else args.seconds
    args.size = 256 if args.size is None else args.size
    bench_dub(args)


def bench_dub(args) -> None:
    import torch

    from evp_anim.tracks import load_track
    from render.data import video_fingerprint
    from render.inference import RenderModel, render_video
    from render.model_file import write_model
    from render.networks import Generator

    torch.set_num_threads(args.threads)
    target = load_track(args.target if args.track is None else args.track)
    with tempfile.TemporaryDirectory() as tmp:
        mdir = args.model
        if mdir is None:
            mdir = Path(tmp) / "model"
            mdir.mkdir()
            write_model(mdir / "model.pt", Generator(), {
                "fingerprint": video_fingerprint(args.target), "size": args.size, "crop_margin": 1.9,
                "holdout_start": target.n_frames, "n_frames": target.n_frames,
                "target": {"image_size": list(target.image_size)}})
        model = RenderModel(mdir)
        n = int(round(args.seconds * target.fps))
        idx = np.arange(n) % target.n_frames
        aligned = target.copy()
        aligned.landmarks_2d = target.landmarks_2d[idx]
        aligned.info = {"target_frames": idx.tolist()}
        # only the landmark and frame-index fields matter to the renderer
        marks = {}
        t0 = time.perf_counter()
        start_rss = rss_mb()

        def progress(done):
            if done in (1, 100) or done % 1500 == 0 or done == n:
                marks[done] = (time.perf_counter() - t0, rss_mb())

        out = Path(tmp) / "bench.mp4"
        render_video(aligned, target, args.target, model, out, progress=progress)
        dt = time.perf_counter() - t0
    fps = n / dt
    print(f"renderer inference at {model.size}x{model.size}, {args.threads} threads, footage "
          f"{target.image_size[0]}x{target.image_size[1]}: {n} frames in {dt:.1f} s = {fps:.1f} fps "
          f"= {fps / 25.0:.2f}x real time at 25 fps (decode + guidance + generator + paste + encode)")
    for done, (t, r) in sorted(marks.items()):
        print(f"  after {done:5d} frames ({t:6.1f} s): RSS {r:7.1f} MiB")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RSS at start {start_rss:.1f} MiB, peak {peak:.1f} MiB")


if __name__ == "__main__":
    main()
