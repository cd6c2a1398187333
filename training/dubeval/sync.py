"""The evaluation sync model: SyncNet-style, trained apart from the training-time expert.

Input is different from the training expert's (which sees the model's lower-face VQ tokens):
- video: 5 consecutive grayscale mouth crops (40×64, from dlib landmarks on the raw frames,
  faces.mouth_crops), averaged to 10×16 and normalised per video (normalise_mouth);
- audio: our own log-mel (mel.py, 80 bins, 100 Hz), the 20 mel frames centred on the middle
  video frame.
Two small MLPs embed each into a unit 128-d vector; similarity is the cosine. Training is
contrastive over time shifts: for a video window at frame t, the candidates are the true audio
window, 8 windows of the same clip shifted by random d in ±1..±15 frames, and the other
samples' true audio; a cross-entropy over cos/τ (τ 0.1) picks the true pair. Trained on the training speakers' clips only.

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


def _block(cin, cout, pool):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)] + \
           ([nn.MaxPool2d(pool)] if pool else [])


def normalise_mouth(mouth):
    """Mouth crops [N, 40, 64] uint8 → [N, 10, 16] float32: 4×4 averaged, the clip's mean crop
    subtracted and divided by the clip's overall deviation, so what is left is how the mouth
    moves, not whose mouth it is (computed per video, for originals and outputs alike)."""
    m = mouth.astype(np.float32).reshape(len(mouth), MOUTH_H // 4, 4, MOUTH_W // 4, 4).mean((2, 4))
    m = m - m.mean(0, keepdims=True)
    return m / (m.std() + 1e-3)


class SyncNet(nn.Module):
    """Small on purpose (it trains on 2 shared CPU cores): two MLPs, video 5 × 10×16 → 128-d,
    audio 20 mel frames × 80 bins (averaged to 20 bins) → 128-d."""

    def __init__(self, window=5, mel_frames=20, dim=128, hidden=256):
        super().__init__()
        self.window, self.mel_frames = window, mel_frames
        self.video = nn.Sequential(nn.Flatten(), nn.Linear(window * (MOUTH_H // 4) * (MOUTH_W // 4), hidden),
                                   nn.ReLU(), nn.Linear(hidden, dim))
        self.audio = nn.Sequential(nn.AvgPool2d((1, 4)), nn.Flatten(), nn.Linear(mel_frames * N_MELS // 4, hidden),
                                   nn.ReLU(), nn.Linear(hidden, dim))

    def embed_video(self, x):          # [B, window, 10, 16] normalised crops (normalise_mouth)
        return Fn.normalize(self.video(x.float()), dim=1)

    def embed_audio(self, m):          # [B, mel_frames, 80]
        return Fn.normalize(self.audio(m.float().unsqueeze(1)), dim=1)


class ClipWindows:
    """Indexing of one clip's cached mouth crops and mel by video frame."""

    def __init__(self, mouth, mel, fps, window=5, mel_frames=20):
        self.mouth, self.fps = mouth, float(fps)
        self.window, self.mel_frames = window, mel_frames
        pad = mel_frames                              # zero mel beyond the ends (silence after normalisation)
        self.mel = np.concatenate([np.zeros((pad, mel.shape[1]), np.float32), mel.astype(np.float32),
                                   np.zeros((pad, mel.shape[1]), np.float32)])
        self.pad = pad
        self.n = len(mouth)
        self.n_mel = len(mel)

    def video(self, t):
        h = self.window // 2
        return self.mouth[t - h: t - h + self.window]

    def mel_start(self, t):
        return int(round(t * MEL_FPS / self.fps)) - self.mel_frames // 2 + self.pad

    def audio(self, t):
        s = self.mel_start(t)
        return self.mel[s: s + self.mel_frames]

    def valid(self, max_offset):
        """Frames t whose video window and every audio window t+d (|d| ≤ max_offset) lie in the clip."""
        h = self.window // 2
        ts = np.arange(h, self.n - (self.window - h) + 1)
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


def windows_of(clip, length, max_offset):
    """Non-overlapping window starts covering the clip's valid frames."""
    valid = clip.valid(max_offset)
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


def train(cfg, train_clips, val_clips, log=print):
    """train_clips/val_clips: {stem: cached analysis}. Runs for cfg.sync_minutes of wall time."""
    torch.manual_seed(cfg.sync_seed)
    rng = np.random.default_rng(cfg.sync_seed)
    torch.set_num_threads(cfg.sync_threads)
    K = cfg.sync_max_offset
    clips = []
    for stem, a in sorted(train_clips.items()):
        c = clip_from_cache(a, cfg)
        ok = c.valid(K)
        ok = ok[a["found"][ok]]                       # frames the detector saw a face in
        if len(ok):
            clips.append((c, ok))
    weights = np.array([len(ok) for _, ok in clips], float) ** 0.5   # balance long and short clips
    weights /= weights.sum()
    net = SyncNet(cfg.sync_window, cfg.sync_window * cfg.mel_per_frame)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    tau, batch, n_shift = 0.1, 32, 8
    shifts = np.array([d for d in range(-K, K + 1) if d != 0])
    t0, step, losses = time.time(), 0, []
    budget = cfg.sync_minutes * 60
    log(f"sync: training on {len(clips)} clips, {sum(len(o) for _, o in clips)} windows, {cfg.sync_steps} steps")
    while step < cfg.sync_steps and not (budget and time.time() - t0 > budget):
        net.train()
        lr = 2e-3 * 0.5 * (1 + np.cos(np.pi * step / cfg.sync_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        vids, auds = [], []
        for ci in rng.choice(len(clips), batch, p=weights):
            c, ok = clips[ci]
            t = int(rng.choice(ok))
            v = c.video(t).astype(np.float32)
            if rng.random() < 0.5:
                v = v[:, :, ::-1]
            v = v * rng.uniform(0.8, 1.2) + rng.normal(0, 0.1, v.shape).astype(np.float32)
            vids.append(v)
            # the true window first, then n_shift shifted windows of the same clip
            auds.append(np.stack([c.audio(t + d) for d in [0, *rng.choice(shifts, n_shift, replace=False)]]))
        v = net.embed_video(torch.from_numpy(np.stack(vids)))
        a = net.embed_audio(torch.from_numpy(np.stack(auds).reshape(-1, *auds[0].shape[1:])))
        a = a.view(batch, n_shift + 1, -1)
        own = torch.einsum("bd,bkd->bk", v, a)                      # true pair and its shifted audio
        others = v @ a[:, 0].T                                      # the other samples' true audio
        others = others.masked_fill(torch.eye(batch, dtype=torch.bool), -1e4)
        logits = torch.cat([own, others], 1) / tau
        loss = Fn.cross_entropy(logits, torch.zeros(batch, dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            log(f"sync: step {step}, {time.time() - t0:.0f} s, loss {np.mean(losses[-50:]):.3f}, "
                f"true pair ranked first {np.mean((logits.argmax(1) == 0).float().numpy()):.2f}")
    net.eval()
    return net, {"steps": step, "seconds": round(time.time() - t0, 1), "final_loss": float(np.mean(losses[-50:]))}


def held_out_accuracy(scorer, clips, cfg):
    """The sync model's proof: on held-out ORIGINAL videos, the share of 1-second windows whose
    found offset is within ±1 frame of the truth (0)."""
    per, found = {}, []
    for stem, a in sorted(clips.items()):
        r = scorer.evaluate(clip_from_cache(a, cfg), cfg.sync_eval_window, cfg.sync_max_offset)
        per[stem] = {"windows": r["windows"], "within_1": r["within_1"]}
        found += r["offset_found"]
    found = np.array(found)
    return {"within_1": float(np.mean(np.abs(found) <= 1)), "windows": int(len(found)), "per_clip": per}


def weights_path(cfg):
    return os.path.join(cfg.cache_dir, "sync", "evalsync.pt")


def load_or_train(cfg, train_clips, val_clips, log=print):
    """The sync model from the cache dir, trained first if missing (or --retrain-sync)."""
    p = weights_path(cfg)
    if os.path.exists(p) and not cfg.retrain_sync:
        ck = torch.load(p, map_location="cpu", weights_only=False)
        net = SyncNet(ck["window"], ck["mel_frames"])
        net.load_state_dict(ck["state"])
        return Scorer(net), ck["info"]
    net, info = train(cfg, train_clips, val_clips, log)
    scorer = Scorer(net)
    info["held_out"] = held_out_accuracy(scorer, val_clips, cfg)
    info["train_clips"] = sorted(train_clips)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    torch.save({"state": net.state_dict(), "window": net.window, "mel_frames": net.mel_frames, "info": info},
               p + ".tmp")
    os.replace(p + ".tmp", p)
    return scorer, info
