"""CLI: `evp-anim animate` (speech → emotional Track with an EVP or EMOTE model).

One input and ``-o out.npz`` animates one file. Several inputs, a folder, or ``-o`` naming a
folder animate every file in one process with the model and the rig loaded once: each input
``x.wav`` becomes ``OUTDIR/x.npz``; a file that fails is reported (one line) and the others still
run; the command exits with status 2 at the end if any failed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from ..cli_common import SfmDirOpt, reporter, sfm, speech_content_options
from ..errors import EvpError

# What a folder given to `animate` contributes: its files with these suffixes (case-insensitive),
# not its sub-folders. Other files (notes, tracks, videos) are left alone.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff",
                  ".au", ".w64", ".caf", ".wma")


def register(app: typer.Typer) -> None:
    app.command("animate")(animate_cmd)


def expected_frames(path: Path) -> int | None:
    """The number of frames (25 fps) animating the speech file at ``path`` gives, read from its
    header before any decoding, so progress can count frames of a known total from the start.

    Exact for the formats libsndfile reads (WAV, FLAC, ...): the 16 kHz stream soxr makes from
    n samples at rate r has round(n · 16000 / r) samples. For the others (MP3, M4A, ...) PyAV's
    stream duration, an estimate (encoder priming, rounding). None when the header does not tell
    (or the file cannot be opened: decoding then gives the one-line error)."""
    from ..audio.features import SAMPLE_RATE, n_frames
    from ..audio.io import SOUNDFILE_SUFFIXES
    path = Path(path)
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        try:
            import soundfile as sf
            info = sf.info(str(path))
            if info.frames > 0 and info.samplerate > 0:
                return n_frames(round(info.frames * SAMPLE_RATE / info.samplerate))
        except Exception:  # noqa: BLE001 - not readable by libsndfile: the decoder tries PyAV next
            pass
    try:
        import av
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                return None
    except Exception:  # noqa: BLE001 - any unreadable file: the real decoding reports it
        return None
    return n_frames(round(seconds * SAMPLE_RATE)) if seconds > 0 else None


def batch_inputs(paths: List[Path]) -> list[Path]:
    """The files ``animate`` works through for its arguments ``paths``: a folder gives its audio
    files (:data:`AUDIO_SUFFIXES`, sorted by name, not its sub-folders); anything else is taken as
    given (a missing file is then that input's own error). EvpError for a folder with no audio."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted((f for f in p.iterdir()
                            if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES and not f.name.startswith(".")),
                           key=lambda f: f.name)
            if not found:
                raise EvpError(f"{p}: no audio files in this folder (looked for {', '.join(AUDIO_SUFFIXES)})")
            files += found
        else:
            files.append(p)
    return files


def batch_outputs(inputs: list[Path], outdir: Path) -> list[Path]:
    """``outdir/<input stem>.npz`` for each input; EvpError if two inputs would write one file
    (``a.wav`` and ``a.mp3``, or the same name in two folders) or one input is given twice."""
    outputs = [outdir / f"{p.stem}.npz" for p in inputs]
    seen: dict[Path, Path] = {}
    for inp, out in zip(inputs, outputs):
        if out in seen:
            raise EvpError(f"{seen[out]} and {inp} would both be written to {out}; rename one, or "
                           "animate them into different folders")
        seen[out] = inp
    return outputs


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def animate_cmd(
    audio: List[Path] = typer.Argument(..., help="Speech (wav, flac, mp3, m4a, ...): one file, several "
                                       "files, or folders (their audio files, not sub-folders)."),
    output_arg: str = typer.Option(..., "-o", "--output", metavar="PATH", help="Track to write (.npz). "
                                    "With several inputs, a folder, or an existing folder / a name ending "
                                    "in '/' here: the folder (made if missing) to write <input name>.npz into."),
    emotion: str = typer.Option("neutral", "--emotion", "-e", help="One of the 8 MEAD emotions."),
    intensity: float = typer.Option(1.0, "--intensity", "-i", help="Emotion intensity in [0, 1]."),
    emotion_audio: Optional[Path] = typer.Option(None, "--emotion-audio", help="Take the emotion from "
                                                 "this reference clip instead of a label."),
    emotion_keys: Optional[Path] = typer.Option(None, "--emotion-keys", help="Timecoded emotion keys "
                                                "(TOML \\[\\[key]] time/emotion/intensity) blended per frame."),
    model_path: Optional[Path] = typer.Option(None, "--model", help="EVP or EMOTE model (.pt; the kind "
                                              "is read from the file); 'emote' = the shipped "
                                              "assets/emote_default.pt; default: the shipped "
                                              "assets/evp_default.pt."),
    style: Optional[str] = typer.Option(None, "--style", help="EMOTE only: a training speaker's name "
                                        "(e.g. S003) whose speaking style to use; default: unknown style."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Track whose identity gives the "
                                             "face to animate (default: the SFM mean face)."),
    front_end: str = typer.Option("words", "--front-end", help="Speech content: 'words' (pocketsphinx, "
                                  "trained on real voices, hears the words, then their phones are "
                                  "aligned; ~7x real time on one core, ~12x on two; a word outside "
                                  "its 20,000 most common is heard as a similar one: give --text for "
                                  "such lines), 'acoustic' (pocketsphinx's acoustic model "
                                  "frame by frame, no word search: ~200x real time, the mouth's "
                                  "opening nearly as good, lip closure on /p b m/ much weaker), "
                                  "'phones' (pocketsphinx's phone recogniser; less accurate) or "
                                  "'mfcc' (the models' own audio features: 250-500x real time, poorer "
                                  "on real voices). With words or phones both models read the phones "
                                  "and seal the lips on /p b m/."),
    text: Optional[str] = typer.Option(None, "--text", help="What is said: forced alignment of these "
                                       "words gives the phones (with --front-end mfcc: words; one input "
                                       "only). A transcript that does not match falls back to the "
                                       "recogniser."),
    transcript: Optional[Path] = typer.Option(None, "--transcript", help="Like --text, from a UTF-8 text "
                                              "file (Rhubarb's dialog file works; one input only)."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Also write a preview video (.mp4; "
                                           "one input only)."),
    head_motion: float = typer.Option(1.0, "--head-motion", help="Head motion from the speech's rhythm and "
                                      "the emotion: 0 = still, 1 = natural (a few degrees), up to 3."),
    no_blinks: bool = typer.Option(False, "--no-blinks", help="No blinks (the eyelids keep the emotion's level)."),
    no_gaze: bool = typer.Option(False, "--no-gaze", help="No eye movement (the track gets no gaze)."),
    still: bool = typer.Option(False, "--still", help="No head motion, blinks or gaze: the model's output only."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the head motion, blinks and gaze."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Speech → emotional Track: EVP (landmarks, lifted to the rig) or EMOTE (rig coefficients and the
    landmarks they give), with emotion from a label, keys, or (EVP only) a reference clip.

    Several files or a folder go through one process (the model is loaded once) into the folder
    -o: a.wav → OUTDIR/a.npz. A file that fails is reported on one line and the others still run;
    the exit status is 2 if any failed. Inputs are never overwritten.

    The face lives unless --still: the head moves with the speech's rhythm and the emotion, the
    eyes blink (10–20 a minute, more in pauses) and look around (saccades); see evp_anim/living.py.
    """
    from ..emotions import canonical_emotion, check_intensity
    from ..emotion_keys import read_emotion_keys

    # -o is read as a string: a Path would drop the trailing '/' that marks a folder not made yet.
    output = Path(output_arg)
    batch = (len(audio) > 1 or any(a.is_dir() for a in audio) or output.is_dir()
             or output_arg.endswith(("/", os.sep)))
    if not batch and output.suffix != ".npz":
        raise EvpError(f"track output must end in .npz, got {output.name!r}")
    if batch and output.suffix == ".npz" and not output.is_dir():
        raise EvpError(f"with several inputs or a folder, -o names the output folder (e.g. {output.stem}/), "
                       f"got {output.name!r}")
    if sum(x is not None for x in (emotion_audio, emotion_keys)) > 1:
        raise EvpError("give at most one of --emotion-audio and --emotion-keys")
    if batch and (text is not None or transcript is not None):
        raise EvpError("--text / --transcript say what one clip says: give one input with them")
    if batch and preview is not None:
        raise EvpError("--preview writes one video: give one input with it (or run `evp-anim preview` "
                       "on each track)")
    front_end, line = speech_content_options(front_end, text, transcript)
    emotion, intensity = canonical_emotion(emotion), check_intensity(intensity)   # errors before the fork
    keys = read_emotion_keys(emotion_keys).keys if emotion_keys is not None else None
    # One clip with a recogniser front end: pocketsphinx starts hearing it in a child process now,
    # while this one imports torch and loads the model (both cores busy instead of one, then the
    # other; issue 17's cold start). Only before that import: the child is a fork of this process.
    background = None
    # (Not for the acoustic front end: it takes a fraction of a second, with torch, in-process.)
    from ..audio.phones import RECOGNISERS      # numpy only: nothing heavy before the fork
    if not batch and front_end in RECOGNISERS and audio[0].is_file() and not _same_file(audio[0], output):
        from ..audio.hearing import BackgroundHearing
        background = BackgroundHearing.start(audio[0], line, front_end)
    from .animate import EmotionSpec
    spec = EmotionSpec(emotion=emotion, intensity=intensity)
    if keys is not None:
        spec = EmotionSpec(emotion=None, keys=keys)
    elif emotion_audio is not None:
        spec = EmotionSpec(emotion=None, reference_audio=emotion_audio)

    if batch:
        inputs = batch_inputs(audio)
        outputs = batch_outputs(inputs, output)
        from ..atomic import check_writable
        check_writable(outputs[0])      # makes the folder; a one-line error before the models load
    else:
        inputs, outputs = list(audio), [output]
        if _same_file(inputs[0], output):
            raise EvpError(f"-o {output} is the input itself: give another name for the track")

    from ..living import OFF, LifeSettings
    life = OFF if still else LifeSettings(head_motion=head_motion, blinks=not no_blinks, gaze=not no_gaze,
                                          seed=seed)
    animator = _Animator(model_path, spec, style, reference, front_end, line, sfm_dir, life)
    if not batch:
        animator.run(inputs[0], outputs[0], background=background)
        if preview is not None:
            from ..preview import write_preview
            from ..tracks import load_track
            rep = reporter()
            track = load_track(output)      # the preview renders every frame: it reads the track back
            rep.start("preview", total=track.n_frames, description="preview")
            write_preview(track, preview, audio_path=inputs[0], sfm_dir=sfm(sfm_dir), progress=rep.update)
            rep.success(output=str(preview))
        return
    _animate_batch(animator, inputs, outputs, output)


class _Animator:
    """The model, rig and face loaded once, and :meth:`run` to animate one file with them."""

    def __init__(self, model_path, spec, style, reference, front_end, text, sfm_dir, life=None):
        from ..face.rig import FaceRig
        from ..tracks import load_track
        from .animate import limit_heap_growth, load_animation_model
        # numpy runs the EVP networks unless the emotion encoder (torch) is wanted: no torch import
        self.model = load_animation_model(model_path, "torch" if spec.reference_audio is not None else "auto")
        is_emote = self.model.kind == "emote"
        if is_emote and spec.reference_audio is not None:
            raise EvpError("--emotion-audio needs the EVP model (EMOTE takes the emotion from a label or keys)")
        if style is not None and not is_emote:
            raise EvpError("--style applies to the EMOTE model only (--model emote)")
        self.rig = FaceRig.cached(sfm(sfm_dir))
        self.identity = None   # the SFM mean face (see animate_speech_file)
        if reference is not None:
            tr = load_track(reference)
            if tr.identity.size != self.rig.num_identity:
                raise EvpError(f"{reference}: track has no SFM identity to animate")
            self.identity = tr.identity
        self.spec, self.style, self.front_end, self.text = spec, style, front_end, text
        self.life = life
        limit_heap_growth()     # this process streams the speech: chunk-sized buffers stay out of the heap

    def _acoustic_frames(self, audio: Path):
        """The acoustic frames (:func:`~evp_anim.audio.acoustic.acoustic_frames`) that ``animate``
        blends into the heard phones for a model that reads visemes, else None. Computed while a
        background hearing runs: the recogniser's child is the longer of the two start-up paths
        (measured: this process then waited 0.3–0.5 s for a 2 s clip), and the frames need only the
        audio (a 2 s clip cold, 7 alternating runs on a busy machine: median 3.04 s against 3.18)."""
        from ..audio.acoustic import acoustic_frames
        from ..audio.io import load_audio
        from .animate import reads_visemes
        if not reads_visemes(self.model):
            return None
        try:
            # the file's warnings (a truncated WAV) are given once, by the animation's own reading
            return acoustic_frames(load_audio(audio, warn=lambda m: None))
        except EvpError:            # a bad file: the animation's own reading reports it as always
            return None

    def run(self, audio: Path, output: Path, warn_prefix: str = "", background=None, **fields) -> int:
        """Animate ``audio`` into the track ``output`` (.npz), reporting frames done of the
        clip's total (read from the file's header up front, corrected to the exact count at the
        end). ``background`` (:class:`~evp_anim.audio.hearing.BackgroundHearing` of this clip)
        gives the phones already being heard; without its result the clip is heard here.
        ``fields`` go into the machine-readable lines. Returns the frames written."""
        from ..tracks import DEFAULT_FPS
        from .animate import animate_speech_to_file
        rep = reporter()
        total = expected_frames(audio)
        # The word recogniser runs first (~7-12x real time): a task of its own, so a long clip shows
        # progress from the start; the animation's task begins with its first frames.
        hearing = self.front_end == "words" and self.text is None
        if hearing:
            rep.start("hear", total=1000, description=f"{audio.name}: hearing the words", **fields)
        else:
            rep.start("animate", total=total, description=audio.name, **fields)
        rep.update(0)

        def on_hearing(fraction: float) -> None:
            rep.fraction(fraction)

        def on_frames(done: int) -> None:
            nonlocal hearing
            if hearing:
                hearing = False
                rep.success()
                rep.start("animate", total=total, description=audio.name, **fields)
                rep.update(0)
            # A header's estimate that was short (a compressed file) grows with the frames done.
            rep.update(done, total=done if total is not None and done > total else None)

        def warn(message: str) -> None:
            rep.info(f"warning: {warn_prefix}{message}")
        content = None
        if background is not None:
            heard = self._acoustic_frames(audio)    # while the child is still hearing the words
            content = background.result(warn, on_hearing)
            if content is not None and heard is not None and content.wants_acoustic:
                from ..audio.acoustic import blend_acoustic
                content = blend_acoustic(content, heard)
        # Written chunk by chunk as it is made: memory stays flat however long the speech is.
        frames = animate_speech_to_file(audio, output, self.model, self.spec, self.rig, identity=self.identity,
                                        style=self.style, front_end=self.front_end, text=self.text,
                                        warn=warn, frame_progress=on_frames, life=self.life,
                                        hearing=on_hearing, content=content)
        if frames != total:
            rep.update(frames, total=frames)    # the exact count, now known
        rep.success(output=str(output), frames=frames)
        rep.info(f"wrote {output} ({frames} frames, {frames / DEFAULT_FPS:.2f} s)")
        return frames


def _animate_batch(animator: _Animator, inputs: list[Path], outputs: list[Path], outdir: Path) -> None:
    """Animate each input into its output; one failing input is reported (one line on stderr,
    or a JSON failure line naming its ``input``) and the rest still run. EvpError at the end
    naming the failed inputs, if any. With a recogniser front end the next input is heard while
    this one is (:class:`_Hearings`)."""
    from ..atomic import write_error
    rep = reporter()
    all_inputs = [p for p in inputs if p.exists()]
    failed: list[Path] = []
    hearings = _Hearings(animator, inputs)
    try:
        for i, (inp, out) in enumerate(zip(inputs, outputs), 1):
            fields = {"input": str(inp), "index": i, "count": len(inputs)}
            background = None
            try:
                background = hearings.take(i - 1)
                if any(_same_file(out, p) for p in all_inputs):
                    rep.start("animate", description=inp.name, **fields)
                    raise EvpError(f"its track {out} would overwrite an input: move the inputs or choose "
                                   "another output folder")
                animator.run(inp, out, warn_prefix=f"{inp}: ", background=background, **fields)
            except Exception as e:  # noqa: BLE001 - one input's failure stops only that input
                if background is not None:
                    background.close()
                if isinstance(e, OSError) and e.filename is not None and _same_file(Path(e.filename), inp):
                    e = EvpError(f"cannot read {inp}: {e.strerror or type(e).__name__}")
                elif isinstance(e, OSError):
                    e = write_error(e.filename or out, e)       # full disk, folder removed, ...
                elif not isinstance(e, EvpError):
                    # Not a user error (a decoder's or our own bug): still one line, and the rest run.
                    first = str(e).splitlines()[0] if str(e) else ""
                    e = EvpError(f"unexpected {type(e).__name__}: {first} (a bug: please report it)")
                msg = str(e).splitlines()[0] if str(e) else "failed"
                if str(inp) not in msg:
                    msg = f"{inp}: {msg}"
                failed.append(inp)
                rep.failure(msg)        # the JSON failure line (with this input's fields); closes its bar
                if not rep.machine_readable:
                    typer.echo(f"error: {msg}", err=True)
    finally:
        hearings.close()
    done = len(inputs) - len(failed)
    rep.info(f"animated {done} of {len(inputs)} inputs into {outdir}")
    if failed:
        names = ", ".join(str(p) for p in failed[:3]) + (", ..." if len(failed) > 3 else "")
        raise EvpError(f"{len(failed)} of {len(inputs)} inputs failed: {names}")


class _Hearings:
    """The batch's recogniser front end run ahead: while one input is heard (and animated), the
    next one is already being heard in a forked child (:class:`~evp_anim.audio.hearing.BackgroundHearing`),
    so the two cores hear two clips at once. Only for a recogniser front end, and only from a
    process that has not imported torch (EMOTE, ``--emotion-audio``: the inputs are heard one
    after the other, here, as before): a child is a fork of this process."""

    AHEAD = 2          # clips being heard at once: the one about to be animated and the next

    def __init__(self, animator: "_Animator", inputs: list[Path]):
        import sys
        from ..audio.phones import RECOGNISERS
        self._inputs = inputs
        self._started: dict[int, object] = {}
        self._use = (animator.front_end in RECOGNISERS and animator.text is None
                     and "torch" not in sys.modules and len(inputs) > 1)
        self._front_end = animator.front_end

    def take(self, i: int):
        """The hearing of input ``i`` (0-based), started now if it was not, with the next ones
        started; None where none runs (the caller hears the clip itself)."""
        if not self._use:
            return None
        from ..audio.hearing import BackgroundHearing
        for j in range(i, min(i + self.AHEAD, len(self._inputs))):
            if j not in self._started and self._inputs[j].is_file():
                self._started[j] = BackgroundHearing.start(self._inputs[j], None, self._front_end)
        return self._started.pop(i, None)

    def close(self) -> None:
        """End the hearings not taken (an interrupt, or inputs that failed before their turn)."""
        for hearing in self._started.values():
            if hearing is not None:
                hearing.close()
        self._started.clear()
