"""The main job (``evp-anim demo``).

Until trained models ship (the EVP/EMOTE issues), the demo shows the foundation end to end:
it makes a small synthetic corpus (2 speakers × 2 sentences × 8 emotions × 3 levels), checks
every track, and writes a preview video (landmark sketch + shaded SFM head + speech) of one
happy and one sad clip.
"""

from __future__ import annotations

import time
from pathlib import Path

from .data.manifest import ClipRow
from .progress import Reporter
from .tracks import load_track


def run_demo(output: Path, sfm_dir: Path, reporter: Reporter | None = None) -> dict[str, str]:
    """Run the demo into ``output``; returns what was written (name → path or figure)."""
    from .preview import write_preview
    from .synth.corpus import CorpusConfig, plan_jobs, synthesize_corpus

    rep = reporter or Reporter(quiet=True)
    output = Path(output)
    t0 = time.perf_counter()
    config = CorpusConfig(n_speakers=2, n_sentences=2, seed=0, test_speakers=1, test_sentences=1)
    rep.start("demo-corpus", total=len(plan_jobs(config)), description="demo corpus clips")
    rows = synthesize_corpus(output / "corpus", config, sfm_dir, progress=lambda d, t: rep.update(d))
    rep.success(output=str(output / "corpus"))
    for r in rows:  # every track must load and validate
        load_track(output / "corpus" / r.track)

    result: dict[str, str] = {"corpus": f"{output / 'corpus'} ({len(rows)} clips)"}
    for emotion in ("happy", "sad"):
        row = _pick(rows, emotion)
        track_path = output / "corpus" / row.track
        video = output / f"preview_{emotion}.mp4"
        track = load_track(track_path)
        rep.start(f"preview-{emotion}", total=track.n_frames, description=f"preview {emotion}")
        write_preview(track, video, audio_path=output / "corpus" / row.audio, sfm_dir=sfm_dir,
                      progress=rep.update)
        rep.success(output=str(video))
        result[f"preview_{emotion}"] = f"{video} ({row.clip_id}: \"{row.text}\")"
    result["seconds"] = f"{time.perf_counter() - t0:.1f}"
    return result


def _pick(rows: list[ClipRow], emotion: str) -> ClipRow:
    level3 = [r for r in rows if r.emotion == emotion and r.level == 3]
    return sorted(level3, key=lambda r: r.clip_id)[0]
