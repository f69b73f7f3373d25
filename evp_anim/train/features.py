"""Per-clip training features of a corpus, computed once and cached beside it.

For every clip with a track, :class:`CorpusFeatures` holds

* ``windows[i]``   (T, 28, 12) float32 — EVP MFCC windows at 25 fps (from the clip's audio)
* ``lm3d[i]``      (T, 68, 3) float32 — ground-truth pose-invariant 3D landmarks, mm
* ``aligned(i)``   (T, 68, 2) float32 — the same, frontally projected into the 256×256 aligned crop, px
* ``reference[i]`` (68, 3) float32 — the speaker's neutral face (identity, no expression), mm:
  EVP's "aligned reference landmarks" l_a, the identity the audio-to-landmark net keeps
* ``visemes[i]``   (T,) int64 — the viseme class per frame (content supervision for Ec)
* ``acoustic[i]``  (T, 15) float32 — optional (``load_features(..., acoustic=True)``): the acoustic
  front end's viseme posteriors of the clip's audio (:func:`~evp_anim.audio.acoustic.acoustic_frames`),
  what ``animate`` blends into the phones' visemes; cached in ``cache/acoustic_visemes_v1.npz``
* ``rows[i]``      the manifest row (speaker, sentence, emotion, level, split, ...)

The cache (``<corpus>/cache/evp_features_v1.npz``) stores all clips concatenated with offsets,
windows as float16 (half the disk; MFCCs need no more precision). It is rebuilt when the
manifest changes (its hash is stored).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..atomic import atomic_path
from ..audio.acoustic import PHONE_BLEND
from ..data.manifest import ClipRow, read_manifest
from ..emotions import EMOTIONS
from ..errors import EvpError
from ..tracks import DEFAULT_FPS

CACHE_NAME = "evp_features_v1.npz"
ALIGNED_SIZE = 256


@dataclasses.dataclass
class CorpusFeatures:
    """Features of every clip of a corpus (see module docstring for shapes and units)."""

    rows: list[ClipRow]
    windows: list[np.ndarray]
    lm3d: list[np.ndarray]
    reference: np.ndarray
    visemes: list[np.ndarray]
    acoustic: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def emotion_index(self) -> np.ndarray:
        """(N,) int64 emotion class per clip, in EMOTIONS order."""
        return np.array([EMOTIONS.index(r.emotion) for r in self.rows], np.int64)

    def aligned(self, i: int) -> np.ndarray:
        """(T, 68, 2) ground-truth landmarks of clip ``i`` in the 256×256 aligned crop, px."""
        from ..face.projection import aligned_landmarks
        return aligned_landmarks(self.lm3d[i], ALIGNED_SIZE).astype(np.float32)

    def reference_aligned(self, i: int) -> np.ndarray:
        """(68, 2) the speaker's neutral face of clip ``i`` in the aligned crop, px."""
        from ..face.projection import aligned_landmarks
        return aligned_landmarks(self.reference[i][None], ALIGNED_SIZE)[0].astype(np.float32)

    def split(self, *names: str) -> list[int]:
        """Indices of the clips in the given splits."""
        return [i for i, r in enumerate(self.rows) if r.split in names]

    def speakers(self) -> list[str]:
        return sorted({r.speaker for r in self.rows})

    def sentences(self) -> list[str]:
        return sorted({r.sentence_id for r in self.rows})


def _viseme_frames(phonemes, n: int, fps: float = DEFAULT_FPS) -> np.ndarray:
    from ..synth.visemes import VISEMES, viseme_sequence
    out = np.zeros(n, np.int64)  # 0 = silence
    t = (np.arange(n) + 0.5) / fps
    for s, e, v in viseme_sequence(phonemes):
        out[(t >= s) & (t < e)] = VISEMES.index(v)
    return out


def manifest_hash(rows: Sequence[ClipRow]) -> str:
    """SHA-256 (hex) of the clip rows' ids, audio and track paths and frame counts: the key that ties
    a feature cache to the manifest it was built from."""
    h = hashlib.sha256()
    for r in rows:
        h.update(f"{r.clip_id}|{r.audio}|{r.track}|{r.n_frames}\n".encode())
    return h.hexdigest()


def build_features(corpus: Path, rows: Sequence[ClipRow], sfm_dir: Path,
                   progress: Callable[[float], None] | None = None) -> CorpusFeatures:
    """Compute features of ``rows`` (clips with audio and a track) from the corpus files."""
    from ..audio.features import mfcc_windows
    from ..audio.io import load_audio
    from ..face.rig import FaceRig
    from ..tracks import load_track

    rig = FaceRig(sfm_dir)
    windows, lm3d, refs, vis = [], [], [], []
    ref_cache: dict[bytes, np.ndarray] = {}
    for k, r in enumerate(rows):
        if not r.track or not r.audio:
            raise EvpError(f"clip {r.clip_id} has no track or audio: preprocess the corpus first")
        tr = load_track(corpus / r.track)
        if tr.landmarks_3d is None:
            raise EvpError(f"{r.track}: track has no 3D landmarks, which training needs")
        win = mfcc_windows(load_audio(corpus / r.audio), n_frames=tr.n_frames)
        key = tr.identity.tobytes()
        if key not in ref_cache:
            ident = tr.identity if tr.identity.size == rig.num_identity else None
            ref_cache[key] = rig.landmarks_3d(ident).astype(np.float32)
        windows.append(win.astype(np.float16).astype(np.float32))  # as cached: same values either way
        lm3d.append(tr.landmarks_3d.astype(np.float32))
        refs.append(ref_cache[key])
        vis.append(_viseme_frames(tr.phonemes, tr.n_frames, tr.fps))
        if progress and (k % 50 == 0 or k == len(rows) - 1):
            progress((k + 1) / len(rows))
    return CorpusFeatures(list(rows), windows, lm3d, np.stack(refs), vis)


def _save(path: Path, feats: CorpusFeatures, manifest_hash: str) -> None:
    offsets = np.cumsum([0] + [w.shape[0] for w in feats.windows]).astype(np.int64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, clip_ids=np.array([r.clip_id for r in feats.rows]), offsets=offsets,
                     windows=np.concatenate(feats.windows).astype(np.float16),
                     lm3d=np.concatenate(feats.lm3d), reference=feats.reference,
                     visemes=np.concatenate(feats.visemes).astype(np.int8),
                     manifest_hash=np.array(manifest_hash))


def _load(path: Path, rows: Sequence[ClipRow], manifest_hash: str) -> CorpusFeatures | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["manifest_hash"]) != manifest_hash:
                return None
            off = z["offsets"]
            win, lm, vis = z["windows"], z["lm3d"], z["visemes"]
            ref = z["reference"]
    except (OSError, KeyError, ValueError):
        return None
    cut = lambda a, dtype: [a[off[i]:off[i + 1]].astype(dtype) for i in range(len(rows))]  # noqa: E731
    return CorpusFeatures(list(rows), cut(win, np.float32), cut(lm, np.float32), ref, cut(vis, np.int64))


def load_features(corpus: str | Path, sfm_dir: Path, rows: Sequence[ClipRow] | None = None,
                  progress: Callable[[float], None] | None = None, acoustic: bool = False) -> CorpusFeatures:
    """Features of the corpus at ``corpus`` (all manifest rows by default), cached under ``cache/``;
    with ``acoustic`` also the acoustic front end's viseme frames (:func:`load_acoustic_visemes`)."""
    feats = _load_or_build(Path(corpus), sfm_dir, rows, progress)
    if acoustic:
        feats.acoustic = load_acoustic_visemes(corpus, feats, progress)
    return feats


def _load_or_build(corpus: Path, sfm_dir: Path, rows: Sequence[ClipRow] | None,
                   progress: Callable[[float], None] | None) -> CorpusFeatures:
    if rows is None:
        rows = read_manifest(corpus / "manifest.csv")
    rows = [r for r in rows if r.track]
    if not rows:
        raise EvpError(f"{corpus}: no clips with tracks in the manifest")
    mh = manifest_hash(rows)
    path = corpus / "cache" / CACHE_NAME
    if path.is_file():
        feats = _load(path, rows, mh)
        if feats is not None:
            if progress:
                progress(1.0)
            return feats
    feats = build_features(corpus, rows, sfm_dir, progress)
    _save(path, feats, mh)
    return feats


ACOUSTIC_CACHE_NAME = "acoustic_visemes_v1.npz"


def _acoustic_key(rows: Sequence[ClipRow]) -> str:
    """The acoustic cache's key: the manifest's hash and the constants that shape the frames."""
    from ..audio import acoustic as ac
    h = hashlib.sha256(manifest_hash(rows).encode())
    h.update(f"{ac.POSTERIOR_SCALE}|{ac.SCORE_STEP}|{ac.model_folder()}".encode())
    return h.hexdigest()


def load_acoustic_visemes(corpus: str | Path, feats: CorpusFeatures,
                          progress: Callable[[float], None] | None = None) -> list[np.ndarray]:
    """(T, 15) float32 per clip of ``feats``: the acoustic front end's viseme posteriors of the clip's
    audio at 25 fps (:func:`~evp_anim.audio.acoustic.acoustic_frames`, the track's length), the
    frames ``animate`` blends with the phones' visemes. Trainers feed them, blended with the
    clip's true visemes, to the phone content input, so the models learn the mixture they read
    on real speech. Cached (float16) in ``<corpus>/cache/acoustic_visemes_v1.npz`` (built at ~200×
    real time: 174 s for the 10 hours of the 24-speaker corpus on two cores)."""
    from ..audio.acoustic import acoustic_frames, default_model
    from ..audio.io import load_audio
    from ..audio.phones import require_pocketsphinx
    require_pocketsphinx("the acoustic frames training blends in", "train with --no-acoustic")
    corpus = Path(corpus)
    key = _acoustic_key(feats.rows)
    path = corpus / "cache" / ACOUSTIC_CACHE_NAME
    offsets = np.cumsum([0] + [len(v) for v in feats.visemes]).astype(np.int64)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key and np.array_equal(z["offsets"], offsets):
                    flat = z["visemes"].astype(np.float32)
                    if progress:
                        progress(1.0)
                    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(feats))]
        except (OSError, KeyError, ValueError):
            pass
    model = default_model()
    out = []
    for k, r in enumerate(feats.rows):
        heard = acoustic_frames(load_audio(corpus / r.audio), len(feats.visemes[k]), model)
        out.append(heard.visemes.astype(np.float16).astype(np.float32))   # as cached
        if progress and (k % 50 == 0 or k == len(feats) - 1):
            progress((k + 1) / len(feats))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, visemes=np.concatenate(out).astype(np.float16), offsets=offsets, key=np.array(key))
    return out


SPEECH_MEAN_CLIPS = 300      # training clips the speech mean is taken over (enough: it moves < 0.1 dB)


def corpus_speech_mfcc_mean(corpus: str | Path, rows: Sequence[ClipRow], max_clips: int = SPEECH_MEAN_CLIPS,
                            seed: int = 0) -> list[float]:
    """The training corpus's speech MFCC mean (12 floats): the mean frame MFCC row over the voiced
    frames of up to ``max_clips`` of ``rows`` (a seeded random choice), as
    :func:`~evp_anim.audio.features.speech_mfcc_mean` takes it of one clip. A model stores it
    (``meta["speech_mfcc_mean"]``) so that ``animate`` can move a clip's MFCCs by the difference
    between this and the clip's own speech mean: a real microphone and voice are brighter than
    the corpus's voices (c1 30–56 against 66), which the MFCC front end misread as a closed mouth."""
    from ..audio.features import frame_mfcc_rows, voice_activity
    from ..audio.io import load_audio
    rows = [r for r in rows if r.audio]
    if not rows:
        raise EvpError("no clips with audio to take the speech mean of")
    pick = np.random.default_rng(seed).permutation(len(rows))[:max_clips]
    total, count = np.zeros(12), 0
    for i in sorted(pick):
        audio = load_audio(Path(corpus) / rows[i].audio)
        m, v = frame_mfcc_rows(audio), voice_activity(audio)
        total += m[v[: len(m)]].sum(0)
        count += int(v[: len(m)].sum())
    if count == 0:
        raise EvpError("the corpus clips have no voiced frames to take the speech mean of")
    return [round(float(x), 4) for x in total / count]


def phone_visemes(visemes: "torch.Tensor", n_classes: int) -> "torch.Tensor":
    """(B, T) viseme classes → (B, T, n_classes) shares as the phone front end gives them
    (:func:`~evp_anim.audio.phones.viseme_posteriors`): one class per frame, shared with the
    neighbour's at a class change (a [1/4, 1/2, 1/4] blur, edges replicated), rows summing to 1."""
    import torch
    import torch.nn.functional as F
    onehot = F.one_hot(visemes.long(), n_classes).float().transpose(1, 2)       # (B, C, T)
    padded = F.pad(onehot, (1, 1), mode="replicate")
    kernel = torch.tensor([0.25, 0.5, 0.25]).repeat(n_classes, 1, 1)
    return F.conv1d(padded, kernel, groups=n_classes).transpose(1, 2)


# How the phone content input of a training sample is made when the corpus's acoustic frames are
# loaded: (acoustic weight, probability). ``animate`` feeds the models the phones' visemes blended
# with the acoustic frames at PHONE_BLEND (word, transcript and phone front ends) or the acoustic
# frames alone (``--front-end acoustic``); pure phones are kept for a quarter of the samples.
FRONT_END_MIX = ((0.0, 0.25), (PHONE_BLEND, 0.5), (1.0, 0.25))


def front_end_visemes(visemes: "torch.Tensor", acoustic: "torch.Tensor | None", n_classes: int) -> "torch.Tensor":
    """(B, T, n_classes) content input of the phone path for (B, T) true viseme classes: the phone
    front end's shares (:func:`phone_visemes`), each sample blended with its (B, T, n_classes)
    ``acoustic`` frames at a weight drawn from :data:`FRONT_END_MIX` (torch's RNG); the phones
    alone when ``acoustic`` is None."""
    import torch
    phones = phone_visemes(visemes, n_classes)
    if acoustic is None:
        return phones
    weights = torch.tensor([w for w, _ in FRONT_END_MIX])
    pick = torch.multinomial(torch.tensor([p for _, p in FRONT_END_MIX]), phones.shape[0], replacement=True)
    w = weights[pick][:, None, None]
    return (1 - w) * phones + w * acoustic
