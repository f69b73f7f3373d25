"""The faster code paths of issue 17 give the values of the plain ones they replace (real values,
no timings): centre MFCC rows, the frontal projection, the row de-duplication of the rest mouth,
the rig solve's grouping of rows by bound set for rigs of any width, the frame encoder's shared
convolutions and the LSTM's side-by-side rows."""

import numpy as np
import pytest

from evp_anim.audio.features import MFCC_PER_FRAME, frame_mfcc_rows, mfcc, n_frames
from evp_anim.audio.io import load_audio
from evp_anim.face.projection import aligned_crop_transform, aligned_landmarks, project
from evp_anim.face.solve import box_qp
from evp_anim.models.animate import _unique_rows

from conftest import REPO

SPEECH = REPO / "assets" / "sample_speech.wav"


@pytest.mark.parametrize("n", [1, 399, 640, 641, 1600, 48_017, None])
def test_centre_rows_are_the_full_mfcc_rows_at_frame_centres(n):
    """frame_mfcc_rows computes only rows 4t + 2 (the last row for a trailing frame); they are
    mfcc()'s rows up to float rounding of the mel product (values are tens of dB)."""
    y = load_audio(SPEECH)
    y = y if n is None else y[:n]
    full = mfcc(y)
    t = n_frames(y.size)
    want = full[np.minimum(MFCC_PER_FRAME * np.arange(t) + MFCC_PER_FRAME // 2, len(full) - 1)]
    got = frame_mfcc_rows(y)
    assert got.shape == (t, 12) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_centre_rows_of_other_rates_are_those_of_the_16k_signal():
    y = load_audio(SPEECH)[:32_000]
    from evp_anim.audio.features import to_16k
    y22 = np.interp(np.arange(int(y.size * 22050 / 16000)) * 16000 / 22050, np.arange(y.size), y).astype(np.float32)
    np.testing.assert_array_equal(frame_mfcc_rows(y22, 22050), frame_mfcc_rows(to_16k(y22, 22050)))


def test_aligned_landmarks_are_project_without_rotation_to_the_bit():
    x = np.random.default_rng(3).normal(0.0, 60.0, (257, 68, 3)).astype(np.float32)
    scale, trans = aligned_crop_transform(256)
    for size in (256, 512):
        scale, trans = aligned_crop_transform(size)
        np.testing.assert_array_equal(aligned_landmarks(x, size), project(x, np.zeros(3), trans, scale))
        np.testing.assert_array_equal(aligned_landmarks(x[5], size), project(x[5], np.zeros(3), trans, scale))
    assert aligned_landmarks(x).dtype == np.float64


@pytest.mark.parametrize("kind", ["repeated", "mixed", "empty"])
def test_unique_rows_is_numpy_unique(kind):
    rng = np.random.default_rng(0)
    code = rng.normal(size=32).astype(np.float32)
    if kind == "repeated":        # a label's codes: one row on every frame (a broadcast view)
        x = np.broadcast_to(code, (1500, 32))
    elif kind == "mixed":         # cross-faded keys: a few distinct rows, out of order
        x = rng.normal(size=(5, 32)).astype(np.float32)[rng.integers(0, 5, 300)]
    else:
        x = np.zeros((0, 32), np.float32)
    uniq, which = _unique_rows(x)
    want_u, want_w = np.unique(x, axis=0, return_inverse=True)
    np.testing.assert_array_equal(uniq, want_u)
    np.testing.assert_array_equal(which, want_w.reshape(-1))
    np.testing.assert_array_equal(uniq[which], x)


def test_grouped_box_qp_for_a_rig_wider_than_63_channels():
    """Bound sets are keyed as 64-bit masks up to 63 channels; wider problems compare rows whole.
    Either way each row is the exact box-constrained minimiser (the per-row solver's answer)."""
    rng = np.random.default_rng(1)
    k = 70
    a = rng.normal(size=(120, k))
    q = a.T @ a + 1e-2 * np.eye(k)
    # Rows in a few families (shared bound sets) and some on their own.
    base = rng.normal(0.5, 1.5, size=(6, k))
    w_target = np.concatenate([base[rng.integers(0, 6, 200)] + rng.normal(0, 1e-3, (200, k)),
                               rng.normal(0.5, 1.5, (20, k))])
    c = w_target @ q
    batched = box_qp(q, c)
    per_row = box_qp(q, c, max_sweeps=0)        # every row by the primal active-set method
    np.testing.assert_allclose(batched, per_row, atol=1e-8)
    assert batched.min() >= 0.0 and batched.max() <= 1.0


def test_the_lstm_on_one_thread_gives_the_two_thread_numbers_and_the_setting_is_restored():
    """EvpModel.predict_frames runs the audio-to-landmark LSTM on one torch thread (faster for
    its small sequential steps); the numbers are those of two threads, to the bit."""
    import torch
    from evp_anim.models.animate import default_model_path
    from evp_anim.models.evp import EvpModel
    model = EvpModel.load(default_model_path())
    cfg = model.net.cfg
    g = torch.Generator().manual_seed(0)
    content = torch.randn(1, 300, cfg.content_dim, generator=g)
    emotion = torch.randn(1, 300, cfg.emotion_dim, generator=g)
    ref = model.net.normalise_reference(model.net.ref_mean.reshape(1, 68, 3))
    before = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad():
                outs.append(model.net.a2l(content, emotion, ref)[0])
        torch.set_num_threads(2)
        windows = np.random.default_rng(0).normal(0, 10, (40, 28, 12)).astype(np.float32)
        codes = np.broadcast_to(model.label_code("happy", 1.0), (40, cfg.emotion_dim))
        model.predict_frames(windows, 0, 40, 0, 40, codes, model.net.ref_mean.numpy().reshape(68, 3))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("seed", range(4))
def test_plain_skin_colour_is_the_most_common_texel_colour_as_rows_would_give(seed):
    """_plain_triangles packs each texel's colour into one integer for its count; the colour it
    picks (ties included) is the one np.unique over (r, g, b) rows picks."""
    from evp_anim.face.raster import _plain_triangles
    rng = np.random.default_rng(seed)
    tex = (rng.integers(0, 3, (120, 90, 4)) * 100).astype(np.uint8)
    if seed == 0:                 # a tie: two colours with the same count
        tex[..., :3] = 0
        tex[:60, :, :3] = (10, 200, 30)
    colours, counts = np.unique(tex[..., :3].reshape(-1, 3), axis=0, return_counts=True)
    uv = rng.uniform(0, 90, (40, 2))
    _, skin = _plain_triangles(tex, uv, rng.integers(0, 40, (30, 3)))
    np.testing.assert_array_equal(skin, colours[counts.argmax()])
    assert skin.dtype == np.uint8


def test_preview_leaves_numpys_blas_threads_as_it_found_them(tmp_path, sfm_dir):
    from threadpoolctl import threadpool_info
    from evp_anim.face.rig import FaceRig
    from evp_anim.preview import write_preview
    from evp_anim.tracks import Track

    def blas_threads():          # per library file (the preview may load more of them)
        return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    rig = FaceRig.cached(sfm_dir)
    n = 3
    lm3 = np.repeat(rig.landmarks_3d(None)[None], n, 0).astype(np.float32)
    track = Track.new(aligned_landmarks(lm3).astype(np.float32), fps=25, image_size=(256, 256),
                      landmarks_3d=lm3, expression=np.zeros((n, len(rig.channels)), np.float32),
                      expression_names=list(rig.channels))
    before = blas_threads()
    write_preview(track, tmp_path / "p.mp4", sfm_dir=sfm_dir, size=128)
    after = blas_threads()
    assert before and {k: after[k] for k in before} == before
    assert (tmp_path / "p.mp4").stat().st_size > 1000


@pytest.mark.parametrize("sr,fps", [(16000, 25.0), (44100, 25.0), (16000, 30.0)])
def test_energy_is_each_frames_mean_square_on_both_paths(sr, fps):
    """energy() sums each frame's squares directly (np.add.reduceat), at whole (640 at 16 kHz,
    25 fps) and fractional samples per frame alike: each frame's level is 10·log10 of its samples'
    mean square, the cut-short last frame and frames past the end included."""
    from evp_anim.audio.features import ENERGY_FLOOR_DB, energy
    x = np.random.default_rng(3).normal(0, 0.1, int(sr * 2.37)).astype(np.float32)
    x[: sr // 5] = 0.0                                                   # digital silence first
    n = int(np.ceil(x.size * fps / sr)) + 2                              # two frames past the end
    bounds = np.minimum(np.floor(np.arange(n + 1) * (sr / fps) + 1e-9).astype(int), x.size)
    want = np.full(n, ENERGY_FLOOR_DB, np.float64)
    for t in range(n):
        seg = x[bounds[t]:bounds[t + 1]].astype(np.float64)
        if seg.size and (seg ** 2).mean() > 0:
            want[t] = 10 * np.log10((seg ** 2).mean())
    got = energy(x, sr=sr, fps=fps, n_frames=n)
    assert got.shape == (n,) and (got[:4] == ENERGY_FLOOR_DB).all() and (got[-2:] == ENERGY_FLOOR_DB).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert -21.0 < float(np.median(got[10:-3])) < -19.0                 # σ = 0.1: −20 dBFS


@pytest.mark.parametrize("frames", [1, 2, 37])
def test_frame_encoder_on_a_clips_overlapping_windows_equals_window_by_window(frames):
    """FrameEncoder.encode runs the convolutions once over the clip's MFCC rows (issue 17): the
    same features as convolving each 28-row window on its own, edge rows repeated included, for
    trained-like (random) weights; windows not cut from one row sequence take the per-window path."""
    import torch
    from evp_anim.audio.features import mfcc_window_view
    from evp_anim.models.evp import FrameEncoder
    torch.manual_seed(3)
    enc = FrameEncoder(128).eval()
    rows = np.random.default_rng(4).normal(size=(4 * frames + 9, 12)).astype(np.float32)
    win = torch.from_numpy(np.ascontiguousarray(mfcc_window_view(rows, frames)))[None]
    with torch.no_grad():
        whole, shared = enc(win), enc.encode(win)
        assert shared.shape == whole.shape == (1, frames, 128)
        assert float(whole.abs().max()) > 0.05                       # not a trivially zero output
        np.testing.assert_allclose(shared.numpy(), whole.numpy(), atol=2e-6, rtol=1e-5)
        shuffled = win[:, torch.randperm(frames)] if frames > 2 else win.flip(1)
        np.testing.assert_array_equal(enc.encode(shuffled).numpy(), enc(shuffled).numpy())


def test_lstm_rows_share_the_frames_once_each_after_its_warm_up():
    """predict_frames's side-by-side LSTM rows (issue 17): one row below 750 frames, four from
    1,500; the rows' output frames are the frames once each, in order; every row reads the same
    number of input frames, ending on its last output frame, and every row after the first reads
    at least ROW_WARMUP frames before its first output."""
    from evp_anim.models.evp_inference import MAX_ROWS, ROW_WARMUP, parallel_rows, row_spans
    assert [parallel_rows(n) for n in (1, 749, 750, 1499, 1500, 90_000)] == [1, 1, 2, 3, 4, MAX_ROWS]
    assert parallel_rows(1500, 1) == 1
    assert row_spans(40, 1) == (40, [(0, 40)])
    for n in (750, 763, 1500, 1501, 3000, 90_000):
        length, spans = row_spans(n, parallel_rows(n))
        assert spans[0] == (0, length) and spans[-1][1] == n
        assert all(b == a2 for (_, b), (a2, _) in zip(spans, spans[1:]))          # consecutive, no gaps
        assert all(a < b and a - (b - length) >= ROW_WARMUP and b - length >= 0 for a, b in spans[1:])
        assert length < n                                                       # fewer steps than one row


def test_lstm_rows_give_the_sequential_landmarks_of_a_minute_of_speech():
    """The rows after the first start from a zero LSTM state ROW_WARMUP frames early; by their
    first output frame the state has forgotten that: 63 s of real speech (the sample, repeated)
    give the one-row run's landmarks within 1e-3 mm (the face is ~150 mm wide), and the state
    after the frames is the one-row run's (h to 2e-3). A state passed in is continued exactly by row 0."""
    from evp_anim.audio.features import mfcc_windows
    from evp_anim.models.animate import default_model_path
    from evp_anim.models.evp import EvpModel
    from evp_anim.models.evp_inference import parallel_rows
    model = EvpModel.load(default_model_path())
    windows = mfcc_windows(np.tile(load_audio(SPEECH), 15))
    t = len(windows)
    assert parallel_rows(t) == 4
    ref = model.net.ref_mean.numpy().reshape(68, 3)
    for emotion in ("happy", "angry"):
        codes = np.broadcast_to(model.label_code(emotion, 1.0), (t, model.net.cfg.emotion_dim))
        one, one_state = model.predict_frames(windows, 0, t, 0, t, codes, ref, max_rows=1)
        rows, rows_state = model.predict_frames(windows, 0, t, 0, t, codes, ref)
        assert np.abs(one - ref).max() > 1.0                                   # the mouth moves
        np.testing.assert_allclose(rows, one, atol=1e-3, rtol=0)
        np.testing.assert_allclose(rows_state[0], one_state[0], atol=2e-3, rtol=0)  # h
        # c: a few cells integrate without bound (|c| ~ 80, tanh(c) = ±1 either way): they keep
        # their start to within 1 %, which the output does not see
        np.testing.assert_allclose(rows_state[1], one_state[1], atol=2e-3, rtol=1e-2)
        _, state = model.predict_frames(windows, 0, t, 0, 300, codes[:300], ref, max_rows=1)
        rest, _ = model.predict_frames(windows, 0, t, 300, t, codes[300:], ref, state)
        np.testing.assert_allclose(rest[:200], one[300:500], atol=2e-5, rtol=0)   # row 0: exact
        np.testing.assert_allclose(rest, one[300:], atol=1e-3, rtol=0)
        assert isinstance(rows_state[0], np.ndarray) and rows_state[0].shape == (1, 1, 256)
