"""The fast preview renderer (OpenGL) draws what the numpy rasteriser draws.

The numpy backend of :class:`~evp_anim.face.raster.FaceRenderer` is the renderer the preview used
before the OpenGL path (bounding-box rendering aside, byte-identical when it was introduced). Frames of a real track (the sample speech animated with the shipped
EVP model) and turned heads are rendered by both and compared: SSIM and per-pixel error bounds.
No timings here (benchmarks/bench_render.py measures speed).
"""

import threading
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from evp_anim.errors import EvpError
from evp_anim.face import raster
from evp_anim.face.raster import FaceRenderer
from evp_anim.face.rig import FaceRig

REPO = Path(__file__).resolve().parents[1]
SIZE = 384
TURNS = [(0.0, 0.5, 0.0), (0.3, 0.2, -0.2), (-0.35, 1.1, 0.0), (0.2, -1.4, 0.3)]


@pytest.fixture(scope="module")
def rig(sfm_dir):
    return FaceRig(sfm_dir)


@pytest.fixture(scope="module")
def track(rig):
    """The sample speech, animated (happy) with the shipped EVP model, lifted to the rig."""
    from evp_anim.audio.io import load_audio
    from evp_anim.models.animate import EmotionSpec, animate, default_model_path, lift_to_rig
    from evp_anim.models.evp import EvpModel

    audio = load_audio(REPO / "assets" / "sample_speech.wav")
    model = EvpModel.load(default_model_path())
    return lift_to_rig(animate(audio, model, EmotionSpec("happy", 1.0), reference=rig.landmarks_3d(None)), rig)


@pytest.fixture(scope="module")
def cases(rig, track):
    """(weights, rotation) of 6 track frames (widest mouth opening among them) and 4 turned heads."""
    from evp_anim.preview import _rig_weights

    w = _rig_weights(track, tuple(rig.channels))
    jaw = rig.landmarks_3d(None, w)[:, 57, 1] - rig.landmarks_3d(None, w)[:, 51, 1]   # lip gap (mm, <0 open)
    picks = sorted({0, int(np.argmin(jaw)), *np.linspace(5, track.n_frames - 1, 4).astype(int).tolist()})
    out = [(w[t], track.pose_rotation[t]) for t in picks]
    out += [(w[picks[i % len(picks)]], np.array(r)) for i, r in enumerate(TURNS)]
    return out


@pytest.fixture(scope="module")
def reference_frames(rig, cases):
    ref = FaceRenderer(rig, backend="numpy")
    return [ref.render(None, w, rot, SIZE) for w, rot in cases]


def _ssim(a, b):
    return structural_similarity(a, b, channel_axis=2)


def _gl_renderer(rig) -> FaceRenderer:
    r = FaceRenderer(rig, backend="auto")
    r.render(None, None, (0, 0, 0), 32)
    if r.backend_used != "gl":
        pytest.skip("no OpenGL context here (moderngl + Mesa EGL); the numpy path is tested below")
    return r


def test_gl_frames_match_reference(rig, cases, reference_frames):
    ren = _gl_renderer(rig)
    for (w, rot), ref in zip(cases, reference_frames):
        img = ren.render(None, w, rot, SIZE)
        assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
        err = np.abs(img.astype(np.int16) - ref)
        # measured: SSIM >= 0.9994, mean error < 0.08 levels; differences are single pixels on
        # triangle edges (coverage tie-breaks) and 8-bit texture rounding
        assert _ssim(img, ref) >= 0.995, rot
        assert err.mean() < 0.3, rot
        assert (err.max(2) > 16).mean() < 2e-4, rot     # at most ~30 pixels visibly off


def test_numpy_fallback_matches_reference(rig, cases, reference_frames):
    ren = FaceRenderer(rig, backend="numpy")
    for i in (1, len(cases) - 2):            # an open mouth and a turned head
        w, rot = cases[i]
        img = ren.render(None, w, rot, SIZE)
        assert ren.backend_used == "numpy"
        assert np.abs(img.astype(np.int16) - reference_frames[i]).max() <= 1


def test_environment_forces_numpy_and_gl_can_be_missing(rig, monkeypatch):
    monkeypatch.setenv("EVP_ANIM_RASTER", "numpy")
    ren = FaceRenderer(rig, backend="auto")
    ren.render(None, None, (0, 0, 0), 64)
    assert ren.backend_used == "numpy"
    monkeypatch.delenv("EVP_ANIM_RASTER")
    ren = FaceRenderer(rig)                  # the default stays the bit-stable numpy path
    ren.render(None, None, (0, 0, 0), 64)
    assert ren.backend_used == "numpy"
    # without moderngl or a driver: "auto" falls back to numpy, "gl" says so
    monkeypatch.setattr(raster._GLFaceRaster, "create", classmethod(lambda cls, *a: None))
    ren = FaceRenderer(rig, backend="auto")
    assert ren.render(None, None, (0, 0, 0), 64).shape == (64, 64, 3)
    assert ren.backend_used == "numpy"
    with pytest.raises(EvpError, match="GL renderer is not available"):
        FaceRenderer(rig, backend="gl").render(None, None, (0, 0, 0), 64)
    with pytest.raises(EvpError):
        FaceRenderer(rig, backend="vulkan")


def test_gl_renders_from_another_thread(rig, cases, reference_frames):
    """A GL context belongs to its thread: a renderer used from a new thread makes its own."""
    ren = _gl_renderer(rig)
    w, rot = cases[1]
    got = {}
    th = threading.Thread(target=lambda: got.update(img=ren.render(None, w, rot, SIZE)))
    th.start()
    th.join()
    assert _ssim(got["img"], reference_frames[1]) >= 0.995
    assert _ssim(ren.render(None, w, rot, SIZE), reference_frames[1]) >= 0.995


def test_two_gl_renderers_in_one_thread(rig, cases):
    """Each renderer makes its own context current: interleaved renders do not mix them up."""
    _gl_renderer(rig)
    black, white = (FaceRenderer(rig, background=bg, backend="auto") for bg in ((0, 0, 0), (255, 255, 255)))
    ref_black, ref_white = (FaceRenderer(rig, background=bg, backend="numpy") for bg in ((0, 0, 0), (255, 255, 255)))
    w, rot = cases[1]
    for _ in range(2):
        a, b = black.render(None, w, rot, 128), white.render(None, w, rot, 128)
        assert _ssim(a, ref_black.render(None, w, rot, 128)) >= 0.99
        assert _ssim(b, ref_white.render(None, w, rot, 128)) >= 0.99
        assert a[0, 0].tolist() == [0, 0, 0] and b[0, 0].tolist() == [255, 255, 255]


def test_head_off_frame_and_other_sizes(rig):
    """A head partly or wholly outside the frame, and sizes other than the preview's."""
    ren, ref = FaceRenderer(rig, backend="auto"), FaceRenderer(rig, backend="numpy")
    for size, shift in ((100, (0.0, 0.0)), (256, (180.0, -90.0)), (96, (5000.0, 0.0))):
        from evp_anim.face.projection import aligned_crop_transform
        s, t = aligned_crop_transform(size)
        a = ren.render(None, None, (0.0, 0.3, 0.0), size, scale=s, translation=t + np.array(shift))
        b = ref.render(None, None, (0.0, 0.3, 0.0), size, scale=s, translation=t + np.array(shift))
        assert a.shape == b.shape == (size, size, 3)
        assert _ssim(a, b) >= 0.99, (size, shift)


def test_preview_video_matches_reference(rig, track, tmp_path, sfm_dir):
    """write_preview (frames encoded on a second thread) gives the reference renderer's frames
    (with the head's parts: eyes, teeth, mouth interior), up to H.264's loss, in order."""
    import av

    from evp_anim.preview import _rig_weights, write_preview
    from evp_anim.video_io import probe_video

    short = track.copy()
    n = 12
    for name in ("landmarks_2d", "pose_rotation", "pose_translation", "pose_scale", "expression",
                 "emotion", "intensity"):
        setattr(short, name, getattr(track, name)[:n])
    if isinstance(short.landmarks_3d, np.ndarray):
        short.landmarks_3d = track.landmarks_3d[:n]
    out = write_preview(short, tmp_path / "p.mp4", sfm_dir=sfm_dir, size=SIZE)
    info = probe_video(out)
    assert (info["frames"], info["width"], info["height"]) == (n, 2 * SIZE, SIZE)
    ref = FaceRenderer(rig, backend="numpy", parts=True)    # the preview draws the head's parts
    w = _rig_weights(short, tuple(rig.channels))
    with av.open(str(out)) as c:
        decoded = [f.to_ndarray(format="bgr24") for f in c.decode(c.streams.video[0])]
    for t in (0, 7, n - 1):
        want = ref.render(None, w[t], short.pose_rotation[t], SIZE)
        got = decoded[t][:, SIZE:]
        assert _ssim(got, want) >= 0.95, t
        # in order: frame t matches reference frame t better than its neighbours' renders
        other = ref.render(None, w[(t + 4) % n], short.pose_rotation[t], SIZE)
        assert np.abs(got.astype(int) - want).mean() <= np.abs(got.astype(int) - other).mean()


def test_preview_encoder_error_is_raised(track, tmp_path, sfm_dir, monkeypatch):
    """An error on the encoding thread stops the preview with that error and leaves no file."""
    from evp_anim import preview, video_io

    def broken(self, frame):
        raise EvpError("disk full (simulated)")

    monkeypatch.setattr(video_io.VideoWriter, "write", broken)
    with pytest.raises(EvpError, match="simulated"):
        preview.write_preview(track, tmp_path / "p.mp4", sfm_dir=sfm_dir, size=64)
    assert not (tmp_path / "p.mp4").exists()


def test_forked_child_falls_back_to_numpy(rig):
    """A child forked after the parent used GL renders with numpy (no GL state shared)."""
    import multiprocessing as mp

    global _FORKED_RENDERER
    _FORKED_RENDERER = _gl_renderer(rig)     # the child gets it by fork, not by pickling
    with mp.get_context("fork").Pool(1) as pool:
        used, img = pool.apply(_render_in_child)
    assert used == "numpy"
    assert _ssim(img, _FORKED_RENDERER.render(None, None, (0, 0.2, 0), 96)) >= 0.99


_FORKED_RENDERER = None


def _render_in_child():
    img = _FORKED_RENDERER.render(None, None, (0, 0.2, 0), 96)
    return _FORKED_RENDERER.backend_used, img


def test_plain_triangles_are_those_on_one_colour():
    """The GL path draws triangles over plain skin without the texture: only those whose every
    reachable texel (bilinear, 1 texel margin) is the texture's main colour qualify."""
    tex = np.zeros((20, 30, 4), np.uint8)
    tex[...] = (150, 180, 230, 255)
    tex[10, 20, :3] = (90, 90, 190)                    # one lip-coloured texel
    uv = np.array([[2.0, 2.0], [6.0, 2.0], [2.0, 6.0],     # far from it
                   [17.5, 8.2], [18.6, 8.2], [17.5, 9.0],  # 1.4 texels from it: within the margin
                   [19.0, 9.0], [22.0, 9.0], [19.0, 12.0]])  # around it
    tris = np.arange(9).reshape(3, 3)
    plain, skin = raster._plain_triangles(tex, uv, tris)
    assert plain.tolist() == [True, False, False]
    assert skin.tolist() == [150, 180, 230]
