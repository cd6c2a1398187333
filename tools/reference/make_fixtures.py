#!/usr/bin/env python3
"""Regenerate the golden `tiny` fixtures used by `make test` (no PyTorch needed there).

    tools/reference/make_fixtures.py [--seed 0] [--dubfarm .build/release/dubfarm]

Writes tools/reference/fixtures/tiny/: manifest.json, model.safetensors (PyTorch-random
weights) and io.safetensors (every module's inputs and PyTorch's outputs, as in check.py).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402
from check import ROOT, reference_io  # noqa: E402
from convert import export  # noqa: E402
from swaptalk import SwapTalk, load_manifest, randomize  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dubfarm", default=os.path.join(ROOT, ".build", "release", "dubfarm"))
    a = ap.parse_args()
    out = os.path.join(ROOT, "tools", "reference", "fixtures", "tiny")
    tmp = tempfile.mkdtemp()
    subprocess.run([a.dubfarm, "model", "init", "--config", "tiny", "--out", tmp], check=True, stdout=subprocess.DEVNULL)
    c = load_manifest(os.path.join(tmp, "manifest.json"))
    torch.manual_seed(a.seed)
    model = randomize(SwapTalk(c), a.seed).eval()
    export(model, c, out, {"source": f"tools/reference/make_fixtures.py seed {a.seed}"})
    ins, outs = reference_io(model, c, a.seed)
    safetensors_io.write(os.path.join(out, "io.safetensors"), {**ins, **{"expected." + k: v for k, v in outs.items()}})
    print("wrote", out, sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)), "bytes")


if __name__ == "__main__":
    main()
