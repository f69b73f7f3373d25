"""Shared fixtures: the Surrey Face Model files come from ../shared/sfm (never from the project)."""

import os
from pathlib import Path

import pytest

import evp_anim  # noqa: F401  (first: it chooses OpenBLAS's kernels before numpy loads)

REPO = Path(__file__).resolve().parents[1]


def _sfm_dir() -> Path:
    env = os.environ.get("EVP_ANIM_SFM_DIR")
    return Path(env) if env else REPO.parent / "shared" / "sfm"


@pytest.fixture(scope="session")
def sfm_dir() -> Path:
    d = _sfm_dir()
    if not (d / "sfm_shape_3448.bin").is_file():
        pytest.fail(f"SFM files not found in {d}: set EVP_ANIM_SFM_DIR")
    return d


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, sfm_dir) -> Path:
    """A small real synthetic corpus with DTW pairs: 3 speakers × 3 sentences × 3 emotions × levels."""
    from evp_anim.data.manifest import read_manifest
    from evp_anim.data.pairs import build_pairs
    from evp_anim.synth.corpus import CorpusConfig, synthesize_corpus

    root = tmp_path_factory.mktemp("tiny") / "corpus"
    cfg = CorpusConfig(n_speakers=3, n_sentences=3, seed=11, emotions=("neutral", "happy", "sad"),
                       test_speakers=1, test_sentences=1)
    synthesize_corpus(root, cfg, sfm_dir, workers=2)
    build_pairs(root, read_manifest(root / "manifest.csv"))
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_corpus, sfm_dir) -> Path:
    """An EVP model trained for a few steps on the tiny corpus (real training, small)."""
    from evp_anim.data.pairs import load_pairs
    from evp_anim.train.evp_trainer import Trainer, TrainConfig
    from evp_anim.train.features import load_features

    out = tmp_path_factory.mktemp("model")
    feats = load_features(tiny_corpus, sfm_dir)
    cfg = TrainConfig(steps=(30, 30, 60), batch=8, pair_batch=4, checkpoint_every=20)
    model = Trainer(feats, load_pairs(tiny_corpus / "pairs.npz"), cfg, out / "run").run()
    return model.save(out / "tiny.pt")
