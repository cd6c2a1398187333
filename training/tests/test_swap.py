"""The swap stage: dlib's chip geometry reproduced differentiably, and a tiny swap stage whose
identity loss falls and whose weights export as a trained swap."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TRAINING

import train
from dubtrain.common import read_csv


def demo_frame(tmp_path, seconds=2.0):
    """One RGB frame of demo/speaker.mp4 (uint8 [H, W, 3])."""
    from PIL import Image
    png = tmp_path / "frame.png"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(seconds), "-i", os.path.join(ROOT, "demo", "speaker.mp4"),
                    "-frames:v", "1", str(png)], check=True)
    return np.array(Image.open(png).convert("RGB"))


def test_chip_grids_cut_the_chip_dlib_cuts(tmp_path):
    import dlib
    from dubeval.faces import model_dir
    from dubtrain.swap import chip_grids, chips
    img = demo_frame(tmp_path)
    box = dlib.get_frontal_face_detector()(img, 1)[0]
    shape = dlib.shape_predictor(os.path.join(model_dir(), "shape_predictor_68_face_landmarks.dat"))(img, box)
    want = dlib.get_face_chip(img, shape, size=150, padding=0.25).astype(np.float32)
    # The frame as a square "crop" (the geometry does not care), its landmarks in its pixels.
    side = max(img.shape[:2])
    square = np.zeros((side, side, 3), np.uint8)
    square[: img.shape[0], : img.shape[1]] = img
    pts = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
    x = torch.from_numpy(square).permute(2, 0, 1)[None].float() / 127.5 - 1
    got = chips(x, chip_grids(pts[None], side))[0].permute(1, 2, 0).numpy()
    diff = np.abs(got - want)
    assert diff.mean() < 1.0 and diff.max() <= 3.0, (diff.mean(), diff.max())  # dlib rounds to uint8


def test_tiny_swap_stage_identity_loss_falls_and_exports_a_trained_swap(tiny_dataset, tmp_path):
    data, split = tiny_dataset
    out = str(tmp_path / "run")
    common = ["--data", data, "--split", split, "--out", out, "--model", "tiny-masked", "--threads", "2",
              "--log-every", "5", "--val-every", "1000"]
    train.main(common + ["--stages", "vqgan", "--vq-steps", "20", "--vq-batch", "8"])
    train.main(common + ["--stages", "swap", "--swap-steps", "60", "--swap-batch", "4", "--swap-warmup-steps", "10",
                         "--swap-lr", "2e-3", "--swap-min-gap", "10"])
    log = read_csv(os.path.join(out, "swap", "log.csv"))
    assert len(log["loss"]) == 12
    assert log["prior"][1] < log["prior"][0], log["prior"]                        # the warm-up learns the paste
    identity = log["identity"][2:]                                                  # after the warm-up
    assert all(v > 0 for v in identity)
    assert sum(identity[-3:]) / 3 < sum(identity[:3]) / 3, identity
    weights = str(tmp_path / "weights")
    subprocess.run([sys.executable, os.path.join(TRAINING, "export.py"), "--run", out, "--out", weights], check=True)
    from safetensors import safe_open
    with safe_open(os.path.join(weights, "model.safetensors"), "pt") as f:
        assert f.metadata()["dubfarm.trained"] == "encode,quantize,decode,swap"
        trained = f.get_tensor("swap.out_proj.weight")
    ckpt = torch.load(os.path.join(out, "swap", "ckpt.pt"), weights_only=False)
    assert torch.allclose(trained.float(), ckpt["model"]["swap.out_proj.weight"].float(), atol=1e-3)

    # Validation (the tiny split holds no speaker out: run it on the training set). One speaker:
    # same-person pairs only, so the other-person distances are not defined.
    from dubtrain import identity
    from dubtrain.config import TrainConfig
    from dubtrain.data import FaceDataset
    from dubtrain.model import SwapTalk
    from dubtrain.swap import Pairs, validate
    model = SwapTalk(ckpt["manifest"])
    model.load_state_dict(ckpt["model"])
    dataset = FaceDataset(data)
    row = validate(model.eval(), identity.load(), dataset, Pairs(dataset, 10), TrainConfig(), n=8)
    assert set(row) == {"val_dist_source", "val_dist_source_decoded", "val_dist_prior", "val_dist_target", "val_floor", "val_same_l1"}
    assert row["val_floor"] > 0 and row["val_same_l1"] > 0
    assert all(row[k] != row[k] for k in ("val_dist_source", "val_dist_source_decoded", "val_dist_prior", "val_dist_target"))  # NaN


def test_swap_stage_without_a_model_says_what_to_do(tiny_dataset, tmp_path):
    data, split = tiny_dataset
    with pytest.raises(SystemExit, match="--swap-init"):
        train.main(["--data", data, "--split", split, "--out", str(tmp_path / "empty"), "--model", "tiny-masked",
                    "--stages", "swap", "--swap-steps", "2"])
