"""The evaluation sync model: SyncNet-style, trained apart from the training-time expert.

Input is different from the training expert's (which sees the model's lower-face VQ tokens):
- video: 5 grayscale mouth crops (40×64, from dlib landmarks on the raw frames,
  faces.mouth_crops) 1/25 s apart around frame t (interpolated where the clip is not 25 fps),
  averaged to 20×32 and normalised per video (normalise_mouth);
- audio: our own log-mel (mel.py, 80 bins, 100 Hz), the 20 mel frames centred on frame t.
Two small conv nets (SyncNet's design, scaled down for 2 CPU cores) embed each into a unit
128-d vector; similarity is the cosine. Training is contrastive over time shifts, dense: chunks
of 25 consecutive frames; each video window t is scored against the audio windows t+d of its
clip for every d in ±15 and against the other chunks' true audio, and a cross-entropy over
cos/τ picks d = 0; a second one does the same for the chunk's mean cosine per d (what the offset
search below uses). Trained on the training speakers' clips only.

Offset search (`offset_scores`): for a window of W video frames (1 s), s(d) = mean over the
window of cos(video_t, audio_{t+d}), d in −15..+15. The found offset is argmax s(d).
Confidence (our definition): s(0) − median_d s(d) — how far the audio as it is (offset 0, the
alignment the farm delivers) stands out above the typical misaligned score; averaged over
windows. We also report the peak form max_d s(d) − median_d s(d) (SyncNet's LSE-C analogue,
offset-free) and the share of windows whose peak is within ±1 frame of 0.
"""
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as Fn

from .faces import MOUTH_H, MOUTH_W
from .mel import FRAMES_PER_SECOND as MEL_FPS

N_MELS = 80


VIDEO_RATE = 25.0      # the model's video time grid: every clip's crops are sampled at 25 frames/s
CROP_H, CROP_W = MOUTH_H // 2, MOUTH_W // 2      # 20×32: crops are 2×2 averaged


def _conv(cin, cout, stride=1):
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def normalise_mouth(mouth):
    """Mouth crops [N, 40, 64] uint8 → [N, 20, 32] float32: 2×2 averaged, the clip's mean crop
    subtracted and divided by the clip's overall deviation, so what is left is how the mouth
    moves, not whose mouth it is (computed per video, for originals and outputs alike)."""
    m = mouth.astype(np.float32).reshape(len(mouth), CROP_H, 2, CROP_W, 2).mean((2, 4))
    m = m - m.mean(0, keepdims=True)
    return m / (m.std() + 1e-3)


class SyncNet(nn.Module):
    """Small on purpose (it trains on 2 shared CPU cores): two conv nets (SyncNet's design, scaled
    down). Video: the window's 5 normalised 20×32 crops stacked as channels → 4 conv layers
    (strides 1, 2, 2, 2) → 128-d. Audio: the 20 mel frames × 80 bins (averaged to 40 bins) as one
    image → 4 conv layers (strides 1, 2, 2, 2) → 128-d."""

    def __init__(self, window=5, mel_frames=20, dim=128, width=32):
        super().__init__()
        self.window, self.mel_frames, self.width = window, mel_frames, width
        c1, c2, c3, c4 = width, 2 * width, 3 * width, 4 * width
        hv, wv = -(-CROP_H // 8), -(-CROP_W // 8)
        self.video = nn.Sequential(*_conv(window, c1), *_conv(c1, c2, 2), *_conv(c2, c3, 2), *_conv(c3, c4, 2),
                                   nn.Flatten(), nn.Linear(c4 * hv * wv, 256), nn.ReLU(inplace=True),
                                   nn.Dropout(0.3), nn.Linear(256, dim))
        ha, wa = -(-mel_frames // 8), -(-(N_MELS // 2) // 8)
        self.audio = nn.Sequential(nn.AvgPool2d((1, 2)), *_conv(1, c1), *_conv(c1, c2, 2), *_conv(c2, c3, 2),
                                   *_conv(c3, c4, 2), nn.Flatten(), nn.Linear(c4 * ha * wa, 256),
                                   nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(256, dim))

    def embed_video(self, x):          # [B, window, 20, 32] normalised crops (normalise_mouth)
        return Fn.normalize(self.video(x.float()), dim=1)

    def embed_audio(self, m):          # [B, mel_frames, 80]
        return Fn.normalize(self.audio(m.float().unsqueeze(1)), dim=1)


class ClipWindows:
    """Indexing of one clip's cached mouth crops and mel by video frame (the clip's own frames:
    offsets are counted in them). The video window of frame t is `window` crops 1/25 s apart
    centred on t, linearly interpolated between frames where the clip is not 25 fps, so the model
    always sees the same 0.2 s of motion against the same 0.2 s of audio."""

    def __init__(self, mouth, mel, fps, window=5, mel_frames=20):
        self.mouth, self.fps = mouth, float(fps)
        self.window, self.mel_frames = window, mel_frames
        pad = mel_frames                              # zero mel beyond the ends (silence after normalisation)
        self.mel = np.concatenate([np.zeros((pad, mel.shape[1]), np.float32), mel.astype(np.float32),
                                   np.zeros((pad, mel.shape[1]), np.float32)])
        self.pad = pad
        self.n = len(mouth)
        self.n_mel = len(mel)
        self.step = self.fps / VIDEO_RATE             # clip frames per model frame
        self.reach = int(np.ceil((window // 2) * self.step - 1e-6))   # clip frames either side of t

    def video(self, t):
        h = self.window // 2
        if abs(self.step - 1.0) < 1e-3:
            return self.mouth[t - h: t - h + self.window]
        pos = np.clip(t + (np.arange(self.window) - h) * self.step, 0, self.n - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, self.n - 1)
        f = (pos - lo).astype(np.float32).reshape(-1, *([1] * (self.mouth.ndim - 1)))
        return (1 - f) * self.mouth[lo] + f * self.mouth[hi]

    def mel_start(self, t):
        return int(round(t * MEL_FPS / self.fps)) - self.mel_frames // 2 + self.pad

    def audio(self, t):
        s = self.mel_start(t)
        return self.mel[s: s + self.mel_frames]

    def valid(self, max_offset):
        """Frames t whose video window and every audio window t+d (|d| ≤ max_offset) lie in the clip."""
        ts = np.arange(self.reach, self.n - self.reach)
        ok = [t for t in ts if self.mel_start(t - max_offset) - self.pad >= 0
              and self.mel_start(t + max_offset) - self.pad + self.mel_frames <= self.n_mel]
        return np.array(ok, int)


def offset_scores(embed_v, embed_a, clip, starts, length, max_offset):
    """s[w, d] for each window start: mean cosine of video_t with audio_{t+d} over the window
    (embed_v/embed_a: arrays of windows → unit vectors [n, D]; any function works, so tests can
    give a constructed one)."""
    offs = np.arange(-max_offset, max_offset + 1)
    out = np.zeros((len(starts), len(offs)), np.float32)
    for w, s0 in enumerate(starts):
        ts = np.arange(s0, s0 + length)
        v = embed_v(np.stack([clip.video(t) for t in ts]))
        a = embed_a(np.stack([clip.audio(t) for t in range(s0 - max_offset, s0 + length + max_offset)]))
        sim = v @ a.T                                 # [length, length + 2·max_offset]
        for j, d in enumerate(offs):
            out[w, j] = np.mean(sim[np.arange(length), np.arange(length) + d + max_offset])
    return out, offs


def windows_of(clip, length, max_offset, first=0):
    """Non-overlapping window starts covering the clip's valid frames; with `first`, only frames
    whose whole video window (t ± reach) lies at or after frame `first` (a clip's tail)."""
    valid = clip.valid(max_offset)
    if first:
        valid = valid[valid >= first + clip.reach]
    if len(valid) < length:
        return []
    return list(range(valid[0], valid[-1] - length + 2, length))


def summarise(scores, offs):
    """Per-window found offset, and the confidences of the module docstring."""
    zero = int(np.where(offs == 0)[0][0])
    med = np.median(scores, axis=1)
    found = offs[np.argmax(scores, axis=1)]
    return {"windows": int(len(scores)),
            "offset_found": found.tolist(),
            "within_1": float(np.mean(np.abs(found) <= 1)) if len(scores) else float("nan"),
            "conf": float(np.mean(scores[:, zero] - med)) if len(scores) else float("nan"),
            "conf_peak": float(np.mean(scores.max(1) - med)) if len(scores) else float("nan"),
            "sim0": float(np.mean(scores[:, zero])) if len(scores) else float("nan")}


class Scorer:
    """A trained SyncNet as the two embedding functions offset_scores takes."""

    def __init__(self, net):
        self.net = net.eval()

    @torch.no_grad()
    def v(self, x):
        return self.net.embed_video(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    @torch.no_grad()
    def a(self, x):
        return self.net.embed_audio(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    def evaluate(self, clip, length=25, max_offset=15):
        starts = windows_of(clip, length, max_offset)
        if not starts:
            return summarise(np.zeros((0, 2 * max_offset + 1), np.float32), np.arange(-max_offset, max_offset + 1))
        scores, offs = offset_scores(self.v, self.a, clip, starts, length, max_offset)
        return summarise(scores, offs)


def clip_of(mouth, mel_, fps, cfg):
    """The sync model's view of a video: normalised mouth crops and the log-mel of its audio."""
    return ClipWindows(normalise_mouth(mouth), mel_, fps, cfg.sync_window, cfg.sync_window * cfg.mel_per_frame)


def clip_from_cache(a, cfg):
    return clip_of(a["mouth"], a["mel"], a["fps"], cfg)


def _augment_video(v, rng):
    """v [L, window, H, W] one chunk's crops: the same flip, gain, shift of ±1 pixel for the whole
    chunk (it is one face), fresh pixel noise per crop."""
    if rng.random() < 0.5:
        v = v[..., ::-1]
    dy, dx = rng.integers(-1, 2, 2)
    v = np.roll(v, (int(dy), int(dx)), axis=(2, 3))
    return (v * rng.uniform(0.8, 1.2) + rng.normal(0, 0.1, v.shape)).astype(np.float32)


def _augment_audio(a, rng):
    """a [n, mel_frames, 80]: one band of up to 12 mel bins blanked for the chunk, and noise."""
    a = a.copy()
    if rng.random() < 0.5:
        w = int(rng.integers(1, 13))
        f0 = int(rng.integers(0, N_MELS - w))
        a[..., f0:f0 + w] = 0
    return (a + rng.normal(0, 0.1, a.shape)).astype(np.float32)


def train(cfg, train_clips, log=print):
    """train_clips: {stem: cached analysis}. Runs cfg.sync_steps steps (or until
    cfg.sync_minutes of wall time).

    One step: cfg.sync_batch chunks of cfg.sync_chunk consecutive frames, each from a random
    training clip. Every video window t of a chunk is scored against the audio windows t+d of the
    same clip for all d in ±max_offset (the task of the offset search, densely) and against the
    true audio of the other chunks; a cross-entropy over cos/τ (τ 0.1) picks d = 0. A second
    cross-entropy does the same for the chunk as a whole (the mean cosine over its frames for each
    d, as offset_scores computes it, over τ 0.02)."""
    torch.manual_seed(cfg.sync_seed)
    rng = np.random.default_rng(cfg.sync_seed)
    torch.set_num_threads(cfg.sync_threads)
    K, L, B = cfg.sync_max_offset, cfg.sync_chunk, cfg.sync_batch
    clips = []
    for stem, a in sorted(train_clips.items()):
        c = clip_from_cache(a, cfg)
        ok = c.valid(K)
        ok = ok[a["found"][ok]]                       # frames the detector saw a face in
        okset = set(ok.tolist())
        starts = np.array([t for t in ok if all(u in okset for u in range(t, t + L))], int)
        if len(starts):
            clips.append((c, starts))
    weights = np.array([len(st) for _, st in clips], float) ** 0.5   # balance long and short clips
    weights /= weights.sum()
    net = SyncNet(cfg.sync_window, cfg.sync_window * cfg.mel_per_frame, width=cfg.sync_width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.sync_lr, weight_decay=1e-2)
    tau, tau_w = 0.1, 0.02
    t0, step, losses, first = time.time(), 0, [], []
    budget = cfg.sync_minutes * 60
    offs = np.arange(2 * K + 1)
    gather = torch.from_numpy(np.arange(L)[:, None] + offs[None, :])          # [L, 2K+1]
    log(f"sync: training on {len(clips)} clips, {sum(len(s) for _, s in clips)} chunk starts, "
        f"{cfg.sync_steps} steps of {B}×{L} frames")
    while step < cfg.sync_steps and not (budget and time.time() - t0 > budget):
        net.train()
        warm = min(1.0, (step + 1) / 100)
        lr = cfg.sync_lr * warm * 0.5 * (1 + np.cos(np.pi * step / cfg.sync_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        vids, auds = [], []
        for ci in rng.choice(len(clips), B, p=weights):
            c, st = clips[ci]
            s0 = int(rng.choice(st))
            vids.append(_augment_video(np.stack([c.video(t) for t in range(s0, s0 + L)]), rng))
            auds.append(_augment_audio(np.stack([c.audio(t) for t in range(s0 - K, s0 + L + K)]), rng))
        v = net.embed_video(torch.from_numpy(np.concatenate(vids))).view(B, L, -1)
        a = net.embed_audio(torch.from_numpy(np.concatenate(auds))).view(B, L + 2 * K, -1)
        sim = torch.einsum("bid,bjd->bij", v, a)                               # [B, L, L+2K]
        shifted = torch.gather(sim, 2, gather.expand(B, L, 2 * K + 1))         # [B, L, 2K+1], d=0 at K
        cross = torch.einsum("bid,cjd->bicj", v, a[:, K:K + L])                # other chunks' true audio
        cross = cross.masked_fill(torch.eye(B, dtype=torch.bool)[:, None, :, None], -1e4).reshape(B, L, -1)
        logits = torch.cat([shifted, cross], 2).reshape(B * L, -1) / tau
        target = torch.full((B * L,), K, dtype=torch.long)
        loss = Fn.cross_entropy(logits, target) + \
            Fn.cross_entropy(shifted.mean(1) / tau_w, torch.full((B,), K, dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        first.append(float((shifted.mean(1).argmax(1) - K).abs().le(1).float().mean()))
        step += 1
        if step % 50 == 0:
            log(f"sync: step {step}, {time.time() - t0:.0f} s, loss {np.mean(losses[-50:]):.3f}, "
                f"chunk offset within ±1 {np.mean(first[-50:]):.2f}")
    net.eval()
    return net, {"steps": step, "seconds": round(time.time() - t0, 1), "final_loss": float(np.mean(losses[-50:]))}


def held_out_accuracy(scorer, clips, cfg, truth=None):
    """The sync model's proof: on held-out ORIGINAL videos, the share of 1-second windows whose
    found offset is within ±1 frame of the truth: 0, or the clip's own offset where `truth`
    ({stem: frames}, split.json's audioOffsetFrames) records one measured independently."""
    truth = truth or {}
    per, err = {}, []
    for stem, a in sorted(clips.items()):
        r = scorer.evaluate(clip_from_cache(a, cfg), cfg.sync_eval_window, cfg.sync_max_offset)
        e = np.abs(np.array(r["offset_found"], int) - truth.get(stem, 0))
        per[stem] = {"windows": r["windows"], "within_1": float(np.mean(e <= 1)) if len(e) else float("nan"),
                     "true_offset": truth.get(stem, 0), "offset_found": r["offset_found"]}
        err += e.tolist()
    err = np.array(err)
    return {"within_1": float(np.mean(err <= 1)), "windows": int(len(err)), "per_clip": per}


def weights_path(cfg):
    return os.path.join(cfg.cache_dir, "sync", "evalsync.pt")


def load_cached(cfg, log=print, corrections=None):
    """(Scorer, info) of the sync model in the cache dir; None when there is none, when
    --retrain-sync asks for a new one, when the file holds an older model version, or when it
    was trained with other audio offsets corrected than `corrections`."""
    p = weights_path(cfg)
    if not os.path.exists(p) or cfg.retrain_sync:
        return None
    ck = torch.load(p, map_location="cpu", weights_only=False)
    if "width" not in ck:                             # the MLP version, before the conv model
        log(f"sync model: {p} holds an older model version; training the current one")
        return None
    trained_on = set(ck["info"].get("train_clips", []))
    if ck["info"].get("corrected_offsets", {}) != {s: d for s, d in (corrections or {}).items() if s in trained_on}:
        log(f"sync model: {p} was trained with other audio offsets corrected "
            f"(training/data/av_offsets.json changed); training it again")
        return None
    net = SyncNet(ck["window"], ck["mel_frames"], width=ck["width"])
    net.load_state_dict(ck["state"])
    return Scorer(net), ck["info"]


def train_and_save(cfg, train_clips, val_clips, log=print, corrections=None, truth=None):
    """Trains the sync model on train_clips (each clip's audio first moved by its measured offset
    in `corrections`, offsets.shift_audio), measures its proof on val_clips (held-out originals,
    against `truth`) and caches it; (Scorer, info)."""
    from .offsets import shift_audio
    corrections = corrections or {}
    p = weights_path(cfg)
    net, info = train(cfg, {s: shift_audio(a, corrections.get(s, 0)) for s, a in train_clips.items()}, log)
    scorer = Scorer(net)
    info["held_out"] = held_out_accuracy(scorer, val_clips, cfg, truth)
    info["train_clips"] = sorted(train_clips)
    info["corrected_offsets"] = {s: d for s, d in sorted(corrections.items()) if s in train_clips}
    os.makedirs(os.path.dirname(p), exist_ok=True)
    torch.save({"state": net.state_dict(), "window": net.window, "mel_frames": net.mel_frames,
                "width": net.width, "info": info},
               p + ".tmp")
    os.replace(p + ".tmp", p)
    return scorer, info
