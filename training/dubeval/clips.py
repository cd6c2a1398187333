"""Which clips belong to which speaker, and which are held out (training/data/split.json)."""
import json
import os


def speaker_of(stem, table):
    return table.get(stem, stem)


def load_speakers(path):
    table = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                stem, speaker = line.split("\t")
                table[stem] = speaker
    return table


def all_clips(cfg):
    """[(stem, path, speaker, held_out)]: every clip of media/train/ plus media/speaker-c.mp4
    (the demo's person, speaker "speaker-c", held out)."""
    table = load_speakers(cfg.speakers)
    with open(cfg.split) as f:
        held = set(json.load(f)["heldOutSpeakers"])
    train_dir = os.path.join(cfg.media, "train")
    paths = sorted(os.path.join(train_dir, f) for f in os.listdir(train_dir)
                   if f.rsplit(".", 1)[-1] in ("mp4", "mkv", "mpg", "mov"))
    paths.insert(0, os.path.join(cfg.media, "speaker-c.mp4"))
    out = []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        spk = speaker_of(stem, table)
        out.append((stem, p, spk, spk in held))
    return out


# Left out of the sync model's training: its audio was muxed from a separate file and its sync
# is not verified (media/train/README.md).
SYNC_UNVERIFIED = {"edtalk_mouth_source_muxed"}


def audio_offsets(cfg):
    """{stem: frames} of held-out clips whose own audio is measurably out of sync with their
    picture (split.json's audioOffsetFrames, each with its evidence): the sync model's proof
    counts these, not 0, as the true offset."""
    with open(cfg.split) as f:
        return {k: int(v) for k, v in json.load(f).get("audioOffsetFrames", {}).items()}


def held_out(cfg):
    return [c for c in all_clips(cfg) if c[3]]


def training(cfg):
    return [c for c in all_clips(cfg) if not c[3]]
