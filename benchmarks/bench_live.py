"""`evp-anim live` latency, CPU and memory on a loopback run of WAVs played at real-time pace.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_live.py [--minutes 3] [WAV ...]

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
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

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
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from evp_anim.assets import find_sfm_dir
    from evp_anim.audio.io import load_audio, save_wav
    from evp_anim.face.rig import FaceRig
    from evp_anim.live.commands import Timing, run_live
    from evp_anim.live.engine import LOOKAHEAD_MS, NEEDED_OFFSET, LiveEngine
    from evp_anim.live.outputs import LiveLinkOutput
    from evp_anim.live.sources import WavSource
    from evp_anim.models.animate import limit_heap_growth, load_animation_model

    wavs = args.wavs or sorted((REPO.parent / "shared" / "realspeech-dev").glob("*.wav"))
    speech = np.concatenate([load_audio(w) for w in wavs])
    loops = max(1, int(np.ceil(args.minutes * 60 * 16000 / speech.size)))
    tmp = Path("/tmp/bench_live_speech.wav")
    save_wav(tmp, speech)
    rig, model = FaceRig(find_sfm_dir()), load_animation_model(None)
    limit_heap_growth()

    # the receiver: stamps each packet's arrival by its frame number
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    arrived: dict[int, float] = {}
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
            arrived.setdefault(frame, t)
    rx = threading.Thread(target=receive, daemon=True)
    rx.start()

    mem = [(0.0, rss_mb())]
    engine = LiveEngine(model, rig)
    stop_mem = threading.Event()

    def sample_memory():
        t0 = time.monotonic()
        while not stop_mem.wait(30.0):
            mem.append((time.monotonic() - t0, rss_mb()))
    threading.Thread(target=sample_memory, daemon=True).start()
    timing = Timing()
    compute = []
    feed = engine.feed

    def timed_feed(x):
        t = time.perf_counter()
        out = feed(x)
        if out is not None:
            compute.append((time.perf_counter() - t) / out.n_frames)
        return out
    engine.feed = timed_feed
    seconds = loops * speech.size / 16000
    print(f"{len(wavs)} WAVs, {speech.size / 16000:.1f} s, looped ×{loops} = {seconds / 60:.1f} min at real-time pace; "
          f"look-ahead by construction {LOOKAHEAD_MS:.1f} ms after a frame's last sample", flush=True)
    summary = run_live(WavSource(tmp, realtime=True, loop=loops), engine,
                       [LiveLinkOutput("127.0.0.1", sock.getsockname()[1])], out_fps=args.out_fps, timing=timing)
    stop_mem.set()
    mem.append((summary["wall_s"], rss_mb()))
    time.sleep(0.3)
    done.set()

    # latency per 10 ms block
    ends = np.array([b[0] for b in timing.blocks])
    t_in = np.array([b[1] for b in timing.blocks])
    frame = (ends - 1) // 640
    lat, wait = [], []
    for i, f in enumerate(frame):
        if f in arrived:
            lat.append(arrived[f] - t_in[i])
            j = np.searchsorted(ends, min(640 * f + NEEDED_OFFSET, ends[-1]))   # block completing what f needs
            wait.append(t_in[j] - t_in[i])
    lat, wait = 1000 * np.array(lat), 1000 * np.array(wait)
    sent = np.array([timing.sent[f] for f in sorted(timing.sent)])
    print(f"frames {summary['frames']}, packets received {len(arrived)}")
    print(f"latency block→packet: median {np.median(lat):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, "
          f"max {lat.max():.1f} ms")
    print(f"  of which look-ahead (waiting for the samples the frame needs): median {np.median(wait):.1f} ms, "
          f"p99 {np.percentile(wait, 99):.1f} ms; the rest (compute + send): median "
          f"{np.median(lat - wait):.1f} ms, p99 {np.percentile(lat - wait, 99):.1f} ms")
    c = 1000 * np.array(compute)
    print(f"engine compute per frame: median {np.median(c):.2f} ms, p99 {np.percentile(c, 99):.2f} ms, "
          f"max {c.max():.1f} ms; frame interval jitter p99 {np.percentile(np.abs(np.diff(sent) - 0.04), 99) * 1000:.1f} ms")
    print(f"CPU: {summary['cpu_percent']:.1f}% of one core ({summary['cpu_s']:.1f} s CPU / {summary['wall_s']:.1f} s wall)")
    print("memory RSS (MB): " + ", ".join(f"{t / 60:.1f} min {m:.1f}" for t, m in mem))


if __name__ == "__main__":
    main()
