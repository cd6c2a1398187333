"""Per-job personalisation: fine-tunes a weights directory on the job's own footage.

    python -m dubtrain.personalise --base MODEL_DIR --data DATASET_DIR --out OUT_DIR --seconds N
           [--checkpoint-every SECONDS (60)] [--resume CHECKPOINT_FILE] [--threads N]
           [--holdout 0.15] [--seed 0] [--batch 8] [--lr 3e-4] [--lip-lr 1e-5] [--max-steps N]
           [--codebooks false]

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

  {"event":"start","step":S,"resumed":bool,"frames":TRAIN_FRAMES,"holdout_frames":H,"budget_seconds":N,"elapsed":E}
  {"event":"progress","step":S,"loss":X,"elapsed":E,"budget_seconds":N}
        about once a second while training (once a step when a step takes longer; loss: the mean
        over the steps since the last line); while the frames are encoded before training and
        measured after it, the same line with "loss":null and "phase":"setup" / "measure"
  {"event":"checkpoint","step":S,"elapsed":E,"path":"OUT_DIR/checkpoint.pt"}
        after the file is completely written (temporary name, fsync, rename); every
        --checkpoint-every seconds of training and at the end
  {"event":"done","step":S,"elapsed":E,"weights":"OUT_DIR/model.safetensors","holdout":{...}}
        the last line. holdout (null with --holdout 0): on the held-out frames, each run as the
        dub stage runs it on the frame with its own audio (encode, quantise, lip sync with the
        frame as reference, decode, round to 8 bits), before and after: psnr_* the face crop's
        PSNR in dB (mean over frames), psnr_blend_* the same after the dub stage's lower-face
        blend of the output into the original crop, psnr_codes_* the crop decoded from its own
        codes without lip sync (the VQGAN alone), code_ce_* and token_accuracy_* the UNet's
        cross-entropy and accuracy against the frame's own lower-half codes, audio_effect_* how
        much the UNet's output moves when another frame's audio drives it (mean |Δ| of the
        lower-half grid: near 0 would mean it stopped listening); plus "frames"

OUT_DIR/model.safetensors has the base's tensor names, shapes and dtype (float16) and its
metadata, plus `dubfarm.personalised` = {"base_sha256", "steps", "seconds", "frames", "holdout"};
OUT_DIR/manifest.json is the base's. OUT_DIR/checkpoint.pt holds what a resume needs besides
--base and --data (the trained tensors in float32, optimiser state, step, elapsed training
seconds, the config the curve depends on, the sha256 of the base's model.safetensors and of the
frames); --resume takes its --holdout, --seed, --batch, --lr and --codebooks over the command
line's. OUT_DIR/log.csv has every step's losses.

Exit status: 0 done; 2 unusable input (missing base files, a dataset of another crop size, of
several clips or of fewer than 20 frames with a face, a checkpoint of another base or dataset),
with one line on stderr saying what is wrong and what to do; 143 after SIGTERM (a checkpoint is
written first unless the last one is current); 1 anything else.
"""
import argparse
import dataclasses
import copy
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import weights
from .common import CSVLog, Runtime, step_generator
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


# What a resumed run takes from its checkpoint, not from its command line: the curve depends on them.
CURVE = ("holdout", "seed", "batch", "lr", "lip_lr", "codebooks")


class Unusable(Exception):
    """Input personalisation cannot use (exit 2, the message on one stderr line)."""


class Terminated(Exception):
    pass


# ----------------------------------------------------------------------------- stdout protocol

class Protocol:
    """One JSON object per line on the real stdout, flushed; progress lines at most once a second."""

    def __init__(self, stream, budget):
        self.stream, self.budget, self.last = stream, budget, -math.inf

    def emit(self, event, **fields):
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
    """SIGTERM sets it; the run checks it between steps and at each stage of setup."""

    def __init__(self):
        self.set = False

    def __call__(self, signum, frame):
        self.set = True


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
    for rows in torch.arange(len(data)).split(8):
        x = data.images(rows)
        zu.append(model.encode(x[:, :, : s // 2]))
        zl.append(model.encode(x[:, :, s // 2:]))
        audio.append(model.audio(data.mel_frames(rows)))
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
    weight = lower_face_weight(held.image_size).view(1, held.image_size, held.image_size, 1)
    ps, pb, pc, ce, acc, effect = [], [], [], [], [], []
    n = len(held)
    for rows in torch.arange(n).split(16):
        qu, _ = quantize(model.quantize_upper, zu[rows])
        ql, il = quantize(model.quantize_lower, zl[rows])
        out = model.lipsync(ql, ql, audio[rows])
        _, c, a = code_losses(out, ql, il, lower_cb)
        ce.append(float(c) * len(rows))
        acc.append(a.reshape(len(rows), -1).mean(1))
        other = (rows + max(1, n // 2)) % n   # another held-out frame's audio
        effect.append((model.lipsync(ql, ql, audio[other]) - out).abs().flatten(1).mean(1))
        orig = held.crops[rows].double()
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

def run(cfg, proto, stop):
    if not cfg.seconds > 0:
        raise Unusable(f"--seconds {cfg.seconds}: the training budget must be positive")
    if not 0 <= cfg.holdout < 1:
        raise Unusable(f"--holdout {cfg.holdout}: a fraction in [0, 1) is needed")
    if cfg.batch < 1:
        raise Unusable(f"--batch {cfg.batch}: at least 1")
    t_start = time.monotonic()
    rt = Runtime("cpu", cfg.threads)
    torch.manual_seed(cfg.seed)
    manifest, model, metadata, base_sha = load_base(cfg.base)
    data = load_clip(cfg.data, manifest["imageSize"])
    data_sha = fingerprint(data)
    ck = load_resume(cfg.resume, cfg, base_sha, data_sha) if cfg.resume else None
    train, held = split(data, cfg.holdout)
    os.makedirs(cfg.out, exist_ok=True)
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")

    trained = DECODER + (UNET if cfg.lip_lr > 0 else ())
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith(trained))
    dec_params = [p for n, p in model.named_parameters() if n.startswith(DECODER)]
    lip_params = [p for n, p in model.named_parameters() if n.startswith(UNET) and cfg.lip_lr > 0]
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
                named[n].copy_(ck["params"][n])
        opt.load_state_dict(ck["opt"])
        for cb, s in zip(codebooks, ck["codebooks"]):
            cb.load_state_dict(s)
        torch.set_rng_state(ck["torch_rng"])
        step, spent, before, step_time = ck["step"], ck["elapsed"], ck["holdout_before"], ck.get("step_seconds", 0.0)
    current = ck is not None and os.path.abspath(cfg.resume) == os.path.abspath(ckpt_path)

    def state():
        return {"format": FORMAT, "step": step, "elapsed": spent, "config": dataclasses.asdict(cfg),
                "base_sha256": base_sha, "data_sha256": data_sha,
                "params": {n: p.detach().clone() for n, p in model.named_parameters() if n in saved},
                "opt": opt.state_dict(), "codebooks": [cb.state_dict() for cb in codebooks],
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

    def check_stop():
        if stop.set:
            if not current:
                checkpoint()
            raise Terminated()

    proto.emit("start", step=step, resumed=ck is not None, frames=len(train), holdout_frames=len(held) if held else 0,
               budget_seconds=cfg.seconds, elapsed=round(spent, 3))

    def setup_tick():
        proto.progress(step, None, spent, phase="setup")
        check_stop()

    zu, zl, audio = encode(model, data, setup_tick)
    n_train = len(train)
    zu_t, zl_t, audio_t = zu[:n_train], zl[:n_train], audio[:n_train]
    if held is not None and before is None:
        before = measure(model, held, zu[n_train:], zl[n_train:], audio[n_train:])
    print(f"personalise: {data.index['clips'][0]['name']}: {n_train} frames to train on, "
          f"{len(held) if held else 0} held out; setup {time.monotonic() - t_start:.1f} s"
          + (f"; held-out PSNR {before['psnr']:.2f} dB before" if before else ""), file=sys.stderr)
    check_stop()

    def one_step(step):
        g = step_generator(cfg.seed, step, 0, salt=11)
        # the decoder: the clip's crops from their quantised codes
        rows = torch.randint(0, n_train, (cfg.batch,), generator=g)
        x = train.images(rows)
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
            refs = references(train, lrows, 1, STAGES.lip_reference_min_gap, g)
            target, target_idx = quantize(model.quantize_lower, zl_t[lrows])
            ref, _ = quantize(model.quantize_lower, zl_t[refs])
            out = model.lipsync(target, ref, audio_t[lrows])
            mse, ce, acc = code_losses(out, target, target_idx, model.quantize_lower.embedding.weight)
            loss = loss + STAGES.lip_code_weight * mse + STAGES.lip_ce_weight * ce
            values.update(code_mse=mse.item(), code_ce=ce.item(), token_accuracy=float(acc.mean()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:
            torch.nn.utils.clip_grad_norm_(group["params"], 1.0)
        opt.step()
        if codebooks:
            values["dead_codes"] = codebooks[0].update(zu_t[rows], iu.reshape(-1), rt, g) + \
                codebooks[1].update(zl_t[rows], il.reshape(-1), rt, g)
        return {"loss": loss.item(), **values}

    log = CSVLog(os.path.join(cfg.out, "log.csv"), COLUMNS, resume_step=step)
    t0, start_spent = time.monotonic(), spent
    last_ckpt, losses, recent = spent, [], []
    while True:
        check_stop()
        if cfg.max_steps and step >= cfg.max_steps:
            break
        spent = start_spent + time.monotonic() - t0
        if spent + step_time > cfg.seconds:   # the next step would overrun the budget
            break
        ts = time.monotonic()
        values = one_step(step)
        step += 1
        current = False
        recent = (recent + [time.monotonic() - ts])[-10:]
        step_time = max(recent)  # a cautious estimate of the next step (a busy machine's steps vary)
        spent = start_spent + time.monotonic() - t0
        log.write(step, spent, values)
        losses.append(values["loss"])
        if proto.progress(step, sum(losses) / len(losses), spent):
            losses = []
        if spent - last_ckpt >= cfg.checkpoint_every:
            checkpoint()
            last_ckpt = spent
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
        print(f"personalise: {step} steps in {spent:.0f} s; held-out PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB "
              f"(blended {before['psnr_blend']:.2f} -> {after['psnr_blend']:.2f}); code CE {before['code_ce']:.3f} -> "
              f"{after['code_ce']:.3f}; wall {time.monotonic() - t_start:.0f} s", file=sys.stderr)
    proto.emit("done", step=step, elapsed=round(spent, 3), weights=weights_path, holdout=holdout)


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
    a = ap.parse_args(argv)
    return Config(**{f.name: getattr(a, f.name) for f in dataclasses.fields(Config)})


def main(argv=None):
    protocol_stream, previous = sys.stdout, signal.getsignal(signal.SIGTERM)
    sys.stdout = sys.stderr  # stray prints (a library's) must not break the JSON lines
    try:
        cfg = parse(argv)
        stop = StopFlag()
        signal.signal(signal.SIGTERM, stop)
        try:
            run(cfg, Protocol(protocol_stream, cfg.seconds), stop)
        except Unusable as e:
            print(f"personalise: {e}", file=sys.stderr)
            return 2
        except Terminated:
            print("personalise: stopped by SIGTERM; resume with --resume " + os.path.join(cfg.out, "checkpoint.pt"),
                  file=sys.stderr)
            return 143
        return 0
    finally:
        sys.stdout = protocol_stream
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
