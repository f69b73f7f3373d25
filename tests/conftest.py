"""Shared fixtures: the Surrey Face Model files come from ../shared/sfm (never from the project)."""

import os
from pathlib import Path

import pytest

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
