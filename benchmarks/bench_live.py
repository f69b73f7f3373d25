"""`evp-anim live` latency, CPU and memory on a loopback run of WAVs played at real-time pace.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_live.py [--minutes 3] [WAV ...]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_live.py --fast --minutes 60

The speech (default: ../shared/realspeech-dev/*.wav joined, looped to --minutes) enters in 10 ms
blocks at real-time pace, as a microphone callback would deliver it; every frame goes out as a
Live Link Face packet to a UDP receiver on 127.0.0.1 (a thread of this process) that stamps its
arrival. Printed:

* latency of each 10 ms block = arrival of the packet carrying its frame − the block's entry
  (median, 99th percentile, max), and how much of it is look-ahead: the wait until the block that
  completes the samples the frame needs (640·t + 3880) has entered — no computation can start
  earlier (EVP's MFCC window and content convolution, see evp_anim.live.engine);
* CPU: process CPU time / wall time over the run (25 fps, 1 torch thread), and the engine's
  compute per frame;
* memory: resident set size after loading and every 30 s.

With ``--fast`` the same run goes as fast as the CPU allows (no real-time pace: an hour of audio
in ~10-15 min): no latency then, but the memory is sampled every simulated minute and printed at
minutes 1, 5, 10, 20, 30, 45, 60 ... (every 10, and the last), to check it stays flat over a long
run. The run's own records (block and frame timestamps, packet arrivals, compute times) are arrays
allocated up front for the whole run, so they do not show as growth.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("wavs", nargs="*", type=Path)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--out-fps", type=int, default=25)
    ap.add_argument("--model", default=None, help="EVP model (default: assets/evp_live.pt, as `live`)")
    ap.add_argument("--fast", action="store_true", help="as fast as possible (not real-time pace): "
                    "memory per simulated minute, no latency")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from evp_anim.assets import find_sfm_dir
    from evp_anim.audio.io import load_audio, save_wav
    from evp_anim.face.rig import FaceRig
    from evp_anim.live.commands import Timing, run_live
    from evp_anim.live.engine import LiveEngine
    from evp_anim.live.outputs import LiveLinkOutput
    from evp_anim.live.sources import BLOCK, WavSource
    from evp_anim.models.animate import default_live_path, limit_heap_growth, load_animation_model

    wavs = args.wavs or sorted((REPO.parent / "shared" / "realspeech-dev").glob("*.wav"))
    speech = np.concatenate([load_audio(w) for w in wavs])
    loops = max(1, int(np.ceil(args.minutes * 60 * 16000 / speech.size)))
    n_total = loops * speech.size
    seconds = n_total / 16000
    tmp = Path("/tmp/bench_live_speech.wav")
    save_wav(tmp, speech)
    rig, model = FaceRig(find_sfm_dir()), load_animation_model(args.model or default_live_path(), "torch")
    delay = model.net.cfg.content_delay
    limit_heap_growth()

    # the receiver: stamps each packet's arrival by its frame number
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    # packet arrival by frame number (NaN: none yet); for the whole run, allocated now
    arrived = np.full(int(np.ceil(seconds * args.out_fps)) + 4, np.nan)
    done = threading.Event()

    def receive():
        import struct
        while not done.is_set():
            try:
                data = sock.recv(2048)
            except socket.timeout:
                continue
            t = time.monotonic()
            n_dev = struct.unpack_from(">i", data, 1)[0]
            n_sub = struct.unpack_from(">i", data, 5 + n_dev)[0]
            frame = struct.unpack_from(">i", data, 9 + n_dev + n_sub)[0]
            if 0 <= frame < arrived.size and np.isnan(arrived[frame]):
                arrived[frame] = t
    rx = threading.Thread(target=receive, daemon=True)
    rx.start()

    n_frames = -(-n_total // 640)
    timing = Timing(-(-n_total // BLOCK), n_frames)
    compute = np.full(n_frames, np.nan)            # engine compute per frame, per feed that gave frames
    n_compute = 0
    mem = [(0.0, rss_mb())]                        # (minutes: of wall time, or of audio with --fast; MB)
    engine = LiveEngine(model, rig)
    stop_mem = threading.Event()

    def sample_memory():
        t0 = time.monotonic()
        while not stop_mem.wait(30.0):
            mem.append(((time.monotonic() - t0) / 60, rss_mb()))
    if not args.fast:
        threading.Thread(target=sample_memory, daemon=True).start()
    feed = engine.feed
    next_minute = 1

    def timed_feed(x):
        nonlocal n_compute, next_minute
        t = time.perf_counter()
        out = feed(x)
        if out is not None:
            if n_compute < compute.size:
                compute[n_compute] = (time.perf_counter() - t) / out.n_frames
                n_compute += 1
        if args.fast and engine.n_samples >= next_minute * 60 * 16000:
            mem.append((float(next_minute), rss_mb()))
            next_minute += 1
        return out
    engine.feed = timed_feed
    pace = "as fast as possible" if args.fast else "at real-time pace"
    print(f"{len(wavs)} WAVs, {speech.size / 16000:.1f} s, looped ×{loops} = {seconds / 60:.1f} min {pace}; "
          f"look-ahead by construction {engine.lookahead_ms:.1f} ms after a frame's last sample (model: "
          f"{args.model or default_live_path().name}, content delay {delay}, {engine.front_end} front end)", flush=True)
    summary = run_live(WavSource(tmp, realtime=not args.fast, loop=loops), engine,
                       [LiveLinkOutput("127.0.0.1", sock.getsockname()[1])], out_fps=args.out_fps, timing=timing)
    stop_mem.set()
    mem.append((seconds / 60 if args.fast else summary["wall_s"] / 60, rss_mb()))
    time.sleep(0.3)
    done.set()

    n_received = int(np.count_nonzero(~np.isnan(arrived)))
    c = 1000 * compute[:n_compute]
    compute_line = (f"engine compute per frame: median {np.median(c):.2f} ms, p99 {np.percentile(c, 99):.2f} ms, "
                    f"max {c.max():.1f} ms")
    cpu_line = f"CPU: {summary['cpu_percent']:.1f}% of one core ({summary['cpu_s']:.1f} s CPU / {summary['wall_s']:.1f} s wall)"
    if args.fast:
        print(f"frames {summary['frames']}, packets received {n_received}")
        print(compute_line)
        print(cpu_line)
        last = mem[-1][0]
        shown = [(m, r) for m, r in mem[:-1] if m < last and (m in (0, 1, 5, 45) or m % 10 == 0)] + [mem[-1]]
        print("memory RSS (MB) by simulated minute: " + ", ".join(f"{m:.4g} min {r:.1f}" for m, r in shown))
        base = 5 if last >= 10 else 1 if last >= 2 else 0     # after the warm-up (first frames, caches)
        after = [r for m, r in mem if m >= base]
        print(f"  growth from minute {base} to {last:.4g}: {after[-1] - after[0]:+.1f} MB "
              f"(max {max(after) - after[0]:+.1f} MB)")
        return

    # latency per 10 ms block
    ends, t_in = timing.block_end[:timing.n_blocks], timing.block_t[:timing.n_blocks]
    # The packet carrying a block's last sample: output frames are numbered at --out-fps (60 fps
    # output interpolates the model's 25 fps frames); the model frame that sample belongs to
    # decides how long the frame had to wait for audio.
    frame = ((ends - 1) * args.out_fps) // 16000
    ok = (frame >= 0) & (frame < arrived.size)
    ok[ok] = ~np.isnan(arrived[frame[ok]])
    lat = 1000 * (arrived[frame[ok]] - t_in[ok])
    f = (ends[ok] - 1) // 640
    j = np.searchsorted(ends, np.minimum(640 * f + engine.needed_samples, ends[-1]))   # block completing what f needs
    wait = 1000 * (t_in[j] - t_in[ok])
    sent = timing.sent[~np.isnan(timing.sent)]
    print(f"frames {summary['frames']}, packets received {n_received}")
    print(f"latency block→packet: median {np.median(lat):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, "
          f"max {lat.max():.1f} ms")
    print(f"  of which look-ahead (waiting for the samples the frame needs): median {np.median(wait):.1f} ms, "
          f"p99 {np.percentile(wait, 99):.1f} ms; the rest (compute + send): median "
          f"{np.median(lat - wait):.1f} ms, p99 {np.percentile(lat - wait, 99):.1f} ms")
    print(f"{compute_line}; frame interval jitter p99 {np.percentile(np.abs(np.diff(sent) - 0.04), 99) * 1000:.1f} ms")
    print(cpu_line)
    print("memory RSS (MB): " + ", ".join(f"{t:.1f} min {m:.1f}" for t, m in mem))


if __name__ == "__main__":
    main()
