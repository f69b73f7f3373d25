"""Slow: the full default corpus (8 speakers × 20 sentences, 3,520 clips) with every track valid.

Run with `bash scripts/test.sh -m slow` (about 10 minutes on 2 cores).
"""

import subprocess
import sys

import pytest

from evp_anim.data.manifest import read_manifest
from evp_anim.tracks import load_track

pytestmark = pytest.mark.slow


def test_full_default_corpus_is_made_and_every_track_is_valid(tmp_path, sfm_dir):
    out = tmp_path / "corpus"
    proc = subprocess.run([sys.executable, "-m", "evp_anim.cli", "--quiet", "synth", str(out),
                           "--speakers", "8", "--sentences", "20", "--sfm-dir", str(sfm_dir)],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr
    rows = read_manifest(out / "manifest.csv")
    assert len(rows) == 3520
    assert {r.split for r in rows} == {"train", "test_speaker", "test_sentence", "test_both"}
    for r in rows:
        tr = load_track(out / r.track)
        assert tr.n_frames == r.n_frames
    assert (out / "pairs.npz").is_file()
