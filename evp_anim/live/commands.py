"""CLI: ``evp-anim live`` — speech in, an emotional face out, in real time.

    evp-anim live --mic --livelink 127.0.0.1:11111 --emotion happy
    evp-anim live --wav speech.wav --osc 127.0.0.1:39539 --jsonl --record take.npz
    arecord -f S16_LE -r 16000 -c 1 -t raw | evp-anim live --stdin --livelink 192.168.1.20:11111

:func:`run_live` is the loop (also used by ``benchmarks/bench_live.py`` and the tests).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

import typer

from ..cli_common import SfmDirOpt, reporter, sfm
from ..errors import EvpError


def register(app: typer.Typer) -> None:
    app.command("live")(live_cmd)


class Timing:
    """Timestamps of a run (``time.monotonic()`` s), for a benchmark: the first :attr:`n_blocks`
    of ``block_end`` (samples received so far after the block) and ``block_t`` (the time it
    entered); ``sent[f]`` the time 25 fps frame f's first output went out (NaN: not sent).

    The arrays are allocated and written up front for ``max_blocks`` blocks and ``max_frames``
    frames, so recording into them does not grow the process while it runs (a benchmark measures
    its memory too: a list of tuples and a dict grew ~60 MB over 50 minutes, 16 B here per 10 ms
    block, held from the start). Blocks and frames past the capacity are counted in
    :attr:`overflow`, not recorded."""

    def __init__(self, max_blocks: int, max_frames: int):
        import numpy as np
        self.block_end = np.full(max(0, int(max_blocks)), -1, np.int64)   # np.full touches every page now
        self.block_t = np.full(max(0, int(max_blocks)), np.nan)
        self.sent = np.full(max(0, int(max_frames)), np.nan)
        self.n_blocks = 0
        self.overflow = 0
        self.cpu_start = 0.0
        self.wall_start = 0.0

    def block(self, end: int, t: float) -> None:
        """A block entered at ``t``; ``end`` samples had been received with it."""
        if self.n_blocks < self.block_end.size:
            self.block_end[self.n_blocks], self.block_t[self.n_blocks] = end, t
            self.n_blocks += 1
        else:
            self.overflow += 1

    def frame_sent(self, index: int, t: float) -> None:
        """The first output of 25 fps frame ``index`` went out at ``t`` (later ones are ignored)."""
        if 0 <= index < self.sent.size:
            if self.sent[index] != self.sent[index]:           # NaN: not sent yet
                self.sent[index] = t
        else:
            self.overflow += 1


def run_live(source, engine, outputs: list, recorder=None, out_fps: float = 25.0,
             timing: Timing | None = None, say: Callable[[str], None] | None = None,
             max_seconds: float | None = None) -> dict:
    """Feed ``source``'s blocks to ``engine`` and send every frame to each of ``outputs`` (at
    ``out_fps``, interpolated from 25 fps); the recorder (if any) gets the audio and the 25 fps
    frames. Stops at the source's end (the look-ahead's last frames are then flushed), after
    ``max_seconds`` of audio, or on SIGINT / SIGTERM: the recording is then still completed (the
    held-back frames included) before the signal is passed on to the usual handler (the CLI
    exits 130 / 143 with ``interrupted``). Returns a summary dict."""
    from .outputs import Resampler, frames_of
    stop = threading.Event()
    got: list[int] = []
    old = {}

    def on_signal(signum, frame):
        got.append(signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, on_signal)
    resampler = Resampler(out_fps)
    frames_out = 0
    t_wall, t_cpu = time.monotonic(), time.process_time()
    if timing is not None:
        timing.wall_start, timing.cpu_start = t_wall, t_cpu

    def emit(track, send: bool = True) -> None:
        nonlocal frames_out
        if track is None:
            return
        if recorder is not None:
            recorder.frames(track)
        if not send:
            return
        first = engine.next_frame - track.n_frames
        for f in frames_of(track, first):
            for g in resampler.push(f):
                for out in outputs:
                    out.send(g)
                frames_out += 1
            if timing is not None:
                timing.frame_sent(f.index, time.monotonic())
    ended = False
    try:
        try:
            limit = None if max_seconds is None else int(max_seconds * 16000)
            for samples, t_in in source.blocks(stop.is_set):
                if recorder is not None:
                    recorder.audio(samples)
                if timing is not None:
                    timing.block(engine.n_samples + samples.size, t_in)
                emit(engine.feed(samples))
                if limit is not None and engine.n_samples >= limit:
                    break
            else:
                ended = not stop.is_set()
        finally:
            source.close()
        # The stream ended (or was stopped): the frames the look-ahead held back, computed as at a
        # clip's end, so the recording is offline animate's of the recorded audio.
        emit(engine.finish(), send=not stop.is_set())
        if not stop.is_set():
            for g in resampler.flush():
                for out in outputs:
                    out.send(g)
                frames_out += 1
        n_rec = recorder.close() if recorder is not None else None
        recorder = None
    finally:
        if recorder is not None:
            recorder.abort()
        for out in outputs:
            out.close()
        for sig, h in old.items():
            signal.signal(sig, h)
    wall, cpu = time.monotonic() - t_wall, time.process_time() - t_cpu
    summary = {"frames": engine.next_frame, "frames_out": frames_out, "seconds": engine.n_samples / 16000,
               "wall_s": wall, "cpu_s": cpu, "cpu_percent": 100.0 * cpu / max(wall, 1e-9),
               "dropped": {o.name: o.dropped for o in outputs if getattr(o, "dropped", 0)},
               "recorded_frames": n_rec, "ended": ended}
    if got:
        if say is not None and n_rec:
            say(f"stopped; recorded {n_rec} frames")
        # Hand the signal to the handler that was there before (the CLI's: `interrupted`, 130/143).
        signal.raise_signal(got[0])
        raise KeyboardInterrupt
    return summary


def live_cmd(
    wav: Optional[Path] = typer.Option(None, "--wav", help="Audio file played at real-time pace (any format animate reads)."),
    stdin: bool = typer.Option(False, "--stdin", help="Raw PCM on stdin: signed 16-bit little-endian, 16 kHz, mono."),
    mic: bool = typer.Option(False, "--mic", help="A microphone (PortAudio through sounddevice)."),
    device: Optional[str] = typer.Option(None, "--device", help="Input device name or index for --mic "
                                         "(default: the system's; list: python -m sounddevice)."),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", help="Rate to open the microphone at "
                                              "(default 16000, else the device's own); resampled to 16 kHz."),
    fast: bool = typer.Option(False, "--fast", help="With --wav: as fast as possible, not at real-time pace."),
    emotion: str = typer.Option("neutral", "--emotion", "-e", help="Starting emotion (one of the 8)."),
    intensity: float = typer.Option(1.0, "--intensity", "-i", help="Starting intensity in [0, 1]."),
    model: Optional[Path] = typer.Option(None, "--model", help="EVP model (default: assets/evp_live.pt, "
                                         "trained for the acoustic front end with 35.6 ms of look-ahead; "
                                         "assets/evp_default.pt, the offline model, reads it with 155.6 ms)."),
    livelink: List[str] = typer.Option([], "--livelink", help="HOST:PORT to send Live Link Face UDP packets "
                                       "to (Unreal's Live Link Face source; port 11111). Repeatable."),
    subject: str = typer.Option("evp-anim", "--subject", help="Live Link subject name."),
    osc: List[str] = typer.Option([], "--osc", help="HOST:PORT to send VMC-protocol blendshapes to "
                                  "(OSC /VMC/Ext/Blend/Val + Apply, ARKit names; port 39539). Repeatable."),
    jsonl: bool = typer.Option(False, "--jsonl", help="One JSON line per frame on stdout."),
    out_fps: int = typer.Option(25, "--out-fps", help="Output frame rate: 25 (the model's) or 60 "
                                "(interpolated; one 25 fps frame, 40 ms, more latency)."),
    control_port: Optional[int] = typer.Option(None, "--control-port", help="UDP port for OSC control: "
                                               "/evp/emotion NAME [INTENSITY], /evp/intensity X."),
    control_host: str = typer.Option("127.0.0.1", "--control-host", help="Address the control port listens on "
                                     "(0.0.0.0: every interface)."),
    keys: bool = typer.Option(True, "--keys/--no-keys", help="Emotion keys in the terminal (when stdin is one "
                              "and not the audio): 1-8 emotions, +/- intensity."),
    record: Optional[Path] = typer.Option(None, "--record", help="Write the take as a track (.npz) and its "
                                          "audio beside it (.wav); completed on Ctrl-C too."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Stop after this many seconds of audio."),
    head_motion: float = typer.Option(1.0, "--head-motion", help="Head motion: 0 = still, 1 = natural, up to 3."),
    no_blinks: bool = typer.Option(False, "--no-blinks", help="No blinks."),
    no_gaze: bool = typer.Option(False, "--no-gaze", help="No gaze (eyes fixed)."),
    still: bool = typer.Option(False, "--still", help="No head motion, blinks or gaze: the model's output only."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the head motion, blinks and gaze."),
    front_end: str = typer.Option("auto", "--front-end", help="What the model hears: acoustic (pocketsphinx's "
                                  "acoustic model frame by frame, into the phone encoder), mfcc (the MFCC content "
                                  "encoder), or auto: acoustic when the model can read it without a content delay."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Speech in, an emotional face out, in real time on a CPU (EVP, 25 fps, 35.6 ms look-ahead).

    Audio from --mic, --wav (real-time pace; --fast for tests) or --stdin; frames to any number of
    --livelink / --osc receivers and --jsonl at once (a receiver that is down never stops the loop).
    Emotion changes (keys, or OSC on --control-port) blend in over 0.3 s. The face has the same rig
    weights, head motion, blinks and gaze as `animate`. Ctrl-C stops; --record is then completed.
    """
    import sys

    from ..emotions import canonical_emotion, check_intensity
    from ..living import OFF, LifeSettings
    from .outputs import JsonlOutput, LiveLinkOutput, Recorder, VmcOutput, parse_hostport

    rep = reporter()
    say = rep.info
    # -- everything a user can get wrong, checked before the model loads (one line, exit 2)
    chosen = [name for name, on in (("--wav", wav is not None), ("--stdin", stdin), ("--mic", mic)) if on]
    if len(chosen) != 1:
        raise EvpError("give one audio source: --wav FILE, --stdin or --mic" if not chosen
                       else f"give one audio source, not {' and '.join(chosen)}")
    if fast and wav is None:
        raise EvpError("--fast applies to --wav only (a microphone or a pipe sets its own pace)")
    if out_fps not in (25, 60):
        raise EvpError(f"--out-fps must be 25 or 60, got {out_fps}")
    if seconds is not None and not seconds > 0:
        raise EvpError(f"--seconds must be positive, got {seconds}")
    emo, inten = canonical_emotion(emotion), check_intensity(intensity)
    if front_end not in ("auto", "acoustic", "mfcc"):
        raise EvpError(f"--front-end must be auto, acoustic or mfcc, got {front_end!r}")
    life = OFF if still else LifeSettings(head_motion=head_motion, blinks=not no_blinks, gaze=not no_gaze, seed=seed)
    targets = ([("livelink", parse_hostport(x, 11111, "--livelink")) for x in livelink]
               + [("osc", parse_hostport(x, 39539, "--osc")) for x in osc])
    if not targets and not jsonl and record is None:
        raise EvpError("nothing to send to: give --livelink HOST:PORT, --osc HOST:PORT, --jsonl or --record")
    if record is not None and wav is not None and record.with_suffix(".wav").resolve() == wav.resolve():
        raise EvpError(f"--record {record} would overwrite the input {wav}: give another name")

    if wav is not None:
        from .sources import WavSource
        source = WavSource(wav, realtime=not fast)
    elif stdin:
        from .sources import StdinSource
        source = StdinSource()
    else:
        from .sources import MicSource
        source = MicSource(device, sample_rate)

    from .engine import LiveEngine
    engine_box: dict = {}

    class _Late:
        """The engine for controls that start before it exists (the port is bound first, so a port
        in use fails before the model loads)."""

        def __getattr__(self, name):
            return getattr(engine_box["engine"], name)

    controls = []
    outputs = []
    recorder = None
    try:
        if control_port is not None:
            from .control import OscControl
            controls.append(OscControl(_Late(), control_port, control_host, say=say))
        from ..face.rig import FaceRig
        from ..models.animate import default_live_path, model_provenance, limit_heap_growth, load_animation_model
        # the live engine steps the torch modules itself (evp_anim/live/engine.py)
        mdl = load_animation_model(model if model is not None else default_live_path(), "torch")
        rig = FaceRig.cached(sfm(sfm_dir))
        limit_heap_growth()
        engine = LiveEngine(mdl, rig, life=life, emotion=emo, intensity=inten, provenance=model_provenance(mdl),
                            info={"live": {"source": source.name, "start_emotion": emo, "start_intensity": inten}},
                            front_end=None if front_end == "auto" else front_end)
        engine.info["live"]["front_end"] = engine.front_end
        engine_box["engine"] = engine
        for kind, (host, port) in targets:
            outputs.append(LiveLinkOutput(host, port, subject) if kind == "livelink" else VmcOutput(host, port))
        if jsonl:
            outputs.append(JsonlOutput(sys.stdout))
        if keys and not source.uses_stdin and sys.stdin is not None and sys.stdin.isatty():
            from .control import KEY_HELP, KeyboardControl
            controls.append(KeyboardControl(engine, say))
            say(KEY_HELP)
        if record is not None:
            recorder = Recorder(record)
        say(f"live: {source.name} → {', '.join(o.name for o in outputs) or 'the recording'}; EVP look-ahead "
            f"{engine.lookahead_ms:.1f} ms ({engine.front_end} front end); {out_fps} fps; emotion {emo} {inten:.1f}")
        summary = run_live(source, engine, outputs, recorder, out_fps=out_fps, say=say, max_seconds=seconds)
        recorder = None
    finally:
        if recorder is not None:
            recorder.abort()
        for c in controls:
            c.close()
        source.close()
    dropped = ", ".join(f"{k} {v}" for k, v in summary["dropped"].items())
    say(f"{summary['frames']} frames ({summary['seconds']:.2f} s of audio) in {summary['wall_s']:.2f} s, "
        f"CPU {summary['cpu_percent']:.0f}% of a core" + (f"; packets not delivered: {dropped}" if dropped else ""))
    if record is not None and summary["recorded_frames"]:
        say(f"recorded {record} and {record.with_suffix('.wav')} ({summary['recorded_frames']} frames)")
