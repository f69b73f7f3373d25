"""Networks of the edge-to-video renderer (EVP Sec. 3.3, after pix2pixHD and vid2vid), sized for a CPU.

Generator input, per frame, all at the crop size S (256 by default, 512 optional), channels first:

* the guidance map (10 ch, :mod:`render.guidance`: Canny edges outside the face + 9 sketch parts
  of the landmarks to render), scaled to [0, 1];
* the target crop with the face region blanked (3 ch, [-1, 1], zero inside) and that region's
  mask (1 ch, 1 inside). Everything outside the face is known footage; the network paints the
  face and blends it into its surroundings. (EVP regenerates the whole frame from the edges; on
  a CPU with a per-target budget of minutes the capacity goes where the change is.)
* the previously generated crop (3 ch, [-1, 1]; zeros for the first frame) — vid2vid's temporal
  conditioning, so consecutive frames agree.

That is ``IN_CHANNELS`` = 17. The output is an S x S x 3 crop in [-1, 1], already composited:
``alpha * painted + (1 - alpha) * known`` with ``alpha`` a soft version of the face mask that is 1
on the whole blanked region (so the known pixels are passed through exactly outside it).

Coarse to fine, as pix2pixHD: a *global generator* works on the input downsampled 2x (an
encoder down to S/32 with residual blocks there, and a decoder back up to S/4 with skips), and
a *local enhancer* works at full resolution: the S x S input is folded into S/2 x S/2 (space to
depth, 2x2 patches), combined with the global generator's features, refined by residual blocks
and unfolded again (depth to space) into the S x S output. Folding keeps full-resolution detail
(1-px sketch lines) at a quarter of the cost of convolving at S x S. No normalisation layers:
a per-target model sees one face under one lighting, and plain convolutions are cheapest.

Discriminators (training only): pix2pixHD's multi-scale patch discriminators on (guidance,
image) at S and S/2; a temporal discriminator on clips of ``CLIP`` consecutive frames (at S/2);
a mouth discriminator on a (S/4 x S/4) box around the mouth with its sketch channels.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .guidance import NUM_CHANNELS

IN_CHANNELS = NUM_CHANNELS + 3 + 1 + 3
CLIP = 3


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Widths of the generator (stored with the model)."""

    local: int = 32          # local enhancer channels at S/2
    local_blocks: int = 2    # residual blocks of the local enhancer
    widths: tuple[int, ...] = (32, 64, 96, 128)   # global generator at S/4, S/8, S/16, S/32
    global_blocks: int = 3   # residual blocks at S/32

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        d = dict(d)
        d["widths"] = tuple(d["widths"])
        return cls(**d)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class ResBlock(nn.Module):
    """x + conv(act(conv(x))), 3x3 convolutions, constant width."""

    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)

    def forward(self, x):
        return x + self.c2(F.leaky_relu(self.c1(x), 0.2))


class GlobalGenerator(nn.Module):
    """(B, IN_CHANNELS, S/2, S/2) -> (B, widths[0], S/4, S/4) features, encoder-decoder with skips."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        w = cfg.widths
        self.stem = nn.Sequential(nn.Conv2d(IN_CHANNELS * 4, w[0], 3, padding=1), _act())  # S/4 after folding
        self.down = nn.ModuleList(nn.Sequential(nn.Conv2d(w[i], w[i + 1], 3, stride=2, padding=1), _act())
                                  for i in range(len(w) - 1))
        self.blocks = nn.Sequential(*[ResBlock(w[-1]) for _ in range(cfg.global_blocks)])
        self.up = nn.ModuleList(nn.Sequential(nn.Conv2d(w[i + 1], w[i], 3, padding=1), _act())
                                for i in reversed(range(len(w) - 1)))

    def forward(self, x):
        x = F.pixel_unshuffle(x, 2)
        feats = [self.stem(x)]
        for d in self.down:
            feats.append(d(feats[-1]))
        y = self.blocks(feats[-1])
        for k, u in enumerate(self.up):
            skip = feats[-2 - k]
            y = u(F.interpolate(y, scale_factor=2.0, mode="nearest")) + skip
        return y


class Generator(nn.Module):
    """Coarse-to-fine generator; see the module docstring for inputs and output.

    forward(guidance (B, 10, S, S) in [0, 1], known (B, 3, S, S) in [-1, 1] zero inside the face,
    mask (B, 1, S, S) 1 inside the face, alpha (B, 1, S, S) soft mask, previous (B, 3, S, S))
    -> (B, 3, S, S) in [-1, 1]. S must be a multiple of 64.
    """

    def __init__(self, cfg: GeneratorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GeneratorConfig()
        c = cfg.local
        self.global_g = GlobalGenerator(cfg)
        self.local_in = nn.Sequential(nn.Conv2d(IN_CHANNELS * 4, c, 3, padding=1), _act())
        self.global_proj = nn.Conv2d(cfg.widths[0], c, 1)
        self.local_blocks = nn.Sequential(*[ResBlock(c) for _ in range(cfg.local_blocks)])
        self.out = nn.Conv2d(c, 3 * 4, 3, padding=1)

    def forward(self, guidance, known, mask, alpha, previous):
        x = torch.cat([guidance, known, mask, previous], 1)
        coarse = self.global_g(F.avg_pool2d(x, 2))
        y = self.local_in(F.pixel_unshuffle(x, 2))
        y = y + F.interpolate(self.global_proj(coarse), scale_factor=2.0, mode="bilinear", align_corners=False)
        y = F.leaky_relu(self.local_blocks(y), 0.2)
        painted = torch.tanh(F.pixel_shuffle(self.out(y), 2))
        return alpha * painted + (1 - alpha) * known


class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, C, H, W) -> list of intermediate features, the last one (B, 1, H/8, W/8) scores."""

    def __init__(self, in_ch: int, width: int = 32, layers: int = 3):
        super().__init__()
        mods = []
        ch = in_ch
        for i in range(layers):
            out = width * 2 ** i
            mods.append(nn.Sequential(nn.Conv2d(ch, out, 4, stride=2, padding=1), _act()))
            ch = out
        mods.append(nn.Conv2d(ch, 1, 3, padding=1))
        self.layers = nn.ModuleList(mods)

    def forward(self, x):
        feats = []
        for m in self.layers:
            x = m(x)
            feats.append(x)
        return feats


class Discriminators(nn.Module):
    """The renderer's discriminators; each call returns a list (one entry per discriminator) of
    feature lists (see :class:`PatchDiscriminator`)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.spatial = nn.ModuleList([PatchDiscriminator(NUM_CHANNELS + 3, width) for _ in range(2)])
        self.temporal = PatchDiscriminator(3 * CLIP, width)
        self.mouth = PatchDiscriminator(3 + 2, width, layers=2)  # + outer and inner lip channels

    def spatial_scores(self, guidance, image):
        x = torch.cat([guidance, image], 1)
        out = [self.spatial[0](x)]
        out.append(self.spatial[1](F.avg_pool2d(x, 2)))
        return out

    def temporal_scores(self, clip):
        """clip: (B, CLIP, 3, S, S) consecutive frames, judged at S/2."""
        b, t, c, h, w = clip.shape
        return [self.temporal(F.avg_pool2d(clip.reshape(b, t * c, h, w), 2))]

    def mouth_scores(self, guidance, image, boxes):
        """boxes: (B, 2) int top-left corners of (S/4)-px mouth boxes in crop px."""
        return [self.mouth(mouth_crops(torch.cat([image, guidance[:, -2:]], 1), boxes))]


def mouth_boxes(mouth_centres: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 2) float crop-px mouth centres -> (B, 2) long top-left corners of size/4 boxes inside the crop."""
    half = size // 8
    return torch.clamp(torch.round(mouth_centres).long() - half, 0, size - 2 * half)


def mouth_crops(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) -> (B, C, S/4, S/4) boxes at ``boxes`` (top-left x, y)."""
    s = x.shape[-1] // 4
    return torch.stack([x[i, :, int(b[1]):int(b[1]) + s, int(b[0]):int(b[0]) + s] for i, b in enumerate(boxes)])


def count_parameters(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
