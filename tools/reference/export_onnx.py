#!/usr/bin/env python3
"""Exports the reference model's per-frame modules to ONNX, for `bench_runtimes.py`.

    tools/reference/export_onnx.py --config small [--batch N] [--out DIR] [--opset 17]

Same configuration and weights as `bench.py`: the manifest comes from `dubfarm model init`
(`--dubfarm PATH`), the weights from `randomize(SwapTalk(c), 0)`, the inputs from the same
generator (seed 2), so ONNX Runtime / OpenVINO run exactly what `bench.py` and
`dubfarm model bench` run. One .onnx per module, at a fixed batch (default 1), into
--out (default .cache/onnx/CONFIG/bB):

  encode.onnx          half image [B, 3, S/2, S] -> z [B, E, h, w]        (run twice per frame)
  quantize_upper.onnx  z -> quantized grid [B, E, h, w]   (distances, ArgMin, Gather: exports as-is)
  quantize_lower.onnx  idem with the lower codebook
  swap.onnx            target grid [B, E, 2h, w] -> swapped grid; the source face is prepared once
                       (as bench.py's CachedSwap): its per-layer keys/values are constants of the graph
  audio.onnx           mel [16, 80] (batch: [B, 16, 80]) -> audio tokens
  lipsync.onnx         (target, reference, audio) -> lower-half grid
  decode.onnx          grid [B, E, 2h, w] -> image [B, 3, S, S]

Every module exports as-is (static shapes, legacy TorchScript exporter, opset 17); nothing is
left to numpy except what bench.py also does between modules (the concatenation of the two
quantized halves, slicing the swapped grid into halves, concatenating the decoder's input), which
`bench_runtimes.py` does in numpy inside the same module timings as bench.py.

Also written: inputs.npz (target, mel) and meta.json (config, batch, GFLOP per module counted
as bench.py counts them, plus the quantizer distance product). Each module is checked against PyTorch on one input with onnxruntime
(max abs and relative error printed); exit 1 above --tolerance (relative, default 1e-4) or when
more than 1% of quantizer codes differ (a code may flip only on a float32 near-tie).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
import swaptalk  # noqa: E402
from swaptalk import SwapTalk, randomize, tokens, grid  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


class Encode(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, half):
        return self.m.encode(half)


class Quantize(nn.Module):
    def __init__(self, q):
        super().__init__()
        self.q = q

    def forward(self, z):
        b, e, h, w = z.shape
        zf = tokens(z).reshape(-1, e)
        cb = self.q.embedding.weight
        d = (zf ** 2).sum(1, keepdim=True) - 2 * (zf @ cb.t()) + (cb ** 2).sum(1)
        idx = torch.argmin(d, dim=1)
        return cb[idx].reshape(b, h * w, e).transpose(1, 2).reshape(b, e, h, w)


class Swap(nn.Module):
    """FaceSwap with the source's per-layer keys/values precomputed (CachedSwap in bench.py)."""

    def __init__(self, sw, source_grid, batch):
        super().__init__()
        self.sw = sw
        s = sw.embed(source_grid, 0)
        for i, l in enumerate(sw.layers):
            k, v = l.attn.k(l.norm_kv(s)), l.attn.v(l.norm_kv(s))  # [1, N, D]
            self.register_buffer(f"k{i}", k.expand(batch, *k.shape[1:]).contiguous())
            self.register_buffer(f"v{i}", v.expand(batch, *v.shape[1:]).contiguous())

    def forward(self, target):
        sw = self.sw
        x = sw.in_proj(tokens(target)) + sw.pos_emb + sw.type_emb[1]
        for i, l in enumerate(sw.layers):
            k, v = getattr(self, f"k{i}"), getattr(self, f"v{i}")
            x = x + l.attn.out(swaptalk.attention(l.attn.q(l.norm_q(x)), k, v, l.attn.heads))
            x = x + l.mlp(l.norm_mlp(x))
        return grid(sw.out_proj(sw.norm_out(x)), target.shape)


class Audio(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, mel):
        return self.m.audio(mel)


class LipSync(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, target, reference, audio):
        return self.m.lipsync(target, reference, audio)


class Decode(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, g):
        return self.m.decode(g)


def count_flops(model, cached, target, mel):
    """GFLOP per frame per module, counted exactly as bench.py counts them."""
    hooks = bench.count_hooks(model)
    saved = swaptalk.attention
    swaptalk.attention = bench.counted_attention
    flops = {}
    bench.frame(model, cached, target, mel, {}, flops)
    swaptalk.attention = saved
    for h in hooks:
        h.remove()
    # bench.py's hooks miss the quantizer's distance product (z @ codebook^T); dubfarm counts it
    k = model.quantize_upper.embedding.weight.shape[0]
    flops["quantize"] = flops.get("quantize", 0.0) + 2 * (2.0 * target.shape[0] * model.c["embedDim"] * k
                                                          * (target.shape[2] // 2) * target.shape[3]
                                                          / (1 << (len(model.c["channelMult"]) - 1)) ** 2)
    return {k: v / target.shape[0] / 1e9 for k, v in flops.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--dubfarm", default=os.path.join(ROOT, ".build", "release", "dubfarm"))
    a = ap.parse_args()
    out = a.out or os.path.join(ROOT, ".cache", "onnx", a.config, f"b{a.batch}")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    c = bench.manifest_for(a.config, a.dubfarm)
    model = randomize(SwapTalk(c), 0).eval()
    # inputs drawn exactly as bench.py draws them
    g = torch.Generator().manual_seed(2)
    s = c["imageSize"]
    bn = a.batch
    target, source = torch.rand(bn, 3, s, s, generator=g) * 2 - 1, torch.rand(1, 3, s, s, generator=g) * 2 - 1
    mel = torch.randn(c["melFrames"], c["melBins"], generator=g)
    if a.batch > 1:
        mel = torch.randn(bn, c["melFrames"], c["melBins"], generator=g)
    # bench.py's batch-capable forwards (same arithmetic per frame) at every batch size: its
    # batch-1 CachedSwap path predates the batch-capable reference (it calls .t() on a 3-D tensor)
    bench.use_batched_forwards()

    with torch.no_grad():
        sgrid, _ = model.tokenize(source)
        cached = bench.CachedSwap(model.swap, sgrid)
        flops = count_flops(model, cached, target, mel)
        # the per-frame pipeline, as bench.frame, keeping every module's inputs and outputs
        h2 = s // 2
        zu, zl = model.encode(target[:, :, :h2]), model.encode(target[:, :, h2:])
        qu, ql = model.quantize(zu, "upper")[1], model.quantize(zl, "lower")[1]
        gr = torch.cat([qu, ql], dim=2)
        sw = cached(gr)
        tok = model.audio(mel)
        h = sw.shape[2] // 2
        synced = model.lipsync(sw[:, :, h:], sw[:, :, h:], tok)
        dec_in = torch.cat([sw[:, :, :h], synced], dim=2)
        img = model.decode(dec_in)

    with torch.no_grad():
        swap_mod = Swap(model.swap, sgrid, bn).eval()
    mods = {
        "encode": (Encode(model), (target[:, :, :h2].contiguous(),), ["input"], zu),
        "quantize_upper": (Quantize(model.quantize_upper), (zu,), ["input"], qu),
        "quantize_lower": (Quantize(model.quantize_lower), (zl,), ["input"], ql),
        "swap": (swap_mod, (gr,), ["target"], sw),
        "audio": (Audio(model), (mel,), ["input"], tok),
        "lipsync": (LipSync(model), (sw[:, :, h:].contiguous(), sw[:, :, h:].contiguous(), tok), ["target", "reference", "audio"], synced),
        "decode": (Decode(model), (dec_in,), ["input"], img),
    }
    import onnxruntime as ort

    worst = 0.0
    failed = []
    for name, (mod, args, inames, ref) in mods.items():
        path = os.path.join(out, name + ".onnx")
        with torch.no_grad():
            torch.onnx.export(mod, args, path, dynamo=False, opset_version=a.opset, input_names=inames,
                              output_names=["output"], do_constant_folding=True)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {n: t.numpy() for n, t in zip(inames, args)})[0]
        r = ref.numpy()
        ab = float(np.abs(got - r).max())
        rel = ab / float(np.abs(r).max())
        note = ""
        if name.startswith("quantize"):
            # compare by code: a differing code vector means a flipped argmin
            e = r.shape[1]
            gv, rv = got.transpose(0, 2, 3, 1).reshape(-1, e), r.transpose(0, 2, 3, 1).reshape(-1, e)
            flipped = int((np.abs(gv - rv).max(1) > 1e-6).sum())
            note = f", {flipped}/{gv.shape[0]} codes differ"
            bad = flipped > 0.01 * gv.shape[0]
            rel = 0.0 if not bad else rel
        else:
            bad = rel > a.tolerance
            worst = max(worst, rel)
        print(f"export_onnx: {name:15s} {os.path.getsize(path) / 1e6:8.1f} MB  max abs err {ab:.2e}  max rel err {rel:.2e}{note}"
              + ("  <-- TOO LARGE" if bad else ""))
        if bad:
            failed.append(name)

    np.savez(os.path.join(out, "inputs.npz"), target=target.numpy(), mel=mel.numpy())
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump({"config": a.config, "batch": bn, "opset": a.opset, "imageSize": s, "torch": torch.__version__,
                   "gflop": flops, "max_rel_err": worst}, f, indent=1, sort_keys=True)
    if failed:
        sys.exit(f"export_onnx: ONNX Runtime differs from PyTorch in {', '.join(failed)} (tolerance {a.tolerance:g})")
    print(f"export_onnx: wrote {out}")


if __name__ == "__main__":
    main()
