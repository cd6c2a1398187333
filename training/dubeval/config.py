"""The one configuration object of an evaluation run. Every field is a flag of
`training/evaluate.py` (`--cache-dir`, `--max-seconds 5`, `--json`)."""
import dataclasses
import os
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING = os.path.dirname(HERE)
ROOT = os.path.dirname(TRAINING)


@dataclass
class EvalConfig:
    # --- inputs ---
    media: str = os.path.join(os.path.dirname(ROOT), "shared", "media")   # ../shared/media
    split: str = os.path.join(TRAINING, "data", "split.json")
    speakers: str = os.path.join(TRAINING, "data", "speakers.tsv")
    model: str = os.path.join(ROOT, "models", "dubfarm-small")   # trained weights directory
    untrained: str = "untrained:small"
    logs: str = ""                      # trainer CSV logs (default: MODEL/logs)
    dubfarm: str = os.path.join(ROOT, ".build", "release", "dubfarm")
    # --- outputs ---
    out: str = os.path.join(ROOT, "out", "eval")
    cache_dir: str = os.environ.get("DUBEVAL_CACHE", "/work/data/eval-cache")
    json: str = ""                      # also write the results as JSON here ("-": print)
    # --- what to run ---
    systems: str = "original,untrained,trained,swapped"   # swapped: trained, submit --face (another held-out speaker)
    max_seconds: float = 0.0            # evaluate only the first N seconds of each clip (0: all)
    workers: int = 2
    threads: int = 1
    reuse: bool = True                  # reuse farm outputs already in OUT/videos
    identity_every: int = 5             # dlib descriptor on every Nth frame (it is the slow part)
    # --- per-job personalisation (issue 14): the 'personalised' rows ---
    personalise_seconds: int = 300      # training budget per held-out clip (submit --personalise=N); 0: no such rows
    personalise_fraction: float = 0.7   # share of each evaluated clip (from its start) the fine-tune may see
                                        # (coordinator personalise.max_frames); every tail metric is on the rest
    personalise_workers: int = 1        # the personalising farm: one worker of
    personalise_threads: int = 2        # 2 threads (the "one 2-core worker"), which also dubs the self drive
    # --- face geometry (dlib) ---
    detect_max_side: int = 320          # frames are downscaled to this for the HOG detector
    # --- evaluation sync model ---
    sync_window: int = 5                # video frames per sample (0.2 s at 25 fps)
    mel_per_frame: int = 4              # mel frames (100 Hz) per video frame of the window: 20
    sync_max_offset: int = 15           # offsets searched, in video frames (−15..+15)
    sync_eval_window: int = 25          # frames of one offset-search window (1 s at 25 fps)
    sync_steps: int = 800               # training steps (sync_batch chunks of sync_chunk frames): ~5 min on 2 cores
    sync_batch: int = 8                 # chunks per training step
    sync_chunk: int = 25                # consecutive video frames per chunk
    sync_width: int = 16                # conv channels of the first layer (then 2×, 3×, 4×)
    sync_lr: float = 1e-3
    sync_minutes: float = 0.0           # wall-clock cap on its training (0: none; a cap makes the model depend on machine load)
    sync_threads: int = 2
    sync_seed: int = 0
    retrain_sync: bool = False

    def to_dict(self):
        return dataclasses.asdict(self)
