"""Audio–video offsets of the clips: public talking-head clips are not all in sync.

Two measurements, independent of each other:

- **Cross-fitted sync model** (`measure`): the training speakers are split into `FOLDS` folds; a
  sync model trained on the other folds measures each clip of the held-back fold (it has never
  seen that speaker). A clip's offset is the argmax over d of s(d) summed over its 1-second
  windows; its consistency is the share of windows whose own peak lies within ±1 frame of it.
  The result is `training/data/av_offsets.json`, committed, remade by
  `python -m dubeval.offsets` (about 10 minutes on 2 cores). The evaluation sync model is then
  trained on the clips with each consistent offset corrected (`shift_audio`), as SyncNet's
  authors corrected LRS2 before training on it.
- **Model-free check** (`envelope_offset`): the lag at which the lip opening (dlib landmarks
  62–66 over the jaw width) correlates best with the speech energy (mean of the lower 40 mel
  bins). Crude, but it needs no training: on GRID's studio recordings it peaks at 0.

Offsets are in the clip's own frames; d > 0 means the audio is d frames late (audio at t + d
goes with picture t), the convention of sync.offset_scores.
"""
import json
import os
import sys
import time

import numpy as np

from . import clips as C
from . import sync
from .config import TRAINING, EvalConfig
from .mel import FRAMES_PER_SECOND as MEL_FPS

FOLDS = 3
MIN_CONSISTENCY = 0.5        # below this share of agreeing windows an offset is not corrected
MIN_WINDOWS = 3
MIN_OFFSET = 2               # ±1 frame is within what the measurement resolves: left as it is
PATH = os.path.join(TRAINING, "data", "av_offsets.json")


def shift_audio(a, d):
    """The analysis `a` with its audio moved `d` video frames earlier, so that picture t meets
    the audio that was at t + d: a clip whose audio is d frames late comes out in sync. The mel
    frames shifted in from beyond the end are zeros (silence, after per-clip normalisation)."""
    k = int(round(d * MEL_FPS / float(a["fps"])))
    if k == 0:
        return a
    m = a["mel"]
    out = np.zeros_like(m)
    if k > 0:
        out[:len(m) - k] = m[k:]
    else:
        out[-k:] = m[:len(m) + k]
    return dict(a, mel=out)


def clip_offset(scores, offs):
    """(offset, consistency) of one clip from its windows' scores [windows, offsets]."""
    if len(scores) == 0:
        return 0, 0.0
    d = int(offs[np.argmax(scores.sum(0))])
    peaks = offs[np.argmax(scores, axis=1)]
    return d, float(np.mean(np.abs(peaks - d) <= 1))


def envelope_offset(a, max_lag=12, margin=15):
    """Model-free: (lag of peak correlation, r at the peak, r at 0) between lip opening and
    speech energy of one clip's analysis (landmarks, mel, fps)."""
    lm, fps = a["landmarks"], float(a["fps"])
    opening = np.linalg.norm(lm[:, 66] - lm[:, 62], axis=1) / np.linalg.norm(lm[:, 16] - lm[:, 0], axis=1)
    energy = a["mel"].astype(np.float32)[:, :40].mean(1)
    n = len(opening)
    inner = slice(margin, n - margin)
    t = np.arange(n) * MEL_FPS / fps
    lags = np.arange(-max_lag, max_lag + 1)
    r = []
    for lag in lags:
        idx = np.clip(np.round(t + lag * MEL_FPS / fps).astype(int), 0, len(energy) - 1)
        x, y = energy[idx][inner], opening[inner]
        ok = ~np.isnan(y)
        r.append(np.corrcoef(x[ok], y[ok])[0, 1] if ok.sum() > 3 else np.nan)
    r = np.nan_to_num(np.array(r), nan=-1.0)
    return int(lags[np.argmax(r)]), float(r.max()), float(r[max_lag])


def folds_of(speakers, sizes):
    """Speakers into FOLDS folds, largest first, each to the fold with the fewest frames so far
    (so no fold lacks all of the long clips)."""
    folds, load = [[] for _ in range(FOLDS)], [0] * FOLDS
    for s in sorted(speakers, key=lambda s: (-sizes[s], s)):
        i = int(np.argmin(load))
        folds[i].append(s)
        load[i] += sizes[s]
    return folds


def measure(cfg, train, table, log=print):
    """{stem: {offset, consistency, windows, envelope}} for every training clip (cross-fitted)."""
    spk = {s: C.speaker_of(s, table) for s in train}
    sizes = {}
    for s, a in train.items():
        sizes[spk[s]] = sizes.get(spk[s], 0) + len(a["found"])
    out = {}
    for i, fold in enumerate(folds_of(set(spk.values()), sizes)):
        t = time.time()
        rest = {s: a for s, a in train.items() if spk[s] not in fold}
        net, _ = sync.train(cfg, rest, log=lambda s: None)
        scorer = sync.Scorer(net)
        for s in sorted(x for x in train if spk[x] in fold):
            clip = sync.clip_from_cache(train[s], cfg)
            starts = sync.windows_of(clip, cfg.sync_eval_window, cfg.sync_max_offset)
            if not starts:
                continue
            scores, offs = sync.offset_scores(scorer.v, scorer.a, clip, starts, cfg.sync_eval_window,
                                              cfg.sync_max_offset)
            d, c = clip_offset(scores, offs)
            out[s] = {"offset": d, "consistency": round(c, 2), "windows": len(starts),
                      "envelope_peak_lag": envelope_offset(train[s])[0]}
            log(f"offsets: {s}: {d:+d} frames ({c:.0%} of {len(starts)} windows agree; "
                f"lip/energy peak at {out[s]['envelope_peak_lag']:+d})")
        log(f"offsets: fold {i + 1}/{FOLDS} ({', '.join(sorted(fold))}) in {time.time() - t:.0f} s")
    return out


def to_correct(clips):
    """{stem: offset} of the measured offsets that are consistent enough to correct."""
    return {s: m["offset"] for s, m in sorted(clips.items())
            if abs(m["offset"]) >= MIN_OFFSET and m["consistency"] >= MIN_CONSISTENCY and m["windows"] >= MIN_WINDOWS}


def corrections(path=PATH):
    """{stem: offset} to correct before training (the file's "corrections"; {} without one)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {k: int(v) for k, v in json.load(f)["corrections"].items()}


def main():
    from . import cache
    cfg = EvalConfig()
    log = lambda s: print(s, file=sys.stderr, flush=True)
    train = cache.build_all(cfg, [c for c in C.training(cfg) if c[0] not in C.SYNC_UNVERIFIED], log)
    t = time.time()
    clips = measure(cfg, train, C.load_speakers(cfg.speakers), log)
    doc = {"comment": "Audio-video offset of each training clip in its own frames (d > 0: audio d frames "
                      "late), measured by `python -m dubeval.offsets` (training/dubeval/offsets.py): a "
                      "cross-fitted evaluation sync model, and the model-free lip-opening/energy peak "
                      "beside it. Offsets of 2 frames or more agreed by at least half of a clip's windows "
                      "(and 3 windows) are "
                      "corrected (\"corrections\") before the evaluation sync model and the trainer's sync and lip-sync "
                      "stages see them.",
           "measured": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - t),
           "sync_steps": cfg.sync_steps, "corrections": to_correct(clips), "clips": clips}
    with open(PATH + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(PATH + ".tmp", PATH)
    print(f"wrote {PATH}: {len(corrections())} of {len(clips)} clips to correct")


if __name__ == "__main__":
    main()
