"""The main job (``evp-anim demo``): speech → emotional tracks → previews, a Blender file, exports.

With the shipped EVP weights (``assets/evp_default.pt``, trained on the synthetic corpus), the
bundled sample speech (``assets/sample_speech.wav``, a synthetic speaker and sentence that are
not in the training corpus) is animated in several emotions and in one emotion interpolation
(sad → happy, EVP's latent interpolation as timecoded keys), its words heard once by pocketsphinx
as ``animate`` hears them by default (``--front-end words``). Each gives a Track and a preview
video (landmark sketch + shaded SFM head + the speech); the happy take is also written as a
Blender file and as ARKit / Live Link CSV. The shipped EMOTE weights (``assets/emote_default.pt``)
animate the same speech once more (happy), as rig coefficients (``emote_happy``).
"""

from __future__ import annotations

import time
from pathlib import Path

from .errors import EvpError
from .progress import Reporter

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SAMPLE = ASSETS / "sample_speech.wav"
EMOTIONS_SHOWN = ("neutral", "happy", "sad", "angry", "surprised")


def run_demo(output: Path, sfm_dir: Path, reporter: Reporter | None = None, model_path: Path | None = None,
             blender: bool = True) -> dict[str, str]:
    """Run the demo into ``output``; returns what was written (name → path or figure)."""
    from .audio.features import SAMPLE_RATE
    from .audio.io import load_audio
    from .emotion_keys import EmotionKey
    from .face.rig import FaceRig
    from .living import LifeSettings
    from .audio.phones import speech_content
    from .models.animate import EmotionSpec, animate_speech_file, default_model_path
    from .models.evp import EvpModel
    from .preview import write_preview
    from .tracks import save_track

    rep = reporter or Reporter(quiet=True)
    output = Path(output)
    t0 = time.perf_counter()
    model_path = model_path or default_model_path()
    if not SAMPLE.is_file():
        raise EvpError(f"sample speech missing: {SAMPLE} (reinstall evp-anim from a full checkout)")
    model = EvpModel.load(model_path)
    rig = FaceRig.cached(sfm_dir)
    audio = load_audio(SAMPLE)
    duration = len(audio) / SAMPLE_RATE
    takes = {e: EmotionSpec(e, 1.0) for e in EMOTIONS_SHOWN}
    takes["sad_to_happy"] = EmotionSpec(None, keys=[EmotionKey(0.0, "sad", 1.0),
                                                     EmotionKey(round(duration, 2), "happy", 1.0)])
    result: dict[str, str] = {"model": str(model_path), "speech": str(SAMPLE)}
    tracks = {}
    # What is said, heard once for every take, as `animate` hears it by default (--front-end words).
    content = speech_content(audio)
    for name, spec in takes.items():
        # The face lives as with `animate` (same default seed): head motion, blinks, gaze.
        track = animate_speech_file(SAMPLE, model, spec, rig, content=content, life=LifeSettings())
        track.provenance["command"] = "evp-anim demo"
        path = save_track(track, output / f"{name}.npz")
        video = output / f"{name}.mp4"
        rep.start(f"preview-{name}", total=track.n_frames, description=f"preview {name}")
        write_preview(track, video, audio_path=SAMPLE, sfm_dir=sfm_dir, progress=rep.update)
        rep.success(output=str(video))
        tracks[name] = path
        result[name] = f"{path} + {video}"
    # The EMOTE path on the same speech: rig coefficients straight from the generator.
    from .models.animate import default_emote_path
    from .models.emote import EmoteModel
    track = animate_speech_file(SAMPLE, EmoteModel.load(default_emote_path()), EmotionSpec("happy", 1.0), rig,
                                content=content, life=LifeSettings())
    track.provenance["command"] = "evp-anim demo"
    path = save_track(track, output / "emote_happy.npz")
    video = output / "emote_happy.mp4"
    rep.start("preview-emote_happy", total=track.n_frames, description="preview emote_happy")
    write_preview(track, video, audio_path=SAMPLE, sfm_dir=sfm_dir, progress=rep.update)
    rep.success(output=str(video))
    result["emote_happy"] = f"{path} + {video}"
    from .export.commands import export_track_file
    for fmt, suffix in (("arkit-csv", ".arkit.csv"), ("livelink-csv", ".livelink.csv")):
        out = output / f"happy{suffix}"
        export_track_file(tracks["happy"], fmt, out, sfm_dir=sfm_dir)
        result[fmt] = str(out)
    if blender:
        out = output / "happy.blend"
        export_track_file(tracks["happy"], "blend", out, sfm_dir=sfm_dir, audio=SAMPLE)
        result["blend"] = str(out)
    result["seconds"] = f"{time.perf_counter() - t0:.1f}"
    return result
