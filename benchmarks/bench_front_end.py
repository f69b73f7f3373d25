"""Speed of the speech front ends on 60 s of real speech, side by side in one run.

    .venv/bin/python benchmarks/bench_front_end.py [--seconds 60] [--threads 2]

The audio is the real recordings of ../shared/realspeech-dev repeated to the length asked for
(with 0.3 s pauses). Printed: the acoustic front end, the word recogniser (searching all of
CMUdict, then its 20,000-word search dictionary — the default — with its utterances heard in one
process, then shared with a second: the default on two cores), the phone recogniser
and the transcript alignment alone, then `animate` (library call, models loaded once, rig solve
included) for EVP and EMOTE with each front end (mfcc, acoustic, phones, words: the command line's
default), each as × real time.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
import warnings
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from evp_anim.assets import find_sfm_dir
    from evp_anim.audio.io import load_audio
    from evp_anim.audio.phones import align_transcript, recognize_phones, recognize_words
    from evp_anim.face.rig import FaceRig
    from evp_anim.models.animate import EmotionSpec, animate_speech_file, load_animation_model

    dev = REPO.parent / "shared" / "realspeech-dev"
    rows = list(csv.DictReader(open(dev / "transcripts.tsv", encoding="utf-8"), delimiter="\t"))
    pause = np.zeros(4800, np.float32)
    pieces, words = [], []
    while sum(len(p) for p in pieces) < args.seconds * 16000:
        for r in rows:
            pieces += [load_audio(dev / r["file"]), pause]
            words.append(r["text"])
    audio = np.concatenate(pieces)[: int(args.seconds * 16000)]
    dur = len(audio) / 16000
    text = " ".join(words)
    print(f"{dur:.1f} s of real speech, {args.threads} threads")

    def timed(label, fn):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        print(f"{label:<34} {dt:7.2f} s  {dur / dt:8.1f}× real time", flush=True)
        return out

    from evp_anim.audio.acoustic import acoustic_frames, default_model
    default_model()                                               # read once per process, as animate does
    timed("acoustic front end (pocketsphinx model)", lambda: acoustic_frames(audio))
    whole = timed("word recogniser, whole CMUdict, one", lambda: recognize_words(audio, workers=1, vocabulary=None))
    one = timed("word recogniser, one process", lambda: recognize_words(audio, workers=1))
    print(f"{'':<34} same words as with the whole dictionary: {one.text == whole.text}")
    two = timed("word recogniser, two (the default)", lambda: recognize_words(audio, workers=2))
    print(f"{'':<34} same words and phones: {one == two}")
    timed("phone recogniser (pocketsphinx)", lambda: recognize_phones(audio))
    full = np.concatenate(pieces)
    timed(f"transcript alignment ({len(full) / 16000:.0f} s)", lambda: align_transcript(full, text))
    rig = FaceRig(find_sfm_dir())
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        sf.write(wav, audio, 16000)
        spec = EmotionSpec(emotion="happy", intensity=1.0)
        for name in ("evp", "emote"):
            model = load_animation_model(None if name == "evp" else "emote")
            animate_speech_file(wav, model, spec, rig)           # warm-up (first-call costs)
            for fe in ("mfcc", "acoustic", "phones", "words"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    timed(f"animate {name}, front end {fe}",
                          lambda: animate_speech_file(wav, model, spec, rig, front_end=fe))


if __name__ == "__main__":
    main()
