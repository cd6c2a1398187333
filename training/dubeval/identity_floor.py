"""How much identity a model's VQGAN loses on its own: the dlib descriptor distance between
held-out face crops and their VQGAN reconstructions (no swap, no lip sync), beside the distances
between frames of one speaker and between speakers. A face swap decoded by that VQGAN cannot get
nearer its source photo than this floor.

    .venv/bin/python -m dubeval.identity_floor --data DATASET [--weights models/dubfarm-small] [--frames 48]

(run from training/). DATASET is a `dubfarm dataset build` directory; the held-out speakers are
training/data/split.json's. dubfarm-small, 2026-12-07: 0.57 (median 0.565), against 0.29 within
a speaker and 0.85 between speakers.
"""
import argparse
import os

import numpy as np
import torch

from dubtrain import identity, weights
from dubtrain.config import ROOT, TRAINING
from dubtrain.data import FaceDataset, load_split
from dubtrain.model import SwapTalk
from dubtrain.swap import chip_grids, chips, identity_floor


@torch.no_grad()
def measure(data, weights_dir, frames=48, seed=0, split=None):
    """{"floor": [per-frame distance], "same_speaker": [...], "other_speakers": [...]}."""
    held, excluded = load_split(split or os.path.join(TRAINING, "data", "split.json"))
    val = FaceDataset(data, speakers=held, exclude_clips=excluded)
    manifest, state, _, _ = weights.load(weights_dir)
    model = SwapTalk(manifest).eval()
    model.load_state_dict(state)
    net = identity.load()
    rows = torch.nonzero(val.has_landmarks).flatten()
    rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:frames]]
    x = val.images(rows)
    g = chip_grids(val.landmarks[rows], val.image_size)
    d_orig = net(chips(x, g))
    floor = identity_floor(model, net, x, g, d_images=d_orig)
    speaker = val.speaker[rows]
    pairs = torch.cdist(d_orig, d_orig)
    upper = torch.triu(torch.ones_like(pairs, dtype=torch.bool), diagonal=1)
    same = speaker[:, None] == speaker[None, :]
    return {"floor": floor.tolist(),
            "same_speaker": pairs[upper & same].tolist(), "other_speakers": pairs[upper & ~same].tolist()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="dataset directory (dubfarm dataset build)")
    ap.add_argument("--weights", default=os.path.join(ROOT, "models", "dubfarm-small"), help="weights directory")
    ap.add_argument("--frames", type=int, default=48, help="held-out frames drawn (seeded)")
    a = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    r = measure(a.data, a.weights, a.frames)
    f = np.array(r["floor"])
    print(f"VQGAN identity floor ({len(f)} held-out frames): mean {f.mean():.3f}, median {np.median(f):.3f}, max {f.max():.3f}")
    print(f"originals: same speaker {np.mean(r['same_speaker']):.3f} ({len(r['same_speaker'])} pairs), "
          f"other speakers {np.mean(r['other_speakers']):.3f} ({len(r['other_speakers'])} pairs); "
          f"dlib's same-person threshold {identity.SAME_PERSON}")


if __name__ == "__main__":
    main()
