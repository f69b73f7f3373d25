"""CLI: `evp-anim animate` (speech → emotional Track with an EVP or EMOTE model)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli_common import SfmDirOpt, read_transcript_option, reporter, sfm
from ..errors import EvpError


def register(app: typer.Typer) -> None:
    app.command("animate")(animate_cmd)


def animate_cmd(
    audio: Path = typer.Argument(..., help="Speech (wav, flac, mp3, m4a, ...)."),
    output: Path = typer.Option(..., "-o", "--output", help="Track to write (.npz)."),
    emotion: str = typer.Option("neutral", "--emotion", "-e", help="One of the 8 MEAD emotions."),
    intensity: float = typer.Option(1.0, "--intensity", "-i", help="Emotion intensity in [0, 1]."),
    emotion_audio: Optional[Path] = typer.Option(None, "--emotion-audio", help="Take the emotion from "
                                                 "this reference clip instead of a label."),
    emotion_keys: Optional[Path] = typer.Option(None, "--emotion-keys", help="Timecoded emotion keys "
                                                "(TOML [[key]] time/emotion/intensity) blended per frame."),
    model_path: Optional[Path] = typer.Option(None, "--model", help="EVP or EMOTE model (.pt; the kind "
                                              "is read from the file); 'emote' = the shipped "
                                              "assets/emote_default.pt; default: the shipped "
                                              "assets/evp_default.pt."),
    style: Optional[str] = typer.Option(None, "--style", help="EMOTE only: a training speaker's name "
                                        "(e.g. S003) whose speaking style to use; default: unknown style."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Track whose identity gives the "
                                             "face to animate (default: the SFM mean face)."),
    front_end: str = typer.Option("mfcc", "--front-end", help="Speech content: 'mfcc' (the models' own "
                                  "audio features) or 'phones' (pocketsphinx, trained on real voices: "
                                  "EMOTE reads its phones, both models seal the lips on /p b m/)."),
    text: Optional[str] = typer.Option(None, "--text", help="What is said: forced alignment of these "
                                       "words gives the phones (implies --front-end phones)."),
    transcript: Optional[Path] = typer.Option(None, "--transcript", help="Like --text, from a UTF-8 text "
                                              "file (Rhubarb's dialog file works)."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Also write a preview video (.mp4)."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Speech → emotional Track: EVP (landmarks, lifted to the rig) or EMOTE (rig coefficients and the
    landmarks they give), with emotion from a label, keys, or (EVP only) a reference clip."""
    from ..emotions import canonical_emotion, check_intensity
    from ..tracks import DEFAULT_FPS, load_track
    from .animate import EmotionSpec, animate_speech_to_file, limit_heap_growth, load_animation_model
    from .emote import EmoteModel
    from ..emotion_keys import read_emotion_keys

    if output.suffix != ".npz":
        raise EvpError(f"track output must end in .npz, got {output.name!r}")
    if sum(x is not None for x in (emotion_audio, emotion_keys)) > 1:
        raise EvpError("give at most one of --emotion-audio and --emotion-keys")
    line = read_transcript_option(text, transcript)
    if line is not None:
        front_end = "phones"
    spec = EmotionSpec(emotion=canonical_emotion(emotion), intensity=check_intensity(intensity))
    if emotion_keys is not None:
        spec = EmotionSpec(emotion=None, keys=read_emotion_keys(emotion_keys).keys)
    elif emotion_audio is not None:
        spec = EmotionSpec(emotion=None, reference_audio=emotion_audio)
    from ..face.rig import FaceRig
    model = load_animation_model(model_path)
    is_emote = isinstance(model, EmoteModel)
    if is_emote and emotion_audio is not None:
        raise EvpError("--emotion-audio needs the EVP model (EMOTE takes the emotion from a label or keys)")
    if style is not None and not is_emote:
        raise EvpError("--style applies to the EMOTE model only (--model emote)")
    rig = FaceRig(sfm(sfm_dir))
    ident = None   # the SFM mean face (see animate_speech_file)
    if reference is not None:
        tr = load_track(reference)
        if tr.identity.size != rig.num_identity:
            raise EvpError(f"{reference}: track has no SFM identity to animate")
        ident = tr.identity
    rep = reporter()
    rep.start("animate", description="animate")
    limit_heap_growth()     # this process streams the speech: chunk-sized buffers stay out of the heap
    # Written chunk by chunk as it is made: memory stays flat however long the speech is.
    frames = animate_speech_to_file(audio, output, model, spec, rig, identity=ident, style=style,
                                    front_end=front_end, text=line, warn=lambda m: rep.info(f"warning: {m}"),
                                    progress=rep.fraction)
    rep.success(output=str(output), frames=frames)
    rep.info(f"wrote {output} ({frames} frames, {frames / DEFAULT_FPS:.2f} s)")
    if preview is not None:
        from ..preview import write_preview
        track = load_track(output)      # the preview renders every frame: it reads the track back
        rep.start("preview", total=track.n_frames, description="preview")
        write_preview(track, preview, audio_path=audio, sfm_dir=sfm(sfm_dir), progress=rep.update)
        rep.success(output=str(preview))
