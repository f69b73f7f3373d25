"""CLI: `evp-anim eval` — EVP's quantitative evaluation (Tables 1–2, Fig. 5) against two baselines, and
the EMOTE path's (``--model emote``: LVE, lip reading, emotion, ablation; see eval/emote_eval.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..cli_common import SfmDirOpt, read_transcript_option, reporter, sfm
from ..errors import EvpError


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
    app.command("eval-lipsync")(eval_lipsync_cmd)


def _parse_named(items: List[str], option: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise EvpError(f"{option} expects NAME=PATH (e.g. 'w/o L_cross=nocross.pt'), got {item!r}")
        out[name.strip()] = Path(path.strip())
    return out


def eval_cmd(
    corpus: Path = typer.Argument(..., help="Corpus folder (manifest.csv and tracks)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Trained EVP model (.pt); "
                                         "without it only the baselines are evaluated. 'emote' (the shipped "
                                         "assets/emote_default.pt), 'emote=PATH' or an EMOTE model file "
                                         "evaluates the EMOTE path instead (LVE, lip reading; EVP and the "
                                         "rule-based baseline on the same clips)."),
    evp_model: Optional[Path] = typer.Option(None, "--evp-model", help="EMOTE evaluation: the EVP model "
                                             "to compare with (default: the shipped assets/evp_default.pt)."),
    no_evp: bool = typer.Option(False, "--no-evp", help="EMOTE evaluation: leave the EVP model out."),
    split: Optional[List[str]] = typer.Option(None, "--split", help="Split(s) to evaluate "
                                              "(default: test_speaker and test_sentence)."),
    max_clips: Optional[int] = typer.Option(None, "--max-clips", min=1, help="At most N clips per split "
                                            "(evenly spaced over speakers, emotions and levels)."),
    emotion_source: str = typer.Option("label", "--emotion-source", help="The model's emotion: 'label' "
                                       "(the emotion's mean code) or 'reference' (another sentence of the "
                                       "same speaker, emotion and level)."),
    ablation: Optional[List[str]] = typer.Option(None, "--ablation", help="NAME=MODEL.pt for a Table 2 row "
                                                 "(repeat: full=…, 'w/o L_cross'=…)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of the emotion codes (Fig. 5), one panel "
                                        "per model (--model and --ablation models; at most --max-clips, "
                                        "default 600, clips of the first split)."),
    plot_method: str = typer.Option("pca", "--plot-method", help="2-D projection: pca or tsne."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write all figures to this JSON file."),
    classifier: Optional[Path] = typer.Option(None, "--classifier", help="Emotion classifier file (default: "
                                              "CORPUS/cache/, trained on the train split when missing)."),
    retrain_classifier: bool = typer.Option(False, "--retrain-classifier", help="Retrain the classifier."),
    no_baselines: bool = typer.Option(False, "--no-baselines", help="Skip the static and rule-based baselines."),
    no_probes: bool = typer.Option(False, "--no-probes", help="Skip the disentanglement probes."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch CPU threads."),
    sfm_dir: Optional[Path] = SfmDirOpt,
) -> None:
    """Landmark metrics (M-/F-LD, LVD), judged emotion accuracy and disentanglement probes of an EVP
    model against a static face and a rule-based viseme animator; with --model emote, the EMOTE
    path's LVE, lip reading and emotion against EVP (lifted to the rig) and the rule-based animator."""
    from ..atomic import write_text_atomic
    from .report import EMOTION_SOURCES, EvalContext, ablation_table, evaluate, load_model, plot_emotion_codes, to_json

    emote_path = _emote_model_path(model)
    if emote_path is not None:
        return _eval_emote(corpus, emote_path, evp_model, no_evp, split, max_clips, ablation, json_out,
                           classifier, no_baselines, threads, sfm_dir)
    if evp_model is not None or no_evp:
        raise EvpError("--evp-model and --no-evp apply to the EMOTE evaluation (--model emote)")

    if emotion_source not in EMOTION_SOURCES:
        raise EvpError(f"--emotion-source must be one of {', '.join(EMOTION_SOURCES)}, got {emotion_source!r}")
    if plot_method not in ("pca", "tsne"):
        raise EvpError(f"--plot-method must be pca or tsne, got {plot_method!r}")
    if not (corpus / "manifest.csv").is_file():
        raise EvpError(f"{corpus}: no manifest.csv (not a corpus; make one with `evp-anim synth`)")
    ablations = _parse_named(ablation or [], "--ablation")
    # Fail on a bad model file before any long work.
    loaded = {}
    if model is not None:
        loaded["model"] = load_model(model)
    for name, path in ablations.items():
        loaded[name] = load_model(path)
    if plot is not None and not loaded:
        raise EvpError("--plot needs a model (--model or --ablation)")
    if threads:
        import torch
        torch.set_num_threads(threads)

    rep = reporter()
    ctx = EvalContext(corpus, sfm(sfm_dir), rep, classifier, retrain_classifier)
    result = evaluate(corpus, loaded.get("model"), splits=tuple(split) if split else ("test_speaker", "test_sentence"),
                      max_clips=max_clips, emotion_source=emotion_source, baselines=not no_baselines,
                      probes=not no_probes, reporter=rep, out=typer.echo, context=ctx)
    if model is not None:
        result["model"] = str(model)
    if ablations:
        result["ablation"] = ablation_table(corpus, {n: loaded[n] for n in ablations},
                                            split=(split[0] if split else "test_speaker"), max_clips=max_clips,
                                            emotion_source=emotion_source, reporter=rep,
                                            out=lambda s: typer.echo("\n" + s), context=ctx)
    if plot is not None:
        panels = {}
        if model is not None:
            panels[model.stem] = loaded["model"]
        panels.update({n: loaded[n] for n in ablations})
        rep.start("eval-plot", description="emotion codes plot")
        scores = plot_emotion_codes(panels, corpus, plot, split=(split[0] if split else "test_speaker"),
                                    max_clips=max_clips or 600, method=plot_method, feats=ctx.feats)
        rep.success(output=str(plot))
        result["plot"] = {"path": str(plot), "silhouette": scores}
        typer.echo(f"\nwrote {plot} (emotion-code silhouette: "
                   + ", ".join(f"{n} {s:.2f}" for n, s in scores.items()) + ")")
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(to_json(result), indent=2) + "\n")
        typer.echo(f"wrote {json_out}")


def _emote_model_path(model: Optional[Path]) -> Optional[Path]:
    """The EMOTE model file that ``--model`` names ('emote', 'emote=PATH' or an EMOTE file), else None."""
    if model is None:
        return None
    text = str(model)
    if text == "emote":
        from ..models.animate import default_emote_path
        return default_emote_path()
    if text.startswith("emote="):
        return Path(text[len("emote="):])
    if model.is_file():
        try:
            import torch
            blob = torch.load(model, map_location="cpu", weights_only=True)
            if isinstance(blob, dict) and blob.get("format") == "evp-anim-emote-model":
                return model
        except Exception:  # noqa: BLE001 - not ours to judge here; the EVP loader reports it
            return None
    return None


def _eval_emote(corpus: Path, model_path: Path, evp_model: Optional[Path], no_evp: bool, split, max_clips,
                ablation, json_out, classifier, no_baselines: bool, threads, sfm_dir) -> None:
    """`evp-anim eval --model emote`: the EMOTE table per split and the ablation table."""
    from ..atomic import write_text_atomic
    from ..models.emote import EmoteModel
    from .emote_eval import EmoteContext, emote_ablation, evaluate_emote
    from .report import load_model, to_json

    if not (corpus / "manifest.csv").is_file():
        raise EvpError(f"{corpus}: no manifest.csv (not a corpus; make one with `evp-anim synth`)")
    model = EmoteModel.load(model_path)
    ablations = {n: EmoteModel.load(p) for n, p in _parse_named(ablation or [], "--ablation").items()}
    evp = None
    if not no_evp:
        from ..models.animate import default_model_path
        evp = load_model(evp_model or default_model_path())
    if threads:
        import torch
        torch.set_num_threads(threads)
    rep = reporter()
    ctx = EmoteContext(corpus, sfm(sfm_dir), rep, classifier)
    splits = tuple(split) if split else ("test_speaker", "test_sentence")
    result = evaluate_emote(corpus, model, sfm(sfm_dir), evp_model=evp, splits=splits, max_clips=max_clips,
                            baselines=not no_baselines, reporter=rep, out=typer.echo, context=ctx)
    result["model"] = str(model_path)
    if ablations:
        result["ablation"] = emote_ablation(ctx, ablations, split=splits[0], max_clips=max_clips,
                                            out=lambda s: typer.echo("\n" + s))
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(to_json(result), indent=2) + "\n")
        typer.echo(f"wrote {json_out}")


def eval_lipsync_cmd(
    track_path: Path = typer.Argument(..., help="Track to score (.npz)."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="The recording the track was made from "
                                         "(default: the audio path the track records)."),
    text: Optional[str] = typer.Option(None, "--text", help="What is said in the recording."),
    transcript: Optional[Path] = typer.Option(None, "--transcript", help="Like --text, from a text file."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also write a PNG of the mouth opening over "
                                        "the aligned phones."),
) -> None:
    """Score a track's lip sync against its recording and transcript: forced alignment of the words,
    openness correlation, closure on /p b m/ (with its chance rate), shut frames, open-vowel
    contrast, lag (ms)."""
    from ..atomic import write_text_atomic
    from ..audio.io import load_audio
    from ..audio.phones import align_transcript
    from ..tracks import load_track
    from .lipsync import plot_lipsync, score_lipsync, track_landmarks

    line = read_transcript_option(text, transcript)
    if line is None:
        raise EvpError("give the words said: --text or --transcript")
    if plot is not None and plot.suffix.lower() != ".png":
        raise EvpError(f"plot output must end in .png, got {plot.name!r}")
    track = load_track(track_path)
    if audio is None:
        recorded = track.info.get("audio")
        if not recorded:
            raise EvpError(f"{track_path}: the track records no audio path; give --audio")
        audio = Path(recorded)
    rep = reporter()
    phones = align_transcript(load_audio(audio), line, warn=lambda m: rep.info(f"warning: {m}"))
    lm = track_landmarks(track)
    scores = score_lipsync(lm, phones, track.fps)
    d = scores.to_dict()
    if json_out is not None:
        write_text_atomic(json_out, json.dumps({"track": str(track_path), "audio": str(audio), **d}, indent=2))
    if plot is not None:
        plot_lipsync(lm, phones, track.fps, plot, title=f"{track_path.name}: {line.strip()[:80]}")
    pct = lambda x: "n/a" if x != x else f"{100 * x:.0f}%"  # noqa: E731 - NaN when no such phone
    rows = [("openness correlation", f"{d['openness_corr']:.2f}"),
            ("closure on /p b m/", f"{pct(d['closure'])} of {d['n_bilabials']} (chance {pct(d['closure_chance'])})"),
            ("shut speech frames", f"{pct(d['shut_frames'])} ({pct(d['shut_elsewhere'])} outside /p b m f v/)"),
            ("open-vowel contrast", "n/a" if d["open_vowel_contrast"] != d["open_vowel_contrast"]
             else f"{d['open_vowel_contrast']:.3f}"),
            ("lip to teeth on /f v/", f"{pct(d['labiodental_closure'])} of {d['n_labiodentals']}"),
            ("lag", f"{d['lag_ms']:+.0f} ms (positive: mouth late)")]
    width = max(len(k) for k, _ in rows)
    rep.info("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
