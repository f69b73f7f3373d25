"""Renderer training and rendering on a small real synthetic target (64 px crops to stay fast):
a training step lowers the loss, resume gives the same weights, paste-back is right, and every
bad input (another video's model, mismatched lengths or sizes, corrupt files) is one line."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evp_anim.errors import EvpError
from evp_anim.footage.synthetic import SyntheticFootageConfig, make_synthetic_footage
from evp_anim.footage.video import FrameSource
from evp_anim.tracks import load_track, save_track
from render.data import TargetFrames, video_fingerprint
from render.guidance import crop_frame, crop_transforms
from render.inference import RenderModel, check_pair, paste_crop, render_video
from render.losses import reconstruction_loss
from render.trainer import ClipStream, RenderTrainConfig, RenderTrainer, check_device

SIZE = 64
REPO = Path(__file__).resolve().parents[1]
N = 24


@pytest.fixture(scope="module")
def target(tmp_path_factory, sfm_dir):
    d = tmp_path_factory.mktemp("render")
    video = d / "target.mp4"
    cfg = SyntheticFootageConfig(n_frames=N, width=160, height=160, face_px=80, seed=2, expression_style="rich")
    make_synthetic_footage(video, sfm_dir, cfg, track_path=d / "target.npz")
    other = d / "other.mp4"
    make_synthetic_footage(other, sfm_dir, SyntheticFootageConfig(n_frames=N, width=160, height=160,
                                                                   face_px=80, seed=5))
    return {"dir": d, "video": video, "track": d / "target.npz", "other": other}


@pytest.fixture(scope="module")
def frames(target):
    return TargetFrames.load(target["video"], load_track(target["track"]), SIZE, holdout=0.25)


def _trainer(frames, target, folder, steps, loader_workers=0, **kw):
    cfg = RenderTrainConfig(size=SIZE, batch=2, checkpoint_every=kw.pop("checkpoint_every", 1000),
                            preview_every=kw.pop("preview_every", 0), **kw)
    return RenderTrainer(frames, folder, cfg, video_fingerprint(target["video"]),
                         {"video": target["video"].name, "image_size": [160, 160], "n_frames": N}, steps=steps,
                         loader_workers=loader_workers)


def test_loader_workers_draw_training_clips_and_the_run_trains_on_them(frames, target, tmp_path):
    """``loader_workers`` (what a GPU run uses): worker processes draw the clips; each worker's
    stream is its own, the clips are consecutive training frames, and a run over them finishes."""
    cfg = RenderTrainConfig(size=SIZE, batch=3)
    first, second = (next(iter(ClipStream(frames, cfg, False, [0, 0, 0]))) for _ in range(2))
    assert first["real"].shape == (3, cfg.clip, 3, SIZE, SIZE) and first["prev0"].shape == (3, 3, SIZE, SIZE)
    assert torch.equal(first["real"], second["real"])         # same seed, same clips
    real = np.stack([frames.sample(i)["real"] for i in range(frames.n_train)])
    for clip in first["real"].numpy():   # each clip: K consecutive frames of the training part
        idx = [int(np.argmin(np.abs(real - f).reshape(len(real), -1).sum(1))) for f in clip]
        assert np.all(np.abs(real[idx] - clip).max(axis=(1, 2, 3)) < 1e-6) and np.all(np.diff(idx) == 1), idx
    tr = _trainer(frames, target, tmp_path / "w", steps=3, loader_workers=2)
    meta = tr.run()
    assert meta["steps"] == 3 and len((tmp_path / "w" / "log.csv").read_text().strip().splitlines()) == 4
    assert all(torch.isfinite(p).all() for p in tr.gen.parameters())


def test_device_check_is_one_line():
    check_device("cpu")
    with pytest.raises(EvpError, match="--device must be cpu or cuda"):
        check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EvpError, match="sees no CUDA GPU"):
            check_device("cuda")


def test_frames_hold_crops_and_held_out_split(frames):
    assert len(frames) == N and frames.n_train == 18
    s = frames.sample(3)
    assert s["guidance"].shape == (10, SIZE, SIZE) and s["real"].shape == (3, SIZE, SIZE)
    assert s["mask"][0].sum() > 0.15 * SIZE * SIZE     # the face fills a good part of the crop
    assert s["mouth"][0].sum() < s["mask"][0].sum()
    assert np.all(s["known"][:, s["mask"][0] > 0] == 0)


def test_one_training_step_lowers_the_loss(frames, target, tmp_path):
    tr = _trainer(frames, target, tmp_path / "m", steps=10)
    torch.manual_seed(0)
    batch = tr._clip_batch()

    def loss():
        with torch.no_grad():
            tr.gen.eval()
            fake = tr.gen(*(batch[k][:, 0] for k in ("guidance", "known", "mask", "alpha")), batch["prev0"])
            return reconstruction_loss(fake, batch["real"][:, 0], batch["mask"][:, 0], batch["mouth"][:, 0],
                                       tr.cfg)[0].item()

    before = loss()
    logs = tr.train_step(batch, adversarial=False)
    after = loss()
    assert np.isfinite(logs["loss"]) and after < before - 1e-3
    # the adversarial phase runs too (discriminators, temporal and mouth, feature matching)
    logs = tr.train_step(batch, adversarial=True)
    assert all(np.isfinite(logs[k]) for k in ("d", "adv", "fm", "loss"))


def test_resume_gives_the_same_weights_and_corrupt_checkpoint_is_one_line(frames, target, tmp_path):
    straight = _trainer(frames, target, tmp_path / "a", steps=4)
    straight.run()
    first = _trainer(frames, target, tmp_path / "b", steps=4, checkpoint_every=1)
    first.train_step()
    first.train_step()
    first.save()    # ... and the run is killed here
    again = _trainer(frames, target, tmp_path / "b", steps=4, checkpoint_every=1)
    assert again.resumed and again.step == 2
    again.run()
    for (k, a), b in zip(straight.gen.state_dict().items(), again.gen.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    # other options than the checkpoint's: refused
    with pytest.raises(EvpError, match="other training options"):
        _trainer(frames, target, tmp_path / "b", steps=6, lr=5e-4)
    # a truncated checkpoint: one line, not a traceback
    ck = tmp_path / "b" / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[:1000])
    with pytest.raises(EvpError, match="corrupt checkpoint"):
        _trainer(frames, target, tmp_path / "b", steps=6)
    (tmp_path / "b" / "model.pt").write_bytes(b"not a model")
    with pytest.raises(EvpError, match="corrupt model"):
        RenderModel(tmp_path / "b")
    with pytest.raises(EvpError, match="no trained renderer"):
        RenderModel(tmp_path / "nothing")


@pytest.fixture(scope="module")
def model_dir(frames, target, tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    _trainer(frames, target, d, steps=2).run()
    (d / "target_track.npz").write_bytes(target["track"].read_bytes())
    return d


def test_paste_back_puts_the_crop_where_it_came_from(target):
    from evp_anim.footage.video import read_frames
    tr = load_track(target["track"])
    frame = read_frames(target["video"], max_frames=1)[0]
    crops = crop_transforms(tr.landmarks_2d, SIZE)
    crop = crop_frame(frame, crops, 0)
    alpha = np.zeros((SIZE, SIZE), np.float32)
    alpha[16:48, 16:48] = 1.0
    red = np.zeros_like(crop)
    red[..., 2] = 255
    out = paste_crop(frame, red, alpha, crops, 0)
    # the crop's box lands on the frame where the transform says, the rest is untouched
    centre = crops.inverse(0) @ np.array([31.5, 31.5, 1.0])
    cx, cy = np.round(centre).astype(int)
    assert tuple(out[cy, cx]) == (0, 0, 255)
    far = np.ones(frame.shape[:2], bool)
    corners = (crops.inverse(0) @ np.array([[14, 14, 1], [50, 50, 1]]).T).T
    (x0, y0), (x1, y1) = np.floor(corners[0]).astype(int), np.ceil(corners[1]).astype(int)
    far[max(y0, 0):y1, max(x0, 0):x1] = False
    assert np.array_equal(out[far], frame[far])
    # pasting the frame's own crop with a full mask gives the frame back (up to resampling)
    same = paste_crop(frame, crop, alpha, crops, 0)
    assert np.abs(same.astype(int) - frame.astype(int))[~far].mean() < 6


def test_frame_source_serves_any_order(target):
    from evp_anim.footage.video import read_frames
    ref = read_frames(target["video"], max_frames=6)
    for order, sequential in (([0, 1, 2, 3, 4, 5, 0, 1], True), ([0, 1, 2, 3, 2, 1, 0, 1, 5], False)):
        src = FrameSource(target["video"], 25.0, np.array(order))
        assert src.sequential == sequential
        for j in order:
            assert np.array_equal(src.get(j), ref[j])
        src.close()


def test_render_video_streams_a_dub_with_audio(model_dir, target, tmp_path):
    from evp_anim.video_io import probe_video
    tr = load_track(target["track"])
    aligned = tr.copy()
    aligned.info["target_frames"] = list(range(N))
    out = tmp_path / "dub.mp4"
    audio = 0.1 * np.sin(np.linspace(0, 2000, 16000 * N // 25)).astype(np.float32)
    n = render_video(aligned, tr, target["video"], RenderModel(model_dir), out, audio=audio)
    info = probe_video(out)
    assert n == N and info["frames"] == N and (info["width"], info["height"]) == (160, 160) and info["has_audio"]


def test_bad_inputs_are_refused(model_dir, frames, target, tmp_path):
    tr = load_track(target["track"])
    # a model trained for another video
    with pytest.raises(EvpError, match="trained for target.mp4"):
        RenderModel(model_dir).check_target(target["other"])
    # guidance (aligned track) and target of different sizes / lengths
    bad = tr.copy()
    bad.image_size = (320, 320)
    with pytest.raises(EvpError, match="320x320"):
        check_pair(bad, tr)
    long = tr.copy()
    long.info["target_frames"] = list(range(N + 5))[5:]
    with pytest.raises(EvpError, match="footage frame"):
        check_pair(long, tr)
    # footage and track of different lengths or sizes when training
    short = tr.slice(0, N - 4)
    with pytest.raises(EvpError, match="more frames than its track"):
        TargetFrames.load(target["video"], short, SIZE)
    with pytest.raises(EvpError, match="160x160"):
        TargetFrames.load(target["video"], bad, SIZE)


def test_cli_refuses_another_videos_model_without_writing(model_dir, target, tmp_path):
    tr = load_track(target["track"])
    aligned = tmp_path / "aligned.npz"
    save_track(tr, aligned)
    out = tmp_path / "dub.mp4"
    r = subprocess.run([sys.executable, "-m", "evp_anim", "render", "run", str(aligned), "--target",
                        str(target["other"]), "--model", str(model_dir), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "trained for target.mp4" in err[0]
    assert not out.exists() and not list(tmp_path.glob(".dub.mp4*"))


@pytest.mark.slow
def test_dub_end_to_end_trains_a_missing_renderer_then_reuses_it(target, tmp_path):
    from evp_anim.video_io import probe_video
    speech = REPO / "assets" / "sample_speech.wav"
    cache = tmp_path / "cache"
    for k in range(2):
        out = tmp_path / f"dub{k}.mp4"
        r = subprocess.run([sys.executable, "-m", "evp_anim", "dub", str(speech), str(target["video"]), "--emotion",
                            "sad", "-o", str(out), "--renderer", "gan", "--train-minutes", "0.1", "--cache-dir", str(cache)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert ("training one now" in r.stderr) == (k == 0)
        info = probe_video(out)
        assert info["frames"] == 105 and info["has_audio"]
    assert len(list(cache.glob("*/renderer/model.pt"))) == 1 and len(list(cache.glob("*/track.npz"))) == 1
