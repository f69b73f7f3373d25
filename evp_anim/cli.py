"""The ``evp-anim`` command line: a thin typer layer over the library functions.

Every user error is an :class:`~evp_anim.errors.EvpError`; :func:`main` prints it as one line
(``error: …``) on stderr and exits with status 2, or as a JSON ``failure`` line with
``--machine-readable``. Heavy modules are imported inside commands so ``--help`` stays fast.

The commands of the main stages (tracks, corpora, previews, the demo) are defined here; the other
stages' commands are defined in their ``commands`` modules and added in :data:`STAGE_COMMANDS`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from render import commands as render_commands

from .cli_common import SfmDirOpt, reporter as _reporter, set_reporter, sfm as _sfm
from .errors import EvpError
from .eval import commands as eval_commands
from .export import commands as export_commands
from .footage import commands as footage_commands
from .live import commands as live_commands
from .models import commands as models_commands
from .progress import Reporter
from .train import commands as train_commands

app = typer.Typer(
    name="evp-anim",
    help="Speech to emotional facial animation: landmark and 3DMM tracks, previews, corpora.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
assets_app = typer.Typer(help="The Surrey Face Model files (download, locate, verify).", no_args_is_help=True)
rig_app = typer.Typer(help="The SFM face rig (contact sheet of its shapes).", no_args_is_help=True)
corpus_app = typer.Typer(help="Real corpora (MEAD, RAVDESS, CREMA-D) → manifest.", no_args_is_help=True)
app.add_typer(assets_app, name="assets")
app.add_typer(rig_app, name="rig")
app.add_typer(corpus_app, name="corpus")

def _print_version(value: bool) -> None:
    # Eager: runs before any command is resolved, and imports nothing heavy (no numpy, no torch).
    if value:
        from . import __version__
        typer.echo(f"evp-anim {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    machine_readable: bool = typer.Option(False, "--machine-readable",
                                          help="Progress (steps done of total) and results as JSON "
                                          "lines on stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version (evp-anim X.Y.Z) and exit."),
) -> None:
    set_reporter(Reporter(machine_readable=machine_readable, quiet=quiet))


# ---------------------------------------------------------------------- assets
@assets_app.command("download")
def assets_download(
    dest: Optional[Path] = typer.Option(None, "--dest", help="Target folder (default: the per-user cache)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Mirror to fetch from (http(s):// or file://); "
                                           "default: the pinned eos commit's raw files."),
) -> None:
    """Download the Surrey Face Model files from the pinned eos commit and check their SHA-256 sums."""
    from .assets import SFM_LICENCE, download_sfm
    rep = _reporter()
    rep.start("assets-download", description="SFM files")
    out = download_sfm(dest=dest, base_url=base_url, progress=rep.fraction)
    rep.success(output=str(out))
    rep.info(f"SFM files ready in {out}\n{SFM_LICENCE}")


@assets_app.command("path")
def assets_path(sfm_dir: Optional[Path] = SfmDirOpt) -> None:
    """Print the folder the SFM files are found in (non-zero exit if none)."""
    from .assets import verify_sfm_dir
    d = _sfm(sfm_dir)
    problems = verify_sfm_dir(d)
    if problems:
        raise EvpError(f"{d}: {problems[0]} (run `evp-anim assets download`)")
    typer.echo(str(d))


# ---------------------------------------------------------------------- rig
@rig_app.command("sheet")
def rig_sheet(
    output: Path = typer.Option(Path("rig_contact_sheet.png"), "-o", "--output", help="PNG to write."),
    tile: int = typer.Option(192, "--tile", min=64, max=1024, help="Tile size in pixels."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Render every rig channel (and each emotion) at full weight into one contact-sheet PNG."""
    from .face.contact_sheet import contact_sheet
    from .face.rig import FaceRig
    if output.suffix.lower() != ".png":
        raise EvpError(f"contact sheet output must end in .png, got {output.name!r}")
    contact_sheet(FaceRig(_sfm(sfm_dir)), output, tile=tile)
    _reporter().info(f"wrote {output}")


# ---------------------------------------------------------------------- synth
@app.command()
def synth(
    output: Path = typer.Argument(..., help="Corpus folder to create (or resume)."),
    speakers: int = typer.Option(8, "--speakers", help="Number of synthetic speakers."),
    sentences: int = typer.Option(20, "--sentences", help="Number of sentences (from the built-in list)."),
    seed: int = typer.Option(0, "--seed", help="Corpus seed: the same seed gives the same corpus."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Parallel worker processes "
                                          "(default: all cores)."),
    test_speakers: Optional[int] = typer.Option(None, "--test-speakers", help="Held-out speakers "
                                                "(default: a quarter)."),
    test_sentences: Optional[int] = typer.Option(None, "--test-sentences", help="Held-out sentences "
                                                 "(default: a fifth)."),
    emotions: Optional[str] = typer.Option(None, "--emotions", help="Comma-separated subset of the 8 emotions."),
    pairs: bool = typer.Option(True, "--pairs/--no-pairs", help="Also compute the DTW pseudo pairs."),
    voices: str = typer.Option("espeak", "--voices", help="Speech engines, comma-separated: espeak, "
                               "festival (Debian's voices from real recordings), or both (speakers alternate)."),
    augment: float = typer.Option(0.0, "--augment", help="Share of clips (0-1) given recording conditions: "
                                  "reverb, noise, band-limiting, codec, level."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Make a synthetic MEAD-like corpus: speakers × sentences × 8 emotions × 3 levels.

    Speech from espeak-ng (and, with --voices espeak,festival, Festival voices) with per-emotion
    prosody and exact phoneme timing; ground-truth Tracks from the SFM rig (visemes with coarticulation, emotion dynamics, blinks, head motion).
    Deterministic from --seed; a killed run resumes when run again with the same options.
    """
    from .emotions import EMOTIONS, canonical_emotion
    from .synth.corpus import CorpusConfig, synthesize_corpus
    from .synth.speakers import check_voices
    emo = tuple(EMOTIONS) if not emotions else tuple(
        dict.fromkeys(canonical_emotion(e) for e in emotions.split(",") if e.strip()))
    config = CorpusConfig(n_speakers=speakers, n_sentences=sentences, seed=seed,
                          test_speakers=test_speakers, test_sentences=test_sentences, emotions=emo,
                          voices=check_voices(voices), augment=augment)
    config.validate()
    sfm = _sfm(sfm_dir)
    rep = _reporter()
    from .synth.corpus import plan_jobs
    rep.start("synth", total=len(plan_jobs(config)), description="clips")
    rows = synthesize_corpus(output, config, sfm, workers=workers, progress=lambda d, t: rep.update(d))
    rep.success(output=str(output), clips=len(rows))
    seconds = sum(r.duration_s for r in rows)
    rep.info(f"{len(rows)} clips ({seconds / 60:.1f} min of speech) in {output}")
    if pairs:
        _make_pairs(output, rows)


@app.command()
def speak(
    text: str = typer.Argument(..., help="What to say (English)."),
    output: Path = typer.Option(..., "-o", "--output", help="Track to write (.npz); the speech goes "
                                "beside it as .wav."),
    emotion: str = typer.Option("neutral", "--emotion", "-e", help="One of the 8 MEAD emotions."),
    intensity: float = typer.Option(1.0, "--intensity", "-i", help="Emotion intensity in [0, 1]."),
    speaker: int = typer.Option(1, "--speaker", min=1, max=64, help="Synthetic speaker number (voice and face)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the speaker set and the clip."),
    video: Optional[Path] = typer.Option(None, "--preview", help="Also write a preview video (.mp4)."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Say TEXT with a synthetic speaker and emotion: speech (.wav) plus its ground-truth Track.

    The same generator as `evp-anim synth`, for one utterance of your own text.
    """
    from .synth.speak import speak as say
    wav, track = say(text, output, emotion=emotion, intensity=intensity, speaker=speaker, seed=seed,
                     sfm_dir=sfm_dir, command=" ".join(["evp-anim", "speak"] + sys.argv[2:]))
    rep = _reporter()
    rep.info(f"wrote {wav} and {output} ({track.n_frames} frames, {track.duration:.2f} s)")
    if video is not None:
        from .preview import write_preview
        rep.start("preview", total=track.n_frames, description="preview")
        write_preview(track, video, audio_path=wav, sfm_dir=_sfm(sfm_dir), progress=rep.update)
        rep.success(output=str(video))
        rep.info(f"wrote {video}")


def _make_pairs(root: Path, rows) -> None:
    from .data.pairs import build_pairs
    rep = _reporter()
    rep.start("pairs", description="DTW pairs")
    out = build_pairs(root, rows, progress=rep.fraction)
    rep.success(output=str(out))
    rep.info(f"wrote {out}")


@app.command()
def pairs(corpus: Path = typer.Argument(..., help="Corpus folder with manifest.csv.")) -> None:
    """Compute EVP's DTW pseudo pairs (same speaker and sentence, two emotions) into pairs.npz."""
    from .data.manifest import read_manifest
    _make_pairs(corpus, read_manifest(corpus / "manifest.csv"))


# ---------------------------------------------------------------------- tracks
@app.command()
def info(track: Path = typer.Argument(..., help="Track file (.npz).")) -> None:
    """Validate a track and print a summary as JSON."""
    from .emotions import EMOTIONS
    from .tracks import load_track
    tr = load_track(track)
    mean_emo = tr.emotion.mean(0)
    summary = {
        "frames": tr.n_frames, "fps": tr.fps, "duration_s": round(tr.duration, 3),
        "image_size": list(tr.image_size), "expression_channels": len(tr.expression_names),
        "has_landmarks_3d": tr.landmarks_3d is not None, "identity_dim": int(tr.identity.size),
        "dominant_emotion": EMOTIONS[int(mean_emo.argmax())],
        "mean_intensity": round(float(tr.intensity.mean()), 3), "phonemes": len(tr.phonemes),
        "provenance": tr.provenance, "info": tr.info,
    }
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def preview(
    track: Path = typer.Argument(..., help="Track file (.npz)."),
    output: Path = typer.Option(..., "-o", "--output", help="Video to write (.mp4)."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Audio to mux in (default: the track's "
                                         "source audio when it is beside the corpus)."),
    size: int = typer.Option(384, "--size", min=128, max=1024, help="Panel size in pixels."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Landmark sketch beside a shaded SFM head, with the audio muxed in."""
    from .preview import write_preview
    from .tracks import load_track
    tr = load_track(track)
    rep = _reporter()
    rep.start("preview", total=tr.n_frames, description="frames")
    write_preview(tr, output, audio_path=audio, sfm_dir=_sfm(sfm_dir), size=size, progress=rep.update,
                  track_path=track)
    rep.success(output=str(output))
    rep.info(f"wrote {output}")


@app.command()
def features(
    audio: Path = typer.Argument(..., help="Audio file (wav, flac, mp3, m4a, ...)."),
    output: Path = typer.Option(..., "-o", "--output", help="Features file (.npz)."),
) -> None:
    """EVP audio features: MFCC windows (T×28×12 at 25 fps), energy (dBFS) and voice activity."""
    from .audio.io import write_features
    n = write_features(audio, output)
    _reporter().info(f"{n} frames → {output}")


# ---------------------------------------------------------------------- real corpora
@corpus_app.command("import")
def corpus_import(
    root: Path = typer.Argument(..., help="Root folder of a MEAD, RAVDESS or CREMA-D copy."),
    output: Path = typer.Option(..., "-o", "--output", help="Manifest to write (.csv)."),
    kind: Optional[str] = typer.Option(None, "--kind", help="mead, ravdess or cremad (default: detect)."),
    test_speakers: Optional[str] = typer.Option(None, "--test-speakers", help="Comma-separated held-out speaker ids."),
    test_sentences: Optional[str] = typer.Option(None, "--test-sentences", help="Comma-separated held-out sentence ids."),
) -> None:
    """Read a real corpus's file names into the same manifest as the synthetic corpus."""
    from .data.manifest import write_manifest
    from .data.readers import read_corpus
    split = lambda s: tuple(x.strip() for x in s.split(",") if x.strip()) if s else ()  # noqa: E731
    result = read_corpus(root, kind=kind, test_speakers=split(test_speakers), test_sentences=split(test_sentences))
    rows, skipped = (result if isinstance(result, tuple) else (result, []))
    write_manifest(output, rows)
    _reporter().info(f"{len(rows)} clips → {output}" + (f"; skipped {len(skipped)} (first: {skipped[0]})"
                                                         if skipped else ""))


# ---------------------------------------------------------------------- demo
@app.command()
def demo(
    output: Path = typer.Option(Path("demo_out"), "-o", "--output", help="Folder for the demo's outputs."),
    model: Optional[Path] = typer.Option(None, "--model", help="EVP model (default: assets/evp_default.pt)."),
    blender: bool = typer.Option(True, "--blender/--no-blender", help="Also write a .blend file (needs bpy)."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """The main job: the bundled speech → tracks in five emotions and a sad→happy interpolation →
    preview videos, a Blender file and ARKit / Live Link CSV."""
    from .demo import run_demo
    rep = _reporter()
    result = run_demo(output, _sfm(sfm_dir), rep, model_path=model, blender=blender)
    rep.info("\n".join(f"{k}: {v}" for k, v in result.items()))


# ---------------------------------------------------------------------- stage commands
# Each stage module adds its own commands with ``register(app)``; they appear in `--help` in this order.
STAGE_COMMANDS = (
    eval_commands,      # eval, eval-lipsync
    export_commands,    # export, export-rig, retarget
    footage_commands,   # track, align, overlay, footage-synth
    train_commands,     # train, train-emote
    models_commands,    # animate
    render_commands,    # render (train, run), eval-video, dub
    live_commands,      # live
)
for _module in STAGE_COMMANDS:
    _module.register(app)


# Exit status of an interrupted command: 128 + the signal number, as shells report it.
_SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class _Interrupts:
    """SIGINT and SIGTERM handlers for one :func:`main` call. Each signal raises KeyboardInterrupt
    in the main thread, so ``finally`` blocks and :func:`evp_anim.atomic.atomic_path` remove their
    temporary files, and records the signal: typer turns KeyboardInterrupt into an exit code that
    ``standalone_mode=False`` *returns* (and :func:`main` used to drop, exiting 0), so the record is
    what tells :func:`main` that the command was interrupted."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, object] = {}
        self._pid = os.getpid()

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:
            # A forked worker (multiprocessing) inherits the handler: behave as it would without it,
            # so e.g. Pool.terminate()'s SIGTERM still ends the worker quietly.
            old = self._old.get(signum, signal.SIG_DFL)
            if callable(old):
                return old(signum, frame)
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
            if old != signal.SIG_IGN:
                os.kill(os.getpid(), signum)
            return
        if self.signum is None:
            self.signum = signum
        raise KeyboardInterrupt

    def __enter__(self) -> "_Interrupts":
        for sig in _SIGNAL_EXIT:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:           # not the main thread (e.g. main() called from a test thread)
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _Interrupted(SystemExit):
    """The exit of an interrupted command (:func:`_interrupted`), 130 or 143."""


def _interrupted(args: list[str], signum: int) -> None:
    """Report an interrupted command (one line: ``interrupted``, or a JSON failure line) and exit
    with 130 (SIGINT) or 143 (SIGTERM)."""
    rep = _reporter()
    rep.failure("interrupted", task=next((a for a in args if not a.startswith("-")), "evp-anim"))
    if not rep.machine_readable:
        typer.echo("interrupted", err=True)
    raise _Interrupted(_SIGNAL_EXIT.get(signum, 130))


def _exit_interrupted(code: int) -> None:
    """End the process (``evp-anim``, ``python -m evp_anim``) with an interrupted command's status
    by ``os._exit`` after the atexit handlers and a flush, not by ``SystemExit``: when the
    KeyboardInterrupt passed through C code that runs Python by ``PyRun_String`` (a Cython module's
    import does), CPython 3.11 records it as unhandled, and under ``python -m`` it then ends the
    process by SIGINT after the interpreter exits, whatever status SystemExit asked for (seen: -2
    instead of 143, about one interrupted preview in 20 under load)."""
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):      # a closed pipe: nothing more can reach the reader
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2, and an
    interrupt (Ctrl-C, SIGTERM from e.g. the Blender add-on's Cancel) into ``interrupted`` and exit
    status 130 / 143 after the command's temporary files are cleaned up."""
    args = sys.argv[1:] if argv is None else argv
    try:
        _main(args)
    except _Interrupted as stop:
        if argv is None:             # this process's program: see _exit_interrupted
            _exit_interrupted(stop.code)
        raise


def _main(args: list[str]) -> None:
    """:func:`main` on ``args``: the app run under the interrupt handlers, its errors and
    interrupts turned into exits."""
    with _Interrupts() as interrupts:
        try:
            try:
                rv = app(args=args, standalone_mode=False)
            except OSError as e:
                # The disk or the file system refused (full, read-only, a file where a folder
                # should be): an environment problem the user fixes, so one line, not a traceback.
                from .atomic import write_error
                raise write_error(e.filename or "the output", e) from None
        except EvpError as e:
            if interrupts.signum is not None:    # an EvpError raised while unwinding an interrupt
                _interrupted(args, interrupts.signum)
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            rep = _reporter()
            if rep.machine_readable:
                command = next((a for a in args if not a.startswith("-")), "evp-anim")
                rep.failure(msg, task=command)
            else:
                typer.echo(f"error: {msg}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            _interrupted(args, interrupts.signum or signal.SIGINT)
        except Exception as e:
            if interrupts.signum is not None:
                _interrupted(args, interrupts.signum)
            # typer's (vendored) click exceptions: usage errors know how to show themselves.
            if hasattr(e, "show") and hasattr(e, "exit_code"):
                e.show()
                sys.exit(e.exit_code)
            if isinstance(e, (typer.Exit,)):
                sys.exit(e.exit_code)
            if isinstance(e, typer.Abort):
                _interrupted(args, signal.SIGINT)
            raise
    if interrupts.signum is not None or (isinstance(rv, int) and rv == 130):
        # typer caught the KeyboardInterrupt and returned Exit(130)'s code
        _interrupted(args, interrupts.signum or signal.SIGINT)


if __name__ == "__main__":
    main()
