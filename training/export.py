#!/usr/bin/env python3
"""Writes a dubfarm weights directory from a training run.

    python training/export.py --run RUN --out models/dubfarm-small [--float32]

manifest.json (the run's model configuration) + model.safetensors: the VQGAN of the vqgan stage,
the audio encoder and lip-sync UNet of the lipsync stage, and the face-swap transformer of the swap
stage (as initialised when the run has none). A run whose swap stage started from a weights
directory (--swap-init) and has no vqgan stage of its own exports that directory's modules with
the trained swap. The safetensors metadata says which modules were trained
(`dubfarm.trained`), so workers know not to apply an untrained swap, and where they came from.
By default the tensors are stored as IEEE half, which the engine widens to float32 on load
(--float32 keeps full precision); check.py then compares the engine with PyTorch on the same
rounded weights.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dubtrain.common import load_checkpoint  # noqa: E402
from dubtrain.model import SwapTalk  # noqa: E402
from dubtrain import weights  # noqa: E402
from dubtrain.weights import save_safetensors  # noqa: E402

VQGAN_PREFIXES = ("encoder.", "quant_conv.", "quantize_upper.", "quantize_lower.", "post_quant_conv.", "decoder.")
LIPSYNC_PREFIXES = ("audio.", "lipsync.")


SWAP_PREFIXES = ("swap.",)


def assemble(run):
    """(manifest, state_dict, trained module names, provenance) of a run's final checkpoints."""
    vq = load_checkpoint(os.path.join(run, "vqgan", "ckpt.pt"))
    swap = load_checkpoint(os.path.join(run, "swap", "ckpt.pt"))
    if vq is None and swap is not None:
        return assemble_swap_only(run, swap)
    if vq is None:
        raise SystemExit(f"export: {run} has no vqgan checkpoint")
    lip = load_checkpoint(os.path.join(run, "lipsync", "ckpt.pt"))
    manifest = vq["manifest"]
    if lip is not None:
        # The lip-sync stage's manifest is the one the UNet was trained with: its
        # lipsyncTargetMask may have been set after the VQGAN trained; nothing else may differ.
        other = {k for k in set(manifest) | set(lip["manifest"])
                 if k != "lipsyncTargetMask" and manifest.get(k) != lip["manifest"].get(k)}
        if other:
            raise SystemExit(f"export: {run}: the vqgan and lipsync stages were trained with different "
                             f"model configurations ({', '.join(sorted(other))}); retrain the lipsync stage")
        manifest = lip["manifest"]
    torch.manual_seed(0)
    model = SwapTalk(manifest)
    sd = model.state_dict()
    trained = ["encode", "quantize", "decode"]
    for k, v in vq["model"].items():
        if k.startswith(VQGAN_PREFIXES):
            sd[k] = v
    if lip is not None:
        for k, v in lip["model"].items():
            if k.startswith(LIPSYNC_PREFIXES):
                sd[k] = v
        trained += ["audio", "lipsync"]
    if swap is not None:
        for k, v in swap["model"].items():
            if k.startswith(SWAP_PREFIXES):
                sd[k] = v
        trained += ["swap"]
    model.load_state_dict(sd, strict=True)
    steps = {"vqgan": vq["step"], "lipsync": lip["step"] if lip else 0, "swap": swap["step"] if swap else 0}
    sync = load_checkpoint(os.path.join(run, "sync", "ckpt.pt"))
    steps["sync"] = sync["step"] if sync else 0
    seconds = vq["seconds"] + (lip["seconds"] if lip else 0) + (sync["seconds"] if sync else 0)
    return manifest, model.state_dict(), trained, {"steps": steps, "seconds": seconds}


def assemble_swap_only(run, swap):
    """A run that trained only the swap, on a weights directory (--swap-init): that directory's
    modules (and what its metadata says was trained) with the swap stage's transformer."""
    init = swap["config"].get("swap_init")
    if not init:
        raise SystemExit(f"export: {run} has a swap checkpoint but no vqgan checkpoint and no --swap-init")
    base_manifest, _, meta, _ = weights.load(init)
    trained = [m for m in meta.get("dubfarm.trained", "").split(",") if m and m != "swap"] + ["swap"]
    model = SwapTalk(swap["manifest"])
    model.load_state_dict(swap["model"], strict=True)
    # The base's provenance carries over: its stages' steps and training time, plus the swap's.
    steps = {**json.loads(meta.get("steps", "{}")), "swap": swap["step"]}
    seconds = float(meta.get("train_seconds", 0)) + swap["seconds"]
    return swap["manifest"], model.state_dict(), trained, {"steps": steps, "seconds": seconds, "from": init}


def export(run, out, float16=True):
    manifest, sd, trained, prov = assemble(run)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    meta = {"dubfarm.trained": ",".join(trained), "config": manifest["name"],
            "trainer": "training/train.py", "steps": json.dumps(prov["steps"]),
            "train_seconds": f"{prov['seconds']:.0f}", "dtype": "F16" if float16 else "F32"}
    save_safetensors(os.path.join(out, "model.safetensors"), sd, meta, float16)
    return manifest, trained, prov


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="training run directory (train.py --out)")
    ap.add_argument("--out", required=True, help="weights directory to write")
    ap.add_argument("--float32", action="store_true", help="store float32 instead of float16")
    a = ap.parse_args()
    manifest, trained, prov = export(a.run, a.out, float16=not a.float32)
    size = os.path.getsize(os.path.join(a.out, "model.safetensors"))
    print(f"export: {a.out}: configuration {manifest['name']}, trained {', '.join(trained)}, "
          f"{size / 1e6:.1f} MB, steps {prov['steps']}")


if __name__ == "__main__":
    main()
