"""CLI commands of the target-footage stage: ``track``, ``align``, ``overlay``, ``footage-synth``.

Registered explicitly in :mod:`evp_anim.cli` (``register(app)``); heavy imports stay inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..cli_common import SfmDirOpt, reporter, sfm
from ..errors import EvpError


def _npz_out(path: Path, what: str) -> None:
    if path.suffix != ".npz":
        raise EvpError(f"{what} output must end in .npz, got {path.name!r}")


def _mp4_out(path: Path, what: str) -> None:
    if path.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise EvpError(f"{what} output must end in .mp4, .mov or .mkv, got {path.name!r}")


def track(
    video: Path = typer.Argument(..., help="Target footage (any common video format)."),
    output: Path = typer.Option(..., "-o", "--output", help="Track to write (.npz)."),
    face: Optional[str] = typer.Option(None, "--face", help="Which person to follow: a number (0, 1, ...: the "
                                       "faces of the first frame that shows any, numbered left to right) or a "
                                       "box x0,y0,x1,y1 in px (the face most inside it, on the first frame where "
                                       "one is). Default: the largest, most central face of the first frame with "
                                       "faces. That person is followed by face identity (dlib's descriptor); "
                                       "frames where the face is not recognised are marked absent rather than "
                                       "given to another face."),
    smooth: bool = typer.Option(True, "--smooth/--no-smooth", help="One-Euro smoothing of the landmarks "
                                "(within each shot)."),
    max_missing: float = typer.Option(0.5, "--max-missing", min=0.0, max=1.0,
                                      help="Fail when the chosen face is absent from more than this fraction "
                                      "of the frames."),
    verify_every: int = typer.Option(10, "--verify-every", min=0, help="Frames between detector checks "
                                     "of the followed face (0: only when the shape check fails)."),
    identity_distance: float = typer.Option(0.4, "--identity-distance", min=0.05, max=0.6,
                                            help="Face-descriptor distance within which a face found after a "
                                            "cut or a loss is taken as the chosen person (dlib's 128-D "
                                            "descriptor; lower is stricter: more frames left absent, none "
                                            "given to someone else)."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Track one person's 68 landmarks through VIDEO (25 fps) and fit the SFM: pose, identity, expression.

    Shot cuts are found and the chosen person is followed across them by face identity; frames
    where that person is absent are listed per shot in the track's info (`evp-anim info` explains
    every flag) and are to be left untouched by the dub.
    """
    from ..tracks import save_track
    from .fitting import track_footage
    from .tracking import TrackerOptions, describe_absence, parse_face_option
    from ..tracks import DEFAULT_FPS
    from .video import probe

    _npz_out(output, "track")
    face_index, face_box = parse_face_option(face) if face is not None else (None, None)
    opt = TrackerOptions(smooth=smooth, max_missing=max_missing, verify_every=verify_every,
                         face_index=face_index, face_box=face_box, accept_distance=identity_distance)
    opt.validate()
    info = probe(video)
    folder = sfm(sfm_dir)
    rep = reporter()
    rep.start("track", total=max(1, int(round(info.duration_s * DEFAULT_FPS))) if info.duration_s else None,
              description="frames")
    tr = track_footage(video, folder, opt, progress=rep.update)
    tr.provenance["command"] = " ".join(["evp-anim"] + sys.argv[1:])
    save_track(tr, output)
    missing = tr.info["frames_without_face"]
    shots = tr.info.get("shots", [])
    rep.success(output=str(output), frames=tr.n_frames, frames_without_face=missing, shots=len(shots),
                cuts=tr.info.get("cuts", []))
    absent = describe_absence(shots)
    rep.info(f"{tr.n_frames} frames, {len(shots)} shot{'s' if len(shots) != 1 else ''} → {output}; "
             f"reprojection median {tr.info['reprojection_px_median']} px; "
             + (f"the chosen face is absent in {absent} (filled for continuity; leave them untouched)"
                if missing else "the chosen face is in every frame"))


def align(
    speech: Path = typer.Argument(..., help="Speech track with 3D landmarks (.npz)."),
    target: Path = typer.Argument(..., help="Target footage track from `evp-anim track` (.npz)."),
    output: Path = typer.Option(..., "-o", "--output", help="Aligned track to write (.npz)."),
    identity: str = typer.Option("target", "--identity", help="target: the speech's expression on the "
                                 "target's face shape; speech: the speech's own face shape (EVP)."),
    length_policy: str = typer.Option("loop", "--length-policy", help="loop, pingpong, trim or hold: "
                                      "how footage and speech of different lengths are matched."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """3D-aware keypoint alignment (EVP Eq. 8): the speech's landmarks with the target's head motion."""
    from ..preview import find_track_audio
    from ..tracks import load_track, save_track
    from .alignment import IDENTITY_CHOICES, LENGTH_POLICIES, align_tracks

    _npz_out(output, "aligned track")
    if identity not in IDENTITY_CHOICES:
        raise EvpError(f"--identity must be one of {', '.join(IDENTITY_CHOICES)}, got {identity!r}")
    if length_policy not in LENGTH_POLICIES:
        raise EvpError(f"--length-policy must be one of {', '.join(LENGTH_POLICIES)}, got {length_policy!r}")
    sp = load_track(speech)
    tg = load_track(target)
    folder = sfm(sfm_dir) if identity == "target" else None
    out = align_tracks(sp, tg, identity=identity, length_policy=length_policy, sfm_dir=folder)
    audio = find_track_audio(sp, speech)
    if audio is not None:  # absolute, so the aligned track finds it wherever it is saved
        out.info["audio"] = str(audio.resolve())
    tg_video = tg.info.get("video")
    if tg_video and (target.parent / tg_video).is_file():
        out.info["target_video"] = str((target.parent / tg_video).resolve())
    out.provenance["command"] = " ".join(["evp-anim"] + sys.argv[1:])
    save_track(out, output)
    reporter().info(f"{out.n_frames} frames ({length_policy}, identity {identity}) → {output}")


def overlay(
    track_file: Path = typer.Argument(..., help="Track (.npz) whose landmarks to draw."),
    video: Optional[Path] = typer.Option(None, "--video", help="The footage (default: the video the "
                                         "track names, when found)."),
    output: Path = typer.Option(..., "-o", "--output", help="Video to write (.mp4)."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Audio to mux in (default: the track's "
                                         "source audio when found, else none)."),
) -> None:
    """Draw a track's landmarks over the footage, to check tracking or alignment by eye."""
    from ..preview import find_track_audio
    from ..tracks import load_track
    from .overlay import write_overlay

    _mp4_out(output, "overlay")
    tr = load_track(track_file)
    if video is None:
        for key in ("target_video", "video"):
            cand = tr.info.get(key)
            if cand and (track_file.parent / cand).is_file():
                video = track_file.parent / cand
                break
        if video is None:
            raise EvpError("no footage given and none found beside the track: pass --video")
    if audio is None:
        audio = find_track_audio(tr, track_file)
    rep = reporter()
    rep.start("overlay", total=tr.n_frames, description="frames")
    write_overlay(tr, video, output, audio_path=audio, progress=rep.update)
    rep.success(output=str(output))
    rep.info(f"wrote {output}" + (f" with audio from {audio}" if audio else " (no audio)"))


def footage_synth(
    output: Path = typer.Option(..., "-o", "--output", help="Video to write (.mp4); the ground-truth "
                                "track goes beside it as .npz."),
    frames: Optional[int] = typer.Option(None, "--frames", min=1, max=10000, help="Number of frames (25 fps; "
                                         "default 50). Not with --film, whose shots are 80 + 35 + 35 frames."),
    width: Optional[int] = typer.Option(None, "--width", min=64, max=4096, help="Width in pixels (even; "
                                        "default 384, with --film 480)."),
    height: Optional[int] = typer.Option(None, "--height", min=64, max=4096, help="Height in pixels (even; "
                                         "default 384, with --film 320)."),
    face_px: Optional[float] = typer.Option(None, "--face-px", help="Face (jawline) width in pixels (default "
                                            "170; with --film the lead's in the first shot, 150)."),
    seed: int = typer.Option(0, "--seed", help="Identity and motion seed."),
    rich: bool = typer.Option(False, "--rich", help="Many mouth shapes, six emotions in turn, brow raises "
                              "and blinks (training footage for the renderer); default: one jaw rhythm, "
                              "one smile, one blink."),
    film: bool = typer.Option(False, "--film", help="A film-like clip instead (6 s): two different people, "
                              "two hard cuts, the lead shutting her eyes for 0.5 s and turning 40° and back "
                              "while the second person stands in the background, then the second person in "
                              "close-up, then the lead in another framing. Its truth: the lead's track "
                              "(.npz, with presence, cuts, eyes-closed ranges and yaw in its info) and the "
                              "second person's landmarks (_others.npz) beside the video."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Render synthetic target footage of the SFM head with known pose and expression (+ its track)."""
    _mp4_out(output, "synthetic footage")
    tr_path = output.with_suffix(".npz")
    rep = reporter()
    if film:
        from .film_clip import FilmClipConfig, make_film_clip

        if frames is not None or rich:
            raise EvpError("--frames and --rich do not apply to --film (its shots are 80 + 35 + 35 frames)")
        given = {"width": width, "height": height, "lead_face_px": face_px}
        film_cfg = FilmClipConfig(seed=seed, **{k: v for k, v in given.items() if v is not None})
        film_cfg.validate()
        rep.start("footage-synth", total=film_cfg.n_frames, description="frames")
        make_film_clip(output, sfm(sfm_dir), film_cfg, truth_path=tr_path, progress=rep.update)
        rep.success(output=str(output), track=str(tr_path), cuts=film_cfg.cuts)
        rep.info(f"wrote {output} (cuts at frames {', '.join(map(str, film_cfg.cuts))}) and its ground truth "
                 f"{tr_path} + {tr_path.stem}_others.npz")
        return
    from .synthetic import SyntheticFootageConfig, make_synthetic_footage

    cfg = SyntheticFootageConfig(n_frames=50 if frames is None else frames, width=width or 384,
                                 height=height or 384, face_px=170.0 if face_px is None else face_px, seed=seed,
                                 expression_style="rich" if rich else "simple")
    cfg.validate()
    rep.start("footage-synth", total=cfg.n_frames, description="frames")
    make_synthetic_footage(output, sfm(sfm_dir), cfg, track_path=tr_path, progress=rep.update)
    rep.success(output=str(output), track=str(tr_path))
    rep.info(f"wrote {output} and its ground truth {tr_path}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``evp-anim`` app."""
    app.command("track")(track)
    app.command("align")(align)
    app.command("overlay")(overlay)
    app.command("footage-synth")(footage_synth)
