"""Stage 3: the lip-sync UNet and the audio encoder, in token space, with the VQGAN frozen.

For each window of `sync_window` consecutive frames of a clip:
  target     the frame's own lower-half tokens; the UNet zeroes its mouth (the manifest's
             `lipsyncTargetMask`), so the mouth must come from the audio
  reference  the lower-half tokens of another frame of the same clip, ≥ lip_reference_min_gap
             frames away (at inference the dub stage passes the frame itself: R = T)
  audio      the frame's mel window through the audio encoder
Loss: MSE to the frame's quantized lower-half tokens + cross-entropy of the nearest code
+ (after lip_sync_start) the frozen latent expert's sync loss on the generated window.
"""
import torch
import torch.nn.functional as F

from .common import StageRun, step_generator
from .sync import load_expert, to_grid
from .tokens import TokenSet
from .vqgan import load_trained

LOSSES = ["loss", "code_mse", "code_ce", "sync", "token_accuracy", "val_code_mse", "val_token_accuracy",
          "val_masked_token_accuracy", "val_sync_generated", "val_sync_original", "val_sync_generated_cross",
          "val_sync_original_cross"]


def references(tokens, starts, window, gap, g):
    """A reference row per window: same clip, at least `gap` frames from every frame of the window."""
    out = torch.empty_like(starts)
    for i, s in enumerate(starts.tolist()):
        rows = tokens.clip_rows[int(tokens.clip[s])]
        f0 = int(tokens.frame[s])
        frames = tokens.frame[rows]
        far = rows[(frames < f0 - gap) | (frames > f0 + window - 1 + gap)]
        pool = far if len(far) else rows
        out[i] = pool[torch.randint(0, len(pool), (1,), generator=g)]
    return out


def forward(model, codebook, tokens, starts, refs, window, h, w, mel=None):
    """(generated lower grids [B·T, E, h, w], ground-truth grids, ground-truth indices [B·T, h·w])."""
    rows = (starts.unsqueeze(1) + torch.arange(window)).reshape(-1)
    e = codebook.shape[1]
    gt_idx = tokens.lower[rows]
    gt = codebook[gt_idx].permute(0, 2, 1).reshape(-1, e, h, w)
    ref = codebook[tokens.lower[refs]].permute(0, 2, 1).reshape(-1, e, h, w).repeat_interleave(window, 0)
    m = tokens.mel[rows] if mel is None else mel
    audio = model.audio(m.transpose(1, 2))
    out = model.lipsync(gt, ref, audio)
    return out, gt, gt_idx, rows


def code_losses(out, gt, gt_idx, codebook):
    e = codebook.shape[1]
    flat = out.permute(0, 2, 3, 1).reshape(-1, e)
    d = (flat ** 2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + (codebook ** 2).sum(1)
    target = gt_idx.reshape(-1)
    ce = F.cross_entropy(-d, target)
    acc = (d.argmin(1) == target).float()
    return F.mse_loss(out, gt), ce, acc


def sync_score(expert, grids_bt, mel_bt, b, window, h, w):
    """Cosine similarity [B] of generated windows with their audio under the frozen expert."""
    e = grids_bt.shape[1]
    v = expert.embed_video(grids_bt.reshape(b, window, e, h, w))
    a = expert.embed_audio(mel_bt.reshape(b, window, *mel_bt.shape[1:]))
    return (v * a).sum(-1)


def train_lipsync(cfg, rt, run_dir):
    manifest = cfg.manifest()
    model, _ = load_trained(cfg, run_dir, rt.device)
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith("audio.") or n.startswith("lipsync."))
    codebook = model.quantize_lower.embedding.weight.detach()
    expert = load_expert(cfg, run_dir, rt.device)
    for p in expert.parameters():
        p.requires_grad_(False)
    g0 = manifest["imageSize"] // (1 << (len(manifest["channelMult"]) - 1))
    h, w = g0 // 2, g0
    tokens, val = TokenSet(run_dir, device=rt.device), TokenSet(run_dir, heldout=True, device=rt.device)
    starts_all, val_starts = tokens.window_starts(cfg.sync_window), val.window_starts(cfg.sync_window)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lip_lr, weight_decay=1e-4)
    run = StageRun("lipsync", cfg, rt, run_dir, cfg.lip_steps, rt.device)
    run.restore(model=model, opt=opt)
    if run.done:
        return model
    per_rank = max(1, cfg.lip_batch // rt.world)
    window = cfg.sync_window

    def one_step(step):
        g = step_generator(cfg.seed, step, rt.rank, salt=3)
        starts = starts_all[torch.randint(0, len(starts_all), (per_rank,), generator=g)]
        refs = references(tokens, starts, window, cfg.lip_reference_min_gap, g)
        with rt.autocast():
            out, gt, gt_idx, rows = forward(model, codebook, tokens, starts, refs, window, h, w)
            mse, ce, tok_acc = code_losses(out.float(), gt, gt_idx, codebook)
            loss = cfg.lip_code_weight * mse + cfg.lip_ce_weight * ce
            sync = torch.zeros(())
            if step >= cfg.lip_sync_start:
                # At weight 0 (--lip-sync-weight 0) the score is only logged: no graph through the expert.
                with torch.set_grad_enabled(cfg.lip_sync_weight > 0):
                    cos = sync_score(expert, out, tokens.mel[rows], per_rank, window, h, w)
                    sync = -torch.log(((cos.float() + 1) / 2).clamp_min(1e-6)).mean()
                if cfg.lip_sync_weight > 0:
                    loss = loss + cfg.lip_sync_weight * sync
        opt.zero_grad(set_to_none=True)
        loss.backward()
        rt.average_gradients_(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return {"loss": loss.item(), "code_mse": mse.item(), "code_ce": ce.item(), "sync": sync.item(),
                "token_accuracy": float(tok_acc.mean())}

    run.train(one_step, lambda: {"model": model.state_dict(), "opt": opt.state_dict(), "manifest": manifest},
              LOSSES, show=("code_mse", "token_accuracy", "sync"),
              validate=(lambda: validate(model, expert, codebook, val, val_starts, cfg, h, w)) if len(val_starts) else None)
    return model


@torch.no_grad()
def validate(model, expert, codebook, val, starts_all, cfg, h, w, n=64):
    """Held-out speakers, R = T as at inference: code MSE, token accuracy (all and under the mask),
    and the expert's sync score of generated and original mouths with their own audio (self) and
    with another window's audio (cross: the dubbing case)."""
    window = cfg.sync_window
    g = step_generator(cfg.seed, 0, 0, salt=98)
    starts = starts_all[torch.randint(0, len(starts_all), (min(n, len(starts_all)),), generator=g)]
    b = len(starts)
    rows = (starts.unsqueeze(1) + torch.arange(window)).reshape(-1)
    e = codebook.shape[1]
    gt_idx = val.lower[rows]
    gt = codebook[gt_idx].permute(0, 2, 1).reshape(-1, e, h, w)
    ref = gt  # R = T: the reference is the frame itself
    audio = model.audio(val.mel[rows].transpose(1, 2))
    out = model.lipsync(gt, ref, audio)
    mse, _, tok = code_losses(out, gt, gt_idx, codebook)
    mask = torch.zeros(h, w, dtype=torch.bool, device=tok.device)
    box = cfg.manifest().get("lipsyncTargetMask")
    if box:
        mask[box[0]:box[1], box[2]:box[3]] = True
    masked = tok.reshape(-1, h, w)[:, mask].mean() if box else tok.mean()
    # cross: audio of another window (rolled batch)
    cross_rows = rows.reshape(b, window).roll(1, 0).reshape(-1)
    out_cross = model.lipsync(gt, ref, model.audio(val.mel[cross_rows].transpose(1, 2)))
    mel_self, mel_cross = val.mel[rows], val.mel[cross_rows]
    return {"val_code_mse": mse.item(), "val_token_accuracy": float(tok.mean()), "val_masked_token_accuracy": float(masked),
            "val_sync_generated": float(sync_score(expert, out, mel_self, b, window, h, w).mean()),
            "val_sync_original": float(sync_score(expert, gt, mel_self, b, window, h, w).mean()),
            "val_sync_generated_cross": float(sync_score(expert, out_cross, mel_cross, b, window, h, w).mean()),
            "val_sync_original_cross": float(sync_score(expert, gt, mel_cross, b, window, h, w).mean())}
