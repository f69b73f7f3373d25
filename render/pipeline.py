"""The renderer's pipelines as library functions: what ``evp-anim render train``, ``render run``,
``eval-video`` and ``dub`` do, without the command line (:mod:`render.commands` only parses
options and calls these).

* :func:`train_target` — train (or resume) the renderer for one target video;
* :func:`render_dubbed` — an aligned track + the target footage + its model -> dubbed mp4;
* :func:`evaluate_renderer` — self-reenactment metrics on the held-out end of the footage;
* :func:`dub_video` — speech + target footage -> dubbed video, in one call:

  1. animate: the speech -> an emotional landmark track with the shipped EVP model;
  2. track: the footage's 68 landmarks + SFM fit (cached by the video's sha256);
  3. align: EVP Eq. 8, the speech's expression with the footage's head motion;
  4. render: the per-target renderer (cached by the video's sha256; trained now, within
     ``train_minutes``, when the target has none — said on the console).

  Cache layout: ``<cache>/<sha256[:16]>/track.npz`` and ``<cache>/<sha256[:16]>/renderer/``
  (a model folder as ``evp-anim render train`` writes it; an interrupted training resumes).

Progress goes to the :class:`~evp_anim.progress.Reporter` passed as ``rep``. Heavy modules
(torch, the networks, the footage tracker) are imported inside the functions.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

from evp_anim.errors import EvpError
from evp_anim.progress import Reporter


def check_video_output(path: Path, what: str) -> None:
    """Refuse an output path that is not an .mp4, .mov or .mkv file (``what`` names it in the message)."""
    if path.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise EvpError(f"{what} output must end in .mp4, .mov or .mkv, got {path.name!r}")


def default_target_cache() -> Path:
    """$EVP_ANIM_CACHE, else $XDG_CACHE_HOME/evp-anim/targets (default ~/.cache/evp-anim/targets)."""
    env = os.environ.get("EVP_ANIM_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / "evp-anim" / "targets"


def train_target(video: Path, track_path: Path, output: Path, size: int = 256, minutes: Optional[float] = None,
                 steps: Optional[int] = None, holdout: float = 0.1, batch: int = 2, lr: float = 5e-4,
                 gan_start: float = 0.75, preview_every: int = 200, checkpoint_every: int = 100,
                 precision: str = "auto", rep: Optional[Reporter] = None, init="auto",
                 init_shrink: Optional[float] = None, device: str = "cpu", loader_workers: int = 0) -> dict:
    """Train (or resume) a renderer for ``video`` into folder ``output``; returns the model's meta.

    ``init`` (:mod:`render.warmstart`): "auto" (the shipped generic renderer
    ``assets/render_warmstart.pt`` when present and of this ``size``, else random weights), "none"
    (random weights), or a model folder / model file to start the generator from (same size and
    generator, else one EvpError line). One line says which ("warm start: …" / "cold start: …");
    resuming a checkpoint in ``output`` ignores ``init`` and says so. ``meta["init"]`` records it.
    ``init_shrink`` (default :data:`render.warmstart.DEFAULT_INIT_SHRINK`): a warm start's weights
    are mixed with the run's random ones, ``s × warm + (1 − s) × random``; 1 keeps them as they are.

    ``precision``: auto | fp32 | bf16 (:func:`render.trainer.choose_precision`; the choice and why
    is one line). While training, a line with steps/s and the ETA comes once the speed is known and
    then every ~30 s (plain lines, so they show when the output is not a terminal; in
    machine-readable mode the progress JSON lines carry ``steps_per_s``, ``eta_s``,
    ``expected_steps``), and a warning when the budget allows too few steps to converge.
    ``device``: cpu, or cuda for a GPU, with ``loader_workers`` processes drawing the batches
    (:class:`render.trainer.RenderTrainer`)."""
    from evp_anim.tracks import load_track

    from .data import TargetFrames, video_fingerprint
    from .trainer import CHECKPOINT_FILE, RenderTrainConfig, RenderTrainer, ReporterProgress, choose_precision
    from .warmstart import checked_shrink, resolve_init

    rep = rep or Reporter()
    if int(os.environ.get("RANK", "0")) != 0:   # under torchrun only rank 0 reports
        rep = Reporter(quiet=True)
    if minutes is None and steps is None:
        minutes = 60.0
    if output.exists() and not output.is_dir():
        raise EvpError(f"{output} exists and is not a folder: give a folder for the model")
    RenderTrainConfig(size=size, holdout=holdout, batch=batch, lr=lr, gan_start=gan_start).validate()
    shrink = checked_shrink(init_shrink)
    resuming = (output / CHECKPOINT_FILE).is_file()
    # a bad --init is refused before anything is timed or decoded (resuming ignores it)
    warm, init_line = ((None, None) if resuming else
                       resolve_init(init, size, RenderTrainConfig(size=size).gen_config().to_dict()))
    bf16, why = choose_precision(precision, size, device)
    cfg = RenderTrainConfig(size=size, holdout=holdout, batch=batch, lr=lr, gan_start=gan_start,
                            preview_every=preview_every, checkpoint_every=checkpoint_every, bf16=bf16)
    cfg.validate()
    rep.info(why)
    if not resuming:
        if warm is not None and shrink < 1.0:
            init_line += (f", mixed {shrink:g} : {1 - shrink:g} with random weights (--init-shrink {shrink:g}; "
                          f"1 keeps the warm weights as they are)")
        rep.info(init_line)
    target = load_track(track_path)
    fp = video_fingerprint(video)
    rep.start("render-train-frames", total=target.n_frames, description="decode footage")
    frames = TargetFrames.load(video, target, size, cfg.crop_margin, holdout, progress=rep.update)
    rep.success(frames=len(frames))
    info = {"video": video.name, "image_size": list(target.image_size), "n_frames": target.n_frames,
            "track": track_path.name}
    progress = ReporterProgress(rep)
    trainer = RenderTrainer(frames, output, cfg, fp, info, steps=steps, minutes=minutes, progress=progress,
                            init=warm, init_why=None if warm or resuming else init_line.split(": ", 1)[1],
                            init_shrink=shrink, device=device, loader_workers=loader_workers)
    progress.trainer = trainer
    if trainer.rank == 0:   # the footage's track travels with the model (render run / eval-video use it)
        from evp_anim.atomic import write_bytes_atomic
        output.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(output / "target_track.npz", track_path.read_bytes())
    if trainer.resumed:
        given = ("" if init is None or str(init).lower() == "auto" else
                 f"; --init {init} ignored: the checkpoint's weights win")
        rec = trainer.init_record or {}
        began = (f", started from {rec.get('path')}" if rec.get("kind") == "warm" else
                 ", started from random weights" if rec.get("kind") == "cold" else "")
        rep.info(f"resuming {output} at step {trainer.step} ({trainer.elapsed / 60:.1f} min trained{began}){given}")
    rep.start("render-train", description="train renderer")
    meta = trainer.run()
    rep.success(output=str(output), steps=meta["steps"], seconds=meta["train_seconds"])
    rep.info(f"trained {meta['steps']} steps in {meta['train_seconds'] / 60:.1f} min on frames "
             f"0..{frames.n_train - 1} (frames {frames.n_train}..{len(frames) - 1} held out) → {output}"
             + progress.losses())
    return meta


def _load_audio(path: Optional[Path]):
    """(mono samples, SAMPLE_RATE) of the audio file at ``path``, or (None, SAMPLE_RATE) for a silent video."""
    from evp_anim.audio.features import SAMPLE_RATE
    if path is None:
        return None, SAMPLE_RATE
    from evp_anim.audio.io import load_audio
    return load_audio(path, SAMPLE_RATE), SAMPLE_RATE


def render_dubbed(aligned_path: Path, target_video: Path, model_dir: Path, output: Path,
                  target_track: Optional[Path] = None, audio: Optional[Path] = None, rep: Optional[Reporter] = None,
                  prev_blur: Optional[float] = None) -> int:
    """Render ``aligned_path`` over ``target_video`` with the model in ``model_dir`` into ``output``."""
    from evp_anim.tracks import load_track

    from .inference import RenderModel, check_pair, render_video

    rep = rep or Reporter()
    check_video_output(output, "dubbed video")
    aligned = load_track(aligned_path)
    model = RenderModel(model_dir, prev_blur=prev_blur)
    model.check_target(target_video)
    if target_track is None:
        cand = (model_dir if model_dir.is_dir() else model_dir.parent) / "target_track.npz"
        if not cand.is_file():
            raise EvpError("no target track: pass --target-track (the footage's track from `evp-anim track`)")
        target_track = cand
    target = load_track(target_track)
    check_pair(aligned, target, model)
    if audio is None and aligned.info.get("audio") and Path(aligned.info["audio"]).is_file():
        audio = Path(aligned.info["audio"])
    samples, sr = _load_audio(audio)
    rep.start("render", total=aligned.n_frames, description="render")
    n = render_video(aligned, target, target_video, model, output, audio=samples, sample_rate=sr,
                     progress=rep.update)
    rep.success(output=str(output), frames=n)
    rep.info(f"wrote {output} ({n} frames, {n / aligned.fps:.2f} s" + (f", audio {audio})" if audio else ", no audio)"))
    return n


def evaluate_renderer(model: Path, target: Path, target_track: Optional[Path] = None,
                      frames_out: Optional[Path] = None, fid_weights: Optional[Path] = None,
                      json_out: Optional[Path] = None, prev_blur: Optional[float] = None,
                      rep: Optional[Reporter] = None) -> dict:
    """Self-reenactment metrics of the model in ``model`` on the held-out end of ``target``
    (:func:`render.video_metrics.evaluate_holdout`); reports them, also as JSON to ``json_out``."""
    from evp_anim.tracks import load_track

    from .inference import RenderModel
    from .video_metrics import evaluate_holdout

    m = RenderModel(model, prev_blur=prev_blur)
    m.check_target(target)
    tt = target_track or ((model if model.is_dir() else model.parent) / "target_track.npz")
    if not tt.is_file():
        raise EvpError("no target track: pass --target-track (the footage's track from `evp-anim track`)")
    tr = load_track(tt)
    rep = rep or Reporter()
    n = tr.n_frames - int(m.meta["holdout_start"])
    rep.start("eval-video", total=n, description="held-out frames")
    res = evaluate_holdout(m, tr, target, frames_out=frames_out, fid_weights=fid_weights, progress=rep.update)
    res["model"] = str(model)
    res["train_seconds"] = m.meta.get("train_seconds")
    res["train_steps"] = m.meta.get("steps")
    _report_figures(res, f"model trained {res['train_steps']} steps / {(res['train_seconds'] or 0) / 60:.1f} min", rep)
    _write_json(json_out, res)
    return res


def _write_json(path: Optional[Path], res: dict) -> None:
    from evp_anim.atomic import write_text_atomic

    if path is not None:
        # allow_nan=False: a NaN or infinity that slipped past finite_or_null fails here, never
        # becomes the invalid JSON token NaN in the file
        write_text_atomic(path, json.dumps(res, indent=2, allow_nan=False))


def _report_figures(res: dict, what: str, rep: Reporter) -> None:
    """The self-reenactment figures as a success event and a few plain lines."""
    rep.success(**{k: v for k, v in res.items() if isinstance(v, (int, float, str, dict)) or v is None})
    why = res.get("null_reasons", {})

    def fig(key: str, spec: str, unit: str = "") -> str:
        """``res[key]`` formatted, or "n/a (why)" where it could not be computed."""
        v = res.get(key)
        if v is None:
            return f"n/a ({why.get(key, 'not computed')})"
        return f"{v:{spec}}{unit}"

    lines = [
        f"held-out frames {res['first_frame']}..{res['first_frame'] + res['frames'] - 1} ({res['frames']}), "
        f"{res['size']}x{res['size']} crops, {what}",
        f"SSIM {fig('ssim', '.4f')} (min {fig('ssim_min', '.4f')})   PSNR {fig('psnr_db', '.2f', ' dB')}   "
        f"(face region only: SSIM {fig('ssim_face', '.4f')}, PSNR {fig('psnr_face_db', '.2f', ' dB')})",
        f"mouth landmark distance (dlib re-detected vs driving) {fig('mouth_ld_px', '.2f', ' px')} "
        f"[real frames: {fig('mouth_ld_real_px', '.2f', ' px')}]; lip-gap correlation {fig('mouth_open_corr', '.3f')} "
        f"[real frames: {fig('mouth_open_corr_real', '.3f')}]; frames without a face {res['frames_without_face']}",
        f"temporal flicker {fig('flicker', '.2f', ' levels')} (real frame-to-frame change {fig('real_motion', '.2f')})",
        f"FID {res['fid']:.2f}" if res.get("fid") is not None else
        "FID: not computed (pass --fid-weights with a TorchScript Inception; none can be downloaded here)",
    ]
    rep.info("\n".join(lines))


def evaluate_warp(target: Path, target_track: Path, holdout: float = 0.1, frames_out: Optional[Path] = None,
                  json_out: Optional[Path] = None, rep: Optional[Reporter] = None) -> dict:
    """Self-reenactment figures of the no-training warp path on the last ``holdout`` of ``target``
    (:func:`render.video_metrics.evaluate_warp_holdout`), reported like :func:`evaluate_renderer`."""
    from evp_anim.footage.video import probe

    from .video_metrics import evaluate_warp_holdout

    rep = rep or Reporter()
    tr = load_target_track(target_track, target, probe(target))
    n = tr.n_frames - int(tr.n_frames * (1.0 - holdout))     # as evaluate_warp_holdout's floor
    rep.start("eval-video", total=n, description="held-out frames")
    res = evaluate_warp_holdout(tr, target, holdout=holdout, frames_out=frames_out, progress=rep.update)
    _report_figures(res, f"warp path, {res['library_frames']} earlier frames to take mouths from ({res['mode']})", rep)
    _write_json(json_out, res)
    return res


RENDERERS = ("auto", "warp", "gan")


def choose_renderer(renderer: str, model_dir: Path | None, cached_finished: bool) -> tuple[str, str]:
    """("warp" | "gan", why) for ``dub``'s ``--renderer`` (auto: the GAN only when a trained one
    is given or cached for this target; a CPU cannot train one in the minutes a dub takes)."""
    if renderer not in RENDERERS:
        raise EvpError(f"--renderer must be one of {', '.join(RENDERERS)}, got {renderer!r}")
    if renderer == "warp":
        if model_dir is not None:
            raise EvpError("--model is a GAN renderer: use it with --renderer gan or auto, not warp")
        return "warp", "asked for (--renderer warp)"
    if renderer == "gan":
        return "gan", "asked for (--renderer gan)"
    if model_dir is not None:
        return "gan", "a trained renderer was given (--model)"
    if cached_finished:
        return "gan", "a finished GAN renderer for this footage is cached"
    return "warp", ("no trained GAN renderer for this footage, and training one takes hours on a CPU: "
                    "mouths are taken from the footage itself and warped (`--renderer gan` trains one)")


def load_target_track(track_path: Path, video: Path, info):
    """A user's track of ``video`` (``info``: its :func:`~evp_anim.footage.video.probe`), refused
    with one line when it is another video's (image size or length differ)."""
    from evp_anim.tracks import load_track

    tr = load_track(track_path)
    if tuple(tr.image_size) != (info.width, info.height):
        raise EvpError(f"{track_path} is a track of {tr.image_size[0]}x{tr.image_size[1]} footage "
                       f"({tr.info.get('video', 'another video')}), but {video.name} is {info.width}x{info.height}: "
                       f"track this video with `evp-anim track`")
    want = info.duration_s * tr.fps if info.duration_s else None
    if want is not None and abs(tr.n_frames - want) > max(3.0, 0.02 * want):
        raise EvpError(f"{track_path} has {tr.n_frames} frames ({tr.n_frames / tr.fps:.2f} s, "
                       f"{tr.info.get('video', 'another video')}), but {video.name} lasts {info.duration_s:.2f} s: "
                       f"it is another video's track; track this one with `evp-anim track`")
    return tr


def dub_video(speech: Path, target: Path, output: Path, *, emotion: str = "neutral", intensity: float = 1.0,
              model_dir: Path | None = None, train_minutes: float = 30.0, length_policy: str = "loop",
              cache_dir: Path | None = None, evp_model: Path | None = None, sfm_dir: Path | None = None,
              rep=None, command: str = "", precision: str = "auto", renderer: str = "auto",
              track: Path | None = None, front_end: str = "mfcc", text: str | None = None,
              face: str | None = None) -> dict:
    """Run the whole pipeline; returns the paths used and the renderer chosen (``renderer``, ``why``).

    renderer: auto | warp | gan (:func:`choose_renderer`); track: the footage's track from
    ``evp-anim track`` (default: tracked now, cached by the video's sha256 and ``face``); face:
    which person to dub, as ``evp-anim track --face`` (a number or a box; default the largest,
    most central face); front_end / text: as :func:`~evp_anim.models.animate.animate_speech_file`."""
    from evp_anim.emotions import canonical_emotion, check_intensity
    from evp_anim.face.rig import FaceRig
    from evp_anim.footage.alignment import LENGTH_POLICIES, align_tracks
    from evp_anim.footage.fitting import track_footage
    from evp_anim.footage.tracking import TrackerOptions, parse_face_option
    from evp_anim.footage.video import probe
    from evp_anim.models.animate import EmotionSpec, animate_speech_file, default_model_path
    from evp_anim.models.evp import EvpModel
    from evp_anim.tracks import DEFAULT_FPS, load_track, save_track

    from .data import video_fingerprint
    from .trainer import check_precision

    check_precision(precision)      # a wrong --precision is refused before anything runs
    if length_policy not in LENGTH_POLICIES:
        raise EvpError(f"--length-policy must be one of {', '.join(LENGTH_POLICIES)}, got {length_policy!r}")
    if renderer not in RENDERERS:
        raise EvpError(f"--renderer must be one of {', '.join(RENDERERS)}, got {renderer!r}")
    spec = EmotionSpec(emotion=canonical_emotion(emotion), intensity=check_intensity(intensity))
    if face is not None and track is not None:
        raise EvpError("--face chooses whom to track: give it to `evp-anim track`, not with --track")
    face_index, face_box = parse_face_option(face) if face is not None else (None, None)
    info = probe(target)
    given_track = load_target_track(Path(track), Path(target), info) if track is not None else None
    fp = video_fingerprint(target)
    cache = (cache_dir or default_target_cache()) / fp[:16]
    cache.mkdir(parents=True, exist_ok=True)
    mdir = model_dir or (cache / "renderer")
    finished = False
    if (mdir / "model.pt").is_file():
        from .inference import RenderModel
        finished = bool(RenderModel(mdir).meta.get("finished"))
    path, why = choose_renderer(renderer, model_dir, finished)
    rep.info(f"renderer: {path} — {why}")

    # 1. animate
    rep.start("animate", description="animate")
    model = EvpModel.load(evp_model or default_model_path())
    # the SFM mean face; align puts the speech's expression on the target's face
    sp = animate_speech_file(speech, model, spec, FaceRig(sfm_dir), front_end=front_end, text=text,
                             warn=lambda m: rep.info(f"warning: {m}"))
    rep.success(frames=sp.n_frames)
    rep.info(f"animate: {sp.n_frames} frames ({sp.duration:.2f} s, {spec.emotion} {spec.intensity:g})")

    # 2. track (given, or cached)
    # one cached track per chosen face
    track_path = cache / ("track.npz" if face is None else f"track_face-{_face_key(face_index, face_box)}.npz")
    if given_track is not None:
        track_path = Path(track)
        rep.info(f"track: {track_path} (given)")
    elif track_path.is_file():
        rep.info(f"track: cached {track_path}")
    else:
        rep.start("track", total=max(1, int(round(info.duration_s * DEFAULT_FPS))) if info.duration_s else None,
                  description="track footage")
        tr = track_footage(target, sfm_dir, TrackerOptions(face_index=face_index, face_box=face_box),
                           progress=rep.update)
        tr.info["video"] = Path(target).name
        tr.provenance["command"] = command
        save_track(tr, track_path)
        rep.success(output=str(track_path))
        rep.info(f"track: {tr.n_frames} frames → {track_path}")
    tg = given_track if given_track is not None else load_track(track_path)
    _report_shots(tg, rep)

    # 3. align
    aligned = align_tracks(sp, tg, identity="target", length_policy=length_policy, sfm_dir=sfm_dir)
    aligned.info["audio"] = str(Path(speech).resolve())

    # 4. render
    if path == "warp":
        render_warp(aligned, tg, Path(target), output, audio=Path(speech), rep=rep)
        return {"track": str(track_path), "model": None, "output": str(output), "renderer": path, "why": why}
    if model_dir is None and not finished:
        rep.info(f"no trained renderer for {Path(target).name} yet: training one now for up to "
                 f"{train_minutes:g} min → {mdir} (reused next time; a real run per target takes longer, "
                 f"see `evp-anim render train`)")
        train_target(Path(target), track_path, mdir, minutes=train_minutes, precision=precision, rep=rep)
    elif model_dir is None:
        rep.info(f"render: cached renderer {mdir}")
    with tempfile.TemporaryDirectory(prefix="evp-dub-") as tmp:
        aligned_path = Path(tmp) / "aligned.npz"
        save_track(aligned, aligned_path)
        render_dubbed(aligned_path, Path(target), mdir, output, target_track=track_path, audio=Path(speech), rep=rep)
    return {"track": str(track_path), "model": str(mdir), "output": str(output), "renderer": path, "why": why}


def _face_key(index: Optional[int], box) -> str:
    return str(index) if index is not None else "box" + "_".join(f"{v:g}" for v in box)


def _report_shots(target, rep: Reporter) -> None:
    """One line on the footage's shots and the frames without the target's face (left untouched)."""
    cuts = target.info.get("cuts") or []
    missing = target.info.get("missing_ranges") or []
    n_missing = sum(int(b) - int(a) for a, b in missing)
    if cuts or n_missing:
        rep.info(f"footage: {len(cuts) + 1} shot(s), cuts at frames {', '.join(str(c) for c in cuts) or 'none'}; "
                 f"{n_missing} frame(s) without the target's face are left untouched")


def render_warp(aligned, target, video: Path, output: Path, audio: Optional[Path] = None,
                rep: Optional[Reporter] = None) -> int:
    """The no-training path (:mod:`render.warp_dub`): ``aligned`` (a Track over ``target``'s
    footage frames) rendered over ``video`` into ``output`` with the speech in ``audio``."""
    from .warp_dub import MouthLibrary, WarpDubber, render_warped_video

    rep = rep or Reporter()
    check_video_output(output, "dubbed video")
    rep.start("mouths", total=target.n_frames, description="footage mouths")
    lib = MouthLibrary.build(video, target, progress=rep.update)
    rep.success(frames=len(lib.frames))
    dubber = WarpDubber(lib)
    rep.info(f"warp: {len(lib.frames)} footage frames to take mouths from; {dubber.mode}")
    samples, sr = _load_audio(audio)
    rep.start("render", total=aligned.n_frames, description="render")
    n = render_warped_video(aligned, target, video, dubber, output, audio=samples, sample_rate=sr, progress=rep.update)
    rep.success(output=str(output), frames=n)
    rep.info(f"wrote {output} ({n} frames, {n / aligned.fps:.2f} s" + (f", audio {audio})" if audio else ", no audio)"))
    return n
