"""Stage 2: the latent sync expert — does a window of lower-face tokens match a mel window?

Contrastive (InfoNCE): for each window of `sync_window` consecutive frames, the candidates are
its own audio (the positive), the same clip's audio shifted by sync_min_shift…sync_max_shift
frames either way (`sync_negatives` hard negatives), and, with `sync_in_batch_negatives`, every
other window's audio in the batch. Other windows are mostly other speakers, so they can be
solved by matching a voice to a face, which says nothing about timing: on the dubfarm-small data
an expert trained with them learned exactly that (the true pair first in 16 % of training batches)
and found the true offset no more often than chance, on training and held-out speakers alike;
trained on shifted negatives only (`--sync-in-batch-negatives false`) its loss stayed at chance
for 150 steps (docs/training.md, "What did not work"). With `--sync-chunk N` the task is
dense instead (dense_loss): every window of an N-window chunk against its clip's audio at every
shift in ±sync_max_shift, the form the evaluation's pixel sync model learns timing from. The lip-sync stage then uses it frozen: its sync loss pushes generated mouths to score
high against the audio that drives them.
"""
import torch
import torch.nn.functional as F

from .common import StageRun, load_checkpoint, step_generator
from .model import LatentSyncExpert
from .tokens import TokenSet
from .vqgan import load_trained

LOSSES = ["loss", "accuracy", "val_loss", "val_accuracy", "val_offset_accuracy"]


def make_expert(cfg, manifest):
    g = manifest["imageSize"] // (1 << (len(manifest["channelMult"]) - 1))
    return LatentSyncExpert(manifest["embedDim"], (g // 2, g), cfg.sync_window, dim=cfg.sync_dim)


def window_batch(tokens, codebook, starts, window):
    """Lower-half token grids [B, T, E, h, w] and mel windows [B, T, 80, 16] of windows at `starts`."""
    rows = starts.unsqueeze(1) + torch.arange(window)
    idx = tokens.lower[rows]                                  # [B, T, h*w]
    grids = codebook[idx]                                     # [B, T, h*w, E]
    return grids, tokens.mel[rows]


def to_grid(grids, h, w):
    b, t, n, e = grids.shape
    return grids.permute(0, 1, 3, 2).reshape(b, t, e, h, w)


def shifted_starts(tokens, starts, shifts, window):
    """Start rows of the same clip's window `shift` frames away (-1 where it does not exist)."""
    out = torch.full_like(starts, -1)
    for i, (s, d) in enumerate(zip(starts.tolist(), shifts.tolist())):
        r = tokens.row_of(tokens.clip[s], int(tokens.frame[s]) + d)
        if r >= 0 and r + window - 1 < tokens.n and int(tokens.clip[r + window - 1]) == int(tokens.clip[s]) \
                and int(tokens.frame[r + window - 1]) == int(tokens.frame[r]) + window - 1:
            out[i] = r
    return out


def info_nce(expert, grids, mel, neg_mel, temperature, in_batch=True):
    """Loss and accuracy: each video window against its audio, its shifted audios and (in_batch)
    the batch's; accuracy is how often the true pair scores highest."""
    v = expert.embed_video(grids)                             # [B, D]
    a = expert.embed_audio(mel)                               # [B, D]
    if in_batch:
        logits, target = v @ a.t(), torch.arange(len(v), device=v.device)  # [B, B]: the true pair on the diagonal
    else:
        logits, target = (v * a).sum(-1, keepdim=True), torch.zeros(len(v), dtype=torch.long, device=v.device)
    if neg_mel is not None:
        b, k = neg_mel.shape[:2]
        an = expert.embed_audio(neg_mel.reshape(b * k, *neg_mel.shape[2:])).reshape(b, k, -1)
        logits = torch.cat([logits, (v.unsqueeze(1) * an).sum(-1)], dim=1)
    logits = logits / temperature
    return F.cross_entropy(logits, target), float((logits.argmax(1) == target).float().mean())


def add_code_noise(grids, g):
    """Code grids plus Gaussian noise at 10 % of their spread: robust to the UNet's off-code outputs."""
    return grids + 0.1 * grids.std() * torch.randn(grids.shape, generator=g).to(grids.device)


def dense_loss(expert, tokens, codebook, chunk_starts, cfg, h, w, g):
    """The dense form of the contrastive task (what the evaluation's pixel sync model learns
    timing from): a chunk is `sync_chunk` consecutive windows of one clip; each window is scored
    against the same clip's audio windows at every shift d in ±sync_max_shift, and a
    cross-entropy over cos/τ picks d = 0; a second one does the same for the chunk's mean cosine
    per d (τ/5). chunk_starts: rows whose next sync_chunk + 2·sync_max_shift + sync_window − 1
    rows are consecutive frames of one clip. (loss, share of windows whose best shift is 0)."""
    T, L, K = cfg.sync_window, cfg.sync_chunk, cfg.sync_max_shift
    b = len(chunk_starts)
    video_rows = chunk_starts[:, None] + K + torch.arange(L)                  # [b, L] window starts
    audio_rows = chunk_starts[:, None] + torch.arange(L + 2 * K)              # [b, L+2K]
    grids, _ = window_batch(tokens, codebook, video_rows.reshape(-1), T)
    grids = add_code_noise(to_grid(grids, h, w), g)
    mel = tokens.mel[audio_rows.reshape(-1).unsqueeze(1) + torch.arange(T)]   # [b·(L+2K), T, 80, 16]
    v = expert.embed_video(grids).reshape(b, L, -1)
    a = expert.embed_audio(mel).reshape(b, L + 2 * K, -1)
    sim = torch.einsum("bid,bjd->bij", v, a)                                  # [b, L, L+2K]
    gather = (torch.arange(L)[:, None] + torch.arange(2 * K + 1)[None, :]).to(sim.device)
    shifted = torch.gather(sim, 2, gather.expand(b, L, 2 * K + 1))            # d = 0 at index K
    target = torch.full((b * L,), K, dtype=torch.long, device=sim.device)
    tau = cfg.sync_temperature
    loss = F.cross_entropy(shifted.reshape(b * L, -1) / tau, target) + \
        F.cross_entropy(shifted.mean(1) / (tau / 5), target[:b])
    return loss, float((shifted.argmax(2) == K).float().mean())


def sample(tokens, starts_all, n, g, cfg):
    starts = starts_all[torch.randint(0, len(starts_all), (n,), generator=g)]
    negs = []
    for _ in range(cfg.sync_negatives):
        mag = torch.randint(cfg.sync_min_shift, cfg.sync_max_shift + 1, (n,), generator=g)
        sign = torch.where(torch.rand(n, generator=g) < 0.5, -1, 1)
        s = shifted_starts(tokens, starts, mag * sign, cfg.sync_window)
        s = torch.where(s >= 0, s, shifted_starts(tokens, starts, -mag * sign, cfg.sync_window))
        negs.append(torch.where(s >= 0, s, starts_all[torch.randint(0, len(starts_all), (n,), generator=g)]))
    return starts, torch.stack(negs, 1)


def train_sync(cfg, rt, run_dir):
    manifest = cfg.manifest()
    model, _ = load_trained(cfg, run_dir, rt.device)
    codebook = model.quantize_lower.embedding.weight.detach()
    g0 = manifest["imageSize"] // (1 << (len(manifest["channelMult"]) - 1))
    h, w = g0 // 2, g0
    tokens, val = TokenSet(run_dir, device=rt.device), TokenSet(run_dir, heldout=True, device=rt.device)
    starts_all, val_starts = tokens.window_starts(cfg.sync_window), val.window_starts(cfg.sync_window)
    if cfg.sync_chunk:
        chunk_starts = tokens.window_starts(cfg.sync_chunk + 2 * cfg.sync_max_shift + cfg.sync_window - 1)
        if not len(chunk_starts):
            raise SystemExit(f"train: no clip has the {cfg.sync_chunk + 2 * cfg.sync_max_shift + cfg.sync_window - 1} "
                             "consecutive frames a --sync-chunk needs; lower --sync-chunk or --sync-max-shift")
    torch.manual_seed(cfg.seed)
    expert = make_expert(cfg, manifest).to(rt.device)
    opt = torch.optim.AdamW(expert.parameters(), lr=cfg.sync_lr, weight_decay=1e-4)
    run = StageRun("sync", cfg, rt, run_dir, cfg.sync_steps, rt.device)
    run.restore(expert=expert, opt=opt)
    if run.done:
        return expert
    per_rank = max(2, cfg.sync_batch // rt.world)

    def one_step(step):
        g = step_generator(cfg.seed, step, rt.rank, salt=2)
        if cfg.sync_chunk:
            picks = chunk_starts[torch.randint(0, len(chunk_starts), (max(1, per_rank // cfg.sync_chunk),), generator=g)]
            with rt.autocast():
                loss, a = dense_loss(expert, tokens, codebook, picks, cfg, h, w, g)
        else:
            starts, negs = sample(tokens, starts_all, per_rank, g, cfg)
            grids, mel = window_batch(tokens, codebook, starts, cfg.sync_window)
            grids = add_code_noise(to_grid(grids, h, w), g)
            neg_mel = tokens.mel[negs.unsqueeze(-1) + torch.arange(cfg.sync_window)]
            with rt.autocast():
                loss, a = info_nce(expert, grids, mel, neg_mel, cfg.sync_temperature, cfg.sync_in_batch_negatives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Gradients are averaged by hand across processes (the expert's losses use it twice per step).
        rt.average_gradients_(expert.parameters())
        opt.step()
        return {"loss": loss.item(), "accuracy": a}

    run.train(one_step, lambda: {"expert": expert.state_dict(), "opt": opt.state_dict()},
              LOSSES, show=("loss", "accuracy", "val_offset_accuracy"),
              validate=(lambda: validate(expert, val, val_starts, codebook, h, w, cfg)) if len(val_starts) else None)
    return expert


@torch.no_grad()
def validate(expert, val, starts_all, codebook, h, w, cfg, n=128, max_offset=6):
    """Held-out speakers: InfoNCE loss/accuracy, and how often the true offset (0) scores highest
    among offsets −max_offset…+max_offset of the same clip's audio (±1 frame counts)."""
    g = step_generator(cfg.seed, 0, 0, salt=99)
    starts, negs = sample(val, starts_all, min(n, len(starts_all)), g, cfg)
    grids, mel = window_batch(val, codebook, starts, cfg.sync_window)
    grids = to_grid(grids, h, w)
    neg_mel = val.mel[negs.unsqueeze(-1) + torch.arange(cfg.sync_window)]
    loss, a = info_nce(expert, grids, mel, neg_mel, cfg.sync_temperature, cfg.sync_in_batch_negatives)
    v = expert.embed_video(grids)
    hits = total = 0
    for i, s in enumerate(starts.tolist()):
        scores = {}
        for d in range(-max_offset, max_offset + 1):
            r = shifted_starts(val, torch.tensor([s]), torch.tensor([d]), cfg.sync_window)[0]
            if r >= 0:
                scores[d] = float(v[i] @ expert.embed_audio(val.mel[r:r + cfg.sync_window].unsqueeze(0))[0])
        if len(scores) >= 2 * max_offset:
            total += 1
            hits += abs(max(scores, key=scores.get)) <= 1
    return {"val_loss": loss.item(), "val_accuracy": a, "val_offset_accuracy": hits / max(total, 1)}


def load_expert(cfg, run_dir, device="cpu"):
    state = load_checkpoint(f"{run_dir}/sync/ckpt.pt", device)
    if state is None:
        raise SystemExit(f"train: no sync expert in {run_dir}/sync; run the sync stage first")
    expert = make_expert(cfg, cfg.manifest()).to(device)
    expert.load_state_dict(state["expert"])
    return expert.eval()
