"""Frame metrics against the original. Every function takes arrays and returns plain floats.

Face region (PSNR, SSIM): the bounding box of the original frame's 68 dlib landmarks (jaw line,
brows, eyes, nose, mouth), clipped to the frame: the part of the picture the dub stage redraws.
PSNR is over its RGB pixels (peak 255), capped at 100 dB when identical; SSIM is Wang et al.'s
(11×11 Gaussian, σ 1.5, K1 0.01, K2 0.03) on its luma, averaged over the region.
LMD: mean distance of the mouth landmarks 48–67 to the original's, in percent of the original's
interocular distance (outer eye corners 36 and 45), so faces of any size compare.
Jitter: mean over frames and mouth landmarks of |p(t+1) − 2p(t) + p(t−1)| (the second difference,
acceleration), in units of the original's interocular distance; reported as output / original.
Identity: Euclidean distance of dlib's 128-d descriptors, output frame to the same input frame.
"""
import numpy as np
from scipy.ndimage import gaussian_filter

PSNR_CAP = 100.0
MOUTH = slice(48, 68)


def interocular(lmk):
    return np.linalg.norm(lmk[:, 45] - lmk[:, 36], axis=1)


def face_box(lmk, h, w):
    x0, y0 = np.floor(lmk.min(0)).astype(int)
    x1, y1 = np.ceil(lmk.max(0)).astype(int)
    return max(0, x0), max(0, y0), min(w, x1 + 1), min(h, y1 + 1)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * np.log10(255.0 ** 2 / mse))


def _luma(x):
    x = x.astype(np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2] if x.ndim == 3 else x


def ssim(a, b):
    x, y = _luma(a), _luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = lambda z: gaussian_filter(z, 1.5, truncate=3.5)   # 11×11 support
    mx, my = g(x), g(y)
    vx, vy, cxy = g(x * x) - mx * mx, g(y * y) - my * my, g(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def face_region_quality(out_frames, ref_frames, ref_lmk):
    """Mean face-region PSNR and SSIM over the frames where the original has landmarks."""
    ps, ss = [], []
    h, w = ref_frames.shape[1:3]
    for o, r, l in zip(out_frames, ref_frames, ref_lmk):
        if np.isnan(l).any():
            continue
        x0, y0, x1, y1 = face_box(l, h, w)
        ps.append(psnr(o[y0:y1, x0:x1], r[y0:y1, x0:x1]))
        ss.append(ssim(o[y0:y1, x0:x1], r[y0:y1, x0:x1]))
    return float(np.mean(ps)) if ps else float("nan"), float(np.mean(ss)) if ss else float("nan")


def lmd(out_lmk, ref_lmk):
    """Mouth landmark distance, % of the original's interocular distance (frames where both exist)."""
    d = np.linalg.norm(out_lmk[:, MOUTH] - ref_lmk[:, MOUTH], axis=2).mean(1) / interocular(ref_lmk)
    d = d[~np.isnan(d)]
    return float(100 * d.mean()) if len(d) else float("nan")


def jitter(lmk, ref_lmk):
    """Mean second difference of the mouth landmarks, in the original's interocular distances."""
    io = interocular(ref_lmk)
    acc = np.linalg.norm(lmk[2:, MOUTH] - 2 * lmk[1:-1, MOUTH] + lmk[:-2, MOUTH], axis=2).mean(1) / io[1:-1]
    acc = acc[~np.isnan(acc)]
    return float(acc.mean()) if len(acc) else float("nan")


def jitter_ratio(out_lmk, ref_lmk):
    return jitter(out_lmk, ref_lmk) / jitter(ref_lmk, ref_lmk)


def identity_distance(out_desc, ref_desc):
    """Mean descriptor distance over frames where both have one (NaN rows are skipped)."""
    d = np.linalg.norm(out_desc - ref_desc, axis=1)
    d = d[~np.isnan(d)]
    return float(d.mean()) if len(d) else float("nan")


def face_found(found):
    return float(np.mean(found)) if len(found) else float("nan")
