"""Stage "swap": the face-swap transformer (SwapTalk's one-shot customisation), with the VQGAN,
the audio encoder and the lip-sync UNet frozen.

Each sample is a target frame T and a source frame S, both aligned face crops of the dataset:
  same person   (probability swap_same_prob) S is a frame of T's speaker from another clip; a
                speaker with one clip gives a frame at least swap_min_gap frames from T (never T)
  other person  S is a frame of another speaker
The transformer turns T's token grid, attending to S's, into an output grid that the frozen
decoder draws. Losses:
  identity  ‖d(out) − d(S)‖², d = dlib's face-recognition ResNet (dubtrain.identity), on the
            150 × 150 chip dlib would cut from each crop by its landmarks (warped differentiably;
            dlib calls two faces the same person below a distance of 0.6)
  recon     same person only: L1(out, T) + token MSE to T's grid: there is nothing to change
  keep      other person only: L1 of out and T downsampled 8× (pose, lighting, expression, not the
            fine detail that makes an identity) + token MSE of the lower half (the lip shape,
            which lip sync and the sync metrics depend on)
The first swap_warmup_steps train the token MSE alone, on every pair, so the transformer learns
to carry T through before the decoder and the identity network join the loop.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from . import identity, weights
from .common import StageRun, load_checkpoint, step_generator
from .model import SwapTalk

LOSSES = ["loss", "identity", "recon", "keep", "prior", "token_mse", "dist_source", "dist_target",
          "val_dist_source", "val_dist_source_decoded", "val_dist_prior", "val_dist_target", "val_floor", "val_same_l1"]

CHIP = identity.CHIP_SIZE  # 150: dlib's face-recognition input side
CHIP_PADDING = 0.25        # dlib's default padding around the face in get_face_chip


def chip_grids(landmarks, size):
    """Sampling grids [N, 150, 150, 2] for `F.grid_sample(…, align_corners=True)` that cut from
    crops of side `size` the chip `dlib.get_face_chip(crop, shape, 150, 0.25)` would cut, from
    each crop's 68 landmarks [N, 68, 2] (crop pixels). The geometry comes from dlib itself
    (get_face_chip_details: a rotated rectangle whose three corners map to the chip's)."""
    import dlib
    ones = np.ones((3, 1))
    corners = np.array([[0, 0], [CHIP - 1, 0], [CHIP - 1, CHIP - 1]], np.float64)
    ys, xs = np.mgrid[0:CHIP, 0:CHIP]
    chip_px = np.c_[xs.ravel(), ys.ravel(), np.ones(CHIP * CHIP)]
    out = np.empty((len(landmarks), CHIP, CHIP, 2), np.float32)
    frame = dlib.rectangle(0, 0, size - 1, size - 1)
    for i, pts in enumerate(np.asarray(landmarks, np.float64)):
        shape = dlib.full_object_detection(frame, [dlib.point(int(round(x)), int(round(y))) for x, y in pts])
        d = dlib.get_face_chip_details(shape, CHIP, CHIP_PADDING)
        r, c, s = d.rect, math.cos(d.angle), math.sin(d.angle)
        cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
        src = np.array([[cx + c * (x - cx) - s * (y - cy), cy + s * (x - cx) + c * (y - cy)]
                        for x, y in ((r.left(), r.top()), (r.right(), r.top()), (r.right(), r.bottom()))])
        affine = np.linalg.solve(np.c_[corners, ones], src)   # chip pixel (x, y, 1) -> crop pixel
        out[i] = (2 * (chip_px @ affine) / (size - 1) - 1).reshape(CHIP, CHIP, 2)
    return torch.from_numpy(out)


def chips(images, grids):
    """dlib's chips [N, 3, 150, 150] in 0…255 of images [N, 3, S, S] in [-1, 1]; differentiable."""
    return F.grid_sample((images + 1) * 127.5, grids.to(images.device), mode="bilinear", align_corners=True)


class Pairs:
    """Target and source rows (frames with landmarks only) by speaker and clip."""

    def __init__(self, data, min_gap):
        ok = data.has_landmarks
        self.data, self.min_gap = data, min_gap
        self.rows = torch.nonzero(ok).flatten()
        self.by_clip = {int(c): r[ok[r]] for c, r in data.clip_rows.items() if ok[r].any()}
        self.clips_of = {}
        for c in self.by_clip:
            self.clips_of.setdefault(int(data.speaker[self.by_clip[c][0]]), []).append(c)
        self.speakers = sorted(self.clips_of)

    def draw(self, n, same_prob, g):
        """(targets [n], sources [n], same [n] bool)."""
        t = self.rows[torch.randint(0, len(self.rows), (n,), generator=g)]
        same = torch.rand(n, generator=g) < same_prob
        if len(self.speakers) < 2:
            same[:] = True
        s = torch.empty_like(t)
        for i, row in enumerate(t.tolist()):
            sp, clip = int(self.data.speaker[row]), int(self.data.clip[row])
            if same[i]:
                others = [c for c in self.clips_of[sp] if c != clip]
                if others:
                    pool = self.by_clip[others[int(torch.randint(0, len(others), (1,), generator=g))]]
                else:
                    rows = self.by_clip[clip]
                    gap = (self.data.frame[rows] - self.data.frame[row]).abs()
                    pool = rows[gap >= self.min_gap] if (gap >= self.min_gap).any() else rows[rows != row]
            else:
                speakers = [x for x in self.speakers if x != sp]
                clips = self.clips_of[speakers[int(torch.randint(0, len(speakers), (1,), generator=g))]]
                pool = self.by_clip[clips[int(torch.randint(0, len(clips), (1,), generator=g))]]
            s[i] = pool[int(torch.randint(0, len(pool), (1,), generator=g))]
        return t, s, same


def paste_prior(grid_t, grid_s, split):
    """The paste prior: the source's token rows above `split` × height, the target's below."""
    rows = torch.arange(grid_t.shape[2], device=grid_t.device).view(1, 1, -1, 1)
    return torch.where(rows < round(split * grid_t.shape[2]), grid_s, grid_t)


def load_base(cfg, run_dir, device):
    """The model the swap is trained into: the run's lip-sync stage, else its VQGAN, else the
    weights directory cfg.swap_init (e.g. models/dubfarm-small). Returns (model, manifest, where)."""
    for stage in ("lipsync", "vqgan"):
        state = load_checkpoint(f"{run_dir}/{stage}/ckpt.pt", device)
        if state is not None:
            manifest = state.get("manifest") or cfg.manifest()
            model = SwapTalk(manifest).to(device)
            model.load_state_dict(state["model"])
            return model, manifest, f"{run_dir}/{stage}"
    if cfg.swap_init:
        manifest, state, _, _ = weights.load(cfg.swap_init)
        model = SwapTalk(manifest).to(device)
        model.load_state_dict(state)
        return model, manifest, cfg.swap_init
    raise SystemExit(f"train: the swap stage needs a trained model: {run_dir} has no lipsync or vqgan checkpoint; "
                     "run those stages first or give --swap-init WEIGHTS_DIR (e.g. models/dubfarm-small)")


def train_swap(cfg, rt, train, val, run_dir):
    model, manifest, base = load_base(cfg, run_dir, rt.device)
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith("swap."))
    model.eval()  # nothing here behaves differently in training; the frozen parts stay frozen
    idnet = identity.load(device=rt.device)  # dlib's weights from the face_recognition_models wheel; frozen
    size = train.image_size
    pairs, val_pairs = Pairs(train, cfg.swap_min_gap), (Pairs(val, cfg.swap_min_gap) if val is not None else None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.swap_lr, weight_decay=1e-4)
    run = StageRun("swap", cfg, rt, run_dir, cfg.swap_steps, rt.device)
    run.restore(model=model, opt=opt)
    if run.done:
        return model
    if rt.main:
        print(f"[swap] from {base}; {len(pairs.rows)} frames with landmarks, {len(pairs.speakers)} speakers", flush=True)
    per_rank = max(1, cfg.swap_batch // rt.world)

    def one_step(step):
        g = step_generator(cfg.seed, step, rt.rank, salt=5)
        t, s, same = pairs.draw(per_rank, cfg.swap_same_prob, g)
        x_t, x_s = train.images(t).to(rt.device), train.images(s).to(rt.device)
        same = same.to(rt.device)
        with torch.no_grad():
            grid_t, _ = model.tokenize(x_t)
            grid_s, _ = model.tokenize(x_s)
        prior = paste_prior(grid_t, grid_s, cfg.swap_prior_split)
        m = round(cfg.swap_prior_split * grid_t.shape[2])
        with rt.autocast():
            out_grid = model.swap(grid_t, grid_s)
            sq = (out_grid.float() - grid_t) ** 2
            token_mse, mouth_mse = sq.mean((1, 2, 3)), sq[:, :, m:].mean((1, 2, 3))
            prior_mse = ((out_grid.float() - prior) ** 2).mean((1, 2, 3))
            zero = torch.zeros((), device=rt.device)
            id_loss = recon = keep = prior_loss = dist_s = dist_t = zero
            if step < cfg.swap_warmup_steps:
                loss = prior_loss = prior_mse.mean()
            else:
                out = model.decode(out_grid).float()
                l1 = (out - x_t).abs().mean((1, 2, 3))
                half = size // 2
                coarse = (F.avg_pool2d(out[:, :, half:], 8) - F.avg_pool2d(x_t[:, :, half:], 8)).abs().mean((1, 2, 3))
                g_t, g_s = chip_grids(train.landmarks[t], size), chip_grids(train.landmarks[s], size)
                d_out = idnet(chips(out, g_t))
                with torch.no_grad():
                    d_src, d_tgt = idnet(chips(x_s, g_s)), idnet(chips(x_t, g_t))
                id_sq = ((d_out - d_src) ** 2).sum(1)
                id_loss = id_sq.mean()
                recon = torch.where(same, l1 + token_mse, zero).mean()
                keep = torch.where(~same, coarse + mouth_mse, zero).mean()
                prior_loss = torch.where(~same, prior_mse, zero).mean()
                loss = (cfg.swap_identity_weight * id_loss + cfg.swap_recon_weight * recon
                        + cfg.swap_keep_weight * keep + cfg.swap_prior_weight * prior_loss)
                dist_s = id_sq.detach().sqrt().mean()
                dist_t = (d_out.detach() - d_tgt).norm(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        rt.average_gradients_(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return {"loss": loss.item(), "identity": id_loss.item(), "recon": recon.item(), "keep": keep.item(),
                "prior": prior_loss.item(), "token_mse": token_mse.mean().item(), "dist_source": dist_s.item(), "dist_target": dist_t.item()}

    run.train(one_step, lambda: {"model": model.state_dict(), "opt": opt.state_dict(), "manifest": manifest},
              LOSSES, show=("prior", "dist_source", "dist_target"),
              validate=(lambda: validate(model, idnet, val, val_pairs, cfg)) if val_pairs is not None and len(val_pairs.rows) else None)
    return model


@torch.no_grad()
def identity_floor(model, idnet, images, grids, grid=None, d_images=None):
    """Per image [N], the dlib distance between a face crop (images in [-1, 1], `grids` from
    chip_grids) and its own reconstruction by the model's VQGAN, with no swap: how much identity
    the VQGAN alone loses, the floor under any swap it decodes. `grid` (the images' token grids)
    and `d_images` (their descriptors) are reused when the caller has them."""
    if grid is None:
        grid, _ = model.tokenize(images)
    if d_images is None:
        d_images = idnet(chips(images, grids))
    return identity.distance(idnet(chips(model.decode(grid).float().clamp(-1, 1), grids)), d_images)


@torch.no_grad()
def validate(model, idnet, val, pairs, cfg, n=32):
    """Held-out speakers, fixed pairs. Other-person pairs: the dlib distance of the output to the
    source photo, to the source as the VQGAN draws it (decoded from its own tokens: what a swap
    can reach at best), and to the target (the swap should take it away); and the paste prior's
    distance to the source photo (what the warm-up's positional copy alone gives). The floor: the
    distance of each target to its own VQGAN reconstruction, with no swap: how much identity the
    VQGAN alone loses. Same-person pairs: the L1 of the output to its target."""
    g = step_generator(cfg.seed, 0, 0, salt=97)
    t, s, same = pairs.draw(n, 0.5, g)
    x_t, x_s = val.images(t), val.images(s)
    grid_t, _ = model.tokenize(x_t)
    grid_s, _ = model.tokenize(x_s)
    out = model.decode(model.swap(grid_t, grid_s)).float()
    g_t, g_s = chip_grids(val.landmarks[t], val.image_size), chip_grids(val.landmarks[s], val.image_size)
    d_out, d_src, d_tgt = idnet(chips(out, g_t)), idnet(chips(x_s, g_s)), idnet(chips(x_t, g_t))
    d_src_decoded = idnet(chips(model.decode(grid_s).float(), g_s))
    d_prior = idnet(chips(model.decode(paste_prior(grid_t, grid_s, cfg.swap_prior_split)).float().clamp(-1, 1), g_t))
    other = ~same
    nan = float("nan")

    def mean_over(a, b, sel):
        return float((a - b).norm(dim=1)[sel].mean()) if sel.any() else nan

    return {"val_dist_source": mean_over(d_out, d_src, other),
            "val_dist_source_decoded": mean_over(d_out, d_src_decoded, other),
            "val_dist_prior": mean_over(d_prior, d_src, other),
            "val_dist_target": mean_over(d_out, d_tgt, other),
            "val_floor": float(identity_floor(model, idnet, x_t, g_t, grid=grid_t, d_images=d_tgt).mean()),
            "val_same_l1": float((out - x_t).abs().mean((1, 2, 3))[same].mean()) if same.any() else nan}
