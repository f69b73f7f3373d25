"""The renderer's training losses: the one place to change what the generator is trained on.

* :func:`reconstruction_loss` — L1 weighted 1 + ``w_face`` on the face region + ``w_mouth`` on
  the mouth region, plus ``w_ssim`` * (1 - SSIM) on the face region (:func:`ssim_map`);
* :func:`lsgan_loss` — least-squares GAN loss over the scores of several discriminators;
* :func:`feature_matching_loss` — pix2pixHD discriminator feature matching (L1 between the
  intermediate features a discriminator computes for generated and for real images).

No pretrained VGG can be had here, so there is no perceptual loss. How the terms are weighted
and when the adversarial ones join is :class:`render.trainer.RenderTrainer`'s business.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_window_1d(sigma: float = 1.5, size: int = 11) -> torch.Tensor:
    """(size,) float32 normalised 1D Gaussian (SSIM's window, applied separably)."""
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


SSIM_WINDOW = gaussian_window_1d()


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images in [-1, 1] -> (B, 1, H, W) SSIM (Gaussian 11x11, sigma 1.5, on [0, 1]).

    The Gaussian is applied separably (11x1 then 1x11), the same window as the 2D one."""
    a, b = (a.float() + 1) * 0.5, (b.float() + 1) * 0.5
    c = a.shape[1]
    # the five blurred maps of both images in one grouped convolution pass
    x = torch.cat([a, b, a * a, b * b, a * b], 1)
    n = x.shape[1]
    g = SSIM_WINDOW.to(x)
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(n, 1, -1, 1), padding=(5, 0), groups=n)
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(n, 1, 1, -1), padding=(0, 5), groups=n)
    mu_a, mu_b, aa, bb, ab = torch.split(x, c, 1)
    saa = aa - mu_a ** 2
    sbb = bb - mu_b ** 2
    sab = ab - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return s.mean(1, keepdim=True)


def reconstruction_loss(fake, real, face, mouth, cfg) -> tuple[torch.Tensor, dict]:
    """Weighted L1 + face SSIM. face, mouth: (B, 1, S, S) masks; cfg: the weights ``w_face``,
    ``w_mouth`` and ``w_ssim`` (a :class:`render.trainer.RenderTrainConfig`)."""
    weight = 1.0 + cfg.w_face * face + cfg.w_mouth * mouth
    l1 = (weight * (fake - real).abs()).mean() / weight.mean()
    s = ssim_map(fake, real)
    ssim_face = (s * face).sum() / face.sum().clamp_min(1.0)
    loss = l1 + cfg.w_ssim * (1 - ssim_face)
    return loss, {"l1": l1.item(), "ssim_face": ssim_face.item()}


def lsgan_loss(scores: list[list[torch.Tensor]], target: float) -> torch.Tensor:
    """Mean over discriminators of mean (score - target)^2; ``scores`` holds each discriminator's
    feature list, the last entry being its scores (target 1: real, 0: fake)."""
    return sum(((feats[-1] - target) ** 2).mean() for feats in scores) / len(scores)


def feature_matching_loss(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean L1 between the intermediate features (all but the scores) of generated and real
    images, over discriminators and layers; the real features carry no gradient."""
    total, n = 0.0, 0
    for ff, rf in zip(fake, real):
        for a, b in zip(ff[:-1], rf[:-1]):
            total = total + (a - b.detach()).abs().mean()
            n += 1
    return total / max(n, 1)
