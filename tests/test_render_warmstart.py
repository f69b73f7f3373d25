"""The generic face renderer as the warm start of per-target training (64 px crops, a few steps):
``render pretrain`` over two tiny synthetic targets writes a generic model (meta: generic, number
of targets, no video fingerprint); ``render train --init`` starts from exactly its generator
weights with ``--init-shrink 1`` and half way to the run's random init by default; the shipped
default is used only when its size fits; a size mismatch, dubbing with a generic model, and
--cold with --init are one line each; resuming ignores --init."""

import io
import subprocess
import sys

import numpy as np
import pytest
import torch

from evp_anim.errors import EvpError
from evp_anim.footage.synthetic import SyntheticFootageConfig, make_synthetic_footage
from evp_anim.progress import Reporter
from evp_anim.tracks import load_track, save_track
from render import trainer as trainer_mod
from render import warmstart
from render.inference import RenderModel
from render.multi_frames import MultiTargetFrames
from render.pipeline import train_target
from render.pretrain import pretrain_generic, synthetic_target_configs

SIZE = 64


@pytest.fixture(scope="module")
def generic(tmp_path_factory, sfm_dir):
    """A generic renderer pre-trained 2 steps on 2 tiny tracked synthetic targets."""
    out = tmp_path_factory.mktemp("warm") / "generic"
    buf = io.StringIO()
    meta = pretrain_generic(out, steps=2, targets=2, frames=14, size=SIZE, preview_every=0, precision="fp32",
                            sfm_dir=sfm_dir, rep=Reporter(stream=buf))
    return {"dir": out, "meta": meta, "log": buf.getvalue()}


@pytest.fixture(scope="module")
def target(tmp_path_factory, sfm_dir):
    """A third synthetic target, not one of the pre-training ones."""
    d = tmp_path_factory.mktemp("third")
    video = d / "third.mp4"
    make_synthetic_footage(video, sfm_dir, SyntheticFootageConfig(n_frames=16, width=160, height=160, face_px=80,
                                                                   seed=42, expression_style="rich"),
                           track_path=d / "third.npz")
    return {"dir": d, "video": video, "track": d / "third.npz"}


def _generator_state(path):
    return torch.load(path, weights_only=True)["generator"]


def _first_step_weights(monkeypatch):
    """Record the generator's state dict when the first training step of each trainer begins."""
    seen = []
    real = trainer_mod.RenderTrainer.train_step

    def train_step(self, *a, **kw):
        if not getattr(self, "_seen", False):
            self._seen = True
            seen.append({k: v.clone() for k, v in self.gen.state_dict().items()})
        return real(self, *a, **kw)

    monkeypatch.setattr(trainer_mod.RenderTrainer, "train_step", train_step)
    return seen


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretrain_writes_a_generic_model_of_its_targets(generic):
    meta, d = generic["meta"], generic["dir"]
    assert meta["generic"] is True and meta["n_targets"] == 2 and meta["fingerprint"] is None
    assert meta["steps"] == 2 and meta["size"] == SIZE and meta["init"]["kind"] == "cold"
    assert [t["video"] for t in meta["target"]["targets"]] == ["target_00.mp4", "target_01.mp4"]
    saved = torch.load(d / "model.pt", weights_only=True)["meta"]
    assert saved["generic"] is True and saved["n_targets"] == 2 and saved["finished"]
    for k in range(2):     # footage and its tracked (not ground-truth) landmarks
        assert (d / "footage" / f"target_{k:02d}.mp4").is_file()
        assert "tracker" in load_track(d / "footage" / f"target_{k:02d}.npz").info
    assert "footage 2/2: target_01.mp4" in generic["log"] and "pretrain: one generic renderer on 2" in generic["log"]
    # the footage options differ from target to target, and are reproducible from the seed
    cfgs = synthetic_target_configs(2, 14, SIZE, seed=0)
    assert cfgs == synthetic_target_configs(2, 14, SIZE, seed=0)
    assert cfgs[0].config["seed"] != cfgs[1].config["seed"] and cfgs[0].config["face_px"] != cfgs[1].config["face_px"]
    # another set of targets in the same folder: refused
    with pytest.raises(EvpError, match="other footage"):
        pretrain_generic(d, steps=3, targets=3, frames=14, size=SIZE, sfm_dir=None, rep=Reporter(quiet=True))


def test_multi_target_clips_stay_inside_one_target(generic, tmp_path):
    from render.data import TargetFrames
    d = generic["dir"] / "footage"
    sets = [TargetFrames.load(d / f"target_{k:02d}.mp4", load_track(d / f"target_{k:02d}.npz"), SIZE, holdout=0.1)
            for k in range(2)]
    multi = MultiTargetFrames(sets)
    assert len(multi) == 28 and multi.n_train == 24 and multi.train_ranges() == [(0, 12), (14, 26)]
    assert multi.locate(15) == (1, 1) and np.array_equal(multi.crop(15), sets[1].crop(1))
    cfg = trainer_mod.RenderTrainConfig(size=SIZE, batch=2, preview_every=0)
    tr = trainer_mod.RenderTrainer(multi, tmp_path / "m", cfg, "generic:test", {"generic": True}, steps=1)
    asked = []
    real = multi.sample
    multi.sample = lambda i: (asked.append(i), real(i))[1]
    for _ in range(6):
        n0 = len(asked)
        tr._clip_batch()
        for clip in (asked[n0:n0 + 3], asked[n0 + 3:n0 + 6]):
            ks = {multi.locate(i)[0] for i in clip}
            assert len(ks) == 1
            end = multi.train_ranges()[ks.pop()][1]
            assert all(i < end for i in clip)
    assert {multi.locate(i)[0] for i in asked} == {0, 1}


def test_init_starts_from_exactly_the_generic_weights(generic, target, tmp_path, monkeypatch):
    seen = _first_step_weights(monkeypatch)
    buf = io.StringIO()
    meta = train_target(target["video"], target["track"], tmp_path / "m", size=SIZE, steps=1, holdout=0.25,
                        preview_every=0, precision="fp32", init=generic["dir"], init_shrink=1.0,
                        rep=Reporter(stream=buf))
    want = _generator_state(generic["dir"] / "model.pt")
    assert len(seen) == 1 and _same(seen[0], want)
    assert "warm start: " in buf.getvalue() and "generic renderer, 2 steps on 2 synthetic targets" in buf.getvalue()
    assert meta["init"]["kind"] == "warm" and meta["init"]["generic"] and meta["init"]["n_targets"] == 2
    from evp_anim.assets import sha256_file
    assert meta["init"]["sha256"] == sha256_file(generic["dir"] / "model.pt")
    # a cold start does not have those weights
    cold = train_target(target["video"], target["track"], tmp_path / "c", size=SIZE, steps=1, holdout=0.25,
                        preview_every=0, precision="fp32", init="none", rep=Reporter(quiet=True))
    assert not _same(seen[1], want) and cold["init"]["kind"] == "cold"
    assert meta["init"]["shrink"] == 1.0 and "mixed" not in buf.getvalue()


def test_default_init_is_shrunk_half_way_to_the_runs_random_weights(generic, target, tmp_path, monkeypatch):
    """Shrink and perturb: 0.5 × the warm generator + 0.5 × the random init a cold run of the same
    seed starts from (ResBlocks' zero-initialised second convolutions: the warm ones halved)."""
    assert warmstart.DEFAULT_INIT_SHRINK == 0.5
    seen = _first_step_weights(monkeypatch)
    buf = io.StringIO()
    meta = train_target(target["video"], target["track"], tmp_path / "m", size=SIZE, steps=1, holdout=0.25,
                        preview_every=0, precision="fp32", init=generic["dir"], rep=Reporter(stream=buf))
    train_target(target["video"], target["track"], tmp_path / "c", size=SIZE, steps=1, holdout=0.25,
                 preview_every=0, precision="fp32", init="none", rep=Reporter(quiet=True))
    warm, fresh = _generator_state(generic["dir"] / "model.pt"), seen[1]
    assert seen[0].keys() == warm.keys()
    for k in warm:
        assert torch.allclose(seen[0][k], 0.5 * warm[k] + 0.5 * fresh[k], atol=1e-7), k
    zero_init = [k for k in fresh if ".c2." in k]
    assert zero_init and all(not fresh[k].any() and torch.allclose(seen[0][k], 0.5 * warm[k]) for k in zero_init)
    assert meta["init"]["kind"] == "warm" and meta["init"]["shrink"] == 0.5
    assert "mixed 0.5 : 0.5 with random weights (--init-shrink 0.5" in buf.getvalue()
    with pytest.raises(EvpError, match=r"--init-shrink must be in \(0, 1\]"):
        train_target(target["video"], target["track"], tmp_path / "x", size=SIZE, steps=1, init=generic["dir"],
                     init_shrink=0.0, rep=Reporter(quiet=True))
    assert not (tmp_path / "x").exists()


def test_shipped_default_is_used_only_when_its_size_fits(generic, target, tmp_path, monkeypatch):
    gcfg = trainer_mod.RenderTrainConfig(size=SIZE).gen_config().to_dict()
    monkeypatch.setattr(warmstart, "default_warmstart_path", lambda: tmp_path / "absent.pt")
    ws, line = warmstart.resolve_init("auto", SIZE, gcfg)
    assert ws is None and line.startswith("cold start: random weights (no shipped warm start")
    monkeypatch.setattr(warmstart, "default_warmstart_path", lambda: generic["dir"] / "model.pt")
    ws, line = warmstart.resolve_init("auto", SIZE, gcfg)
    assert ws is not None and line.startswith("warm start: ") and "2 synthetic targets" in line
    ws, line = warmstart.resolve_init("auto", 128, gcfg)       # another size: cold, and why
    assert ws is None and line.startswith("cold start:") and "64 px renderer but this run trains 128 px" in line
    assert warmstart.resolve_init("none", SIZE, gcfg) == (None, "cold start: random weights (--init none)")
    seen = _first_step_weights(monkeypatch)
    meta = train_target(target["video"], target["track"], tmp_path / "m", size=SIZE, steps=1, holdout=0.25,
                        preview_every=0, precision="fp32", init_shrink=1.0, rep=Reporter(quiet=True))  # init auto
    assert meta["init"]["kind"] == "warm" and _same(seen[0], _generator_state(generic["dir"] / "model.pt"))


def test_resume_ignores_init_and_says_so(generic, target, tmp_path, monkeypatch):
    out = tmp_path / "m"
    train_target(target["video"], target["track"], out, size=SIZE, steps=1, holdout=0.25, preview_every=0,
                 precision="fp32", init="none", rep=Reporter(quiet=True))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)["gen"]
    seen = _first_step_weights(monkeypatch)
    buf = io.StringIO()
    meta = train_target(target["video"], target["track"], out, size=SIZE, steps=2, holdout=0.25, preview_every=0,
                        precision="fp32", init=generic["dir"], rep=Reporter(stream=buf))
    assert _same(seen[0], ckpt) and meta["steps"] == 2 and meta["init"]["kind"] == "cold"
    text = buf.getvalue()
    assert "resuming" in text and "ignored: the checkpoint's weights win" in text and "warm start:" not in text


def test_one_line_refusals(generic, target, tmp_path):
    # a warm start of another crop size
    with pytest.raises(EvpError, match="is a 64 px renderer but this run trains 128 px crops: give --size 64"):
        warmstart.load_warmstart(generic["dir"], 128, trainer_mod.RenderTrainConfig().gen_config().to_dict())
    with pytest.raises(EvpError, match="no renderer there"):
        warmstart.load_warmstart(tmp_path / "nothing", SIZE, {})
    out = tmp_path / "m"
    r = subprocess.run([sys.executable, "-m", "evp_anim", "render", "train", str(target["video"]), "--track",
                        str(target["track"]), "-o", str(out), "--size", "128", "--steps", "1",
                        "--init", str(generic["dir"])], capture_output=True, text=True)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and err[0].startswith("error:") and "--size 64" in err[0], r.stderr
    assert not (out / "checkpoint.pt").exists()
    r = subprocess.run([sys.executable, "-m", "evp_anim", "render", "train", str(target["video"]), "--track",
                        str(target["track"]), "-o", str(out), "--size", "64", "--steps", "1", "--cold",
                        "--init", str(generic["dir"])], capture_output=True, text=True)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "contradict" in err[0], r.stderr
    # a generic renderer cannot dub: render run refuses it, nothing written
    aligned = tmp_path / "aligned.npz"
    save_track(load_track(target["track"]), aligned)
    dub = tmp_path / "dub.mp4"
    r = subprocess.run([sys.executable, "-m", "evp_anim", "render", "run", str(aligned), "--target",
                        str(target["video"]), "--model", str(generic["dir"]), "--target-track", str(target["track"]),
                        "-o", str(dub)], capture_output=True, text=True)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert "is a generic warm-start renderer, not trained for third.mp4" in err[0] and "--init" in err[0]
    assert not dub.exists() and not list(tmp_path.glob(".dub.mp4*"))
    with pytest.raises(EvpError, match="generic warm-start renderer"):
        RenderModel(generic["dir"]).check_target(target["video"])
