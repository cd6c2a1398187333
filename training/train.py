#!/usr/bin/env python3
"""Trains dubfarm's SwapTalk-style model from a `dubfarm dataset build` directory.

    python training/train.py --data DATASET --out RUN [--model dubfarm-small] [--device cpu|cuda]
    torchrun --nproc_per_node 8 training/train.py --data DATASET --out RUN --device cuda

Stages, in order (`--stages` picks some): vqgan (encoder, two EMA codebooks, decoder, patch GAN),
tokens (every frame's codes under the final VQGAN), sync (the latent lip-sync expert), lipsync
(the audio encoder and lip-sync UNet, with the frozen expert's sync loss); swap (the face-swap
transformer with dlib's face-recognition network as the identity loss; only when asked for:
`--stages swap`, after lipsync or on a weights directory given as --swap-init). Each stage keeps
RUN/STAGE/ckpt.pt and RUN/STAGE/log.csv; run the same command again and it resumes where the
last checkpoint left off (a finished stage is skipped). Then
`python training/export.py --run RUN --out DIR` writes the weights directory workers load.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dubtrain.config import add_arguments, from_arguments  # noqa: E402
from dubtrain.common import Runtime  # noqa: E402
from dubtrain.data import load_train_val  # noqa: E402

STAGES = ("vqgan", "tokens", "sync", "lipsync", "swap")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    cfg = from_arguments(ap.parse_args(argv))
    if not cfg.data:
        ap.error("--data DATASET is required (a directory written by `dubfarm dataset build`)")
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        ap.error(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    rt = Runtime(cfg.device, cfg.threads)
    os.makedirs(cfg.out, exist_ok=True)
    if rt.main:
        with open(os.path.join(cfg.out, "config.json"), "w") as f:
            json.dump(cfg.to_dict(), f, indent=2)
    train, val = load_train_val(cfg)
    if rt.main:
        print(f"train: {train.describe()}; validation: {val.describe() if val else 'none'}; "
              f"device {rt.device}, {rt.world} process(es)", flush=True)
    t0 = time.time()
    for stage in STAGES:
        if stage not in cfg.stages:
            continue
        if stage == "vqgan":
            from dubtrain.vqgan import train_vqgan
            train_vqgan(cfg, rt, train, val, cfg.out)
        elif stage == "tokens":
            from dubtrain.tokens import build_tokens
            build_tokens(cfg, rt, cfg.out)
        elif stage == "sync":
            from dubtrain.sync import train_sync
            train_sync(cfg, rt, cfg.out)
        elif stage == "lipsync":
            from dubtrain.lipsync import train_lipsync
            train_lipsync(cfg, rt, cfg.out)
        elif stage == "swap":
            from dubtrain.swap import train_swap
            train_swap(cfg, rt, train, val, cfg.out)
        rt.barrier()
    if rt.main:
        print(f"train: done in {(time.time() - t0) / 60:.1f} min; export with "
              f"python training/export.py --run {cfg.out} --out DIR", flush=True)
    rt.close()


if __name__ == "__main__":
    main()
