"""One utterance of your own text: speech (.wav) plus its ground-truth Track (``evp-anim speak``).

The same generator as the synthetic corpus (:class:`~evp_anim.synth.corpus.ClipMaker`): a
synthetic speaker says the text with an emotion, and the rig gives the matching face.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import EvpError
from ..tracks import Track

SPEAK_SEED_SALT = 12345     # mixed into the clip seed so a spoken clip differs from a corpus clip


def speak(text: str, output: str | Path, *, emotion: str = "neutral", intensity: float = 1.0, speaker: int = 1,
          seed: int = 0, sfm_dir: str | Path | None = None, command: str = "") -> tuple[Path, Track]:
    """Say ``text`` with synthetic speaker number ``speaker`` (1-based) and ``emotion`` at ``intensity``.

    Writes the Track to ``output`` (.npz) and the speech beside it (same name, .wav); returns
    ``(wav path, track)``. ``seed`` seeds the speaker set and the clip, so the same arguments give
    the same files. ``sfm_dir`` is found as :func:`~evp_anim.assets.find_sfm_dir` does when None;
    ``command`` is recorded in the track's provenance. Raises :class:`EvpError` for a bad emotion,
    intensity, empty text or an output not ending in .npz (before any work).
    """
    import numpy as np

    from ..assets import find_sfm_dir
    from ..audio.io import audio_sha256, save_wav
    from ..emotions import canonical_emotion, check_intensity
    from ..tracks import save_track
    from .corpus import ClipMaker, CorpusConfig, speech_and_face_seeds

    output = Path(output)
    emotion = canonical_emotion(emotion)
    intensity = check_intensity(intensity)
    if not text.strip():
        raise EvpError("TEXT is empty: give the words to say")
    if output.suffix != ".npz":
        raise EvpError(f"track output must end in .npz, got {output.name!r}")
    maker = ClipMaker(CorpusConfig(n_speakers=max(speaker, 1), n_sentences=1, seed=seed), find_sfm_dir(sfm_dir))
    speech_seed, face_seed = speech_and_face_seeds(np.random.SeedSequence([seed, speaker, SPEAK_SEED_SALT]))
    utt, track = maker.clip(text, speaker - 1, emotion, intensity, speech_seed, face_seed)
    wav = output.with_suffix(".wav")
    save_wav(wav, utt.audio, utt.sample_rate)
    track.provenance = {"source_audio_sha256": audio_sha256(wav), "model": "synthetic-speaker",
                        "command": command}
    track.info["audio"] = wav.name
    save_track(track, output)
    return wav, track
