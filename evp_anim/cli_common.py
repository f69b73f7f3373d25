"""Pieces every CLI command shares: the progress reporter and how the SFM folder is found.

Stage packages that own subcommands put them in ``evp_anim/<stage>/commands.py`` with a
``register(app: typer.Typer) -> None`` function; :mod:`evp_anim.cli` lists the module in its
``STAGE_COMMANDS`` and calls it.
Commands raise :class:`~evp_anim.errors.EvpError` for user errors and import heavy modules
inside their bodies so ``evp-anim --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .errors import EvpError
from .progress import Reporter

_state = {"reporter": Reporter()}

SfmDirOpt = typer.Option(None, "--sfm-dir", help="Folder with the SFM files (else $EVP_ANIM_SFM_DIR, "
                         "else the per-user cache filled by `evp-anim assets download`).")


def reporter() -> Reporter:
    """The reporter set up by the global --machine-readable / --quiet options."""
    return _state["reporter"]


def set_reporter(rep: Reporter) -> None:
    _state["reporter"] = rep


def sfm(sfm_dir: Optional[Path]) -> Path:
    """The SFM folder: ``sfm_dir`` if given, else $EVP_ANIM_SFM_DIR, else the per-user cache."""
    from .assets import find_sfm_dir
    return find_sfm_dir(sfm_dir)


def read_transcript_option(text: Optional[str], transcript: Optional[Path]) -> Optional[str]:
    """The transcript from ``--text`` or ``--transcript`` (at most one; not empty), else None."""
    if text is not None and transcript is not None:
        raise EvpError("give at most one of --text and --transcript")
    if transcript is not None:
        if not transcript.is_file():
            raise EvpError(f"transcript not found: {transcript}")
        try:
            text = transcript.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise EvpError(f"{transcript}: cannot read the transcript ({type(e).__name__})") from None
    if text is not None and not text.strip():
        raise EvpError("the transcript is empty")
    return text


def speech_content_options(front_end: str, text: Optional[str], transcript: Optional[Path]) -> tuple[str, Optional[str]]:
    """(front end, transcript) from ``--front-end``, ``--text`` and ``--transcript``: a transcript
    is read through the phones, so it turns the MFCC front end into the word front end."""
    line = read_transcript_option(text, transcript)
    if line is not None and front_end == "mfcc":
        front_end = "words"
    return front_end, line
