"""Lip-sync table on real recordings: every model × emotion × front end, scored against the
force-aligned transcripts (evp_anim.eval.lipsync), all clips of a folder pooled into one sequence.

    .venv/bin/python scripts/eval_realspeech.py [../shared/realspeech-dev] [--models evp,emote]

The folder holds WAVs and a ``transcripts.tsv`` (``file<TAB>text``). It prints one row per
configuration; the rule-based baseline (pocketsphinx phones → visemes, no learning) comes first.
These recordings are for checking only: nothing is trained or tuned on them.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evp_anim.assets import find_sfm_dir  # noqa: E402
from evp_anim.audio.features import voice_activity  # noqa: E402
from evp_anim.audio.io import load_audio  # noqa: E402
from evp_anim.audio.phones import (TranscriptMismatch, align_transcript, recognize_phones,  # noqa: E402
                                   recognize_words, transcript_words)
from evp_anim.eval.baselines import RuleBasedAnimator  # noqa: E402
from evp_anim.eval.lipsync import score_lipsync  # noqa: E402
from evp_anim.face.rig import FaceRig  # noqa: E402
from evp_anim.models.animate import EmotionSpec, animate_speech_file, load_animation_model  # noqa: E402

FPS = 25.0


def word_errors(reference: str, heard: str) -> int:
    """Substitutions + deletions + insertions between the two word sequences (edit distance)."""
    ref, hyp = transcript_words(reference), transcript_words(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def live_landmarks(model, rig, audio: np.ndarray, emotion: str) -> np.ndarray:
    """(T, 68, 3) mm: `evp-anim live`'s engine on ``audio`` fed in 10 ms blocks (head still)."""
    from evp_anim.live.engine import LiveEngine
    from evp_anim.living import OFF
    engine = LiveEngine(model, rig, life=OFF, emotion=emotion, intensity=1.0)
    out = [engine.feed(audio[i:i + 160]) for i in range(0, audio.size, 160)] + [engine.finish()]
    return np.concatenate([t.landmarks_3d for t in out if t is not None])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=str(REPO.parent / "shared" / "realspeech-dev"))
    ap.add_argument("--models", default="evp,emote",
                    help="comma-separated: evp, emote (the shipped weights) or NAME=MODEL.pt")
    ap.add_argument("--emotions", default="neutral,happy,surprised,angry")
    ap.add_argument("--front-ends", default="mfcc,phones,words,words+text",
                    help="comma-separated: mfcc, acoustic, phones, words, words+text (the transcript), live "
                         "(evp-anim live's engine, EVP models only)")
    ap.add_argument("--snr", type=float, default=None,
                    help="add white noise at this signal-to-noise ratio (dB, over the speech) to every "
                         "recording before animating it (scored against the clean recording's alignment)")
    ap.add_argument("--session", action="store_true",
                    help="play the recordings one after another as one continuous clip (one file, one live "
                         "session) instead of each on its own; scored the same way")
    args = ap.parse_args()
    folder = Path(args.folder)
    rows = list(csv.DictReader(open(folder / "transcripts.tsv", encoding="utf-8"), delimiter="\t"))
    rig = FaceRig(find_sfm_dir())
    clips = []
    noisy = Path(tempfile.mkdtemp(prefix="evp-noisy-"))     # noisy copies / the session clip
    atexit.register(shutil.rmtree, noisy, ignore_errors=True)
    for i, r in enumerate(rows):
        audio = load_audio(folder / r["file"])
        try:
            ref = align_transcript(audio, r["text"])
        except TranscriptMismatch as e:       # nothing to score against
            print(f"skipped {r['file']}: {e}")
            continue
        path = folder / r["file"]
        if args.snr is not None:
            rng = np.random.default_rng(i)
            level = np.sqrt(np.mean(audio[voice_activity(audio).repeat(640)[:audio.size]] ** 2))
            audio = (audio + rng.normal(0, level * 10 ** (-args.snr / 20), audio.size)).astype(np.float32)
            path = noisy / r["file"]
            sf.write(path, audio, 16000)
        clips.append((path, r["text"], audio, ref))
    if args.snr is not None:
        print(f"white noise added at {args.snr:g} dB SNR")
    heard = [recognize_words(c[2]).text for c in clips]
    errors = sum(word_errors(c[1], h) for c, h in zip(clips, heard))
    n_words = sum(len(transcript_words(c[1])) for c in clips)
    print(f"word recogniser: {errors} word errors in {n_words} words (WER {100 * errors / n_words:.0f}%): "
          + " | ".join(heard))
    seconds = sum(len(c[2]) for c in clips) / 16000
    n_bil = sum(p in ("P", "B", "M") for c in clips for _, _, p in c[3])
    print(f"{folder}: {len(clips)} recordings, {seconds:.1f} s, {n_bil} /p b m/ in the transcripts")

    if args.session:        # one clip of them all: what a live performer's running session hears
        audio = np.concatenate([c[2] for c in clips])
        ref, offset = [], 0.0
        for c in clips:
            ref += [(s + offset, e + offset, p) for s, e, p in c[3]]
            offset += c[2].size / 16000
        path = noisy / "session.wav"
        sf.write(path, audio, 16000)
        clips = [(path, " ".join(c[1] for c in clips), audio, ref)]
        print(f"played as one session of {audio.size / 16000:.1f} s")

    def pooled(make) -> dict:
        lms, phones, offset = [], [], 0.0
        for path, text, audio, ref in clips:
            lm = make(path, text, audio)
            lms.append(lm)
            phones += [(s + offset, e + offset, p) for s, e, p in ref]
            offset += len(lm) / FPS
        return score_lipsync(np.concatenate(lms), phones, FPS).to_dict()

    def show(name: str, d: dict) -> None:
        print(f"| {name:<30} | {d['openness_corr']:5.3f} | {100 * d['closure']:4.0f}% | "
              f"{100 * d['closure_chance']:4.1f}% | {100 * d['shut_frames']:4.1f}% | {100 * d['shut_elsewhere']:4.1f}% | "
              f"{d['open_vowel_contrast']:6.3f} | {d['lag_ms']:+5.0f} |", flush=True)

    print("| configuration | openness corr | closure /p b m/ | chance | shut frames | shut outside /p b m f v/ "
          "| open-vowel contrast | lag ms |")
    print("|---|---|---|---|---|---|---|---|")
    rb = RuleBasedAnimator(rig=rig)
    ref_face = rig.landmarks_3d(None)
    show("rule-based (recogniser)", pooled(lambda p, t, a: rb.animate_3d(
        a, int(round(len(a) / 16000 * FPS)), reference=ref_face, phones=recognize_phones(a))[0]))
    show("rule-based (words heard)", pooled(lambda p, t, a: rb.animate_3d(
        a, int(round(len(a) / 16000 * FPS)), reference=ref_face, phones=recognize_words(a).phones)[0]))
    # The same articulation rules on the transcript's phones: the synthetic ground truth's own
    # generator given the right phones, i.e. what a model that learnt it perfectly would score.
    aligned = {c[0]: c[3] for c in clips}
    show("rule-based (transcript)", pooled(lambda p, t, a: rb.animate_3d(
        a, int(round(len(a) / 16000 * FPS)), reference=ref_face, phones=aligned[p])[0]))
    for item in filter(None, args.models.split(",")):
        name, _, path = item.partition("=")
        model = load_animation_model(path or (None if name == "evp" else name))
        for emo in args.emotions.split(","):
            spec = EmotionSpec(emotion=emo, intensity=1.0)
            for fe in args.front_ends.split(","):
                if fe == "live":        # evp-anim live's engine, fed 10 ms blocks as a microphone would
                    show(f"{name} {emo} live", pooled(lambda p, t, a: live_landmarks(model, rig, a, emo)))
                    continue
                front, use_text = fe.split("+")[0], fe.endswith("+text")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    show(f"{name} {emo} {fe}", pooled(lambda p, t, a: animate_speech_file(
                        p, model, spec, rig, front_end=front, text=t if use_text else None).landmarks_3d))


if __name__ == "__main__":
    main()
