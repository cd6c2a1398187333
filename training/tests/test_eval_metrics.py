"""dubeval metrics on cases with known answers, on real media (no training, no farm)."""
import os
import sys

import numpy as np
import pytest

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINING)
MEDIA = os.path.join(os.path.dirname(os.path.dirname(TRAINING)), "shared", "media")

from dubeval import faces as F, media, mel, metrics as M, report  # noqa: E402

CLIP = os.path.join(MEDIA, "speaker-c.mp4")
N = 20


@pytest.fixture(scope="module")
def clip():
    frames, fps = media.read_frames(CLIP, N)
    faces = F.Faces()
    a = F.analyse(faces, frames, descriptor_every=5)
    return frames, fps, a, faces


def test_reads_real_media(clip):
    frames, fps, _, _ = clip
    assert frames.shape == (N, 590, 590, 3) and abs(fps - 25) < 1e-6
    audio = media.read_audio(CLIP)
    assert abs(len(audio) / media.SAMPLE_RATE - 5.0) < 0.2


def test_face_found_on_every_frame_of_a_real_clip(clip):
    _, _, a, _ = clip
    assert M.face_found(a["found"]) == 1.0
    assert not np.isnan(a["landmarks"]).any()


def test_clip_against_itself(clip):
    frames, _, a, _ = clip
    psnr, ssim = M.face_region_quality(frames, frames, a["landmarks"])
    assert psnr == M.PSNR_CAP and ssim == pytest.approx(1.0, abs=1e-9)
    assert M.lmd(a["landmarks"], a["landmarks"]) == 0.0
    assert M.jitter_ratio(a["landmarks"], a["landmarks"]) == 1.0
    assert M.identity_distance(a["descriptors"], a["descriptors"]) == 0.0


def test_identity_of_the_same_person_re_encoded_is_small_and_noise_is_not_a_face(clip, tmp_path):
    frames, _, a, faces = clip
    # the same frames through a lossy JPEG-like perturbation: same person (< 0.6), close to 0
    noisy = np.clip(frames.astype(np.int16) + np.random.default_rng(0).integers(-6, 7, frames.shape), 0, 255).astype(np.uint8)
    b = F.analyse(faces, noisy, a["boxes"], descriptor_every=5)
    d = M.identity_distance(b["descriptors"], a["descriptors"])
    assert 0 < d < 0.2
    psnr, ssim = M.face_region_quality(noisy, frames, a["landmarks"])
    assert 30 < psnr < 40 and 0.5 < ssim < 1.0
    # the face region replaced by noise (what untrained weights paint): no face, worse PSNR
    x0, y0, x1, y1 = M.face_box(a["landmarks"][0], *frames.shape[1:3])
    bad = frames[:3].copy()
    bad[:, y0:y1, x0:x1] = np.random.default_rng(1).integers(0, 256, bad[:, y0:y1, x0:x1].shape)
    c = F.analyse(faces, bad, a["boxes"][:3])
    assert M.face_found(c["found"]) == 0.0
    assert M.face_region_quality(bad, frames[:3], a["landmarks"][:3])[0] < 12


def test_psnr_and_lmd_known_values():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[:] = 10                                    # MSE 100 → 10·log10(255²/100)
    assert M.psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / 100))
    lmk = np.zeros((3, 68, 2), np.float32)
    lmk[:, 36], lmk[:, 45] = (0, 0), (100, 0)    # interocular distance 100 px
    moved = lmk.copy()
    moved[:, 48:68, 1] += 5                      # every mouth point 5 px away: 5 % of IOD
    assert M.lmd(moved, lmk) == pytest.approx(5.0)


def test_jitter_ratio_counts_added_shake():
    t = np.arange(50, dtype=np.float32)
    lmk = np.zeros((50, 68, 2), np.float32)
    lmk[:, 36], lmk[:, 45] = (0, 0), (100, 0)
    lmk[:, 48:68, 0] = (10 * np.sin(t / 5))[:, None]          # smooth mouth motion
    shaky = lmk.copy()
    shaky[::2, 48:68, 0] += 1.0                               # alternate-frame shake
    assert M.jitter_ratio(lmk, lmk) == 1.0
    assert M.jitter_ratio(shaky, lmk) > 3


def test_log_mel_frames_and_tone():
    sr = media.SAMPLE_RATE
    tone = np.sin(2 * np.pi * 1000 * np.arange(sr) / sr).astype(np.float32)
    m = mel.log_mel(tone, normalise=False)
    assert m.shape == (sr // mel.HOP + 1, 80)
    centres = (np.arange(80) + 1)
    peak = int(np.argmax(m[50]))
    f = mel._mel_to_hz(np.linspace(mel._hz_to_mel(55), mel._hz_to_mel(7600), 82))[1:-1]
    assert abs(f[peak] - 1000) < 80


def test_mouth_crops_follow_the_mouth(clip):
    frames, _, a, _ = clip
    crops = F.mouth_crops(frames, a["landmarks"])
    assert crops.shape == (N, F.MOUTH_H, F.MOUTH_W)
    # lips are darker than the chin/skin band at the crop's edges: the centre row band is darker
    centre = crops[:, 15:25, 16:48].mean()
    border = np.concatenate([crops[:, :4].ravel(), crops[:, -4:].ravel()]).mean()
    assert centre < border


def test_loss_csv_tolerates_any_columns(tmp_path):
    p = tmp_path / "vqgan.csv"
    p.write_text("step,seconds,l1,ssim,val_l1\n0,0.1,1.0,0.5,\n10,1.2,0.8,0.4,0.9\n20,2.3,0.6,0.3,\n")
    cols = report.read_loss_csv(str(p))
    assert set(cols) == {"l1", "ssim", "val_l1"}
    assert cols["val_l1"] == ([10.0], [0.9]) and cols["l1"][1] == [1.0, 0.8, 0.6]
    (tmp_path / "sync.csv").write_text("step,seconds,loss\n0,0,2\n5,1,1\n")
    out = report.loss_curves(str(tmp_path), str(tmp_path / "curves.png"))
    assert out and os.path.getsize(out) > 1000
    assert report.loss_curves(str(tmp_path / "none"), str(tmp_path / "x.png")) is None
