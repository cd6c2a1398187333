"""Stage "tokens": every frame's codes under the final VQGAN, once, so the sync expert and the
lip-sync UNet train in token space without touching pixels (seconds per thousand steps on CPU).

RUN/tokens.pt holds, for the training and the held-out frames alike (flag `heldout`):
indices_upper / indices_lower [N, h·w] (int64), the mel windows [N, 80, 16], clip, frame, speaker,
and the audio offsets corrected (data.audio_offsets: a clip whose audio is d frames late gets
frame f's picture with frame f + d's mel). It is rebuilt when the VQGAN or the offsets change.
"""
import os

import torch

from .common import load_checkpoint
from .data import FaceDataset, audio_offsets, load_split
from .vqgan import load_trained


@torch.no_grad()
def build_tokens(cfg, rt, run_dir):
    path = os.path.join(run_dir, "tokens.pt")
    vq_state = load_checkpoint(f"{run_dir}/vqgan/ckpt.pt")
    offsets = audio_offsets(cfg)
    if os.path.exists(path) and vq_state is not None:
        have = torch.load(path, weights_only=False)
        if have.get("vqgan_step") == vq_state["step"] and have.get("audio_offsets", {}) == offsets:
            return
    if not rt.main:
        return
    model, state = load_trained(cfg, run_dir, rt.device)
    model.eval()
    held, excluded = load_split(cfg.split)
    data = FaceDataset(cfg.data, exclude_clips=excluded)
    dropped = data.shift_audio(offsets)
    if offsets:
        print(f"[tokens] audio moved back in sync for {len(offsets)} clips "
              f"({', '.join(f'{k} {v:+d}' for k, v in sorted(offsets.items()))}); {dropped} frames without audio dropped",
              flush=True)
    s = data.image_size
    ups, lows = [], []
    for chunk in torch.arange(len(data)).split(64):
        x = data.images(chunk).to(rt.device)
        iu, _ = model.quantize(model.encode(x[:, :, : s // 2]), "upper")
        il, _ = model.quantize(model.encode(x[:, :, s // 2:]), "lower")
        ups.append(iu.reshape(len(chunk), -1).cpu())
        lows.append(il.reshape(len(chunk), -1).cpu())
    held_ids = {i for i, n in enumerate(data.speaker_names) if n in set(held)}
    torch.save({"indices_upper": torch.cat(ups), "indices_lower": torch.cat(lows), "mel": data.mel,
                "clip": data.clip, "frame": data.frame, "speaker": data.speaker,
                "heldout": torch.tensor([int(sp) in held_ids for sp in data.speaker]),
                "vqgan_step": state["step"], "audio_offsets": offsets}, path + ".tmp")
    os.replace(path + ".tmp", path)
    print(f"[tokens] {len(data)} frames tokenized with the VQGAN of step {state['step']}", flush=True)


class TokenSet:
    """The token-space view of the data for the sync and lip-sync stages. The codes and mel
    windows live on `device` (the batches are gathered there); clip, frame and the sampling
    bookkeeping stay on the CPU, where the per-step generators draw."""

    def __init__(self, run_dir, heldout=False, device="cpu"):
        t = torch.load(os.path.join(run_dir, "tokens.pt"), weights_only=False)
        sel = t["heldout"] == heldout
        self.upper, self.lower = t["indices_upper"][sel].to(device), t["indices_lower"][sel].to(device)
        self.mel, self.clip, self.frame = t["mel"][sel].to(device), t["clip"][sel], t["frame"][sel]
        self.n = int(sel.sum())
        self.clip_rows = {int(c): torch.nonzero(self.clip == c).flatten() for c in torch.unique(self.clip)}

    def window_starts(self, window):
        n = self.n
        ok = torch.ones(max(n - window + 1, 0), dtype=torch.bool)
        for k in range(1, window):
            ok &= (self.clip[k:n - window + 1 + k] == self.clip[:n - window + 1]) & \
                  (self.frame[k:n - window + 1 + k] == self.frame[:n - window + 1] + k)
        return torch.nonzero(ok).flatten()

    def row_of(self, clip, frame):
        """Row of (clip, frame) or -1."""
        rows = self.clip_rows[int(clip)]
        frames = self.frame[rows]
        j = int(torch.searchsorted(frames, int(frame)))
        return int(rows[j]) if j < len(rows) and int(frames[j]) == int(frame) else -1
