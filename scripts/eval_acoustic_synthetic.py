"""How the acoustic front end's constants were chosen: lip-sync scores on synthetic held-out clips.

    .venv/bin/python scripts/eval_acoustic_synthetic.py CORPUS [--model evp|emote|PATH] [--clips 40]
        [--set POSTERIOR_SCALE=0.3 --set CLOSURE_FLOOR=0.2,CLOSURE_FULL=0.4 ...] [--blend 0,0.5] [--live]

CORPUS is a corpus made by ``evp-anim synth`` (its manifest.csv). ``--clips`` clips of its
``test_both`` split (speakers and sentences no model was trained on; a fixed shuffle, seed 0) are
animated at neutral and scored (evp_anim.eval.lipsync) against their exact phones, pooled:
openness correlation, closure on /p b m/, its chance rate, shut frames.

* each ``--set`` is one row: the acoustic front end alone with those module constants of
  evp_anim/audio/acoustic.py changed (comma-separated NAME=VALUE pairs);
* ``--live``: the acoustic front end streamed (`evp-anim live`'s engine, 10 ms blocks, each clip a
  cold start), its running cepstral mean starting from ``CMN_PRIOR`` and from the clip's first
  frame, beside the offline front end with the same model (the live model unless ``--model``);
* ``--blend`` weights: rows of the word front end (pocketsphinx hears the words) with the acoustic
  frames blended in at each weight (0 = phones only).

No real recording is read: the real-speech figures come from scripts/eval_realspeech.py.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import warnings
from pathlib import Path

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evp_anim.assets import find_sfm_dir  # noqa: E402
from evp_anim.audio import acoustic  # noqa: E402
from evp_anim.audio.io import load_audio  # noqa: E402
from evp_anim.audio.phones import SpeechContent, espeak_segments_to_arpabet, recognize_words  # noqa: E402
from evp_anim.eval.lipsync import score_lipsync  # noqa: E402
from evp_anim.face.rig import FaceRig  # noqa: E402
from evp_anim.live.engine import LiveEngine  # noqa: E402
from evp_anim.living import OFF  # noqa: E402
from evp_anim.models.animate import (EmotionSpec, animate_speech_file, default_live_path,  # noqa: E402
                                     load_animation_model)
from evp_anim.tracks import load_track  # noqa: E402

FPS = 25.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--model", default="evp")
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--set", action="append", default=[], help="NAME=VALUE[,NAME=VALUE] (one row each)")
    ap.add_argument("--blend", default="", help="comma-separated acoustic weights for word-front-end rows")
    ap.add_argument("--live", action="store_true",
                    help="each --set row (and a row of the module's constants) also as `evp-anim live`'s "
                         "engine, each clip a cold start, with the running cepstral mean starting from "
                         "CMN_PRIOR and from the clip's first frame (--model defaults to the live model)")
    args = ap.parse_args()
    rows = [r for r in csv.DictReader(open(args.corpus / "manifest.csv", encoding="utf-8"))
            if r["split"] == "test_both"]
    random.Random(0).shuffle(rows)
    clips = []
    for r in rows[:args.clips]:
        path = args.corpus / r["audio"]
        clips.append((path, load_audio(path), espeak_segments_to_arpabet(load_track(args.corpus / r["track"]).phonemes)))
    rig = FaceRig(find_sfm_dir())
    if args.live and args.model == "evp":
        args.model = str(default_live_path())
    model = load_animation_model(None if args.model == "evp" else args.model)
    print(f"{len(clips)} synthetic test_both clips, model {args.model}, neutral")

    def offline(path: Path, audio: np.ndarray, content_of) -> np.ndarray:
        return animate_speech_file(path, model, EmotionSpec(emotion="neutral"), rig,
                                   content=content_of(audio)).landmarks_3d

    def live(audio: np.ndarray, prior) -> np.ndarray:
        engine = LiveEngine(model, rig, life=OFF, cepstral_prior=prior)
        out = [engine.feed(audio[i:i + 160]) for i in range(0, audio.size, 160)] + [engine.finish()]
        return np.concatenate([t.landmarks_3d for t in out if t is not None])

    def score(label: str, content_of, prior=None) -> None:
        lms, phones, offset = [], [], 0.0
        for path, audio, ref in clips:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lm = live(audio, prior) if content_of is None else offline(path, audio, content_of)
            lms.append(lm)
            phones += [(s + offset, e + offset, p) for s, e, p in ref]
            offset += len(lm) / FPS
        d = score_lipsync(np.concatenate(lms), phones, FPS).to_dict()
        print(f"| {label:<44} | {d['openness_corr']:.3f} | {100 * d['closure']:5.1f}% | "
              f"{100 * d['closure_chance']:5.1f}% | {100 * d['shut_frames']:5.1f}% |", flush=True)

    print("| configuration | openness corr | closure /p b m/ | chance | shut frames |\n|---|---|---|---|---|")
    exact = {id(c[1]): c[2] for c in clips}
    score("exact phones (a perfect recogniser)", lambda a: SpeechContent(exact[id(a)], "exact", acoustic_weight=0.0))
    if args.live:
        score("acoustic (offline)", acoustic.acoustic_content)
        score("live, prior CMN_PRIOR", None)
        score("live, prior the first frame", None, "first")
    for item in args.set:
        saved = {}
        for pair in item.split(","):
            name, _, value = pair.partition("=")
            saved[name] = getattr(acoustic, name)
            kind = type(saved[name])
            setattr(acoustic, name, bool(int(value)) if kind is bool else
                    kind(float(value)) if "." in value else kind(value))
        score(f"acoustic {item}", acoustic.acoustic_content)
        if args.live:
            score(f"live, prior CMN_PRIOR, {item}", None)
            score(f"live, prior the first frame, {item}", None, "first")
        for name, value in saved.items():
            setattr(acoustic, name, value)
    weights = [float(w) for w in args.blend.split(",") if w]
    if weights:
        words = {id(c[1]): recognize_words(c[1]).phones for c in clips}
        for w in weights:
            score(f"words heard, acoustic weight {w:g}", lambda a, w=w: acoustic.with_acoustic_frames(
                SpeechContent(words[id(a)], "words heard"), a, w) if w > 0 else
                SpeechContent(words[id(a)], "words heard", acoustic_weight=0.0))


if __name__ == "__main__":
    main()
