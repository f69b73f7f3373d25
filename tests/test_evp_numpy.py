"""EVP inference without torch (issue 17's cold start): the model file read without torch, the
numpy engine against the torch modules on real speech, and `animate` never importing torch."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evp_anim.audio.acoustic import acoustic_frames
from evp_anim.audio.features import mfcc_windows, n_frames
from evp_anim.audio.io import load_audio
from evp_anim.errors import EvpError
from evp_anim.models.animate import default_emote_path, default_live_path, default_model_path, load_animation_model
from evp_anim.models.emote import EmoteModel
from evp_anim.models.evp import EvpModel
from evp_anim.models.evp_numpy import EvpArrays, conv1d, layer_norm
from evp_anim.models.torch_file import read_torch_file

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "assets" / "sample_speech.wav"


def _same(ours, theirs, where="") -> None:
    """``ours`` (read_torch_file) holds what ``theirs`` (torch.load) holds, tensors as equal arrays."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, np.ndarray), where
        assert ours.dtype == theirs.numpy().dtype and ours.shape == tuple(theirs.shape), where
        assert np.array_equal(ours, theirs.numpy()), where
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs), where
        for k in theirs:
            _same(ours[k], theirs[k], f"{where}/{k}")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), where
        for a, b in zip(ours, theirs):
            _same(a, b, where)
    else:
        assert ours == theirs or (ours != ours and theirs != theirs), (where, ours, theirs)


@pytest.mark.parametrize("path", [default_model_path(), default_emote_path(), default_live_path()],
                         ids=["evp", "emote", "live"])
def test_torch_file_reads_what_torch_load_reads(path):
    ours = read_torch_file(path)
    assert isinstance(ours["state"], dict) and len(ours["state"]) > 10
    _same(ours, torch.load(path, map_location="cpu", weights_only=True))


def test_torch_file_refuses_code_and_damaged_files(tmp_path):
    odd = tmp_path / "odd.pt"
    torch.save({"format": "evp-anim-evp-model", "when": datetime.date(2026, 1, 1)}, odd)
    with pytest.raises(EvpError, match="not a readable model file"):
        read_torch_file(odd)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(default_model_path().read_bytes()[:5000])
    with pytest.raises(EvpError, match="not a readable model file"):
        read_torch_file(cut)
    with pytest.raises(EvpError, match="not found"):
        read_torch_file(tmp_path / "none.pt")
    other = tmp_path / "other.pt"
    torch.save({"format": "someone-else", "state": {"w": torch.ones(2)}}, other)
    assert read_torch_file(other)["state"]["w"].tolist() == [1.0, 1.0]
    with pytest.raises(EvpError, match="not an evp-anim EVP model"):
        load_animation_model(other, "numpy")


def test_layers_match_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 29, 12)).astype(np.float32)
    conv = torch.nn.Conv1d(12, 16, 3, stride=2, padding=1)
    want = conv(torch.from_numpy(x).transpose(1, 2)).transpose(1, 2).detach().numpy()
    got = conv1d(x, conv.weight.detach().numpy(), conv.bias.detach().numpy(), (1, 1), 2)
    assert got.shape == want.shape == (3, 15, 16)
    assert np.abs(got - want).max() < 1e-5
    norm = torch.nn.LayerNorm(12)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    want = norm(torch.from_numpy(x)).detach().numpy()
    assert np.abs(layer_norm(x, norm.weight.detach().numpy(), norm.bias.detach().numpy()) - want).max() < 1e-5


@pytest.fixture(scope="module")
def engines():
    return EvpModel.load(default_model_path()), EvpArrays.load(default_model_path())


@pytest.fixture(scope="module")
def real_speech():
    """The bundled recording three times over (~19 s, 475 frames): MFCC windows and the acoustic
    front end's viseme shares (the real front ends' inputs)."""
    audio = np.concatenate([load_audio(SAMPLE)] * 3)
    n = n_frames(audio.size)
    return mfcc_windows(audio), acoustic_frames(audio, n).visemes


@pytest.mark.parametrize("front", ["visemes", "mfcc"])
def test_numpy_engine_gives_the_torch_landmarks(engines, real_speech, front):
    torch_model, numpy_model = engines
    windows, visemes = real_speech
    vis = visemes if front == "visemes" else None
    ref = torch_model.mean_face()
    assert np.array_equal(ref, numpy_model.mean_face())
    for emotion in ("neutral", "happy", "angry"):
        code = torch_model.label_code(emotion, 1.0)
        assert np.array_equal(code, numpy_model.label_code(emotion, 1.0))
        want = torch_model.predict_lm3d(windows, ref, code, visemes=vis)
        got = numpy_model.predict_lm3d(windows, ref, code, visemes=vis)
        assert got.shape == want.shape == (len(windows), 68, 3)
        assert np.abs(got - want).max() < 1e-3                         # mm (float32 rounding)
        # and the mouth moves: not two engines agreeing on a constant
        assert np.ptp(got[:, 66, 1] - got[:, 62, 1]) > 1.0


def test_numpy_engine_rows_and_carried_state(engines, real_speech):
    """Side-by-side rows (≥ 750 frames) and a state carried across calls, as the torch engine."""
    torch_model, numpy_model = engines
    windows, visemes = real_speech
    windows, visemes = np.concatenate([windows] * 2), np.concatenate([visemes] * 2)     # 950 frames
    t = len(windows)
    ref = torch_model.mean_face()
    codes = np.broadcast_to(torch_model.label_code("surprised", 0.8), (t, 32))
    want, want_state = torch_model.predict_frames(windows, 0, t, 0, t, codes, ref, visemes=visemes)
    got, got_state = numpy_model.predict_frames(windows, 0, t, 0, t, codes, ref, visemes=visemes)
    assert np.abs(got - want).max() < 1e-3
    assert np.abs(got_state[0] - want_state[0]).max() < 1e-3
    first, state = numpy_model.predict_frames(windows, 0, t, 0, 300, codes[:300], ref, visemes=visemes)
    rest, _ = numpy_model.predict_frames(windows, 0, t, 300, t, codes[300:], ref, state, visemes=visemes)
    whole, _ = numpy_model.predict_frames(windows, 0, t, 0, t, codes, ref, visemes=visemes, max_rows=1)
    assert np.abs(np.concatenate([first, rest]) - whole).max() < 1e-3


def test_engine_choice():
    assert isinstance(load_animation_model(None, "numpy"), EvpArrays)
    assert isinstance(load_animation_model(None, "torch"), EvpModel)
    assert isinstance(load_animation_model(None), EvpModel)          # torch is imported here already
    assert isinstance(load_animation_model("emote", "numpy"), EmoteModel)
    with pytest.raises(EvpError, match="unknown engine"):
        load_animation_model(None, "onnx")


def test_cold_animate_never_imports_torch(tmp_path):
    """`evp-anim animate` (the default word front end and --front-end mfcc) runs without torch and
    writes the track the torch engine writes."""
    clip = tmp_path / "two.wav"
    import soundfile as sf
    audio, sr = sf.read(SAMPLE, dtype="float32")
    sf.write(clip, audio[:2 * sr], sr)
    script = ("import sys; from evp_anim.cli import main; sys.argv = ['evp-anim', '--quiet'] + sys.argv[1:]\n"
              "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\n")
    for extra in ([], ["--front-end", "mfcc"]):
        out = tmp_path / f"numpy{len(extra)}.npz"
        p = subprocess.run([sys.executable, "-c", script, "animate", str(clip), "-o", str(out), "--still", *extra],
                           capture_output=True, text=True, cwd=REPO)
        assert p.returncode == 0, p.stderr[-2000:]
        from evp_anim.face.rig import FaceRig
        from evp_anim.assets import find_sfm_dir
        from evp_anim.models.animate import EmotionSpec, animate_speech_file
        from evp_anim.tracks import load_track
        want = animate_speech_file(clip, load_animation_model(None, "torch"), EmotionSpec("neutral", 1.0),
                                   FaceRig.cached(find_sfm_dir()), front_end=extra[1] if extra else "words")
        got = load_track(out)
        assert got.n_frames == want.n_frames == 50
        assert np.abs(got.landmarks_3d - want.landmarks_3d).max() < 1e-3
