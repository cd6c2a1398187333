"""Per-job personalisation: fine-tunes a weights directory on the job's own footage.

    python -m dubtrain.personalise --base MODEL_DIR --data DATASET_DIR --out OUT_DIR --seconds N
           [--checkpoint-every SECONDS (60)] [--resume CHECKPOINT_FILE] [--threads N]
           [--holdout 0.15] [--seed 0] [--batch 8] [--lr 3e-4] [--lip-lr 1e-5] [--max-steps N]
           [--codebooks false] [--device auto|cpu|cuda] [--dist-timeout 120] [--stop-on-stdin-eof]

(with training/ as the working directory or on PYTHONPATH). MODEL_DIR is a weights directory
(manifest.json + model.safetensors, e.g. models/dubfarm-small); DATASET_DIR a `dubfarm dataset
build` directory made from ONE video, the job's own clip (docs/dataset.md: its crops and the mel
windows of its own audio). The last --holdout fraction of its frames, in frame order, is held back
and never trained on; the rest trains, self-supervised, with the encoder and the audio encoder
frozen:

  decoder   `post_quant_conv` and the VQGAN decoder reconstruct the clip's crops from the frozen
            encoder's quantised codes: L1 + 0.4·(1 − SSIM), the vqgan stage's loss without its GAN
            (--lr)
  lip sync  the UNet redraws each frame's lower-half codes from its own audio and another frame
            of the clip ≥ 5 frames away as reference: code MSE + 0.1·cross-entropy, the lipsync
            stage's loss (its sync expert is a training-only model, not in MODEL_DIR) (--lip-lr)
  codebooks only with --codebooks true: EMA updates towards the clip's encodings

Training stops when the wall-clock budget --seconds of training is spent (counted across resumes:
load, encoding the frames, measuring and writing the weights are not counted) or at --max-steps.
Each step's batch comes from a generator seeded by (--seed, step), so a resumed run draws what an
uninterrupted one would have and ends with the same weights.

stdout carries one JSON object per line, flushed, and nothing else (logs and warnings go to
stderr):

  {"event":"start","step":S,"resumed":bool,"frames":TRAIN_FRAMES,"holdout_frames":H,"budget_seconds":N,"elapsed":E,
   "device":"cpu"|"cuda","world_size":W}
  {"event":"progress","step":S,"loss":X,"elapsed":E,"budget_seconds":N}
        about once a second while training (once a step when a step takes longer; loss: the mean
        over the steps since the last line); while the frames are encoded before training and
        measured after it, the same line with "loss":null and "phase":"setup" / "measure"
  {"event":"checkpoint","step":S,"elapsed":E,"path":"OUT_DIR/checkpoint.pt"}
        after the file is completely written (temporary name, fsync, rename); every
        --checkpoint-every seconds of training and at the end
  {"event":"done","step":S,"elapsed":E,"weights":"OUT_DIR/model.safetensors","holdout":{...},"device":D,"world_size":W}
        the last line. holdout (null with --holdout 0): on the held-out frames, each run as the
        dub stage runs it on the frame with its own audio (encode, quantise, lip sync with the
        frame as reference, decode, round to 8 bits), before and after: psnr_* the face crop's
        PSNR in dB (mean over frames), psnr_blend_* the same after the dub stage's lower-face
        blend of the output into the original crop, psnr_codes_* the crop decoded from its own
        codes without lip sync (the VQGAN alone), code_ce_* and token_accuracy_* the UNet's
        cross-entropy and accuracy against the frame's own lower-half codes, audio_effect_* how
        much the UNet's output moves when another frame's audio drives it (mean |Δ| of the
        lower-half grid: near 0 would mean it stopped listening); plus "frames"
  {"event":"failed","reason":"unusable"|"stopped"|"peers","message":M}
        the last line instead of done when the run ends otherwise (exit 2, 143 and 1 below;
        not for a crash): under torchrun the exit status is torchrun's own (1 for any failure),
        so the reason is told here

OUT_DIR/model.safetensors has the base's tensor names, shapes and dtype (float16) and its
metadata, plus `dubfarm.personalised` = {"base_sha256", "steps", "seconds", "frames", "holdout"};
OUT_DIR/manifest.json is the base's. OUT_DIR/checkpoint.pt holds what a resume needs besides
--base and --data (the trained tensors in float32, optimiser state, step, elapsed training
seconds, the config the curve depends on, the sha256 of the base's model.safetensors and of the
frames); --resume takes its --holdout, --seed, --batch, --lr and --codebooks over the command
line's. OUT_DIR/log.csv has every step's losses.

Exit status: 0 done; 2 unusable input (missing base files, a dataset of another crop size, of
several clips or of fewer than 20 frames with a face, a checkpoint of another base or dataset,
--device cuda where PyTorch sees no CUDA device), with one line on stderr saying what is wrong and
what to do; 143 after SIGTERM (a checkpoint is written first unless the last one is current) and,
with --stop-on-stdin-eof, after stdin reaches its end (the same way: the process that started this
one holds a pipe to its stdin, so its death stops the trainer rather than orphaning it); 1
anything else.

--device auto (the default) is cuda when torch.cuda.is_available(), else cpu: the model, the
batches and the held-out measure all run there. Checkpoints hold CPU tensors, so a run resumes on
either device.

Data-parallel: started by torchrun (`python -m torch.distributed.run --nnodes W --node-rank R
--nproc-per-node 1 --master-addr HOST --master-port PORT -m dubtrain.personalise …`, every rank
given the same --base, --data, --resume and flags, each its own --out), with WORLD_SIZE > 1 the
ranks join one process group (gloo; nccl on cuda) with --dist-timeout seconds as its timeout, and
check first that they were given the same base, frames, settings and starting state (exit 2
otherwise). Each step every rank draws its own batch (generator seeded by (--seed, step, rank):
rank 0 draws what a lone run draws) and the trained parameters' gradients, with the step's loss
values, are averaged over the ranks in one all_reduce before the same optimiser step everywhere,
so the parameters stay identical on every rank (each rank logs a sha256 of them on stderr at the
end; a difference is reported). An effective batch is thus W × --batch at unchanged learning
rates. Before each step one small all_reduce makes every rank agree whether to stop: SIGTERM (or,
with --stop-on-stdin-eof, the end of stdin, which torchrun's trainer inherits) on any rank, or
--max-steps / the budget on rank 0's clock; a checkpoint needs no collective (the others wait for
it at the next step). Rank 0 alone writes the stdout lines,
checkpoint.pt, log.csv, model.safetensors and manifest.json and measures the held-out frames; the
other ranks print nothing on stdout, write nothing, and exit 0 when done (143 after a SIGTERM
anywhere). A checkpoint has the same content whatever the world size and resumes under any world
size. If a peer goes away (killed, its machine lost) a collective fails — at once when its
process dies, after --dist-timeout when its machine falls silent — and each survivor writes one
stderr line `personalise: rank R of W lost its peers: WHY` and exits 1, rank 0 after writing a
checkpoint of the last step all ranks finished, if the last one written is older. torchrun itself
exits 1 whenever its worker exits non-zero (2 and 143 included), and 1 too when it gets SIGTERM
(after its worker's checkpoint and exit 143): under torchrun the JSON lines, not the exit status,
say what happened.
"""
import argparse
import dataclasses
import copy
import datetime
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import weights
from .common import CSVLog, _tensors, step_generator
from .config import TrainConfig
from .data import FaceDataset
from .lipsync import code_losses, references
from .model import EMACodebook, SwapTalk, ssim, swaptalk

FORMAT = "dubfarm-personalise/1"
MIN_FRAMES = 20
DECODER, UNET = ("post_quant_conv.", "decoder."), ("lipsync.",)  # everything else stays the base's
STAGES = TrainConfig()   # the training stages' loss weights, used as they are
LIP_FRAMES = 4           # the UNet sees this many frames per decoder crop (a frame costs it ~1/20 of the decoder's)
COLUMNS = ["loss", "l1", "ssim", "code_mse", "code_ce", "token_accuracy", "dead_codes"]


@dataclass
class Config:
    base: str = ""
    data: str = ""
    out: str = ""
    seconds: float = 0.0
    checkpoint_every: float = 60.0
    resume: str = ""
    threads: int = 0
    holdout: float = 0.15
    seed: int = 0
    batch: int = 8
    # Learning rates, measured on sadtalker_WDA_EdMarkey0_000 (a held-out speaker of dubfarm-small;
    # 200 frames, the last 30 held out; batch 8). Held-out PSNR before: 17.89 dB lip-synced,
    # 20.82 dB decoded from the frames' own codes. The decoder at 3e-4 brings the latter to 26.33
    # by step 20 and 27.78 by step 100; at 1e-3 to 24.18 by step 20. The UNet overfits the clip:
    # at 3e-4 its held-out cross-entropy goes 15.44 -> 14.55 (step 20) -> 21.75 (step 70) and the
    # lip-synced PSNR falls with it (20.72 -> 19.48); at 3e-5 it is best at steps 20-40 (12.56)
    # and back to 14.81 by step 100 (PSNR 21.68 -> 20.73); at 1e-5 it is 12.55 at step 40 (PSNR
    # 21.88) and 12.46 at step 84. Frozen (--lip-lr 0): PSNR 20.73 at step 20, 21.03 at 100.
    lr: float = 3e-4         # the decoder's
    lip_lr: float = 1e-5     # the lip-sync UNet's (0: the base's UNet unchanged)
    max_steps: int = 0
    # EMA updates of both codebooks on the clip (the vqgan stage's, decay 0.99, dead-code restarts).
    # Off: on the same clip at step 40 (lip lr 1e-5) they gained 0.02 dB lip-synced (21.90 against
    # 21.88) and 0.03 dB decoded from the codes (27.17 against 27.14), within the noise of one step.
    codebooks: bool = False
    device: str = "auto"     # auto | cpu | cuda (auto: cuda when torch.cuda.is_available())
    dist_timeout: float = 120.0  # seconds a collective waits for the other ranks (torchrun jobs)
    stop_on_stdin_eof: bool = False  # stdin's end stops the run as SIGTERM does


# What a resumed run takes from its checkpoint, not from its command line: the curve depends on them.
CURVE = ("holdout", "seed", "batch", "lr", "lip_lr", "codebooks")


class Unusable(Exception):
    """Input personalisation cannot use (exit 2, the message on one stderr line)."""


class Terminated(Exception):
    pass


class PeerLost(Exception):
    """A collective with the other ranks failed: a peer died or fell silent (exit 1)."""


# ----------------------------------------------------------------------------- device, ranks

def pick_device(name):
    if name not in ("auto", "cpu", "cuda"):
        raise Unusable(f"--device {name}: auto, cpu or cuda")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise Unusable(f"--device cuda: PyTorch sees no CUDA device (torch {torch.__version__}, {build}); "
                       "run with --device cpu (or auto), or on a machine with a GPU")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def _why(e):
    """An exception as a short line (a backend's message may run to many lines)."""
    text = " ".join(str(e).split()).split(" This is typically caused")[0] or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class Ranks:
    """This process's place in a torchrun job (RANK, WORLD_SIZE) and the few collectives a
    data-parallel personalisation needs. Alone (no torchrun, or WORLD_SIZE 1) there is no process
    group and every collective returns its input unchanged: the run is the plain one, bit for bit.
    A collective that fails raises PeerLost."""

    def __init__(self, device, timeout):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0")) if self.world > 1 else 0
        self.device, self.backend, self.lost = device, None, False
        if self.world > 1:
            self.backend = "nccl" if device.type == "cuda" else "gloo"
            if self.backend == "nccl":
                # a timed-out collective raises in this thread (and is reported) rather than the
                # watchdog aborting the process
                os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
            self._do("joining the process group", lambda: dist.init_process_group(
                self.backend, timeout=datetime.timedelta(seconds=timeout)))

    @property
    def main(self):
        return self.rank == 0

    def _do(self, what, fn):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - whatever the backend raises, the peers are gone
            self.lost = True
            raise PeerLost(f"{what}: {_why(e)}") from e

    def agree(self, terminate, over):
        """(terminate, over) as all ranks see them: terminate if any rank got SIGTERM; over (the
        budget or --max-steps reached) as rank 0 says, on its clock."""
        if self.world == 1:
            return terminate, over
        t = torch.tensor([float(terminate), float(over and self.main)], device=self.device)
        self._do("agreeing whether to stop", lambda: dist.all_reduce(t, op=dist.ReduceOp.MAX))
        return bool(t[0].item()), bool(t[1].item())

    def average_(self, params, values):
        """Averages the gradients of `params` over the ranks in place and returns `values` (the
        step's losses, {name: float}) averaged too: one all_reduce of one flat buffer."""
        if self.world == 1:
            return values
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads] +
                         [torch.tensor(list(values.values()), dtype=grads[0].dtype, device=self.device)])
        self._do("averaging the gradients", lambda: dist.all_reduce(flat))
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return dict(zip(values, flat[offset:].tolist()))

    def all_reduce_(self, *tensors):
        """Sums tensors over the ranks in place (the EMA codebooks' statistics)."""
        for t in tensors if self.world > 1 else ():
            self._do("summing the codebook statistics", lambda: dist.all_reduce(t))

    def differ(self, digest, what):
        """Whether the ranks' sha256 digests (hex) of `what` differ anywhere (every rank learns it)."""
        if self.world == 1:
            return False
        mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.int64, device=self.device)
        ref = mine.clone()
        self._do(f"comparing {what}", lambda: dist.broadcast(ref, 0))
        bad = torch.tensor([float(not torch.equal(ref, mine))], device=self.device)
        self._do(f"comparing {what}", lambda: dist.all_reduce(bad, op=dist.ReduceOp.MAX))
        return bool(bad.item())

    def close(self):
        if dist.is_initialized() and not self.lost:
            dist.destroy_process_group()


def digest(*parts):
    """sha256 (hex) of tensors and strings, in order (tensors by their bytes, on the CPU)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            h.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(str(part).encode())
    return h.hexdigest()


def to_cpu(tree):
    """Nested dicts and lists with every tensor on the CPU (a checkpoint resumes on any device)."""
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        return {k: to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


# ----------------------------------------------------------------------------- stdout protocol

class Protocol:
    """One JSON object per line on the real stdout, flushed; progress lines at most once a second.
    With no stream (a torchrun job's other ranks) nothing is written."""

    def __init__(self, stream, budget):
        self.stream, self.budget, self.last = stream, budget, -math.inf

    def emit(self, event, **fields):
        if self.stream is None:
            return
        self.stream.write(json.dumps({"event": event, **fields}, allow_nan=False, separators=(",", ":")) + "\n")
        self.stream.flush()

    def progress(self, step, loss, elapsed, phase=None, every=1.0):
        if time.monotonic() - self.last < every:
            return False
        self.last = time.monotonic()
        extra = {"phase": phase} if phase else {}
        self.emit("progress", step=step, loss=loss, elapsed=round(elapsed, 3), budget_seconds=self.budget, **extra)
        return True


class StopFlag:
    """SIGTERM sets it (and, with --stop-on-stdin-eof, stdin's end); the run checks it between
    steps and at each stage of setup."""

    def __init__(self):
        self.set, self.why = False, ""

    def __call__(self, signum, frame):
        self.why = self.why or "SIGTERM"
        self.set = True

    def watch_stdin(self):
        """Sets the flag when stdin reaches its end (a daemon thread reads and discards it)."""
        def read():
            try:
                while os.read(sys.stdin.fileno(), 65536):
                    pass
            except (OSError, ValueError, AttributeError):
                pass
            self.why = self.why or "the end of stdin"
            self.set = True
        threading.Thread(target=read, name="stdin-eof", daemon=True).start()


# ----------------------------------------------------------------------------- inputs

def load_base(directory):
    try:
        manifest, state, metadata, sha = weights.load(directory)
    except FileNotFoundError as e:
        raise Unusable(f"--base {directory}: {e.args[0]} is missing; give a weights directory "
                       "(manifest.json + model.safetensors), e.g. models/dubfarm-small")
    model = SwapTalk(manifest)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise Unusable(f"--base {directory}: model.safetensors does not fit its manifest.json "
                       f"(missing {', '.join(missing[:3]) or 'none'}; unexpected {', '.join(unexpected[:3]) or 'none'})")
    return manifest, model, metadata, sha


def load_clip(directory, image_size):
    try:
        data = FaceDataset(directory)
    except SystemExit as e:
        raise Unusable(f"--data {directory}: {str(e).removeprefix('train: ')}")
    clips = data.index["clips"]
    if len(clips) != 1:
        raise Unusable(f"--data {directory} holds {len(clips)} clips; personalisation trains on the job's own "
                       "video: build a dataset of that one video (`dubfarm dataset build VIDEO --out DIR`)")
    if data.image_size != image_size:
        raise Unusable(f"--data {directory} has {data.image_size}-px crops, the base model takes {image_size} px: "
                       f"rebuild it with the base's --config (`dubfarm dataset build VIDEO --out DIR --config NAME`)")
    if len(data) < MIN_FRAMES:
        raise Unusable(f"--data {directory}: only {len(data)} frames with a face, at least {MIN_FRAMES} are needed; "
                       "give a longer clip (or dub without personalisation)")
    if clips[0].get("variableFrameRate"):
        print(f"personalise: {clips[0]['name']} has a variable frame rate: its mel windows drift from the picture",
              file=sys.stderr)
    return data


def fingerprint(data):
    """sha256 of the frames themselves (crops, mel windows, frame numbers): the same on any machine
    that built the dataset from the same video, whatever its paths."""
    h = hashlib.sha256()
    for t in (data.crops, data.mel, data.frame):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def split(data, holdout):
    """(training frames, held-out frames): the last `holdout` fraction, in frame order, held out."""
    n = len(data)
    k = 0 if holdout <= 0 else min(n - 1, max(1, round(holdout * n)))

    def part(sel):
        p = copy.copy(data)
        for name in ("crops", "mel", "landmarks", "has_landmarks", "frame", "clip", "speaker"):
            setattr(p, name, getattr(data, name)[sel])
        p._index_clips()
        return p

    return part(slice(0, n - k)), (part(slice(n - k, n)) if k else None)


def load_resume(path, cfg, base_sha, data_sha):
    if not os.path.isfile(path):
        raise Unusable(f"--resume {path}: no such file; start without --resume")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same answer
        raise Unusable(f"--resume {path}: not a readable checkpoint ({type(e).__name__}); start without --resume")
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise Unusable(f"--resume {path}: not a personalisation checkpoint; start without --resume")
    if ck["base_sha256"] != base_sha:
        raise Unusable(f"--resume {path} was made from other base weights (sha256 {ck['base_sha256'][:12]}…, "
                       f"--base has {base_sha[:12]}…): resume with the --base it was made from, or start without --resume")
    if ck["data_sha256"] != data_sha:
        raise Unusable(f"--resume {path} was made from another dataset (its frames differ from --data's): "
                       "resume with the --data it was made from, or start without --resume")
    for k in CURVE:
        if getattr(cfg, k) != ck["config"][k]:
            print(f"personalise: --{k.replace('_', '-')} {ck['config'][k]} from the checkpoint "
                  f"(not {getattr(cfg, k)})", file=sys.stderr)
            setattr(cfg, k, ck["config"][k])
    return ck


# ----------------------------------------------------------------------------- model pieces

def quantize(quantizer, z):
    """(quantised grid, indices [B, h·w]) with the engine's nearest-code rule."""
    idx = quantizer.distances(z).argmin(1).reshape(z.shape[0], -1)
    return swaptalk.grid(quantizer.embedding.weight[idx], z.shape), idx


@torch.no_grad()
def encode(model, data, tick):
    """The frozen encoder's outputs of both halves of every frame and the frozen audio
    encoder's tokens of its mel window, once (they never change)."""
    s = data.image_size
    zu, zl, audio = [], [], []
    device = next(model.parameters()).device
    for rows in torch.arange(len(data)).split(8):
        x = data.images(rows).to(device)
        zu.append(model.encode(x[:, :, : s // 2]))
        zl.append(model.encode(x[:, :, s // 2:]))
        audio.append(model.audio(data.mel_frames(rows).to(device)))
        tick()
    return torch.cat(zu), torch.cat(zl), torch.cat(audio)


def lower_face_weight(size):
    """The dub stage's lower-face blend weight at each crop pixel (FaceWarp's BlendMask.lowerFace)."""
    c = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    v, u = c.view(-1, 1), c.view(1, -1)

    def smoothstep(e0, e1, x):
        t = ((x - e0) / (e1 - e0)).clamp(0, 1)
        return t * t * (3 - 2 * t)

    r = (((u - 0.5) / 0.29) ** 2 + ((v - 0.66) / 0.27) ** 2).sqrt()
    return ((1 - smoothstep(0.75, 1.0, r)) * smoothstep(0.54, 0.62, v)).float()


def to_u8(img):
    """Decoder output [B, 3, S, S] -> 8-bit values [B, S, S, 3], rounded as ImageTensor.crop rounds."""
    return torch.floor((img.clamp(-1, 1) + 1) * 127.5 + 0.5).permute(0, 2, 3, 1)


def psnr_u8(a, b):
    """Per-image PSNR (dB, peak 255) of uint8-valued tensors [B, S, S, 3]."""
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(255.0 ** 2 / mse.clamp_min(1e-10))


@torch.no_grad()
def measure(model, held, zu, zl, audio):
    """The held-out frames as the dub stage runs them with their own audio (reference = the frame
    itself), before any blend: see the module docstring."""
    lower_cb = model.quantize_lower.embedding.weight
    device = lower_cb.device
    weight = lower_face_weight(held.image_size).view(1, held.image_size, held.image_size, 1).to(device)
    ps, pb, pc, ce, acc, effect = [], [], [], [], [], []
    n = len(held)
    for rows in torch.arange(n, device=device).split(16):
        qu, _ = quantize(model.quantize_upper, zu[rows])
        ql, il = quantize(model.quantize_lower, zl[rows])
        out = model.lipsync(ql, ql, audio[rows])
        _, c, a = code_losses(out, ql, il, lower_cb)
        ce.append(float(c) * len(rows))
        acc.append(a.reshape(len(rows), -1).mean(1))
        other = (rows + max(1, n // 2)) % n   # another held-out frame's audio
        effect.append((model.lipsync(ql, ql, audio[other]) - out).abs().flatten(1).mean(1))
        orig = held.crops[rows.cpu()].to(device).double()
        u8 = to_u8(model.decode(torch.cat([qu, out], dim=2)))
        ps.append(psnr_u8(u8, orig))
        pb.append(psnr_u8((orig + weight * (u8 - orig)).round().clamp(0, 255), orig))
        pc.append(psnr_u8(to_u8(model.decode(torch.cat([qu, ql], dim=2))), orig))
    return {"psnr": float(torch.cat(ps).mean()), "psnr_blend": float(torch.cat(pb).mean()),
            "psnr_codes": float(torch.cat(pc).mean()),
            "code_ce": sum(ce) / n, "token_accuracy": float(torch.cat(acc).mean()),
            "audio_effect": float(torch.cat(effect).mean())}


# ----------------------------------------------------------------------------- checkpoint

def write_atomically(path, write):
    """write(temporary path) makes PATH.tmp; it is fsynced and renamed over PATH, so PATH is always
    either the previous file or the complete new one."""
    tmp = path + ".tmp"
    write(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as an ordinary file (safetensors writes its files 0600)
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(os.path.dirname(os.path.abspath(path)))


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- the run

def run(cfg, proto, stop, ranks):
    if not cfg.seconds > 0:
        raise Unusable(f"--seconds {cfg.seconds}: the training budget must be positive")
    if not 0 <= cfg.holdout < 1:
        raise Unusable(f"--holdout {cfg.holdout}: a fraction in [0, 1) is needed")
    if cfg.batch < 1:
        raise Unusable(f"--batch {cfg.batch}: at least 1")
    t_start = time.monotonic()
    device = ranks.device
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    manifest, model, metadata, base_sha = load_base(cfg.base)
    model.to(device)
    data = load_clip(cfg.data, manifest["imageSize"])
    data_sha = fingerprint(data)
    ck = load_resume(cfg.resume, cfg, base_sha, data_sha) if cfg.resume else None
    train, held = split(data, cfg.holdout)
    n_held = len(held) if held else 0
    if not ranks.main:
        proto.stream, held = None, None   # rank 0 alone reports and measures
    else:
        os.makedirs(cfg.out, exist_ok=True)
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    where = f"rank {ranks.rank} of {ranks.world}: " if ranks.world > 1 else ""

    trained = DECODER + (UNET if cfg.lip_lr > 0 else ())
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith(trained))
    dec_params = [p for n, p in model.named_parameters() if n.startswith(DECODER)]
    lip_params = [p for n, p in model.named_parameters() if n.startswith(UNET) and cfg.lip_lr > 0]
    trained_params = dec_params + lip_params
    opt = torch.optim.Adam([{"params": dec_params, "lr": cfg.lr}] + ([{"params": lip_params, "lr": cfg.lip_lr}] if lip_params else []))
    codebooks = []
    if cfg.codebooks:
        codebooks = [EMACodebook(model.quantize_upper.embedding, STAGES.vq_ema_decay, STAGES.vq_dead_code_threshold),
                     EMACodebook(model.quantize_lower.embedding, STAGES.vq_ema_decay, STAGES.vq_dead_code_threshold)]
        for cb in codebooks:
            cb.initialised = True  # they start from the base's codes, not from a batch
    saved = [n for n, _ in model.named_parameters() if n.startswith(trained)] + \
            (["quantize_upper.embedding.weight", "quantize_lower.embedding.weight"] if cfg.codebooks else [])
    step, spent, before, step_time = 0, 0.0, None, 0.0
    if ck is not None:
        with torch.no_grad():
            named = dict(model.named_parameters())
            for n in saved:
                named[n].copy_(ck["params"][n].to(device))
        opt.load_state_dict(ck["opt"])
        for cb, s in zip(codebooks, ck["codebooks"]):
            cb.load_state_dict(s)
        torch.set_rng_state(ck["torch_rng"])
        step, spent, before, step_time = ck["step"], ck["elapsed"], ck["holdout_before"], ck.get("step_seconds", 0.0)
    current = ck is not None and os.path.abspath(cfg.resume) == os.path.abspath(ckpt_path)
    consistent = True   # False between a step's first change to the state and its step += 1

    def state():
        return {"format": FORMAT, "step": step, "elapsed": spent, "config": dataclasses.asdict(cfg),
                "base_sha256": base_sha, "data_sha256": data_sha,
                "params": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if n in saved},
                "opt": to_cpu(opt.state_dict()), "codebooks": [to_cpu(cb.state_dict()) for cb in codebooks],
                "holdout_before": before, "torch_rng": torch.get_rng_state(),
                "step_seconds": step_time,   # how long the last steps took (a resumed run's first estimate)
                # the batches' random numbers: step_generator(seed, step, 0, salt=11); nothing else is drawn
                "generator": {"seed": cfg.seed, "step": step}}

    def checkpoint():
        nonlocal current
        s = state()
        write_atomically(ckpt_path, lambda tmp: torch.save(s, tmp))
        current = True
        proto.emit("checkpoint", step=step, elapsed=round(spent, 3), path=ckpt_path)

    def check_stop(setup=False):
        if stop.set and not (setup and not ranks.main):  # other ranks stop where all agree to
            if ranks.main and not current:
                checkpoint()
            raise Terminated()

    def trained_digest():
        return digest(*[p for n, p in model.named_parameters() if n in saved])

    # The ranks start from the same weights, frames and settings (the same --base, --data, --resume
    # and flags), or their parameters would part.
    if ranks.world > 1:
        start = digest(base_sha, data_sha, step, json.dumps({k: getattr(cfg, k) for k in CURVE}, sort_keys=True),
                       trained_digest(), *[t for _, t in _tensors(opt.state_dict()["state"])],
                       *[t for cb in codebooks for _, t in _tensors(cb.state_dict())])
        if ranks.differ(start, "the starting state"):
            raise Unusable(f"{where}the ranks were not given the same --base, --data, --resume and settings "
                           f"(this rank's starting state has sha256 {start[:12]}…): give every rank the same")

    proto.emit("start", step=step, resumed=ck is not None, frames=len(train), holdout_frames=n_held,
               budget_seconds=cfg.seconds, elapsed=round(spent, 3), device=device.type, world_size=ranks.world)
    if ranks.world > 1:
        print(f"personalise: {where}pid {os.getpid()}, {ranks.backend} on {device}", file=sys.stderr, flush=True)

    def setup_tick():
        proto.progress(step, None, spent, phase="setup")
        check_stop(setup=True)

    zu, zl, audio = encode(model, data, setup_tick)
    n_train = len(train)
    zu_t, zl_t, audio_t = zu[:n_train], zl[:n_train], audio[:n_train]
    if held is not None and before is None:
        before = measure(model, held, zu[n_train:], zl[n_train:], audio[n_train:])
    print(f"personalise: {where}{data.index['clips'][0]['name']}: {n_train} frames to train on, "
          f"{n_held} held out; "
          f"setup {time.monotonic() - t_start:.1f} s"
          + (f"; held-out PSNR {before['psnr']:.2f} dB before" if before else ""), file=sys.stderr)
    check_stop(setup=True)

    def one_step(step):
        nonlocal consistent
        # each rank its own batch; rank 0 the one a lone run draws
        g = step_generator(cfg.seed, step, ranks.rank, salt=11)
        # the decoder: the clip's crops from their quantised codes
        rows = torch.randint(0, n_train, (cfg.batch,), generator=g)
        x = train.images(rows).to(device)
        rows = rows.to(device)
        qu, iu = quantize(model.quantize_upper, zu_t[rows])
        ql, il = quantize(model.quantize_lower, zl_t[rows])
        rec = model.decode(torch.cat([qu, ql], dim=2))
        l1 = F.l1_loss(rec, x)
        s = ssim(rec, x)
        loss = l1 + STAGES.vq_ssim_weight * (1 - s)
        values = {"l1": l1.item(), "ssim": s.item()}
        if lip_params:
            # the lip-sync UNet: each frame's lower half from its own audio and a reference ≥ 5 frames away
            lrows = torch.randint(0, n_train, (LIP_FRAMES * cfg.batch,), generator=g)
            refs = references(train, lrows, 1, STAGES.lip_reference_min_gap, g).to(device)
            lrows = lrows.to(device)
            target, target_idx = quantize(model.quantize_lower, zl_t[lrows])
            ref, _ = quantize(model.quantize_lower, zl_t[refs])
            out = model.lipsync(target, ref, audio_t[lrows])
            mse, ce, acc = code_losses(out, target, target_idx, model.quantize_lower.embedding.weight)
            loss = loss + STAGES.lip_code_weight * mse + STAGES.lip_ce_weight * ce
            values.update(code_mse=mse.item(), code_ce=ce.item(), token_accuracy=float(acc.mean()))
        values = {"loss": loss.item(), **values}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        values = ranks.average_(trained_params, values)   # the ranks' gradients and losses, averaged
        for group in opt.param_groups:
            torch.nn.utils.clip_grad_norm_(group["params"], 1.0)
        consistent = False
        opt.step()
        if codebooks:
            values["dead_codes"] = codebooks[0].update(zu_t[rows], iu.reshape(-1), ranks, g) + \
                codebooks[1].update(zl_t[rows], il.reshape(-1), ranks, g)
        return values

    log = CSVLog(os.path.join(cfg.out, "log.csv"), COLUMNS, resume_step=step, enabled=ranks.main)
    t0, start_spent = time.monotonic(), spent
    last_ckpt, losses, recent = spent, [], []
    try:
        while True:
            # Stop? SIGTERM on any rank; --max-steps or the budget on rank 0's clock.
            now = start_spent + time.monotonic() - t0
            over = bool(cfg.max_steps and step >= cfg.max_steps) or now + step_time > cfg.seconds
            terminate, over = ranks.agree(stop.set, over)
            if terminate and not stop.set:
                stop.why, stop.set = "another rank's stop (SIGTERM or the end of its stdin)", True
            check_stop()
            spent = now
            if over:   # --max-steps, or the next step would overrun the budget
                break
            ts = time.monotonic()
            values = one_step(step)
            step += 1
            current, consistent = False, True
            recent = (recent + [time.monotonic() - ts])[-10:]
            step_time = max(recent)  # a cautious estimate of the next step (a busy machine's steps vary)
            spent = start_spent + time.monotonic() - t0
            log.write(step, spent, values)
            losses.append(values["loss"])
            if proto.progress(step, sum(losses) / len(losses), spent):
                losses = []
            if ranks.main and spent - last_ckpt >= cfg.checkpoint_every:
                checkpoint()
                last_ckpt = spent
    except PeerLost:
        if ranks.main and consistent and not current and step > 0:
            checkpoint()   # the last step every rank finished
        raise
    final = trained_digest()
    print(f"personalise: {where}step {step}, trained tensors sha256 {final}", file=sys.stderr, flush=True)
    try:
        if ranks.differ(final, "the trained tensors"):
            print(f"personalise: {where}the ranks' trained tensors differ (a rank's sha256 is not rank 0's): "
                  "rank 0's are the result", file=sys.stderr, flush=True)
    except PeerLost as e:
        if not ranks.main:
            raise
        print(f"personalise: {where}could not compare the trained tensors with the other ranks ({e}); "
              "finishing alone", file=sys.stderr, flush=True)
    if not ranks.main:
        return
    if not current:
        checkpoint()

    # What the engine will run: the float16 weights.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in saved:
                p.copy_(p.half().float())
    after = None
    if held is not None:
        proto.progress(step, None, spent, phase="measure", every=0)
        after = measure(model, held, zu[n_train:], zl[n_train:], audio[n_train:])
        check_stop()
    holdout = None if held is None else {
        **{f"{k}_{when}": round(v[k], 4) for k in before for when, v in (("before", before), ("after", after))},
        "frames": len(held)}
    meta = dict(metadata)
    meta["dubfarm.personalised"] = json.dumps({"base_sha256": base_sha, "steps": step, "seconds": round(spent, 1),
                                               "frames": n_train, "holdout": holdout}, sort_keys=True)
    weights_path = os.path.join(cfg.out, "model.safetensors")
    float16 = metadata.get("dtype", "F16") != "F32"
    sd = model.state_dict()
    write_atomically(weights_path, lambda tmp: weights.save_safetensors(tmp, sd, meta, float16))
    write_atomically(os.path.join(cfg.out, "manifest.json"),
                     lambda tmp: shutil.copyfile(os.path.join(cfg.base, "manifest.json"), tmp))
    if holdout:
        print(f"personalise: {where}{step} steps in {spent:.0f} s; held-out PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB "
              f"(blended {before['psnr_blend']:.2f} -> {after['psnr_blend']:.2f}); code CE {before['code_ce']:.3f} -> "
              f"{after['code_ce']:.3f}; wall {time.monotonic() - t_start:.0f} s", file=sys.stderr)
    proto.emit("done", step=step, elapsed=round(spent, 3), weights=weights_path, holdout=holdout,
               device=device.type, world_size=ranks.world)


# ----------------------------------------------------------------------------- command line

def parse(argv):
    d = Config()
    ap = argparse.ArgumentParser(prog="python -m dubtrain.personalise", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="weights directory to start from (manifest.json + model.safetensors)")
    ap.add_argument("--data", required=True, help="dataset directory of the job's one video (dubfarm dataset build)")
    ap.add_argument("--out", required=True, help="directory for model.safetensors, manifest.json, checkpoint.pt, log.csv")
    ap.add_argument("--seconds", type=float, required=True, help="training budget in wall-clock seconds, across resumes")
    ap.add_argument("--checkpoint-every", type=float, default=d.checkpoint_every, help="seconds of training between checkpoints")
    ap.add_argument("--resume", default=d.resume, help="checkpoint.pt to continue from")
    ap.add_argument("--threads", type=int, default=d.threads, help="torch threads (0: torch's default)")
    ap.add_argument("--holdout", type=float, default=d.holdout, help="fraction of frames at the clip's end held out to measure")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--batch", type=int, default=d.batch, help=f"crops per decoder step (the UNet takes {LIP_FRAMES}x as many)")
    ap.add_argument("--lr", type=float, default=d.lr, help="the decoder's learning rate")
    ap.add_argument("--lip-lr", type=float, default=d.lip_lr, help="the lip-sync UNet's (0: leave it as the base's)")
    ap.add_argument("--max-steps", type=int, default=d.max_steps, help="stop at this step too (0: no limit)")
    ap.add_argument("--codebooks", type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=d.codebooks,
                    metavar="BOOL", help="EMA-update the codebooks on the clip too")
    ap.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"),
                    help="where to train (auto: cuda when PyTorch sees a CUDA device, else cpu)")
    ap.add_argument("--dist-timeout", type=float, default=d.dist_timeout,
                    help="under torchrun: seconds a collective waits for the other ranks before giving up")
    ap.add_argument("--stop-on-stdin-eof", action="store_true",
                    help="stop as on SIGTERM (checkpoint, exit 143) when stdin reaches its end")
    a = ap.parse_args(argv)
    return Config(**{f.name: getattr(a, f.name) for f in dataclasses.fields(Config)})


def failed(stream, rank, reason, message):
    """The last line when a run ends without `done` (rank 0 only): under torchrun the exit status
    is torchrun's (1 for any failure), so the reason travels here."""
    if rank == 0:
        Protocol(stream, 0).emit("failed", reason=reason, message=message)


def main(argv=None):
    protocol_stream, previous = sys.stdout, signal.getsignal(signal.SIGTERM)
    sys.stdout = sys.stderr  # stray prints (a library's) must not break the JSON lines
    ranks = None
    try:
        cfg = parse(argv)
        stop = StopFlag()
        signal.signal(signal.SIGTERM, stop)
        if cfg.stop_on_stdin_eof:
            stop.watch_stdin()
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
        where = f"rank {rank} of {world}: " if world > 1 else ""
        try:
            if cfg.dist_timeout <= 0:
                raise Unusable(f"--dist-timeout {cfg.dist_timeout}: seconds, more than 0")
            ranks = Ranks(pick_device(cfg.device), cfg.dist_timeout)
            run(cfg, Protocol(protocol_stream, cfg.seconds), stop, ranks)
        except Unusable as e:
            print(f"personalise: {e}", file=sys.stderr)
            failed(protocol_stream, rank, "unusable", f"{where}{e}")
            return 2
        except Terminated:
            print(f"personalise: {where}stopped by {stop.why or 'SIGTERM'}"
                  + ("; resume with --resume " + os.path.join(cfg.out, "checkpoint.pt") if rank == 0 else ""),
                  file=sys.stderr)
            failed(protocol_stream, rank, "stopped", f"{where}stopped by {stop.why or 'SIGTERM'}")
            return 143
        except PeerLost as e:
            print(f"personalise: rank {rank} of {world} lost its peers: {e}", file=sys.stderr)
            failed(protocol_stream, rank, "peers", f"rank {rank} of {world} lost its peers: {e}")
            return 1
        return 0
    finally:
        if ranks is not None:
            ranks.close()
        sys.stdout = protocol_stream
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
