#!/usr/bin/env python3
"""PyTorch side of the model benchmark, same measurements as `dubfarm model bench`.

    tools/reference/bench.py --config small --threads 2 [--frames N] [--batch N] [--json]

Frames per second, per-module milliseconds, GFLOP/s (FLOPs counted from the layers actually
run: convolutions, linears, attention products) and share of the sgemm peak measured in the same
run (torch.mm on 1024² matrices), peak RSS. As in dubfarm, the source face is prepared once
(its tokens and per-layer keys/values), so a frame is: encode both halves, quantize, swap, audio,
lip-sync, decode.

With --batch N (throughput mode, the counterpart of `dubfarm model bench --batch N`), every module
runs on a batch tensor of N frames at --threads intra-op threads; figures are per frame of
throughput (module time / N), GFLOP/s and shares of peak are N frames' FLOPs over the batch's time,
and latency_ms is the time of one batch. The reference modules are written for batch 1 in their
attention and quantizer reshapes; batch-capable versions of those few forwards are patched in here
(checked against frame-by-frame results before timing).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import swaptalk  # noqa: E402
from swaptalk import SwapTalk, attention, load_manifest, randomize  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
FLOPS = [0.0]


def count_hooks(model):
    def conv_hook(m, i, o):
        FLOPS[0] += 2.0 * o.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, i, o):
        FLOPS[0] += 2.0 * o.numel() * m.in_features

    hs = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hs.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hs.append(m.register_forward_hook(lin_hook))
    return hs


def counted_attention(q, k, v, heads):
    FLOPS[0] += 4.0 * q[..., 0].numel() * k.shape[-2] * q.shape[-1]
    return ATTENTION[0](q, k, v, heads)


def batched_attention(q, k, v, heads):
    """q [..., Nq, D], k/v [..., Nk, D] (leading dimensions broadcast) -> [..., Nq, D]."""
    nq, d = q.shape[-2:]
    nk = k.shape[-2]
    dh = d // heads
    qh = q.reshape(*q.shape[:-2], nq, heads, dh).transpose(-3, -2)
    kh = k.reshape(*k.shape[:-2], nk, heads, dh).transpose(-3, -2)
    vh = v.reshape(*v.shape[:-2], nk, heads, dh).transpose(-3, -2)
    s = torch.softmax((qh @ kh.transpose(-2, -1)) * (1.0 / dh ** 0.5), dim=-1)
    return (s @ vh).transpose(-3, -2).reshape(*q.shape[:-2], nq, d)


def _spatial_self_attention(self, x):
    b, c, h, w = x.shape
    hn = self.norm(x)
    tok = lambda t: t.reshape(b, c, h * w).transpose(1, 2)
    a = swaptalk.attention(tok(self.q(hn)), tok(self.k(hn)), tok(self.v(hn)), self.heads)
    return x + self.proj_out(a.transpose(1, 2).reshape(b, c, h, w))


def _cross_attention(self, x, context):
    b, c, h, w = x.shape
    t = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
    return x + self.attn(t, context).transpose(1, 2).reshape(b, c, h, w)


def _quantize(self, z, indices=None):
    b, e, h, w = z.shape
    zf = z.permute(0, 2, 3, 1).reshape(-1, e)
    cb = self.embedding.weight
    if indices is None:
        indices = torch.argmin((zf ** 2).sum(1, keepdim=True) - 2 * (zf @ cb.t()) + (cb ** 2).sum(1), dim=1)
    return indices, cb[indices].reshape(b, h, w, e).permute(0, 3, 1, 2)


ATTENTION = [attention]


def use_batched_forwards():
    """Patches the batch-1 forwards of the reference with batch-capable ones (same arithmetic per frame)."""
    ATTENTION[0] = batched_attention
    swaptalk.attention = batched_attention
    swaptalk.SpatialSelfAttention.forward = _spatial_self_attention
    swaptalk.CrossAttentionBlock.forward = _cross_attention
    swaptalk.Quantizer.forward = _quantize


def sgemm_peak(seconds=0.4, n=1024):
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best, start, reps = 0.0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds or reps < 3:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t0) / 1e9)
        reps += 1
    return best


class CachedSwap:
    """The swap with the source side (embedding, per-layer keys/values) computed once per job."""

    def __init__(self, swap, source_grid):
        self.swap = swap
        s = swap.embed(source_grid, 0)
        self.kv = [(l.attn.k(l.norm_kv(s)), l.attn.v(l.norm_kv(s))) for l in swap.layers]

    def __call__(self, target):
        sw = self.swap
        if ATTENTION[0] is attention:  # batch 1 through the reference's own forwards
            x = sw.embed(target, 1)
            for l, (k, v) in zip(sw.layers, self.kv):
                x = x + l.attn.out(swaptalk.attention(l.attn.q(l.norm_q(x)), k, v, l.attn.heads))
                x = x + l.mlp(l.norm_mlp(x))
            return sw.out_proj(sw.norm_out(x)).transpose(-1, -2).reshape(target.shape)
        b, e = target.shape[:2]
        x = sw.in_proj(target.reshape(b, e, -1).transpose(1, 2)) + sw.pos_emb + sw.type_emb[1]
        for l, (k, v) in zip(sw.layers, self.kv):
            x = x + l.attn.out(swaptalk.attention(l.attn.q(l.norm_q(x)), k, v, l.attn.heads))
            x = x + l.mlp(l.norm_mlp(x))
        return sw.out_proj(sw.norm_out(x)).transpose(1, 2).reshape(target.shape)


def frame(model, cached, target, mel, timings, flops):
    s = target.shape[2]

    def run(name, fn):
        f0, t0 = FLOPS[0], time.perf_counter()
        r = fn()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        flops[name] = FLOPS[0] - f0
        return r

    zu, zl = run("encode", lambda: (model.encode(target[:, :, : s // 2]), model.encode(target[:, :, s // 2:])))
    grid = run("quantize", lambda: torch.cat([model.quantize(zu, "upper")[1], model.quantize(zl, "lower")[1]], dim=2))
    sw = run("swap", lambda: cached(grid))
    tok = run("audio", lambda: model.audio(mel))
    h = sw.shape[2] // 2
    synced = run("lipsync", lambda: model.lipsync(sw[:, :, h:], sw[:, :, h:], tok))
    return run("decode", lambda: model.decode(torch.cat([sw[:, :, :h], synced], dim=2)))


def manifest_for(config, dubfarm):
    tmp = tempfile.mkdtemp()
    subprocess.run([dubfarm, "model", "init", "--config", config, "--out", tmp], check=True, stdout=subprocess.DEVNULL)
    return load_manifest(os.path.join(tmp, "manifest.json"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int)
    ap.add_argument("--batch", type=int, help="frames per batch tensor (throughput mode); omit for one frame at a time")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dubfarm", default=os.path.join(ROOT, ".build", "release", "dubfarm"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    c = manifest_for(a.config, a.dubfarm)
    model = randomize(SwapTalk(c), 0).eval()
    peak = sgemm_peak()
    g = torch.Generator().manual_seed(2)
    s = c["imageSize"]
    bn = a.batch or 1
    target, source = torch.rand(bn, 3, s, s, generator=g) * 2 - 1, torch.rand(1, 3, s, s, generator=g) * 2 - 1
    mel = torch.randn(c["melFrames"], c["melBins"], generator=g)
    if a.batch:
        mel = torch.randn(bn, c["melFrames"], c["melBins"], generator=g)
    n = a.frames or {"paper": 3, "small": 20}.get(a.config, 50)
    calls = max(1, -(-n // bn))
    with torch.inference_mode():
        sgrid, _ = model.tokenize(source)
        cached = CachedSwap(model.swap, sgrid)
        if a.batch:
            one = [frame(model, cached, target[i:i + 1], mel[i], {}, {}) for i in range(bn)]
            use_batched_forwards()
            got = frame(model, cached, target, mel, {}, {})
            err = max(float((got[i:i + 1] - one[i]).abs().max() / one[i].abs().max()) for i in range(bn))
            if err > 1e-4:
                sys.exit(f"bench.py: batched forwards differ from frame-by-frame results (max relative error {err:.2e})")
        # one counted warm-up call
        hooks = count_hooks(model)
        swaptalk.attention = counted_attention
        flops = {}
        frame(model, cached, target, mel, {}, flops)
        swaptalk.attention = ATTENTION[0]
        for h in hooks:
            h.remove()
        flops = {k: v / bn for k, v in flops.items()}
        frame(model, cached, target, mel, {}, {})  # second warm-up, as dubfarm
        timings, per = {}, []
        for _ in range(calls):
            t0 = time.perf_counter()
            frame(model, cached, target, mel, timings, {})
            per.append(time.perf_counter() - t0)
    n = calls * bn
    pf = sum(per) / n
    latency = sum(per) / calls
    total = sum(flops.values())
    dec = flops["decode"] / (timings["decode"] / n) / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    names = ["encode", "quantize", "swap", "audio", "lipsync", "decode"]
    if a.json:
        print(json.dumps({
            "engine": "pytorch", "torch": torch.__version__, "config": a.config, "threads": a.threads, "frames": n,
            "batch": bn, "mode": "throughput" if a.batch else "latency", "latency_ms": latency * 1000,
            "fps": 1 / pf, "ms_per_frame": pf * 1000, "gflop_per_frame": total / 1e9, "gflops": total / pf / 1e9,
            "sgemm_peak_gflops": peak, "peak_share": total / pf / 1e9 / peak, "decoder_peak_share": dec / peak,
            "peak_rss_mb": rss,
            "modules": {m: {"ms": timings[m] / n * 1000, "gflop": flops[m] / 1e9, "gflops": flops[m] / (timings[m] / n) / 1e9} for m in names},
        }, sort_keys=True))
    else:
        mode = f"batch tensors of {bn} frames (throughput mode)" if a.batch else "one frame at a time (latency mode)"
        print(f"pytorch {torch.__version__} bench: config {a.config}, {a.threads} thread(s), {n} frames, {mode}")
        print(f"  {1 / pf:.2f} frames/s, {pf * 1000:.2f} ms/frame, latency {latency * 1000:.2f} ms, {total / 1e9:.3f} GFLOP/frame, {total / pf / 1e9:.1f} GFLOP/s")
        print(f"  sgemm peak (same run) {peak:.1f} GFLOP/s; model at {100 * total / pf / 1e9 / peak:.0f}% of peak, decoder at {100 * dec / peak:.0f}%")
        for m in names:
            ms = timings[m] / n * 1000
            print(f"  {m:9s} {ms:9.2f} ms {flops[m] / 1e9:9.3f} GFLOP {flops[m] / (ms / 1000) / 1e9:8.1f} GFLOP/s")
        print(f"  peak RSS {rss:.1f} MB")


if __name__ == "__main__":
    main()
