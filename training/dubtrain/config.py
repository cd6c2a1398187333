"""The one configuration object of a training run.

Every field is a command-line flag of `training/train.py` (`--vq-steps 4000`, `--device cuda`).
The model's architecture is not here: it is the manifest (`training/configs/NAME.json`, the
same hyperparameters as the Swift engine's `ModelConfig`), so the trainer and the engine can
never disagree about it.
"""
import dataclasses
import json
import os
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINING = os.path.dirname(HERE)
ROOT = os.path.dirname(TRAINING)


@dataclass
class TrainConfig:
    # --- run ---
    data: str = ""                       # dataset directory written by `dubfarm dataset build`
    out: str = "runs/small"              # run directory: one folder per stage (checkpoint, log.csv)
    model: str = "small"                 # manifest: a name in training/configs/ or a path to a manifest.json
    split: str = os.path.join(TRAINING, "data", "split.json")  # held-out speakers
    device: str = "cpu"                  # cpu | cuda | cuda:N (mixed precision, bfloat16, on CUDA)
    threads: int = 0                     # torch intra-op threads on CPU (0: torch's default)
    seed: int = 0
    log_every: int = 10                  # steps between log.csv rows
    val_every: int = 250                 # steps between validation rows (held-out speakers)
    checkpoint_every: int = 200          # steps between checkpoints (also at the end and on Ctrl-C)
    max_minutes: float = 0.0             # stop a stage (checkpointed, resumable) after this wall time; 0: no limit

    # --- stage 1: VQGAN (encoder, two EMA codebooks, decoder, patch discriminator) ---
    vq_steps: int = 4000
    vq_batch: int = 8
    vq_lr: float = 2e-4
    vq_ssim_weight: float = 0.4          # loss = L1 + w·(1 − SSIM) + β·commitment [+ GAN]
    vq_commitment: float = 0.25
    vq_ema_decay: float = 0.99
    vq_dead_code_threshold: float = 0.05  # EMA usage below which a code is restarted from the batch
    vq_disc_start: int = 2500            # generator's GAN term and discriminator updates from this step
    vq_disc_weight: float = 0.05
    vq_disc_lr: float = 2e-4
    vq_warmup_steps: int = 0             # low-resolution warm-up: the first steps on crops resized to
    vq_warmup_size: int = 64             # this side, in batches of
    vq_warmup_batch: int = 16            # this many (the model is convolutional: any size divisible by 2·f works)
    vq_flip: bool = True                 # random horizontal flips
    clip_balance: float = 0.5            # sample a clip with probability ∝ frames^clip_balance
    # clips whose audio is measured out of sync are corrected before the token-space stages
    # (sync, lipsync): this file's "corrections" and the split's "audioOffsetFrames"; "": none
    audio_offsets: str = os.path.join(TRAINING, "data", "av_offsets.json")

    # --- stage 2: latent sync expert (lower-face tokens vs mel) ---
    sync_steps: int = 1500
    sync_batch: int = 64                 # windows per step (with --sync-chunk: sync_batch / sync_chunk chunks)
    sync_lr: float = 3e-4
    sync_window: int = 5                 # consecutive frames per sample
    sync_negatives: int = 4              # shifted-audio negatives of the same clip per sample
    sync_in_batch_negatives: bool = True  # also the batch's other windows (mostly other speakers) as negatives
    sync_min_shift: int = 3              # |shift| of a negative, in frames
    sync_max_shift: int = 12
    sync_dim: int = 128
    sync_temperature: float = 0.1
    sync_chunk: int = 0                  # >0: dense sampling instead (sync.dense_loss): chunks of this many
                                         # windows, each against its clip's audio at every shift in ±sync_max_shift

    # --- stage 3: lip-sync UNet and audio encoder (token space) ---
    lip_steps: int = 3000
    lip_batch: int = 32                  # windows per batch (each of sync_window frames)
    lip_lr: float = 3e-4
    lip_code_weight: float = 1.0         # MSE to the target frame's quantized lower-half tokens
    lip_ce_weight: float = 0.1           # cross-entropy of the code the output is nearest to
    lip_sync_weight: float = 0.05        # frozen expert's sync loss
    lip_sync_start: int = 500
    lip_reference_min_gap: int = 5       # reference frame at least this many frames from the target

    # --- stage 4: face swap (dlib's face-recognition ResNet as the identity loss; dubtrain/swap.py) ---
    # Not in the default stages yet: run it with --stages swap (after lipsync, or on a weights
    # directory with --swap-init).
    swap_steps: int = 3000
    swap_batch: int = 8
    swap_lr: float = 2e-4
    swap_warmup_steps: int = 300         # token MSE to the paste prior alone (every pair) before the decoder and identity net join
    swap_prior_split: float = 0.75       # paste prior: the source's token rows above this fraction of the grid, the target's below
    swap_same_prob: float = 0.25         # pairs whose source is the same speaker (from another clip)
    swap_min_gap: int = 25               # a speaker with one clip: the source at least this many frames away
    swap_identity_weight: float = 1.0    # ‖d(out) − d(source)‖², dlib descriptors
    swap_recon_weight: float = 1.0       # same person: L1 to the target + token MSE
    swap_keep_weight: float = 1.0        # other person: coarse (8×-downsampled) L1 of the lower half + mouth-row token MSE, to the target
    swap_prior_weight: float = 0.25      # other person, after the warm-up: token MSE to the paste prior (keeps the output a face the decoder knows)
    swap_init: str = ""                  # weights directory to start from when the run has no vqgan/lipsync checkpoint

    stages: list = field(default_factory=lambda: ["vqgan", "tokens", "sync", "lipsync"])

    def manifest(self):
        """The model architecture (the engine's manifest.json)."""
        path = self.model if self.model.endswith(".json") else os.path.join(TRAINING, "configs", self.model + ".json")
        if not os.path.exists(path):
            known = sorted(f[:-5] for f in os.listdir(os.path.join(TRAINING, "configs")) if f.endswith(".json"))
            raise SystemExit(f"train: no model configuration {self.model!r} ({path}); known: {', '.join(known)}")
        with open(path) as f:
            return json.load(f)

    def to_dict(self):
        return dataclasses.asdict(self)


def add_arguments(parser, defaults=None):
    """One flag per TrainConfig field (`vq_steps` -> `--vq-steps`)."""
    base = defaults or TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        value = getattr(base, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=value,
                                metavar="BOOL", help=f"(default {value})")
        elif isinstance(value, list):
            parser.add_argument(flag, type=lambda s: [x for x in s.split(",") if x], default=value,
                                metavar="A,B", help=f"(default {','.join(value)})")
        else:
            parser.add_argument(flag, type=type(value), default=value, help=f"(default {value!r})")


def from_arguments(args):
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
