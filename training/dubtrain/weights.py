"""A dubfarm weights directory (manifest.json + model.safetensors: what workers load) read into
the PyTorch reference model and written back. `export.py` writes one from a training run;
`dubtrain.personalise` reads one, fine-tunes it and writes another with the same layout."""
import hashlib
import json
import os

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file


def save_safetensors(path, state_dict, metadata, float16=True):
    """Every tensor of `state_dict` as IEEE half (the engine widens it to float32 on load) or,
    with float16=False, float32; `metadata` is the header's string map (`dubfarm.trained`, …)."""
    dtype = np.float16 if float16 else np.float32
    tensors = {k: np.ascontiguousarray(v.detach().cpu().float().numpy().astype(dtype)) for k, v in state_dict.items()}
    save_file(tensors, path, metadata=metadata)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load(directory):
    """(manifest, {name: float32 tensor}, header metadata, sha256 of model.safetensors) of a
    weights directory. Raises FileNotFoundError naming the missing file."""
    manifest_path, weights_path = os.path.join(directory, "manifest.json"), os.path.join(directory, "model.safetensors")
    for p in (manifest_path, weights_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(p)
    with open(manifest_path) as f:
        manifest = json.load(f)
    with safe_open(weights_path, "np") as f:
        metadata = dict(f.metadata() or {})
        state = {k: torch.from_numpy(f.get_tensor(k).astype(np.float32)) for k in f.keys()}
    return manifest, state, metadata, sha256(weights_path)
