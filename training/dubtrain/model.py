"""The model the trainer trains is the PyTorch reference (tools/reference/swaptalk.py) itself, so
every tensor name is the engine's; this file adds only what training needs around it: EMA
codebooks with dead-code restarts, the patch discriminator, SSIM, and the latent sync expert."""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
import swaptalk  # noqa: E402
from swaptalk import SwapTalk  # noqa: E402,F401

try:
    from pytorch_msssim import ssim as _ssim
except ImportError:  # pragma: no cover - the requirements pin it
    _ssim = None


def ssim(x, y):
    """Mean SSIM of images in [-1, 1] (11×11 Gaussian window, pytorch-msssim)."""
    return _ssim((x + 1) / 2, (y + 1) / 2, data_range=1.0, size_average=True)


# ----------------------------------------------------------------------------- EMA codebooks

class EMACodebook:
    """Exponential-moving-average updates of one of the model's codebooks
    (`quantize_upper.embedding.weight` / `quantize_lower…`), van den Oord et al. 2017 / SoundStream:
    the codes follow the mean of the encoder outputs assigned to them; codes whose usage falls
    below a threshold are restarted on random encoder outputs of the batch. The codebook stays a
    parameter of the model (so export and the engine see it), but takes no gradient."""

    def __init__(self, embedding, decay, threshold):
        self.embedding = embedding
        embedding.weight.requires_grad_(False)
        k, e = embedding.weight.shape
        dev = embedding.weight.device
        self.decay, self.threshold = decay, threshold
        self.cluster_size = torch.ones(k, device=dev)
        self.embed_sum = embedding.weight.detach().clone()
        self.initialised = False
        self.usage = torch.zeros(k, device=dev)   # codes used since the last report

    def state_dict(self):
        return {"cluster_size": self.cluster_size, "embed_sum": self.embed_sum,
                "initialised": self.initialised, "usage": self.usage}

    def load_state_dict(self, s):
        self.cluster_size.copy_(s["cluster_size"])
        self.embed_sum.copy_(s["embed_sum"])
        self.initialised = s["initialised"]
        self.usage.copy_(s["usage"])

    def quantize(self, z):
        """z [B, E, h, w] -> (straight-through quantized z, indices [B*h*w], commitment loss)."""
        b, e, h, w = z.shape
        flat = swaptalk.tokens(z).reshape(-1, e)
        cb = self.embedding.weight
        d = (flat.detach() ** 2).sum(1, keepdim=True) - 2 * flat.detach() @ cb.t() + (cb ** 2).sum(1)
        idx = d.argmin(1)
        q = swaptalk.grid(cb[idx].reshape(b, h * w, e), z.shape)
        commitment = F.mse_loss(z, q.detach())
        return z + (q - z).detach(), idx, commitment

    @torch.no_grad()
    def update(self, z, idx, runtime, generator):
        """One EMA step from this batch's encoder outputs (summed over all processes)."""
        e = z.shape[1]
        flat = swaptalk.tokens(z.detach().float()).reshape(-1, e)
        cb = self.embedding.weight
        k = cb.shape[0]
        if not self.initialised:
            # Start every code on an encoder output (random rows of the first batch, all ranks alike).
            pick = torch.randint(0, flat.shape[0], (k,), generator=generator).to(flat.device)
            init = flat[pick].clone()
            runtime.all_reduce_(init)
            init /= runtime.world
            cb.copy_(init)
            self.embed_sum.copy_(init)
            self.cluster_size.fill_(1.0)
            self.initialised = True
        onehot = F.one_hot(idx, k).type(flat.dtype)
        counts = onehot.sum(0)
        sums = onehot.t() @ flat
        runtime.all_reduce_(counts, sums)
        self.usage += counts
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        size = (self.cluster_size + 1e-5) / (n + k * 1e-5) * n  # Laplace smoothing
        cb.copy_(self.embed_sum / size.unsqueeze(1))
        # Dead codes: restart on random encoder outputs of this batch (same on every rank).
        dead = self.cluster_size < self.threshold
        nd = int(dead.sum())
        if nd:
            pick = torch.randint(0, flat.shape[0], (nd,), generator=generator).to(flat.device)
            fresh = flat[pick] + 1e-3 * torch.randn(nd, e, generator=generator).to(flat.device)
            runtime.all_reduce_(fresh)
            fresh /= runtime.world
            cb[dead] = fresh
            self.embed_sum[dead] = fresh
            self.cluster_size[dead] = 1.0
        return nd

    def report(self):
        """(fraction of codes used since the last report, perplexity of that usage); resets it."""
        total = self.usage.sum()
        if total <= 0:
            return 0.0, 0.0
        p = self.usage / total
        used = float((self.usage > 0).float().mean())
        perplexity = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
        self.usage.zero_()
        return used, perplexity


# ----------------------------------------------------------------------------- discriminator

class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming-transformers' NLayerDiscriminator), GroupNorm instead of
    BatchNorm so it behaves the same at any per-process batch size."""

    def __init__(self, channels=32, layers=3):
        super().__init__()
        seq = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = channels
        for i in range(1, layers):
            nc = min(channels * 2 ** i, channels * 8)
            seq += [nn.Conv2d(c, nc, 4, 2, 1), nn.GroupNorm(8, nc), nn.LeakyReLU(0.2, True)]
            c = nc
        seq += [nn.Conv2d(c, c, 4, 1, 1), nn.GroupNorm(8, c), nn.LeakyReLU(0.2, True), nn.Conv2d(c, 1, 4, 1, 1)]
        self.net = nn.Sequential(*seq)

    def forward(self, x):
        return self.net(x)


# ----------------------------------------------------------------------------- sync expert

class LatentSyncExpert(nn.Module):
    """The paper's VQ lip expert: does a window of lower-face token grids match a mel window?

    video: [B, T, E, h, w] lower-half token grids of T consecutive frames
    audio: [B, T, 80, 16] the frames' mel windows
    Both map to unit vectors; their cosine similarity is the sync score. Used frozen (as a loss)
    by the lip-sync stage; not part of the exported model.
    """

    def __init__(self, embed_dim, grid_hw, window, dim=128, width=128):
        super().__init__()
        h, w = grid_hw
        self.video = nn.Sequential(
            nn.Conv2d(window * embed_dim, width, 3, 1, 1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, width, 3, 2, 1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, dim))
        self.audio = nn.Sequential(
            nn.Conv2d(window, 32, 3, 1, 1), nn.GroupNorm(8, 32), nn.SiLU(),
            nn.Conv2d(32, 64, 3, (2, 1), 1), nn.GroupNorm(8, 64), nn.SiLU(),
            nn.Conv2d(64, 128, 3, 2, 1), nn.GroupNorm(8, 128), nn.SiLU(),
            nn.Conv2d(128, 256, 3, 2, 1), nn.GroupNorm(8, 256), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, dim))

    def embed_video(self, grids):
        b, t, e, h, w = grids.shape
        return F.normalize(self.video(grids.reshape(b, t * e, h, w)), dim=-1)

    def embed_audio(self, mel):
        return F.normalize(self.audio(mel), dim=-1)
