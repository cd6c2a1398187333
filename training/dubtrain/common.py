"""What every stage shares: device and precision, distributed data parallel, checkpoints,
CSV logs, the progress line, and StageRun, the loop scaffolding around a stage's own step.
Nothing here knows about a particular model."""
import contextlib
import csv
import math
import os
import sys
import time

import torch
import torch.distributed as dist

try:
    from tqdm import tqdm
except ImportError:  # the trainer works without it (plain lines instead of a bar)
    tqdm = None


# ----------------------------------------------------------------------------- device, ranks

class Runtime:
    """Device, mixed precision and this process's place in a `torchrun` job.

    Started by `torchrun --nproc_per_node N train.py …`, each process trains on its own slice of
    every batch and gradients are averaged by DistributedDataParallel (NCCL on CUDA, gloo on CPU);
    only rank 0 writes checkpoints and logs.
    """

    def __init__(self, device="cpu", threads=0):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise SystemExit("train: --device cuda asked for, but PyTorch sees no CUDA device "
                                 "(this torch build: %s)" % torch.__version__)
            self.device = torch.device(f"cuda:{local}" if self.world > 1 or device == "cuda" else device)
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        else:
            self.device = torch.device("cpu")
            if threads > 0:
                torch.set_num_threads(threads)
        if self.world > 1 and not dist.is_initialized():
            # On CUDA, NCCL for CUDA tensors and gloo for any CPU tensor a collective is given.
            dist.init_process_group("cpu:gloo,cuda:nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world > 1

    def autocast(self):
        """bfloat16 autocast on CUDA; full float32 on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def wrap(self, module):
        """DistributedDataParallel around `module` in a torchrun job, else the module itself."""
        if not self.distributed:
            return module
        return torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def all_reduce_(self, *tensors):
        """Sums tensors over all processes in place (no-op alone)."""
        if self.distributed:
            for t in tensors:
                dist.all_reduce(t)

    def average_gradients_(self, params):
        """Averages the gradients of `params` over all processes (for models trained without a
        DistributedDataParallel wrapper); no-op alone."""
        if self.distributed:
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world

    def mean(self, value):
        """A float averaged over all processes."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], device=self.device)
        dist.all_reduce(t)
        return float(t) / self.world

    def any(self, flag):
        """True on every process if `flag` is true on any (so that all stop at the same step)."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([float(bool(flag))], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def check_same(self, tree, what):
        """Raises unless every tensor in `tree` (nested dicts and lists: a checkpoint's contents)
        is the same, bit for bit, on every process, so the checkpoint rank 0 writes stands for
        all of them; no-op alone."""
        if not self.distributed:
            return
        named = list(_tensors(tree))
        differ = []
        for name, t in named:
            ref = t.detach().clone()
            dist.broadcast(ref, 0)
            if not torch.equal(ref, t.detach()):
                differ.append(name)
        bad = torch.tensor([float(len(differ))], device=self.device)
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item() > 0:
            raise SystemExit(f"[{what}] the processes diverged: rank {self.rank} differs from rank 0 in "
                             f"{len(differ)} of {len(named)} tensors ({', '.join(differ[:5]) or 'none here'})")
        if self.main:
            print(f"[{what}] all {len(named)} tensors of the checkpoint are identical on the "
                  f"{self.world} processes", flush=True)

    def barrier(self):
        if self.distributed:
            dist.barrier()

    def close(self):
        if dist.is_initialized():
            dist.destroy_process_group()


def _tensors(tree, prefix=""):
    """(dotted name, tensor) of every tensor in nested dicts and lists, in order."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _tensors(v, f"{prefix}.{i}" if prefix else str(i))


def unwrap(module):
    return module.module if hasattr(module, "module") else module


def step_generator(seed, step, rank=0, salt=0):
    """The random numbers of one step: a function of (seed, step, rank), so a resumed run draws
    exactly the batches and noise it would have drawn without the interruption."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7919 + rank * 104_729 + salt * 15_485_863) % (2 ** 63))
    return g


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path, state):
    """Writes atomically (a crash mid-write leaves the previous checkpoint intact)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device="cpu"):
    if not os.path.exists(path):
        return None
    return torch.load(path, map_location=device, weights_only=False)


# ----------------------------------------------------------------------------- logs, progress

class CSVLog:
    """`log.csv` with a header `step,seconds,<names…>`; on resume, rows past the checkpoint's
    step (written after it, then lost with the process) are dropped so the curve stays one curve."""

    def __init__(self, path, names, resume_step=0, enabled=True):
        self.path, self.names, self.enabled = path, ["step", "seconds"] + list(names), enabled
        if not enabled:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rows = []
        if resume_step > 0 and os.path.exists(path):
            with open(path) as f:
                r = csv.reader(f)
                header = next(r, None)
                if header == self.names:
                    rows = [row for row in r if row and int(row[0]) <= resume_step]
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.names)
            w.writerows(rows)

    def write(self, step, seconds, values):
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([step, f"{seconds:.1f}"] + [_fmt(values.get(n)) for n in self.names[2:]])


def _fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def read_csv(path):
    """{column: [values]} of a log.csv (empty cells as NaN)."""
    with open(path) as f:
        r = csv.DictReader(f)
        cols = {n: [] for n in r.fieldnames}
        for row in r:
            for n in cols:
                cols[n].append(float(row[n]) if row[n] != "" else float("nan"))
    return cols


class Progress:
    """A tqdm bar on a terminal, a line every `every` steps otherwise (logs, CI, nohup)."""

    def __init__(self, stage, start, total, enabled=True, every=50):
        self.stage, self.total, self.every, self.enabled = stage, total, every, enabled
        self.bar = None
        self.t0 = time.time()
        self.start = start
        if enabled and tqdm is not None and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=start, desc=stage, dynamic_ncols=True)

    def update(self, step, values):
        if not self.enabled:
            return
        text = " ".join(f"{k} {v:.4g}" for k, v in values.items() if v is not None)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(text)
        elif step % self.every == 0 or step == self.total:
            rate = (step - self.start) / max(time.time() - self.t0, 1e-9)
            eta = (self.total - step) / rate if rate > 0 else float("inf")
            print(f"[{self.stage}] step {step}/{self.total}  {text}  ({rate:.2f} steps/s, eta {eta / 60:.1f} min)",
                  file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class StageClock:
    """Wall time of a stage across resumes (the checkpoint carries the seconds spent before)."""

    def __init__(self, spent=0.0, max_minutes=0.0):
        self.spent, self.t0, self.max_minutes = spent, time.time(), max_minutes
        self.session_t0 = self.t0

    @property
    def seconds(self):
        return self.spent + time.time() - self.t0

    def out_of_time(self):
        return self.max_minutes > 0 and time.time() - self.session_t0 > 60 * self.max_minutes


# ----------------------------------------------------------------------------- one stage's loop

class StageRun:
    """The scaffolding every stage's loop shares; the stage keeps its models, optimisers, step
    and validation:

        run = StageRun("sync", cfg, rt, run_dir, cfg.sync_steps)   # reads RUN/sync/ckpt.pt, if any
        run.restore(expert=expert, opt=opt)                        # resuming: the stage's parts
        if run.done:                                               # a finished stage is skipped
            return expert
        run.train(one_step, lambda: {"expert": expert.state_dict(), "opt": opt.state_dict()},
                  LOSSES, show=("loss",))

    `one_step(step)` trains step `step` (0-based; its random numbers from `step_generator`) and
    returns its values {name: float}. Every cfg.log_every steps and at the last, their mean over
    those steps and over the processes is a row of RUN/STAGE/log.csv, with what `report()` adds
    (read once a row) and, every cfg.val_every steps and at the last, what `validate()` adds (a
    validation step writes a row even between cfg.log_every steps); the
    progress line shows the row's `show` columns. The checkpoint RUN/STAGE/ckpt.pt is `state()`
    plus step, seconds and config, written by rank 0 every cfg.checkpoint_every steps, at the end,
    when --max-minutes is up and on any exception (Ctrl-C). In a torchrun job all processes stop
    at the same step, and at the end every tensor of the checkpoint must agree across them.
    """

    def __init__(self, stage, cfg, rt, run_dir, steps, device="cpu"):
        self.stage, self.cfg, self.rt, self.steps = stage, cfg, rt, steps
        self.path = f"{run_dir}/{stage}/ckpt.pt"
        self.log_path = f"{run_dir}/{stage}/log.csv"
        self.state = load_checkpoint(self.path, device)
        self.step, self.spent = 0, 0.0
        if self.state is not None:
            self.step, self.spent = self.state["step"], self.state["seconds"]
            if rt.main:
                print(f"[{stage}] resuming at step {self.step} ({self.spent / 60:.1f} min spent)", flush=True)

    def restore(self, **parts):
        """When resuming, loads each part (`expert=expert`) from its entry of the checkpoint."""
        if self.state is not None:
            for name, part in parts.items():
                part.load_state_dict(self.state[name])

    @property
    def done(self):
        return self.step >= self.steps

    def train(self, one_step, state, columns, show=(), report=None, validate=None):
        cfg, rt = self.cfg, self.rt
        log = CSVLog(self.log_path, columns, resume_step=self.step, enabled=rt.main)
        bar = Progress(self.stage, self.step, self.steps, enabled=rt.main)
        clock = StageClock(self.spent, cfg.max_minutes)

        def checkpoint():
            if rt.main:
                save_checkpoint(self.path, {**state(), "step": self.step, "seconds": clock.seconds,
                                            "config": cfg.to_dict()})

        acc = {}
        try:
            while self.step < self.steps:
                for k, v in one_step(self.step).items():
                    acc.setdefault(k, []).append(v)
                self.step += 1
                validating = validate is not None and (self.step % cfg.val_every == 0 or self.step == self.steps)
                # A validation step always writes a row: --val-every need not be a multiple of --log-every.
                if self.step % cfg.log_every == 0 or self.step == self.steps or validating:
                    row = {k: rt.mean(sum(v) / len(v)) for k, v in acc.items()}
                    acc = {}
                    if report is not None:
                        row.update(report())
                    if validating:
                        row.update(validate())
                    log.write(self.step, clock.seconds, row)
                    bar.update(self.step, {k: row[k] for k in show if k in row})
                if self.step % cfg.checkpoint_every == 0:
                    checkpoint()
                if cfg.max_minutes > 0 and rt.any(clock.out_of_time()):
                    if rt.main:
                        print(f"[{self.stage}] --max-minutes reached at step {self.step}; "
                              "resume with the same command", flush=True)
                    break
            rt.check_same(state(), self.stage)
        finally:
            checkpoint()
            bar.close()
