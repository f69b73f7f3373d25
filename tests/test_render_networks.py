"""The renderer's networks: shapes, the composite with the known pixels, discriminator outputs."""

import numpy as np
import pytest
import torch

from render.data import blend_alpha, frame_inputs
from render.guidance import NUM_CHANNELS
from render.networks import (CLIP, IN_CHANNELS, Discriminators, Generator, GeneratorConfig, mouth_boxes,
                             mouth_crops)


def _inputs(b, s, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, 1, s, s)
    mask[:, :, s // 4:3 * s // 4, s // 4:3 * s // 4] = 1
    alpha = torch.from_numpy(np.stack([blend_alpha((m[0].numpy() * 255).astype(np.uint8)) for m in mask]))[:, None]
    known = (torch.rand(b, 3, s, s, generator=g) * 2 - 1) * (1 - mask)
    guidance = torch.rand(b, NUM_CHANNELS, s, s, generator=g)
    prev = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    return guidance, known, mask, alpha, prev


@pytest.mark.parametrize("size", [64, 256])
def test_generator_shape_range_and_known_pixels(size):
    torch.manual_seed(0)
    gen = Generator().eval()
    guidance, known, mask, alpha, prev = _inputs(2, size)
    with torch.no_grad():
        out = gen(guidance, known, mask, alpha, prev)
    assert out.shape == (2, 3, size, size)
    assert out.abs().max() <= 1.0
    # outside the soft mask the known footage passes through exactly; on the face it is painted
    outside = (alpha == 0).expand_as(out)
    assert outside.any()
    assert torch.equal(out[outside], known[outside])
    inside = (mask > 0).expand_as(out)
    assert (out[inside] - known[inside]).abs().mean() > 0.01
    assert IN_CHANNELS == NUM_CHANNELS + 7


def test_generator_uses_the_previous_frame_and_the_guidance():
    torch.manual_seed(1)
    gen = Generator(GeneratorConfig(local=16, widths=(16, 16, 16, 16), global_blocks=1))
    for p in gen.parameters():  # residual blocks start at zero: give them weights for this check
        torch.nn.init.normal_(p, 0, 0.05)
    gen.eval()
    guidance, known, mask, alpha, prev = _inputs(1, 64)
    with torch.no_grad():
        a = gen(guidance, known, mask, alpha, prev)
        b = gen(guidance, known, mask, alpha, -prev)
        c = gen(1 - guidance, known, mask, alpha, prev)
    assert (a - b).abs().max() > 1e-4 and (a - c).abs().max() > 1e-4


def test_discriminator_shapes():
    torch.manual_seed(0)
    d = Discriminators()
    s, b = 64, 3
    guidance = torch.rand(b, NUM_CHANNELS, s, s)
    img = torch.rand(b, 3, s, s) * 2 - 1
    sp = d.spatial_scores(guidance, img)
    assert len(sp) == 2
    assert sp[0][-1].shape == (b, 1, s // 8, s // 8) and sp[1][-1].shape == (b, 1, s // 16, s // 16)
    tp = d.temporal_scores(torch.rand(b, CLIP, 3, s, s))
    assert tp[0][-1].shape == (b, 1, s // 16, s // 16)
    boxes = mouth_boxes(torch.tensor([[32.0, 40.0], [2.0, 2.0], [63.0, 63.0]]), s)
    assert boxes.tolist() == [[24, 32], [0, 0], [48, 48]]   # clamped inside the crop
    crops = mouth_crops(img, boxes)
    assert crops.shape == (b, 3, 16, 16)
    assert torch.equal(crops[0], img[0, :, 32:48, 24:40])
    mo = d.mouth_scores(guidance, img, boxes)
    assert mo[0][-1].shape == (b, 1, 4, 4)


def test_frame_inputs_blank_the_face_and_scale_channels():
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    lm = np.stack([32 + 12 * np.cos(t), 32 + 14 * np.sin(t)], 1).astype(np.float32)
    inp = frame_inputs(crop, lm, lm)
    assert inp["guidance"].shape == (NUM_CHANNELS, 64, 64) and inp["guidance"].max() <= 1.0
    m = inp["mask"][0] > 0
    assert m[32, 32] and not m[2, 2]
    assert np.all(inp["known"][:, m] == 0)
    np.testing.assert_allclose(inp["known"][:, 2, 2], crop[2, 2].astype(np.float32) / 127.5 - 1, atol=1e-6)
    a = inp["alpha"][0]
    assert np.all(a[m] == 1.0) and a[0, 0] == 0.0 and 0 < a.min() + 1e-9 <= 1


def test_rich_synthetic_target_has_many_mouth_shapes_and_emotions():
    from evp_anim.face.channels import RIG_CHANNELS
    from evp_anim.footage.synthetic import SyntheticFootageConfig, photo_footage_warps, synthetic_motion

    cfg = SyntheticFootageConfig(n_frames=1500, expression_style="rich", seed=3)
    w = synthetic_motion(cfg, RIG_CHANNELS, 130.0)["weights"]
    ch = {c: w[:, i] for i, c in enumerate(RIG_CHANNELS)}
    jaw = ch["jawOpen"]
    assert jaw.max() > 0.5 and (jaw < 0.02).mean() > 0.2          # wide openings and closed pauses
    assert np.histogram(jaw[jaw > 0.05], bins=5, range=(0.05, 0.7))[0].min() > 10   # every opening in between
    assert sum(ch[c].max() > 0.3 for c in ("mouthFunnel", "mouthPucker", "mouthStretchLeft", "mouthPressLeft")) >= 3
    emotions = [c for c in RIG_CHANNELS if c.startswith("sfm_") and ch[c].max() > 0.3]
    assert len(emotions) == 6
    assert (np.diff(ch["eyeBlinkLeft"] > 0.5).astype(int) == 1).sum() >= 12   # a blink every few seconds
    assert np.all((w >= 0) & (w <= 1))
    m = photo_footage_warps(250, 512)
    assert m.shape == (250, 2, 3) and np.abs(np.diff(m[:, :, 2], axis=0)).max() < 3.0   # smooth: < 3 px/frame
