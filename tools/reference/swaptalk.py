"""PyTorch reference of dubfarm's SwapTalk-style model.

Same architecture and the same tensor names as the Swift engine (Sources/VQModel), written
independently with torch.nn so that `check.py` can compare the two. Tensors are batch-1:
images [1, 3, S, S] in [-1, 1], token grids [1, E, H, W], mel windows [16, 80].
Every module also takes a batch (images [B, 3, S, S], grids [B, E, H, W], mel [B, 16, 80]), which
the trainer (training/dubtrain) uses; batch-1 results are the same either way.
The configuration is the manifest that `dubfarm model init` writes (manifest.json).
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F


def load_manifest(path):
    with open(path) as f:
        return json.load(f)


def attention(q, k, v, heads):
    """q [..., Nq, D], k/v [..., Nk, D] -> [..., Nq, D]; head h is the column block h*dh:(h+1)*dh."""
    *lead, nq, d = q.shape
    nk = k.shape[-2]
    dh = d // heads
    qh = q.reshape(*lead, nq, heads, dh).transpose(-3, -2)
    kh = k.reshape(*lead, nk, heads, dh).transpose(-3, -2)
    vh = v.reshape(*lead, nk, heads, dh).transpose(-3, -2)
    s = torch.softmax((qh @ kh.transpose(-1, -2)) * (1.0 / dh ** 0.5), dim=-1)
    return (s @ vh).transpose(-3, -2).reshape(*lead, nq, d)


def tokens(x):
    """[B, C, H, W] -> [B, H*W, C]."""
    return x.flatten(2).transpose(1, 2)


def grid(t, shape):
    """[B, H*W, C] -> [B, C, H, W] (`shape`)."""
    return t.transpose(1, 2).reshape(shape)


def batched_context(context, b):
    """A context [N, D] shared by the batch, or one per item [B, N, D] -> [B, N, D]."""
    return context.unsqueeze(0).expand(b, *context.shape) if context.dim() == 2 else context


class MHA(nn.Module):
    def __init__(self, dim, context_dim, heads):
        super().__init__()
        self.q, self.k, self.v, self.out = nn.Linear(dim, dim), nn.Linear(context_dim, dim), nn.Linear(context_dim, dim), nn.Linear(dim, dim)
        self.heads = heads

    def forward(self, x, context):
        return self.out(attention(self.q(x), self.k(context), self.v(context), self.heads))


class ResBlock(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class SpatialSelfAttention(nn.Module):
    """taming-transformers AttnBlock (1x1-conv projections), multi-head capable."""

    def __init__(self, c, groups, heads):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))
        self.heads = heads

    def forward(self, x):
        hn = self.norm(x)
        a = attention(tokens(self.q(hn)), tokens(self.k(hn)), tokens(self.v(hn)), self.heads)
        return x + self.proj_out(grid(a, x.shape))


class CrossAttentionBlock(nn.Module):
    def __init__(self, c, context_dim, groups, heads):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.attn = MHA(c, context_dim, heads)

    def forward(self, x, context):
        t = tokens(self.norm(x))
        return x + grid(self.attn(t, batched_context(context, x.shape[0])), x.shape)


class FeedForward(nn.Module):
    def __init__(self, d, ratio):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, d * ratio), nn.Linear(d * ratio, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Box(nn.Module):
    pass


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        ch, g = c["channels"], c["groups"]
        self.conv_in = nn.Conv2d(3, ch, 3, 1, 1)
        self.down = nn.ModuleList()
        cin = ch
        n = len(c["channelMult"])
        for i, m in enumerate(c["channelMult"]):
            lvl = _Box()
            lvl.block = nn.ModuleList()
            for _ in range(c["numResBlocks"]):
                lvl.block.append(ResBlock(cin, ch * m, g))
                cin = ch * m
            if i != n - 1:
                lvl.downsample = _Box()
                lvl.downsample.conv = nn.Conv2d(cin, cin, 3, 2, 1)
            self.down.append(lvl)
        self.mid = _Box()
        self.mid.block_1 = ResBlock(cin, cin, g)
        self.mid.attn_1 = SpatialSelfAttention(cin, g, c["vqAttentionHeads"])
        self.mid.block_2 = ResBlock(cin, cin, g)
        self.norm_out = nn.GroupNorm(g, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, c["zChannels"], 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for lvl in self.down:
            for b in lvl.block:
                h = b(h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample.conv(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        ch, g, mult = c["channels"], c["groups"], c["channelMult"]
        n = len(mult)
        cin = ch * mult[-1]
        self.conv_in = nn.Conv2d(c["zChannels"], cin, 3, 1, 1)
        self.mid = _Box()
        self.mid.block_1 = ResBlock(cin, cin, g)
        self.mid.attn_1 = SpatialSelfAttention(cin, g, c["vqAttentionHeads"])
        self.mid.block_2 = ResBlock(cin, cin, g)
        levels = [None] * n
        for i in reversed(range(n)):
            lvl = _Box()
            lvl.block = nn.ModuleList()
            for _ in range(c["numResBlocks"]):
                lvl.block.append(ResBlock(cin, ch * mult[i], g))
                cin = ch * mult[i]
            if i != 0:
                lvl.upsample = _Box()
                lvl.upsample.conv = nn.Conv2d(cin, cin, 3, 1, 1)
            levels[i] = lvl
        self.up = nn.ModuleList(levels)
        self.norm_out = nn.GroupNorm(g, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, 3, 3, 1, 1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i in reversed(range(len(self.up))):
            lvl = self.up[i]
            for b in lvl.block:
                h = b(h)
            if i != 0:
                h = lvl.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class Quantizer(nn.Module):
    def __init__(self, k, e):
        super().__init__()
        self.embedding = nn.Embedding(k, e)

    def distances(self, z):
        """z [B, E, h, w] -> squared distances [B*h*w, K] (positions row-major within each item)."""
        zf = tokens(z).reshape(-1, z.shape[1])
        cb = self.embedding.weight
        return (zf ** 2).sum(1, keepdim=True) - 2 * (zf @ cb.t()) + (cb ** 2).sum(1)

    def forward(self, z, indices=None):
        """z [B, E, h, w] -> (indices [h*w] for B = 1 else [B, h*w], quantized [B, E, h, w]);
        `indices` forces the codes."""
        b = z.shape[0]
        if indices is None:
            indices = torch.argmin(self.distances(z), dim=1)
        indices = indices.reshape(b, -1)
        q = grid(self.embedding.weight[indices], z.shape)
        return (indices[0] if b == 1 else indices), q


class FaceSwap(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, n = c["swapDim"], (c["imageSize"] // (1 << (len(c["channelMult"]) - 1))) ** 2
        self.in_proj = nn.Linear(c["embedDim"], d)
        self.pos_emb = nn.Parameter(torch.zeros(n, d))
        self.type_emb = nn.Parameter(torch.zeros(2, d))
        self.layers = nn.ModuleList()
        for _ in range(c["swapLayers"]):
            l = _Box()
            l.norm_q, l.norm_kv, l.norm_mlp = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
            l.attn = MHA(d, d, c["swapHeads"])
            l.mlp = FeedForward(d, c["swapMlpRatio"])
            self.layers.append(l)
        self.norm_out = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, c["embedDim"])

    def embed(self, g, kind):
        return self.in_proj(tokens(g)) + self.pos_emb + self.type_emb[kind]

    def forward(self, target, source):
        x, s = self.embed(target, 1), self.embed(source, 0)
        if s.shape[0] != x.shape[0]:
            s = s.expand(x.shape[0], *s.shape[1:])
        for l in self.layers:
            kv = l.norm_kv(s)
            x = x + l.attn(l.norm_q(x), kv)
            x = x + l.mlp(l.norm_mlp(x))
        return grid(self.out_proj(self.norm_out(x)), target.shape)


class AudioEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["audioDim"]
        self.in_proj = nn.Linear(c["melBins"], d)
        self.pos_emb = nn.Parameter(torch.zeros(c["melFrames"], d))
        self.layers = nn.ModuleList()
        for _ in range(c["audioLayers"]):
            l = _Box()
            l.norm1, l.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            l.attn = MHA(d, d, c["audioHeads"])
            l.mlp = FeedForward(d, c["audioMlpRatio"])
            self.layers.append(l)
        self.norm_out = nn.LayerNorm(d)

    def forward(self, mel):
        x = self.in_proj(mel) + self.pos_emb
        for l in self.layers:
            n = l.norm1(x)
            x = x + l.attn(n, n)
            x = x + l.mlp(l.norm2(x))
        return self.norm_out(x)


class LipSyncUNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        g, a, heads = c["unetGroups"], c["audioDim"], c["unetHeads"]
        chans = [c["unetChannels"] * m for m in c["unetChannelMult"]]
        last = len(chans) - 1
        attn_levels = set(c["unetAttentionLevels"])
        self.conv_in = nn.Conv2d(2 * c["embedDim"], chans[0], 3, 1, 1)
        self.down = nn.ModuleList()
        cin = chans[0]
        for i, ch in enumerate(chans):
            l = _Box()
            l.res = ResBlock(cin, ch, g)
            cin = ch
            if i in attn_levels:
                l.xattn = CrossAttentionBlock(ch, a, g, heads)
            if i != last:
                l.downsample = nn.Conv2d(ch, ch, 3, 2, 1)
            self.down.append(l)
        self.mid = _Box()
        self.mid.res_1 = ResBlock(cin, cin, g)
        self.mid.xattn = CrossAttentionBlock(cin, a, g, heads)
        self.mid.res_2 = ResBlock(cin, cin, g)
        ups = [None] * len(chans)
        for i in reversed(range(len(chans))):
            l = _Box()
            l.res = ResBlock(cin + chans[i], chans[i], g)
            cin = chans[i]
            if i in attn_levels:
                l.xattn = CrossAttentionBlock(chans[i], a, g, heads)
            if i != 0:
                l.upsample = nn.Conv2d(chans[i], chans[i], 3, 1, 1)
            ups[i] = l
        self.up = nn.ModuleList(ups)
        self.norm_out = nn.GroupNorm(g, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, c["embedDim"], 3, 1, 1)
        # Optional [rowStart, rowEnd, colStart, colEnd] of the lower-half grid: the target's
        # tokens there (the mouth) are zeroed before the UNet sees them, so it must draw the mouth
        # from the audio (and the reference's appearance), not copy it. No weights.
        self.target_mask = c.get("lipsyncTargetMask")

    def mask_target(self, target):
        if not self.target_mask:
            return target
        r0, r1, c0, c1 = self.target_mask
        m = torch.ones_like(target[:1, :1])
        m[..., r0:r1, c0:c1] = 0
        return target * m

    def forward(self, target, reference, audio):
        h = self.conv_in(torch.cat([self.mask_target(target), reference], dim=1))
        skips = []
        for l in self.down:
            h = l.res(h)
            if hasattr(l, "xattn"):
                h = l.xattn(h, audio)
            skips.append(h)
            if hasattr(l, "downsample"):
                h = l.downsample(h)
        h = self.mid.res_2(self.mid.xattn(self.mid.res_1(h), audio))
        for i in reversed(range(len(self.up))):
            l = self.up[i]
            h = l.res(torch.cat([h, skips.pop()], dim=1))
            if hasattr(l, "xattn"):
                h = l.xattn(h, audio)
            if i != 0:
                h = l.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class SwapTalk(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.encoder = Encoder(c)
        self.quant_conv = nn.Conv2d(c["zChannels"], c["embedDim"], 1)
        self.quantize_upper = Quantizer(c["codebookSize"], c["embedDim"])
        self.quantize_lower = Quantizer(c["codebookSize"], c["embedDim"])
        self.post_quant_conv = nn.Conv2d(c["embedDim"], c["zChannels"], 1)
        self.decoder = Decoder(c)
        self.swap = FaceSwap(c)
        self.audio = AudioEncoder(c)
        self.lipsync = LipSyncUNet(c)

    # entry points, same as SwapTalkModel in Swift
    def encode(self, half):
        return self.quant_conv(self.encoder(half))

    def quantize(self, z, half, indices=None):
        return (self.quantize_upper if half == "upper" else self.quantize_lower)(z, indices)

    def decode(self, grid):
        return self.decoder(self.post_quant_conv(grid))

    def tokenize(self, image, indices=None):
        s = image.shape[2]
        iu, qu = self.quantize(self.encode(image[:, :, : s // 2]), "upper", None if indices is None else indices[0])
        il, ql = self.quantize(self.encode(image[:, :, s // 2:]), "lower", None if indices is None else indices[1])
        return torch.cat([qu, ql], dim=2), (iu, il)

    def run_frame(self, target, source, mel, indices=None):
        """indices: optional ((upper, lower) for the target) forcing the codes chosen."""
        src, _ = self.tokenize(source)
        t, idx = self.tokenize(target, indices)
        sw = self.swap(t, src)
        h = sw.shape[2] // 2
        lower = sw[:, :, h:]
        synced = self.lipsync(lower, lower, self.audio(mel))
        return self.decode(torch.cat([sw[:, :, :h], synced], dim=2)), idx


def randomize(model, seed):
    """Random weights that exercise every parameter (norm scales and biases too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("embedding.weight"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("_emb"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1 and ("norm" in name):
                p.copy_((1.0 if name.endswith(".weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                bound = 1.0 / fan_in ** 0.5
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound * 3 ** 0.5)
    return model
