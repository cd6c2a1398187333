"""The per-clip analysis cache: dlib boxes and landmarks of every frame, mouth crops and the
log-mel of the clip's own audio, one .npz per clip under CACHE_DIR/clips/ (outside git).
Keyed by file name and size; computed once, reused by the sync model's training and by the
original system's metrics."""
import os
import sys
import time

import numpy as np

from . import faces as F
from . import media, mel


def clip_cache_path(cfg, stem, path):
    return os.path.join(cfg.cache_dir, "clips", f"{stem}-{os.path.getsize(path)}.npz")


def analyse_clip(path, faces, descriptor_every=0, ref=None):
    """Everything the evaluation needs about one video file (ref: another analysis whose boxes
    stand in where the detector misses)."""
    frames, fps = media.read_frames(path)
    a = F.analyse(faces, frames, None if ref is None else ref["boxes"], descriptor_every)
    a["mouth"] = F.mouth_crops(frames, a["landmarks"])
    a["mel"] = mel.log_mel(media.read_audio(path)).astype(np.float16)
    a["fps"] = np.float32(fps)
    a["size"] = np.array(frames.shape[1:3], np.int32)
    return a, frames


def load_or_build(cfg, stem, path, faces=None, log=print):
    p = clip_cache_path(cfg, stem, path)
    if os.path.exists(p):
        with np.load(p) as z:
            return {k: z[k] for k in z.files}
    faces = faces or F.Faces(cfg.detect_max_side)
    t = time.time()
    a, frames = analyse_clip(path, faces, descriptor_every=cfg.identity_every)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    np.savez_compressed(p + ".tmp.npz", **a)
    os.replace(p + ".tmp.npz", p)
    log(f"cache: {stem}: {len(frames)} frames, face in {a['found'].mean():.0%}, {time.time() - t:.0f} s")
    return a


def build_all(cfg, clips, log=print):
    faces = None
    out = {}
    for stem, path, _, _ in clips:
        if not os.path.exists(clip_cache_path(cfg, stem, path)) and faces is None:
            faces = F.Faces(cfg.detect_max_side)
        out[stem] = load_or_build(cfg, stem, path, faces, log)
    return out


if __name__ == "__main__":   # python -m dubeval.cache: fill the cache (held-out clips first)
    from .clips import all_clips
    from .config import EvalConfig
    cfg = EvalConfig()
    clips = sorted(all_clips(cfg), key=lambda c: not c[3])
    build_all(cfg, clips, log=lambda s: print(s, flush=True))
    print("cache done", flush=True)
