"""The trainer on a tiny configuration: its losses fall, a resumed run continues the very same
curve, exported weights run in the engine as in PyTorch (within 1e-4), and two processes under
torchrun (gloo on CPU) train every stage in step."""
import csv
import os
import re
import subprocess
import sys

from conftest import ROOT, TRAINING

import train
from dubtrain.common import read_csv


def run(data, split, out, *flags):
    train.main(["--data", data, "--split", split, "--out", out, "--model", "tiny-masked", "--threads", "2",
                "--log-every", "5", "--val-every", "1000", *flags])


def rows(path):
    with open(path) as f:
        return [r for r in csv.DictReader(f)]


def test_vqgan_loss_falls_and_resume_continues_the_same_curve(tiny_dataset, tmp_path):
    data, split = tiny_dataset
    steps = ["--stages", "vqgan", "--vq-batch", "8", "--vq-lr", "1e-3", "--vq-disc-start", "20"]
    whole = str(tmp_path / "whole")
    run(data, split, whole, *steps, "--vq-steps", "40")
    log = read_csv(os.path.join(whole, "vqgan", "log.csv"))
    assert log["step"] == [5.0 * i for i in range(1, 9)]
    assert sum(log["l1"][-2:]) / 2 < 0.8 * sum(log["l1"][:2]) / 2, log["l1"]
    assert all(v == v for v in log["disc"][4:])  # the discriminator ran after disc_start

    # Interrupted at step 25 (a checkpoint on a log row), then the same command again.
    parts = str(tmp_path / "parts")
    run(data, split, parts, *steps, "--vq-steps", "25", "--checkpoint-every", "10")
    run(data, split, parts, *steps, "--vq-steps", "40")
    a, b = rows(os.path.join(whole, "vqgan", "log.csv")), rows(os.path.join(parts, "vqgan", "log.csv"))
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in ("loss", "l1", "commit", "gan", "disc"):
            assert abs(float(ra[k]) - float(rb[k])) <= 1e-4 * max(1.0, abs(float(ra[k]))), (ra["step"], k, ra[k], rb[k])


def test_all_stages_then_export_matches_the_engine(tiny_dataset, tmp_path, dubfarm):
    data, split = tiny_dataset
    out = str(tmp_path / "run")
    run(data, split, out, "--vq-steps", "20", "--vq-batch", "8", "--sync-steps", "30", "--sync-batch", "16",
        "--lip-steps", "40", "--lip-batch", "8", "--lip-sync-start", "10")
    sync, lip = read_csv(os.path.join(out, "sync", "log.csv")), read_csv(os.path.join(out, "lipsync", "log.csv"))
    assert len(sync["loss"]) == 6 and len(lip["loss"]) == 8
    assert lip["code_mse"][-1] < lip["code_mse"][0], lip["code_mse"]
    assert all(v > 0 for v in lip["sync"][2:])  # the expert's loss is on after lip_sync_start
    weights = str(tmp_path / "weights")
    subprocess.run([sys.executable, os.path.join(TRAINING, "export.py"), "--run", out, "--out", weights], check=True)
    from safetensors import safe_open
    with safe_open(os.path.join(weights, "model.safetensors"), "np") as f:
        assert f.metadata()["dubfarm.trained"] == "encode,quantize,decode,audio,lipsync"
        assert str(f.get_tensor("decoder.conv_out.weight").dtype) == "float16"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "reference", "check.py"), "--weights", weights,
                        "--dubfarm", dubfarm], capture_output=True, text=True)
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr


def test_max_minutes_stops_with_a_checkpoint_and_the_same_command_finishes(tiny_dataset, tmp_path):
    import torch
    data, split = tiny_dataset
    out = str(tmp_path / "run")
    flags = ["--stages", "vqgan", "--vq-batch", "4", "--vq-steps", "12"]
    run(data, split, out, *flags, "--max-minutes", "1e-9")  # out of time after the first step
    assert torch.load(os.path.join(out, "vqgan", "ckpt.pt"), weights_only=False)["step"] == 1
    run(data, split, out, *flags)
    assert torch.load(os.path.join(out, "vqgan", "ckpt.pt"), weights_only=False)["step"] == 12


def torchrun(*args, nproc=2, timeout=300):
    """`python -m torch.distributed.run --standalone --nproc_per_node N ARGS…` (gloo on CPU)."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                           *args], capture_output=True, text=True, timeout=timeout)


def test_torchrun_two_processes_train_all_stages_in_step(tiny_dataset, tmp_path, dubfarm):
    data, split = tiny_dataset
    out = str(tmp_path / "run")
    r = torchrun(os.path.join(TRAINING, "train.py"), "--data", data, "--split", split, "--out", out,
                 "--model", "tiny-masked", "--threads", "1", "--log-every", "5", "--val-every", "1000",
                 "--vq-steps", "20", "--vq-batch", "8", "--vq-lr", "1e-3", "--vq-disc-start", "10",
                 "--sync-steps", "10", "--sync-batch", "16", "--lip-steps", "10", "--lip-batch", "8", "--lip-sync-start", "5")
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-4000:]
    assert "device cpu, 2 process(es)" in r.stdout
    # In step: at the end of each stage every tensor of its checkpoint (weights, optimiser moments,
    # EMA codebook statistics) was compared, bit for bit, across the two processes.
    for stage in ("vqgan", "sync", "lipsync"):
        assert len(re.findall(rf"\[{stage}\] all \d+ tensors of the checkpoint are identical on the 2 processes", text)) == 1, \
            text[-4000:]
    # Rank 0 alone writes: one progress line per stage, one tokens pass, no repeated log rows.
    assert text.count("[vqgan] step 20/20") == 1 and text.count("[tokens] 125 frames") == 1, text[-4000:]
    for stage, steps in (("vqgan", 20), ("sync", 10), ("lipsync", 10)):
        log = rows(os.path.join(out, stage, "log.csv"))
        assert [int(x["step"]) for x in log] == list(range(5, steps + 1, 5)), (stage, log)
        assert not [f for f in os.listdir(os.path.join(out, stage)) if f.endswith(".tmp")]
    l1 = [float(x["l1"]) for x in rows(os.path.join(out, "vqgan", "log.csv"))]
    assert l1[-1] < 0.85 * l1[0], l1
    weights = str(tmp_path / "weights")
    subprocess.run([sys.executable, os.path.join(TRAINING, "export.py"), "--run", out, "--out", weights], check=True)
    c = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "reference", "check.py"), "--weights", weights,
                        "--dubfarm", dubfarm], capture_output=True, text=True)
    assert c.returncode == 0 and "PASSED" in c.stdout, c.stdout + c.stderr


def test_the_check_that_processes_agree_catches_a_divergence(tmp_path):
    """The check behind the test above is not vacuous: one tensor off on rank 1 fails the job."""
    probe = tmp_path / "probe.py"
    probe.write_text(f"""import sys
sys.path.insert(0, {TRAINING!r})
import torch
from dubtrain.common import Runtime
rt = Runtime("cpu", 1)
off = 1e-6 if sys.argv[1] == "differ" and rt.rank == 1 else 0.0
rt.check_same({{"model": {{"w": torch.ones(3)}}, "codebooks": [{{"embed_sum": torch.ones(4) + off}}]}}, "probe")
rt.close()
""")
    same = torchrun(str(probe), "same", timeout=120)
    assert same.returncode == 0 and "[probe] all 2 tensors of the checkpoint are identical on the 2 processes" in same.stdout, \
        same.stdout + same.stderr
    differ = torchrun(str(probe), "differ", timeout=120)
    assert differ.returncode != 0 and "rank 1 differs from rank 0 in 1 of 2 tensors (codebooks.0.embed_sum)" in \
        differ.stdout + differ.stderr, differ.stdout + differ.stderr


def test_sync_loss_without_in_batch_negatives_ranks_only_the_clips_own_shifts():
    """--sync-in-batch-negatives false: each window's candidates are its own audio and its
    shifted audio, not the other windows of the batch (which a voice-to-face match solves)."""
    import torch
    import torch.nn.functional as F
    from dubtrain.sync import info_nce

    class Identity:  # embeddings are the inputs themselves, so the expected logits are known
        embed_video = staticmethod(lambda x: F.normalize(x, dim=-1))
        embed_audio = staticmethod(lambda x: F.normalize(x, dim=-1))

    g = torch.Generator().manual_seed(0)
    v, a, neg = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), torch.randn(4, 3, 8, generator=g)
    nv, na, nn_ = F.normalize(v, dim=-1), F.normalize(a, dim=-1), F.normalize(neg, dim=-1)
    own = torch.cat([(nv * na).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", nv, nn_)], 1) / 0.1
    loss, _ = info_nce(Identity, v, a, neg, 0.1, in_batch=False)
    assert torch.allclose(loss, F.cross_entropy(own, torch.zeros(4, dtype=torch.long)))
    # with the batch's windows: 4 in-batch candidates + 3 shifts per row, the true pair on the diagonal
    both = torch.cat([nv @ na.t(), torch.einsum("bd,bkd->bk", nv, nn_)], 1) / 0.1
    loss_b, _ = info_nce(Identity, v, a, neg, 0.1, in_batch=True)
    assert torch.allclose(loss_b, F.cross_entropy(both, torch.arange(4)))
    # a perfect match of each window with its own audio, far from its shifts: accuracy 1
    loss_p, acc = info_nce(Identity, a, a, -a.unsqueeze(1).repeat(1, 3, 1), 0.1, in_batch=False)
    assert acc == 1.0 and loss_p < 1e-3


def test_export_writes_the_mask_the_lipsync_stage_trained_with(tmp_path):
    """A lipsyncTargetMask changed after the VQGAN trained: the exported manifest is the lip-sync
    stage's (the engine must zero what the UNet learned to see zeroed); any other difference
    between the stages' configurations is refused."""
    import json
    import pytest
    import export
    from dubtrain.common import save_checkpoint
    from dubtrain.model import SwapTalk

    with open(os.path.join(TRAINING, "configs", "tiny.json")) as f:
        vq_manifest = json.load(f)
    lip_manifest = dict(vq_manifest, lipsyncTargetMask=[0, 1, 0, 2])
    sd = SwapTalk(vq_manifest).state_dict()
    save_checkpoint(str(tmp_path / "vqgan" / "ckpt.pt"), {"manifest": vq_manifest, "model": sd, "step": 3, "seconds": 1.0})
    save_checkpoint(str(tmp_path / "lipsync" / "ckpt.pt"), {"manifest": lip_manifest, "model": sd, "step": 2, "seconds": 1.0})
    manifest, _, trained, _ = export.assemble(str(tmp_path))
    assert manifest["lipsyncTargetMask"] == [0, 1, 0, 2] and "lipsync" in trained
    save_checkpoint(str(tmp_path / "lipsync" / "ckpt.pt"),
                    {"manifest": dict(lip_manifest, channels=vq_manifest["channels"] * 2), "model": sd, "step": 2, "seconds": 1.0})
    with pytest.raises(SystemExit, match="channels"):
        export.assemble(str(tmp_path))


def test_a_clip_with_late_audio_is_put_back_in_sync_before_the_token_stages(tiny_dataset, tmp_path):
    """FaceDataset.shift_audio: frame f of a clip whose audio is 3 frames late takes frame f+3's
    mel window; its last 3 frames (no audio left) are dropped; other clips are untouched. The
    offsets come from --audio-offsets' "corrections" and the split's audioOffsetFrames."""
    import json
    import torch
    from dubtrain.config import TrainConfig
    from dubtrain.data import FaceDataset, audio_offsets
    data, split = tiny_dataset
    before, after = FaceDataset(data), FaceDataset(data)
    name = before.index["clips"][0]["name"]
    assert after.shift_audio({name: 3, "some-other-clip": 5}) == 3
    assert len(after) == len(before) - 3
    assert torch.equal(after.frame, before.frame[:-3]) and torch.equal(after.crops, before.crops[:-3])
    assert torch.equal(after.mel, before.mel[3:])
    assert after.shift_audio({}) == 0 and len(after) == len(before) - 3
    offsets = tmp_path / "offsets.json"
    offsets.write_text(json.dumps({"corrections": {"a": 2, "b": 0}}))
    s = tmp_path / "split.json"
    s.write_text(json.dumps({"heldOutSpeakers": [], "audioOffsetFrames": {"c": -1}}))
    assert audio_offsets(TrainConfig(audio_offsets=str(offsets), split=str(s))) == {"a": 2, "c": -1}
    assert audio_offsets(TrainConfig(audio_offsets="", split=split)) == {}


def test_dense_sync_expert_learns_the_offset_of_a_tiny_clip(tiny_dataset, tmp_path):
    """--sync-chunk: the expert's dense task (each window against its clip's audio at every
    shift) on the tiny clip; its loss falls and its training accuracy rises above chance (1/7)."""
    data, split = tiny_dataset
    out = str(tmp_path / "run")
    run(data, split, out, "--stages", "vqgan,tokens,sync", "--vq-steps", "10", "--vq-batch", "4",
        "--sync-steps", "40", "--sync-batch", "32", "--sync-chunk", "8", "--sync-max-shift", "3", "--sync-lr", "1e-3")
    log = read_csv(os.path.join(out, "sync", "log.csv"))
    assert len(log["loss"]) == 8
    assert sum(log["loss"][-2:]) < sum(log["loss"][:2]), log["loss"]
    assert sum(log["accuracy"][-2:]) / 2 > 1 / 7, log["accuracy"]


def test_validation_runs_every_val_every_steps_even_between_log_rows(tmp_path):
    from dubtrain.common import Runtime, StageRun
    from dubtrain.config import TrainConfig
    cfg = TrainConfig(log_every=5, val_every=7, checkpoint_every=100)
    validated = []

    def validate():
        validated.append(run.step)
        return {"val": float(run.step)}

    run = StageRun("probe", cfg, Runtime("cpu"), str(tmp_path), 16)
    run.train(lambda step: {"loss": float(step)}, lambda: {}, ["loss", "val"], validate=validate)
    assert validated == [7, 14, 16]
    log = read_csv(os.path.join(tmp_path, "probe", "log.csv"))
    assert [int(s) for s in log["step"]] == [5, 7, 10, 14, 15, 16]
    assert log["loss"][1] == 5.5                       # steps 5 and 6 (0-based) since the row at 5
    assert [v for v in log["val"] if v == v] == [7.0, 14.0, 16.0]
