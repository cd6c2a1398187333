"""Reads a `dubfarm dataset build` directory (docs/dataset.md) into memory and draws batches.

The whole set is small (minutes of video: a few hundred MB of uint8 crops), so it is held in
memory as tensors; batches are index draws from a per-step generator (see
`common.step_generator`), which makes every run, and every resumed run, reproducible.
"""
import json
import os

import numpy as np
import torch
from safetensors.numpy import load_file

FORMAT = "dubfarm-dataset/1"


class FaceDataset:
    """All frames of a dataset directory, or of the clips of some speakers.

    crops      uint8  [N, S, S, 3]   aligned face crops (exactly the dub stage's)
    mel        float  [N, 80, 16]    each frame's log-mel window, bin-major
    landmarks  float  [N, 68, 2]     crop coordinates; has_landmarks [N]
    clip, speaker, frame  int64 [N]
    """

    def __init__(self, directory, speakers=None, exclude_speakers=None, exclude_clips=()):
        path = os.path.join(directory, "index.json")
        if not os.path.exists(path):
            raise SystemExit(f"train: {directory} is not a dataset (no index.json); build one with "
                             f"`dubfarm dataset build VIDEO… --out {directory}`")
        with open(path) as f:
            self.index = json.load(f)
        if self.index.get("format") != FORMAT:
            raise SystemExit(f"train: {path} has format {self.index.get('format')!r}, this trainer reads {FORMAT!r}")
        self.image_size = self.index["imageSize"]
        self.speaker_names = self.index["speakers"]
        keep = set(range(len(self.speaker_names)))
        if speakers is not None:
            keep &= {i for i, n in enumerate(self.speaker_names) if n in set(speakers)}
        if exclude_speakers is not None:
            keep -= {i for i, n in enumerate(self.speaker_names) if n in set(exclude_speakers)}
        skip_clips = [c["id"] for c in self.index["clips"] if c["name"] in set(exclude_clips)]
        parts = {k: [] for k in ("crops", "mel", "landmarks", "hasLandmarks", "frame", "clip", "speaker")}
        for shard in self.index["shards"]:
            t = load_file(os.path.join(directory, shard["file"]))
            sel = np.isin(t["speaker"], list(keep)) & ~np.isin(t["clip"], skip_clips)
            if not sel.any():
                continue
            for k in parts:
                parts[k].append(t[k][sel])
        if not parts["crops"]:
            raise SystemExit(f"train: no frames in {directory} for the speakers asked for")
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        order = np.lexsort((cat["frame"], cat["clip"]))  # clip-major, frame order within a clip
        self.crops = torch.from_numpy(cat["crops"][order])
        self.mel = torch.from_numpy(cat["mel"][order].astype(np.float32))
        self.landmarks = torch.from_numpy(cat["landmarks"][order].astype(np.float32))
        self.has_landmarks = torch.from_numpy(cat["hasLandmarks"][order].astype(bool))
        self.frame = torch.from_numpy(cat["frame"][order].astype(np.int64))
        self.clip = torch.from_numpy(cat["clip"][order].astype(np.int64))
        self.speaker = torch.from_numpy(cat["speaker"][order].astype(np.int64))
        self._index_clips()

    def _index_clips(self):
        self.clip_ids = torch.unique(self.clip)
        # Per clip, the rows it owns (contiguous after the sort).
        self.clip_rows = {int(c): torch.nonzero(self.clip == c).flatten() for c in self.clip_ids}

    def __len__(self):
        return self.crops.shape[0]

    def shift_audio(self, offsets):
        """Puts clips whose audio is out of sync back in sync: for a clip named in `offsets`
        ({name: d}, d > 0 when the audio is d frames late), frame f takes the mel window of its
        frame f + d; frames with no such frame are dropped. Returns the number of rows dropped."""
        names = {c["id"]: c["name"] for c in self.index["clips"]}
        keep = torch.ones(len(self), dtype=torch.bool)
        mel = self.mel.clone()
        for c, rows in self.clip_rows.items():
            d = int(offsets.get(names.get(c), 0))
            if d == 0:
                continue
            frames = self.frame[rows]
            j = torch.searchsorted(frames, frames + d).clamp(max=len(rows) - 1)
            ok = frames[j] == frames + d
            mel[rows[ok]] = self.mel[rows[j[ok]]]
            keep[rows[~ok]] = False
        self.mel = mel
        for k in ("crops", "mel", "landmarks", "has_landmarks", "frame", "clip", "speaker"):
            setattr(self, k, getattr(self, k)[keep])
        self._index_clips()
        return int((~keep).sum())

    def describe(self):
        names = {c["id"]: c["name"] for c in self.index["clips"]}
        return f"{len(self)} frames, {len(self.clip_ids)} clips, {len(torch.unique(self.speaker))} speakers " \
               f"({', '.join(sorted({self.speaker_names[int(s)] for s in torch.unique(self.speaker)}))[:200]})" \
               if names else f"{len(self)} frames"

    # ------------------------------------------------------------------ tensors

    def images(self, rows):
        """Float images [B, 3, S, S] in [-1, 1] (the engine's ImageTensor.fill)."""
        x = self.crops[rows].permute(0, 3, 1, 2).float()
        return x * (1 / 127.5) - 1

    def mel_frames(self, rows):
        """The model's audio input [B, 16, 80] (frame-major: the transpose of the stored window)."""
        return self.mel[rows].transpose(1, 2).contiguous()

    # ------------------------------------------------------------------ sampling

    def clip_weights(self, balance):
        """Probability of each row such that a clip is drawn ∝ frames^balance (balance 1: uniform
        over frames; 0: uniform over clips) — one long clip does not drown the others."""
        w = torch.empty(len(self))
        for rows in self.clip_rows.values():
            w[rows] = len(rows) ** balance / len(rows)
        return w / w.sum()

    def sample_rows(self, n, generator, weights=None):
        if weights is None:
            return torch.randint(0, len(self), (n,), generator=generator)
        return torch.multinomial(weights, n, replacement=True, generator=generator)

    def window_starts(self, window):
        """Rows r such that r … r+window−1 are consecutive frames of one clip."""
        n = len(self)
        if n < window:
            return torch.zeros(0, dtype=torch.long)
        ok = torch.ones(n - window + 1, dtype=torch.bool)
        for k in range(1, window):
            ok &= (self.clip[k:n - window + 1 + k] == self.clip[:n - window + 1]) & \
                  (self.frame[k:n - window + 1 + k] == self.frame[:n - window + 1] + k)
        return torch.nonzero(ok).flatten()

    def shifted_rows(self, rows, shift):
        """Row of the same clip `shift` frames away from each of `rows`, or -1 where that frame
        is not in the set."""
        out = torch.full_like(rows, -1)
        for i, r in enumerate(rows.tolist()):
            c = int(self.clip[r])
            cr = self.clip_rows[c]
            target = int(self.frame[r]) + int(shift[i])
            # rows of a clip are sorted by frame: binary search
            frames = self.frame[cr]
            j = int(torch.searchsorted(frames, target))
            if j < len(cr) and int(frames[j]) == target:
                out[i] = cr[j]
        return out


def audio_offsets(cfg):
    """{clip name: frames its audio is late}: the training clips' measured offsets to correct
    (cfg.audio_offsets, training/data/av_offsets.json, "corrections"; written by
    `python -m dubeval.offsets`) and the held-out clips' (split.json, "audioOffsetFrames")."""
    out = {}
    if cfg.audio_offsets:
        if not os.path.exists(cfg.audio_offsets):
            raise SystemExit(f"train: no audio offsets file {cfg.audio_offsets}; give --audio-offsets '' to train without")
        with open(cfg.audio_offsets) as f:
            out.update(json.load(f).get("corrections", {}))
    with open(cfg.split) as f:
        out.update(json.load(f).get("audioOffsetFrames", {}))
    return {k: int(v) for k, v in out.items() if int(v)}


def load_split(path):
    """(held-out speakers, clips excluded from everything) of a split.json."""
    with open(path) as f:
        s = json.load(f)
    return s["heldOutSpeakers"], list(s.get("excludedClips", {}))


def load_train_val(cfg):
    """(train, validation) sets: validation is the held-out speakers of cfg.split."""
    held, excluded = load_split(cfg.split)
    train = FaceDataset(cfg.data, exclude_speakers=held, exclude_clips=excluded)
    try:
        val = FaceDataset(cfg.data, speakers=held, exclude_clips=excluded)
    except SystemExit:
        val = None
    return train, val
