#!/usr/bin/env python3
"""Fidelity check: random weights and inputs, PyTorch reference vs `dubfarm model run`.

    tools/reference/check.py --config tiny|small|paper --seed N [--dubfarm .build/release/dubfarm]
    tools/reference/check.py --weights DIR      (trained weights, e.g. models/dubfarm-small)

Prints the max relative error (max |dubfarm - torch| / max |torch|) of every module and of a
whole frame, and exits non-zero if any is above --tolerance (1e-4). Quantisation is compared by
code index: an index may differ from PyTorch's only where the two nearest codes are a tie within
float32 rounding (checked in float64); the frame is then re-run in PyTorch with dubfarm's codes.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402
from convert import export  # noqa: E402
from swaptalk import SwapTalk, load_manifest, randomize  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def tie_ok(z, codebook, mine, theirs, tol=1e-5):
    """Positions where the indices differ must be near-ties of the float64 distances."""
    zf = np.asarray(z, np.float64).reshape(z.shape[0], -1).T
    cb = np.asarray(codebook, np.float64)
    d = (zf ** 2).sum(1, keepdims=True) - 2 * zf @ cb.T + (cb ** 2).sum(1)
    bad, ties = 0, 0
    for p in np.nonzero(mine != theirs)[0]:
        scale = (zf[p] ** 2).sum() + (cb ** 2).sum(1).max()
        if abs(d[p, mine[p]] - d[p, theirs[p]]) <= tol * scale:
            ties += 1
        else:
            bad += 1
    return bad, ties


def reference_io(model, c, seed):
    """Inputs for every module (each fed from PyTorch's own upstream results) and the outputs."""
    g = torch.Generator().manual_seed(seed + 1000)
    s = c["imageSize"]
    target = torch.rand(1, 3, s, s, generator=g) * 2 - 1
    source = torch.rand(1, 3, s, s, generator=g) * 2 - 1
    mel = torch.randn(c["melFrames"], c["melBins"], generator=g) * 2 - 4
    ins, outs = {}, {}
    with torch.no_grad():
        ins["encode.input"] = target[:, :, : s // 2]
        outs["encode.output"] = model.encode(ins["encode.input"])
        zl = model.encode(target[:, :, s // 2:])
        for half, z in (("upper", outs["encode.output"]), ("lower", zl)):
            ins[f"quantize_{half}.input"] = z
            idx, q = model.quantize(z, half)
            outs[f"quantize_{half}.output"], outs[f"quantize_{half}.indices"] = q, idx.float()
        tgrid, _ = model.tokenize(target)
        sgrid, _ = model.tokenize(source)
        ins["swap.target"], ins["swap.source"] = tgrid, sgrid
        outs["swap.output"] = model.swap(tgrid, sgrid)
        ins["audio.input"] = mel
        outs["audio.output"] = model.audio(mel)
        h = tgrid.shape[2] // 2
        lower = outs["swap.output"][:, :, h:]
        ins["lipsync.target"], ins["lipsync.reference"], ins["lipsync.audio"] = lower, lower, outs["audio.output"]
        outs["lipsync.output"] = model.lipsync(lower, lower, outs["audio.output"])
        ins["decode.input"] = torch.cat([outs["swap.output"][:, :, :h], outs["lipsync.output"]], dim=2)
        outs["decode.output"] = model.decode(ins["decode.input"])
        ins["frame.target"], ins["frame.source"], ins["frame.mel"] = target, source, mel
        outs["frame.output"], idx = model.run_frame(target, source, mel)
        outs["frame.indices_upper"], outs["frame.indices_lower"] = idx[0].float(), idx[1].float()
    strip = lambda d: {k: v.squeeze(0).numpy() if v.dim() == 4 else v.numpy() for k, v in d.items()}
    return strip(ins), strip(outs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dubfarm", default=os.path.join(ROOT, ".build", "release", "dubfarm"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--keep", help="keep the weights and tensors in this directory")
    ap.add_argument("--weights", help="check these weights (a dubfarm weights directory, float16 or float32) "
                                      "instead of random ones; PyTorch runs the same values the engine loads")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    work = a.keep or tempfile.mkdtemp(prefix="dubfarm-check-")
    if a.weights:
        wdir = a.weights
        c = load_manifest(os.path.join(wdir, "manifest.json"))
        model = SwapTalk(c).eval()
        sd = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in
              safetensors_io.read(os.path.join(wdir, "model.safetensors")).items()}
        model.load_state_dict(sd, strict=True)
        a.config = f"{c['name']} ({wdir})"
    else:
        wdir = os.path.join(work, "weights")
        subprocess.run([a.dubfarm, "model", "init", "--config", a.config, "--seed", "0", "--out", wdir],
                       check=True, stdout=subprocess.DEVNULL)
        c = load_manifest(os.path.join(wdir, "manifest.json"))
        torch.manual_seed(a.seed)
        model = randomize(SwapTalk(c), a.seed).eval()
        export(model, c, wdir, {"source": f"check.py seed {a.seed}"})
    ins, ref = reference_io(model, c, a.seed)
    inp, outp = os.path.join(work, "inputs.safetensors"), os.path.join(work, "outputs.safetensors")
    safetensors_io.write(inp, ins)
    subprocess.run([a.dubfarm, "model", "run", "--weights", wdir, "--inputs", inp, "--out", outp,
                    "--threads", str(a.threads)], check=True, stdout=subprocess.DEVNULL)
    got = safetensors_io.read(outp)

    failed = False
    print(f"check.py: config {a.config}, seed {a.seed}, tolerance {a.tolerance:g}")
    for name in ["encode", "swap", "audio", "lipsync", "decode"]:
        e = rel(got[f"{name}.output"], ref[f"{name}.output"])
        ok = e <= a.tolerance
        failed |= not ok
        print(f"  {name:10s} max rel error {e:.3e}  {'ok' if ok else 'FAIL'}")
    cbs = {"upper": model.quantize_upper.embedding.weight.detach().numpy(),
           "lower": model.quantize_lower.embedding.weight.detach().numpy()}
    for half in ("upper", "lower"):
        mine = got[f"quantize_{half}.indices"].astype(np.int64)
        theirs = ref[f"quantize_{half}.indices"].astype(np.int64)
        bad, ties = tie_ok(ins[f"quantize_{half}.input"], cbs[half], mine, theirs)
        e = rel(got[f"quantize_{half}.output"], cbs[half][mine].T.reshape(ins[f"quantize_{half}.input"].shape))
        ok = bad == 0 and e == 0
        failed |= not ok
        print(f"  quantize.{half:5s} {len(mine)} codes, {bad} wrong, {ties} near-ties  {'ok' if ok else 'FAIL'}")

    # whole frame: accept dubfarm's codes where they are near-ties, then compare the image
    s = c["imageSize"]
    with torch.no_grad():
        t = torch.from_numpy(ins["frame.target"])[None]
        zs = {"upper": model.encode(t[:, :, : s // 2]).squeeze(0).numpy(), "lower": model.encode(t[:, :, s // 2:]).squeeze(0).numpy()}
    forced, frame_bad, frame_ties = [], 0, 0
    for half in ("upper", "lower"):
        mine = got[f"frame.indices_{half}"].astype(np.int64)
        bad, ties = tie_ok(zs[half], cbs[half], mine, ref[f"frame.indices_{half}"].astype(np.int64))
        frame_bad, frame_ties = frame_bad + bad, frame_ties + ties
        forced.append(torch.from_numpy(mine))
    frame_ref = ref["frame.output"]
    if frame_ties:
        with torch.no_grad():
            out, _ = model.run_frame(t, torch.from_numpy(ins["frame.source"])[None], torch.from_numpy(ins["frame.mel"]), tuple(forced))
        frame_ref = out.squeeze(0).numpy()
    e = rel(got["frame.output"], frame_ref)
    ok = e <= a.tolerance and frame_bad == 0
    failed |= not ok
    print(f"  frame      max rel error {e:.3e}  ({frame_bad} wrong codes, {frame_ties} near-ties)  {'ok' if ok else 'FAIL'}")
    print("FAILED" if failed else "PASSED")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
