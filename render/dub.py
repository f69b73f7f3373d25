"""``evp-anim dub``: speech + target footage -> dubbed video, in one command.

1. animate: the speech -> an emotional landmark track with the shipped EVP model;
2. track: the footage's 68 landmarks + SFM fit (cached by the video's sha256);
3. align: EVP Eq. 8, the speech's expression with the footage's head motion;
4. render: the per-target renderer (cached by the video's sha256; trained now, within
   ``train_minutes``, when the target has none — said on the console).

Cache layout: ``<cache>/<sha256[:16]>/track.npz`` and ``<cache>/<sha256[:16]>/renderer/``
(a model folder as ``evp-anim render train`` writes it; an interrupted training resumes).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from evp_anim.errors import EvpError


def default_target_cache() -> Path:
    """$EVP_ANIM_CACHE, else $XDG_CACHE_HOME/evp-anim/targets (default ~/.cache/evp-anim/targets)."""
    env = os.environ.get("EVP_ANIM_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / "evp-anim" / "targets"


def dub_video(speech: Path, target: Path, output: Path, *, emotion: str = "neutral", intensity: float = 1.0,
              model_dir: Path | None = None, train_minutes: float = 30.0, length_policy: str = "loop",
              cache_dir: Path | None = None, evp_model: Path | None = None, sfm_dir: Path | None = None,
              rep=None, command: str = "") -> dict:
    """Run the whole pipeline; returns the paths used (track, model, aligned track in a temp dir)."""
    from evp_anim.emotions import canonical_emotion, check_intensity
    from evp_anim.face.rig import FaceRig
    from evp_anim.footage.alignment import LENGTH_POLICIES, align_tracks
    from evp_anim.footage.fitting import track_footage
    from evp_anim.footage.video import probe
    from evp_anim.models.animate import EmotionSpec, animate_speech_file, default_model_path
    from evp_anim.models.evp import EvpModel
    from evp_anim.tracks import load_track, save_track

    from .commands import render_dubbed, train_target
    from .data import video_fingerprint

    if length_policy not in LENGTH_POLICIES:
        raise EvpError(f"--length-policy must be one of {', '.join(LENGTH_POLICIES)}, got {length_policy!r}")
    spec = EmotionSpec(emotion=canonical_emotion(emotion), intensity=check_intensity(intensity))
    info = probe(target)
    fp = video_fingerprint(target)
    cache = (cache_dir or default_target_cache()) / fp[:16]
    cache.mkdir(parents=True, exist_ok=True)

    # 1. animate
    rep.start("animate", description="animate")
    model = EvpModel.load(evp_model or default_model_path())
    # the SFM mean face; align puts the speech's expression on the target's face
    sp = animate_speech_file(speech, model, spec, FaceRig(sfm_dir))
    rep.success(frames=sp.n_frames)
    rep.info(f"animate: {sp.n_frames} frames ({sp.duration:.2f} s, {spec.emotion} {spec.intensity:g})")

    # 2. track (cached)
    track_path = cache / "track.npz"
    if track_path.is_file():
        rep.info(f"track: cached {track_path}")
    else:
        rep.start("track", total=max(1, int(round(info.duration_s * 25))) if info.duration_s else None,
                  description="track footage")
        tr = track_footage(target, sfm_dir, progress=rep.update)
        tr.info["video"] = Path(target).name
        tr.provenance["command"] = command
        save_track(tr, track_path)
        rep.success(output=str(track_path))
        rep.info(f"track: {tr.n_frames} frames → {track_path}")
    tg = load_track(track_path)

    # 3. align
    aligned = align_tracks(sp, tg, identity="target", length_policy=length_policy, sfm_dir=sfm_dir)
    aligned.info["audio"] = str(Path(speech).resolve())

    # 4. render (train the target's renderer first when there is none)
    mdir = model_dir or (cache / "renderer")
    model_file = mdir / "model.pt"
    finished = False
    if model_file.is_file():
        from .inference import RenderModel
        finished = bool(RenderModel(mdir).meta.get("finished"))
    if model_dir is None and not finished:
        rep.info(f"no trained renderer for {Path(target).name} yet: training one now for up to "
                 f"{train_minutes:g} min → {mdir} (reused next time; a real run per target takes longer, "
                 f"see `evp-anim render train`)")
        train_target(Path(target), track_path, mdir, minutes=train_minutes, rep=rep)
    elif model_dir is None:
        rep.info(f"render: cached renderer {mdir}")
    with tempfile.TemporaryDirectory(prefix="evp-dub-") as tmp:
        aligned_path = Path(tmp) / "aligned.npz"
        save_track(aligned, aligned_path)
        render_dubbed(aligned_path, Path(target), mdir, output, target_track=track_path, audio=Path(speech), rep=rep)
    return {"track": str(track_path), "model": str(mdir), "output": str(output)}
