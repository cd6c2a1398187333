#!/usr/bin/env python3
"""Convert a PyTorch state_dict of the reference model (tools/reference/swaptalk.py) into a dubfarm
weights directory (manifest.json + model.safetensors).

    convert.py --manifest manifest.json --state-dict model.pt --out DIR

The tensor names are the same on both sides; the converter checks that the state_dict matches
the manifest's architecture (strict load), then writes float32 safetensors.
"""
import argparse
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from swaptalk import SwapTalk, load_manifest  # noqa: E402


def export(model, manifest, out_dir, metadata=None):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    tensors = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    safetensors_io.write(os.path.join(out_dir, "model.safetensors"), tensors, metadata or {"source": "pytorch"})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--state-dict", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    manifest = load_manifest(a.manifest)
    sd = torch.load(a.state_dict, map_location="cpu")
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    model = SwapTalk(manifest)
    model.load_state_dict(sd, strict=True)
    export(model, manifest, a.out, {"source": os.path.basename(a.state_dict)})
    print(f"wrote {a.out}: {sum(v.numel() for v in sd.values())} parameters")


if __name__ == "__main__":
    main()
