"""Stage 1: the VQGAN — shared encoder, upper and lower EMA codebooks, decoder, and a patch
discriminator after a warm-up.

    loss_G = L1(x̂, x) + w_ssim·(1 − SSIM(x̂, x)) + β·‖z − sg(q)‖²  [+ w_gan·(−D(x̂))  after disc_start]
    loss_D = hinge: relu(1 − D(x)) + relu(1 + D(x̂))                                   after disc_start

Each face half is encoded on its own (as the engine does), quantized with its own codebook, and
the re-joined grid is decoded.
"""
import math

import torch
import torch.nn.functional as F

from .common import StageRun, load_checkpoint, step_generator
from .model import EMACodebook, PatchDiscriminator, SwapTalk, ssim

LOSSES = ["loss", "l1", "ssim", "commit", "gan", "disc", "psnr", "dead_codes",
          "used_upper", "used_lower", "perplexity_upper", "perplexity_lower", "val_l1", "val_psnr", "val_psnr_lower"]


class VQGAN(torch.nn.Module):
    """The VQGAN parts of a SwapTalk model, with EMA codebooks (for DDP: one module to wrap)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, codebooks):
        m, s = self.model, x.shape[2]
        b = x.shape[0]
        z = m.encode(torch.cat([x[:, :, : s // 2], x[:, :, s // 2:]]))
        zu, zl = z[:b], z[b:]
        qu, iu, cu = codebooks[0].quantize(zu)
        ql, il, cl = codebooks[1].quantize(zl)
        rec = m.decode(torch.cat([qu, ql], dim=2))
        return rec, (zu, zl), (iu, il), cu + cl


def psnr(a, b):
    mse = F.mse_loss(a.float().clamp(-1, 1), b.float()).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def train_vqgan(cfg, rt, train, val, run_dir):
    manifest = cfg.manifest()
    torch.manual_seed(cfg.seed)
    model = SwapTalk(manifest).to(rt.device)
    vq = VQGAN(model)
    for n, p in model.named_parameters():  # this stage trains the VQGAN parts only
        if n.split(".")[0] not in ("encoder", "quant_conv", "post_quant_conv", "decoder"):
            p.requires_grad_(False)
    codebooks = [EMACodebook(model.quantize_upper.embedding, cfg.vq_ema_decay, cfg.vq_dead_code_threshold),
                 EMACodebook(model.quantize_lower.embedding, cfg.vq_ema_decay, cfg.vq_dead_code_threshold)]
    disc = PatchDiscriminator(layers=max(1, min(3, manifest["imageSize"].bit_length() - 5))).to(rt.device)
    vq_params = [p for n, p in vq.named_parameters()
                 if p.requires_grad and n.split(".")[1] in ("encoder", "quant_conv", "post_quant_conv", "decoder")]
    opt = torch.optim.Adam(vq_params, lr=cfg.vq_lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.vq_disc_lr, betas=(0.5, 0.9))

    run = StageRun("vqgan", cfg, rt, run_dir, cfg.vq_steps, rt.device)
    run.restore(model=model, disc=disc, opt=opt, opt_d=opt_d)
    if run.state is not None:
        for cb, s in zip(codebooks, run.state["codebooks"]):
            cb.load_state_dict(s)
    if run.done:
        return model
    vq_ddp, disc_ddp = rt.wrap(vq), rt.wrap(disc)
    weights = train.clip_weights(cfg.clip_balance)

    def one_step(step):
        g = step_generator(cfg.seed, step, rt.rank)
        g_shared = step_generator(cfg.seed, step, 0, salt=1)  # same on every rank (codebook restarts)
        warm = step < cfg.vq_warmup_steps
        per_rank = max(1, (cfg.vq_warmup_batch if warm else cfg.vq_batch) // rt.world)
        rows = train.sample_rows(per_rank, g, weights)
        x = train.images(rows)
        if warm:
            x = F.interpolate(x, size=(cfg.vq_warmup_size, cfg.vq_warmup_size), mode="area")
        if cfg.vq_flip:
            flip = torch.rand(per_rank, generator=g) < 0.5
            x[flip] = x[flip].flip(3)
        x = x.to(rt.device)
        gan_on = step >= cfg.vq_disc_start
        with rt.autocast():
            rec, (zu, zl), (iu, il), commit = vq_ddp(x, codebooks)
            l1 = F.l1_loss(rec, x)
            s = ssim(rec.float(), x)
            loss = l1 + cfg.vq_ssim_weight * (1 - s) + cfg.vq_commitment * commit
            gan = torch.zeros((), device=rt.device)
            if gan_on:
                for p in disc.parameters():
                    p.requires_grad_(False)
                gan = -disc_ddp(rec).mean()
                for p in disc.parameters():
                    p.requires_grad_(True)
                loss = loss + cfg.vq_disc_weight * gan
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vq_params, 1.0)
        opt.step()
        dead = codebooks[0].update(zu, iu, rt, g_shared) + codebooks[1].update(zl, il, rt, g_shared)
        d_loss = torch.zeros(())
        if gan_on:
            with rt.autocast():
                d_loss = F.relu(1 - disc_ddp(x)).mean() + F.relu(1 + disc_ddp(rec.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        return {"loss": loss.item(), "l1": l1.item(), "ssim": s.item(), "commit": commit.item(), "gan": gan.item(),
                "disc": d_loss.item(), "psnr": psnr(rec.detach(), x), "dead_codes": dead}

    def report():  # codebook usage since the last row (the same on every process: counts are summed)
        (used_u, ppl_u), (used_l, ppl_l) = codebooks[0].report(), codebooks[1].report()
        return {"used_upper": used_u, "perplexity_upper": ppl_u, "used_lower": used_l, "perplexity_lower": ppl_l}

    run.train(one_step, lambda: {"model": model.state_dict(), "disc": disc.state_dict(), "opt": opt.state_dict(),
                                 "opt_d": opt_d.state_dict(), "codebooks": [c.state_dict() for c in codebooks],
                                 "manifest": manifest},
              LOSSES, show=("l1", "psnr", "used_lower"), report=report,
              validate=(lambda: validate(vq, codebooks, val, rt)) if val is not None else None)
    return model


@torch.no_grad()
def validate(vq, codebooks, val, rt, n=64):
    """L1 and PSNR on a fixed set of held-out frames (whole crop, and its lower half)."""
    rows = torch.linspace(0, len(val) - 1, min(n, len(val))).long()
    l1s, mses, lows = [], [], []
    for chunk in rows.split(16):
        x = val.images(chunk).to(rt.device)
        rec = vq(x, codebooks)[0].float().clamp(-1, 1)
        l1s.append(F.l1_loss(rec, x).item())
        mses.append(F.mse_loss(rec, x).item())
        s = x.shape[2]
        lows.append(F.mse_loss(rec[:, :, s // 2:], x[:, :, s // 2:]).item())
    m = lambda v: sum(v) / len(v)
    return {"val_l1": m(l1s), "val_psnr": 10 * math.log10(4 / max(m(mses), 1e-12)),
            "val_psnr_lower": 10 * math.log10(4 / max(m(lows), 1e-12))}


def load_trained(cfg, run_dir, device="cpu"):
    """The model with the VQGAN stage's final weights."""
    state = load_checkpoint(f"{run_dir}/vqgan/ckpt.pt", device)
    if state is None:
        raise SystemExit(f"train: no VQGAN checkpoint in {run_dir}/vqgan; run the vqgan stage first")
    model = SwapTalk(cfg.manifest()).to(device)
    model.load_state_dict(state["model"])
    return model, state
