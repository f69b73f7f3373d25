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
    smooth: bool = typer.Option(True, "--smooth/--no-smooth", help="One-Euro smoothing of the landmarks."),
    max_missing: float = typer.Option(0.5, "--max-missing", min=0.0, max=1.0,
                                      help="Fail when more than this fraction of frames has no face."),
    verify_every: int = typer.Option(10, "--verify-every", min=0, help="Frames between detector checks "
                                     "of the followed face (0: only when the shape check fails)."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Track 68 landmarks through VIDEO (25 fps) and fit the SFM: pose, identity, expression per frame."""
    from ..tracks import save_track
    from .fitting import track_footage
    from .tracking import TrackerOptions
    from ..tracks import DEFAULT_FPS
    from .video import probe

    _npz_out(output, "track")
    info = probe(video)
    folder = sfm(sfm_dir)
    rep = reporter()
    rep.start("track", total=max(1, int(round(info.duration_s * DEFAULT_FPS))) if info.duration_s else None,
              description="frames")
    opt = TrackerOptions(smooth=smooth, max_missing=max_missing, verify_every=verify_every)
    tr = track_footage(video, folder, opt, progress=rep.update)
    tr.provenance["command"] = " ".join(["evp-anim"] + sys.argv[1:])
    save_track(tr, output)
    rep.success(output=str(output), frames=tr.n_frames, frames_without_face=tr.info["frames_without_face"])
    missing = tr.info["frames_without_face"]
    rep.info(f"{tr.n_frames} frames → {output}; reprojection median {tr.info['reprojection_px_median']} px"
             + (f"; {missing} frames without a face were interpolated" if missing else ""))


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
    frames: int = typer.Option(50, "--frames", min=1, max=10000, help="Number of frames (25 fps)."),
    width: int = typer.Option(384, "--width", min=64, max=4096, help="Width in pixels (even)."),
    height: int = typer.Option(384, "--height", min=64, max=4096, help="Height in pixels (even)."),
    face_px: float = typer.Option(170.0, "--face-px", help="Face (jawline) width in pixels."),
    seed: int = typer.Option(0, "--seed", help="Identity and motion seed."),
    rich: bool = typer.Option(False, "--rich", help="Many mouth shapes, six emotions in turn, brow raises "
                              "and blinks (training footage for the renderer); default: one jaw rhythm, "
                              "one smile, one blink."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Render synthetic target footage of the SFM head with known pose and expression (+ its track)."""
    from .synthetic import SyntheticFootageConfig, make_synthetic_footage

    _mp4_out(output, "synthetic footage")
    cfg = SyntheticFootageConfig(n_frames=frames, width=width, height=height, face_px=face_px, seed=seed,
                                 expression_style="rich" if rich else "simple")
    cfg.validate()
    rep = reporter()
    rep.start("footage-synth", total=frames, description="frames")
    tr_path = output.with_suffix(".npz")
    make_synthetic_footage(output, sfm(sfm_dir), cfg, track_path=tr_path, progress=rep.update)
    rep.success(output=str(output), track=str(tr_path))
    rep.info(f"wrote {output} and its ground truth {tr_path}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the ``evp-anim`` app."""
    app.command("track")(track)
    app.command("align")(align)
    app.command("overlay")(overlay)
    app.command("footage-synth")(footage_synth)
