"""Per-job personalisation (python -m dubtrain.personalise) on the demo clip built with the real
`dubfarm dataset build --config small`, starting from models/dubfarm-small: held-out PSNR rises
and the training loss falls; a run stopped at a checkpoint (or by SIGTERM) and resumed ends with
the very weights of an uninterrupted one, with its budget counted across the resume; the output
has the base's layout plus its provenance; bad inputs exit 2 with one line saying why; stdout is
JSON lines only. Data-parallel under torchrun (on a tiny base, gloo on 127.0.0.1): two ranks stay
bit-identical and rank 0 alone reports; world 1 under torchrun is the plain run; a killed peer
ends the survivor within seconds with a resumable checkpoint; SIGTERM to rank 0's torchrun
checkpoints first; --device."""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

from conftest import ROOT, TRAINING
from dubtrain.common import read_csv

BASE = os.path.join(ROOT, "models", "dubfarm-small")


def personalise(data, out, *flags, base=BASE, seconds=600):
    """Runs the CLI as the worker does; (exit code, parsed stdout lines, stderr)."""
    r = subprocess.run([sys.executable, "-m", "dubtrain.personalise", "--base", base, "--data", data, "--out", str(out),
                        "--seconds", str(seconds), "--threads", "2", *flags],
                       cwd=TRAINING, capture_output=True, text=True, timeout=300)
    return r.returncode, [json.loads(line) for line in r.stdout.splitlines()], r.stderr


def build(dubfarm, out, *flags):
    subprocess.run([dubfarm, "dataset", "build", os.path.join(ROOT, "demo", "speaker.mp4"), "--out", str(out),
                    "--config", "small", *flags], check=True, capture_output=True)
    return str(out)


@pytest.fixture(scope="session")
def demo_small(tmp_path_factory, dubfarm):
    """demo/speaker.mp4 as a `small` (128-px) dataset: 125 frames, the job's own clip."""
    return build(dubfarm, tmp_path_factory.mktemp("personalise") / "demo")


@pytest.fixture(scope="session")
def demo_short(tmp_path_factory, dubfarm):
    """Its first 30 frames (quicker to encode, for the resume tests)."""
    return build(dubfarm, tmp_path_factory.mktemp("personalise") / "short", "--max-frames", "30")


@pytest.fixture(scope="module")
def fine_tuned(demo_small, tmp_path_factory):
    """30 steps of 4 crops on the demo clip's first 106 frames; its last 19 held out."""
    out = tmp_path_factory.mktemp("personalise") / "out"
    rc, lines, err = personalise(demo_small, out, "--max-steps", "30", "--batch", "4")
    assert rc == 0, err[-3000:]
    return out, lines, err


def read_log(out):
    """OUT/log.csv as rows {column: float} (NaN where empty)."""
    cols = read_csv(os.path.join(out, "log.csv"))
    return [dict(zip(cols, values)) for values in zip(*cols.values())]


def test_a_short_fine_tune_raises_held_out_psnr_and_the_loss_falls(fine_tuned):
    out, lines, _ = fine_tuned
    done = lines[-1]
    assert done["event"] == "done" and done["step"] == 30
    h = done["holdout"]
    assert h["frames"] == 19 and lines[0]["frames"] == 106 and lines[0]["holdout_frames"] == 19
    # The held-out frames were never trained on; the demo clip's face gains over a dB in 30 steps.
    assert h["psnr_after"] > h["psnr_before"] + 1.0, h
    assert h["psnr_blend_after"] > h["psnr_blend_before"], h
    assert h["audio_effect_after"] > 0.0, h  # the UNet still listens to the audio
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, 31))
    first, last = log[:5], log[-5:]
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)
    for k in ("loss", "l1"):
        assert mean(last, k) < 0.9 * mean(first, k), (k, [r[k] for r in log])
    for k in ("code_mse", "code_ce"):  # the UNet's, at its 30x smaller learning rate
        assert mean(last, k) < mean(first, k), (k, [r[k] for r in log])


def test_the_output_has_the_bases_layout_and_says_where_it_came_from(fine_tuned, dubfarm):
    out, lines, _ = fine_tuned
    with safe_open(os.path.join(BASE, "model.safetensors"), "pt") as b, \
            safe_open(os.path.join(out, "model.safetensors"), "pt") as o:
        assert sorted(o.keys()) == sorted(b.keys())
        for k in b.keys():
            tb, to = b.get_tensor(k), o.get_tensor(k)
            assert to.dtype == tb.dtype == torch.float16 and to.shape == tb.shape, k
            trained = k.startswith(("decoder.", "post_quant_conv.", "lipsync."))
            # what was not trained is bit for bit the base's (float16 -> float32 -> float16 is exact)
            assert trained or torch.equal(to, tb), k
        assert not torch.equal(o.get_tensor("decoder.conv_out.weight"), b.get_tensor("decoder.conv_out.weight"))
        assert not torch.equal(o.get_tensor("lipsync.conv_out.weight"), b.get_tensor("lipsync.conv_out.weight"))
        mb, mo = b.metadata(), o.metadata()
    assert {k: v for k, v in mo.items() if k != "dubfarm.personalised"} == mb
    p = json.loads(mo["dubfarm.personalised"])
    assert p["steps"] == 30 and p["frames"] == 106 and p["holdout"] == lines[-1]["holdout"]
    assert p["base_sha256"] == __import__("hashlib").sha256(open(os.path.join(BASE, "model.safetensors"), "rb").read()).hexdigest()
    assert open(os.path.join(out, "manifest.json"), "rb").read() == open(os.path.join(BASE, "manifest.json"), "rb").read()
    # Same byte layout: the header's offsets are the base's.
    header = lambda path: json.loads(open(path, "rb").read()[8:8 + int.from_bytes(open(path, "rb").read(8), "little")])
    hb, ho = header(os.path.join(BASE, "model.safetensors")), header(os.path.join(out, "model.safetensors"))
    assert {k: v for k, v in ho.items() if k != "__metadata__"} == {k: v for k, v in hb.items() if k != "__metadata__"}
    # The engine loads it unchanged and computes what PyTorch computes (within 1e-4).
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "reference", "check.py"), "--weights", str(out),
                        "--dubfarm", dubfarm], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout + r.stderr


def test_stdout_is_json_lines_start_progress_checkpoint_done(fine_tuned):
    out, lines, err = fine_tuned
    events = [line["event"] for line in lines]
    assert events[0] == "start" and events[-1] == "done" and events.count("done") == 1
    assert lines[0] == {"event": "start", "step": 0, "resumed": False, "frames": 106, "holdout_frames": 19,
                        "budget_seconds": 600.0, "elapsed": 0.0, "device": "cpu", "world_size": 1}
    train = [line for line in lines if line["event"] == "progress" and "phase" not in line]
    assert train and all(isinstance(line["loss"], float) and line["budget_seconds"] == 600.0 for line in train)
    assert [line["step"] for line in train] == sorted(line["step"] for line in train)
    # at most about once a second
    assert all(b["elapsed"] - a["elapsed"] >= 0.9 for a, b in zip(train, train[1:])), train
    ckpts = [line for line in lines if line["event"] == "checkpoint"]
    assert ckpts[-1]["step"] == 30 and ckpts[-1]["path"] == os.path.join(str(out), "checkpoint.pt")
    assert events[-3:] == ["checkpoint", "progress", "done"] and lines[-2]["phase"] == "measure"
    assert checkpoint(out)["step"] == 30
    assert lines[-1]["weights"] == os.path.join(str(out), "model.safetensors")
    assert lines[-1]["device"] == "cpu" and lines[-1]["world_size"] == 1
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert "personalise:" in err  # the human-readable lines went to stderr


def checkpoint(out):
    return torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)


def assert_same_state(a, b):
    """Bit for bit: the trained tensors and the optimiser's moments."""
    assert a["step"] == b["step"] and a["params"].keys() == b["params"].keys()
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    for i, s in a["opt"]["state"].items():
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(s[k], b["opt"]["state"][i][k]), (i, k)


def test_stopped_at_a_checkpoint_and_resumed_ends_with_the_same_weights(demo_short, tmp_path):
    flags = ["--batch", "2"]
    rc, whole, err = personalise(demo_short, tmp_path / "whole", *flags, "--max-steps", "6")
    assert rc == 0, err
    rc, first, err = personalise(demo_short, tmp_path / "parts", *flags, "--max-steps", "3")
    assert rc == 0, err
    assert first[-1]["step"] == 3
    # Resumed on "another machine": the checkpoint moved elsewhere, the run writes to a new directory.
    moved = tmp_path / "moved.pt"
    os.replace(tmp_path / "parts" / "checkpoint.pt", moved)
    rc, second, err = personalise(demo_short, tmp_path / "parts2", *flags, "--max-steps", "6", "--resume", str(moved))
    assert rc == 0, err
    assert second[0]["event"] == "start" and second[0]["resumed"] is True and second[0]["step"] == 3
    assert second[0]["elapsed"] == first[-1]["elapsed"]  # the budget goes on from the checkpoint's
    assert second[-1]["step"] == 6 and second[-1]["elapsed"] > first[-1]["elapsed"]
    assert_same_state(checkpoint(tmp_path / "whole"), checkpoint(tmp_path / "parts2"))
    with safe_open(os.path.join(tmp_path / "whole", "model.safetensors"), "pt") as a, \
            safe_open(os.path.join(tmp_path / "parts2", "model.safetensors"), "pt") as b:
        for k in a.keys():
            assert torch.equal(a.get_tensor(k), b.get_tensor(k)), k
    assert second[-1]["holdout"] == whole[-1]["holdout"]
    log_whole, log_parts = read_log(tmp_path / "whole"), read_log(tmp_path / "parts") + read_log(tmp_path / "parts2")
    assert [(r["step"], r["loss"]) for r in log_whole] == [(r["step"], r["loss"]) for r in log_parts]


def test_sigterm_checkpoints_and_exits_143_and_the_budget_counts_across_the_resume(demo_short, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dubtrain.personalise", "--base", BASE, "--data", demo_short, "--out", str(out),
           "--seconds", "600", "--threads", "2", "--batch", "2", "--checkpoint-every", "1000"]
    p = subprocess.Popen(cmd, cwd=TRAINING, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for raw in p.stdout:  # until training is 3 steps in
        lines.append(json.loads(raw))
        if lines[-1]["event"] == "progress" and "phase" not in lines[-1] and lines[-1]["step"] >= 3:
            break
    p.send_signal(signal.SIGTERM)
    rest, err = p.communicate(timeout=120)
    lines += [json.loads(line) for line in rest.splitlines()]
    assert p.returncode == 143, err
    assert lines[-1] == {"event": "failed", "reason": "stopped", "message": "stopped by SIGTERM"}, lines
    assert lines[-2]["event"] == "checkpoint" and "done" not in [line["event"] for line in lines], lines
    stopped, ck = lines[-2], checkpoint(out)
    assert ck["step"] == stopped["step"] >= 3 and ck["elapsed"] == pytest.approx(stopped["elapsed"], abs=1e-3)

    # Resumed with a budget of a few steps more than it had spent (4 s, more on a busy machine):
    # it trains those, not a whole new budget.
    extra = max(4.0, 2.5 * ck["step_seconds"])
    budget = round(stopped["elapsed"] + extra, 3)
    rc, resumed, err = personalise(demo_short, out, "--batch", "2", "--resume", str(out / "checkpoint.pt"), seconds=budget)
    assert rc == 0, err
    assert resumed[0]["step"] == stopped["step"] and resumed[0]["elapsed"] == stopped["elapsed"]
    done = resumed[-1]
    assert done["event"] == "done" and done["step"] > stopped["step"]
    log = read_log(out)
    assert [r["step"] for r in log] == list(range(1, done["step"] + 1))
    assert log[stopped["step"]]["seconds"] > stopped["elapsed"]  # its clock went on from the checkpoint's
    # and it started no step once the whole budget was spent: it trained `extra` seconds, not a new
    # budget (the last step may end past it: a step is not started when the last ones say it would
    # overrun, but a busy machine's steps vary).
    assert log[-2]["seconds"] <= budget, (log[-3:], budget, done)


def run_in_process(capsys, *argv):
    from dubtrain import personalise as P
    code = P.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bad_inputs_exit_2_with_one_line_saying_what_to_do(demo_short, demo_small, tiny_dataset, dubfarm, tmp_path, capsys):
    few = build(dubfarm, tmp_path / "few", "--max-frames", "12")
    common = ["--out", str(tmp_path / "out"), "--seconds", "5"]

    def bad(*argv):
        code, out, err = run_in_process(capsys, *argv, *common)
        assert code == 2 and len(err.strip().splitlines()) == 1, (code, out, err)
        failed = json.loads(out)  # the only stdout line: says the same, for a caller under torchrun
        assert failed["event"] == "failed" and failed["reason"] == "unusable" and failed["message"] in err, (out, err)
        return err

    assert "only 12 frames with a face, at least 20" in bad("--base", BASE, "--data", few)
    assert "128 px" in bad("--base", BASE, "--data", tiny_dataset[0])
    assert "not a dataset" in bad("--base", BASE, "--data", str(tmp_path))
    half = tmp_path / "half"
    half.mkdir()
    (half / "manifest.json").write_bytes(open(os.path.join(BASE, "manifest.json"), "rb").read())
    assert "model.safetensors is missing" in bad("--base", str(half), "--data", demo_short)

    # A checkpoint made from another base, or from another clip, is refused.
    rc, _, err = personalise(demo_short, tmp_path / "ck", "--batch", "2", "--max-steps", "1", "--holdout", "0")
    assert rc == 0, err
    other = tmp_path / "other-base"
    other.mkdir()
    (other / "manifest.json").write_bytes(open(os.path.join(BASE, "manifest.json"), "rb").read())
    (other / "model.safetensors").write_bytes(open(tmp_path / "ck" / "model.safetensors", "rb").read())
    ck = str(tmp_path / "ck" / "checkpoint.pt")
    assert "made from other base weights" in bad("--base", str(other), "--data", demo_short, "--resume", ck)
    assert "made from another dataset" in bad("--base", BASE, "--data", demo_small, "--resume", ck)

    # The real process: exit status 2.
    r = subprocess.run([sys.executable, "-m", "dubtrain.personalise", "--base", str(half), "--data", demo_short, *common],
                       cwd=TRAINING, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "model.safetensors is missing" in r.stderr, r.stderr
    # stdout: the one line that says so, for a caller that sees torchrun's exit status instead.
    failed = json.loads(r.stdout)
    assert failed["event"] == "failed" and failed["reason"] == "unusable" and "model.safetensors is missing" in failed["message"]


# ----------------------------------------------------------------------------- torchrun, --device

@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A weights directory of the tiny-masked configuration (random weights, seed 0): a step on
    the 16-px demo clip takes milliseconds, so the distributed tests are about the machinery."""
    from dubtrain import weights
    from dubtrain.model import SwapTalk
    with open(os.path.join(TRAINING, "configs", "tiny-masked.json")) as f:
        manifest = json.load(f)
    torch.manual_seed(0)
    model = SwapTalk(manifest)
    out = tmp_path_factory.mktemp("tiny-base")
    (out / "manifest.json").write_text(json.dumps(manifest))
    weights.save_safetensors(str(out / "model.safetensors"), model.state_dict(), {"dubfarm.trained": "test"})
    return str(out)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rank:
    """One worker's `python -m torch.distributed.run --nnodes W --node-rank R --nproc-per-node 1 …
    -m dubtrain.personalise …`, as the farm launches it; stdout and stderr to files."""

    def __init__(self, tmp, rank, world, port, base, data, *flags, seconds=600):
        self.out, self.stdout, self.stderr = tmp / f"out{rank}", tmp / f"stdout{rank}", tmp / f"stderr{rank}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(world), "--node-rank", str(rank),
               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
               "-m", "dubtrain.personalise", "--base", base, "--data", data, "--out", str(self.out),
               "--seconds", str(seconds), "--threads", "1", "--batch", "4", *flags]
        with open(self.stdout, "w") as o, open(self.stderr, "w") as e:
            self.p = subprocess.Popen(cmd, cwd=TRAINING, stdout=o, stderr=e)

    def wait(self, timeout=120):
        return self.p.wait(timeout=timeout)

    def lines(self):
        return [json.loads(line) for line in self.stdout.read_text().splitlines()]

    def err(self):
        return self.stderr.read_text()

    def digest(self):
        """The sha256 of the trained tensors the rank logged at the end."""
        found = re.findall(r"trained tensors sha256 ([0-9a-f]{64})", self.err())
        assert len(found) == 1, self.err()[-3000:]
        return found[0]


def job(tmp, world, base, data, *flags, seconds=600):
    port = free_port()
    return [Rank(tmp, r, world, port, base, data, *flags, seconds=seconds) for r in range(world)]


def params_digest(ck):
    """What a rank logs as its trained tensors' sha256, from a checkpoint's (same order, float32)."""
    h = hashlib.sha256()
    for t in ck["params"].values():
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def plain_6(tiny_base, tiny_dataset, tmp_path_factory):
    """6 steps of the tiny base, plain (no torchrun), as the farm runs one worker."""
    out = tmp_path_factory.mktemp("plain") / "out"
    rc, lines, err = personalise(tiny_dataset[0], out, "--max-steps", "6", "--batch", "4", "--device", "cpu",
                                 "--threads", "1", base=tiny_base)   # as the ranks below (a thread count is a sum order)
    assert rc == 0, err
    assert lines[0]["device"] == "cpu" and lines[0]["world_size"] == 1 and lines[-1]["world_size"] == 1
    return out


def test_world_1_under_torchrun_is_the_plain_run(plain_6, tiny_base, tiny_dataset, tmp_path):
    (r,) = job(tmp_path, 1, tiny_base, tiny_dataset[0], "--max-steps", "6")
    assert r.wait() == 0, r.err()[-3000:]
    lines = r.lines()
    assert lines[0]["world_size"] == 1 and lines[-1]["event"] == "done" and lines[-1]["step"] == 6
    assert_same_state(checkpoint(plain_6), checkpoint(r.out))
    with safe_open(os.path.join(plain_6, "model.safetensors"), "pt") as a, \
            safe_open(os.path.join(r.out, "model.safetensors"), "pt") as b:
        for k in a.keys():
            assert torch.equal(a.get_tensor(k), b.get_tensor(k)), k
    assert [(x["step"], x["loss"]) for x in read_log(plain_6)] == [(x["step"], x["loss"]) for x in read_log(r.out)]


def test_two_ranks_stay_identical_and_rank_0_alone_reports(plain_6, tiny_base, tiny_dataset, tmp_path):
    """Two workers (--nnodes 2) resume a world-1 checkpoint and train 6 more steps together."""
    ranks = job(tmp_path, 2, tiny_base, tiny_dataset[0], "--max-steps", "12",
                "--resume", os.path.join(plain_6, "checkpoint.pt"))
    codes = [r.wait() for r in ranks]
    assert codes == [0, 0], [r.err()[-3000:] for r in ranks]
    lines = ranks[0].lines()
    assert lines[0]["event"] == "start" and lines[0]["resumed"] is True and lines[0]["step"] == 6
    assert lines[0]["world_size"] == 2 and lines[0]["device"] == "cpu"
    done = lines[-1]
    assert done["event"] == "done" and done["step"] == 12 and done["world_size"] == 2 and done["device"] == "cpu"
    assert done["holdout"]["frames"] == 19
    # Rank 1 says nothing on stdout and writes nothing.
    assert ranks[1].stdout.read_text() == "" and not ranks[1].out.exists()
    assert "rank 1 of 2: pid" in ranks[1].err()
    # The same parameters, bit for bit, on both ranks: those rank 0 checkpointed.
    ck = checkpoint(ranks[0].out)
    assert ck["step"] == 12 and ranks[0].digest() == ranks[1].digest() == params_digest(ck)
    assert "differ" not in ranks[0].err() + ranks[1].err()
    assert [int(x["step"]) for x in read_log(ranks[0].out)] == list(range(7, 13))  # rank 0 logs every step


def test_a_killed_peer_ends_the_survivor_whose_checkpoint_resumes_alone(tiny_base, tiny_dataset, tmp_path):
    r0, r1 = job(tmp_path, 2, tiny_base, tiny_dataset[0], "--checkpoint-every", "1", seconds=300)
    deadline, pid = time.monotonic() + 120, None
    while time.monotonic() < deadline:   # until both train: rank 1's pid on its stderr, rank 0 a checkpoint
        found = re.search(r"rank 1 of 2: pid (\d+)", r1.err())
        pid = int(found.group(1)) if found else None
        if pid and any(x["event"] == "checkpoint" for x in r0.lines()):
            break
        assert r0.p.poll() is None and r1.p.poll() is None, r0.err()[-2000:] + r1.err()[-2000:]
        time.sleep(0.2)
    assert pid, r1.err()
    os.kill(pid, signal.SIGKILL)   # rank 1's trainer (its torchrun then fails too)
    killed = time.monotonic()
    assert r0.wait(timeout=60) != 0, r0.err()[-3000:]
    assert time.monotonic() - killed < 60
    assert r1.wait(timeout=60) != 0
    lost = [line for line in r0.err().splitlines() if "lost its peers" in line]
    assert len(lost) == 1 and lost[0].startswith("personalise: rank 0 of 2 lost its peers: "), r0.err()[-3000:]
    lines = r0.lines()
    assert lines[-1]["event"] == "failed" and lines[-1]["reason"] == "peers", lines[-1]
    assert lines[-1]["message"].startswith("rank 0 of 2 lost its peers: ")
    assert lines[-2]["event"] == "checkpoint" and "done" not in [x["event"] for x in lines]
    ck = checkpoint(r0.out)
    assert ck["step"] == lines[-2]["step"] > 0
    # It resumes with world 1 (plainly) to the end.
    rc, resumed, err = personalise(tiny_dataset[0], r0.out, "--batch", "4", "--max-steps", str(ck["step"] + 3),
                                   "--resume", os.path.join(r0.out, "checkpoint.pt"), base=tiny_base)
    assert rc == 0, err
    assert resumed[0]["step"] == ck["step"] and resumed[0]["world_size"] == 1
    assert resumed[-1]["event"] == "done" and resumed[-1]["step"] == ck["step"] + 3


def test_sigterm_to_rank_0s_torchrun_checkpoints_first(tiny_base, tiny_dataset, tmp_path):
    """The farm stops a job by SIGTERM to the torchrun it started: rank 0's trainer checkpoints and
    exits 143, the other ranks stop at the same step (143); torchrun itself exits 1 either way."""
    r0, r1 = job(tmp_path, 2, tiny_base, tiny_dataset[0], "--checkpoint-every", "1000", seconds=300)
    deadline = time.monotonic() + 120
    while not any(x["event"] == "progress" and "phase" not in x and x["step"] >= 3 for x in r0.lines()):
        assert time.monotonic() < deadline and r0.p.poll() is None, r0.err()[-3000:]
        time.sleep(0.2)
    r0.p.send_signal(signal.SIGTERM)
    assert r0.wait(timeout=60) == 1 and r1.wait(timeout=60) == 1
    lines = r0.lines()
    assert lines[-1] == {"event": "failed", "reason": "stopped", "message": "rank 0 of 2: stopped by SIGTERM"}, lines[-1]
    assert lines[-2]["event"] == "checkpoint" and lines[-2]["step"] >= 3, lines
    assert checkpoint(r0.out)["step"] == lines[-2]["step"]
    assert "personalise: rank 0 of 2: stopped by SIGTERM" in r0.err()
    # Failed once under heavy load (2026-12-07, make test beside a training run): rank 1 said
    # something else; its whole account, for the next time.
    assert "personalise: rank 1 of 2: stopped by another rank's stop" in r1.err(), r1.err()[-4000:]
    assert r1.stdout.read_text() == ""


def test_the_end_of_stdin_stops_it_as_sigterm_does(tiny_base, tiny_dataset, tmp_path):
    """--stop-on-stdin-eof (the farm's worker holds a pipe to the trainer's stdin): when the pipe
    closes, the trainer checkpoints and exits 143, as on SIGTERM."""
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "dubtrain.personalise", "--base", tiny_base, "--data", tiny_dataset[0],
                          "--out", str(out), "--seconds", "300", "--threads", "1", "--batch", "2",
                          "--checkpoint-every", "1000", "--stop-on-stdin-eof"],
                         cwd=TRAINING, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for raw in p.stdout:
        lines.append(json.loads(raw))
        if lines[-1]["event"] == "progress" and "phase" not in lines[-1]:
            break
    p.stdin.close()
    p.wait(timeout=60)
    rest, err = p.stdout.read(), p.stderr.read()
    lines += [json.loads(line) for line in rest.splitlines()]
    assert p.returncode == 143, err
    assert lines[-1]["event"] == "failed" and lines[-1]["reason"] == "stopped", lines
    assert lines[-2]["event"] == "checkpoint" and checkpoint(out)["step"] == lines[-2]["step"] > 0, lines
    assert "stopped by the end of stdin" in err


def test_device_cpu_and_cuda_without_cuda(tiny_base, tiny_dataset, tmp_path, capsys):
    flags = ["--base", tiny_base, "--data", tiny_dataset[0], "--out", str(tmp_path / "out"), "--seconds", "5",
             "--threads", "1", "--max-steps", "1", "--batch", "2", "--holdout", "0"]
    code, out, err = run_in_process(capsys, *flags, "--device", "cpu")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["device"] == lines[-1]["device"] == "cpu"
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, out, err = run_in_process(capsys, *flags, "--device", "cuda")
    assert code == 2 and json.loads(out)["reason"] == "unusable" and len(err.strip().splitlines()) == 1, (code, out, err)
    assert err.startswith("personalise: --device cuda: PyTorch sees no CUDA device"), err
