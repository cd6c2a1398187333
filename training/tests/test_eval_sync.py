"""The evaluation sync model's offset search and confidence, on constructed embeddings whose
answer is known, and on the real audio of a media clip shifted by a known offset."""
import os
import sys

import numpy as np
import pytest
import torch

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINING)
MEDIA = os.path.join(os.path.dirname(os.path.dirname(TRAINING)), "shared", "media")

from dubeval import media, mel, sync  # noqa: E402
from dubeval.run import cross_pairs  # noqa: E402

FPS = 25.0
K = 15


def audio_embedding(m):
    """A constructed 'sync model': the mel window's own pattern as the embedding (unit vector of
    its mean over frequency, per mel frame), for both streams — audio and the 'video' that
    carries the same mel (shifted) in its pixels."""
    x = m.reshape(len(m), -1).astype(np.float64)
    x = x - x.mean(1, keepdims=True)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9)


def make_clip(shift_frames):
    """A clip whose 'mouth crops' encode the real speech's mel, `shift_frames` video frames
    late relative to the audio track: the offset search must find −shift... i.e. audio at
    t + shift matches video at t."""
    audio = media.read_audio(os.path.join(MEDIA, "speaker-c.mp4"))
    m = mel.log_mel(audio)
    n = int(len(audio) / media.SAMPLE_RATE * FPS)
    c = sync.ClipWindows(np.zeros((n, 5, 20, 80), np.float32), m, FPS, window=5, mel_frames=20)
    # video frame t carries the mel window of time t + shift
    c.mouth = np.stack([c.audio(min(n - 1, max(0, t + shift_frames))) for t in range(n)])[:, None].repeat(5, 1)
    c.video = lambda t, c=c: c.mouth[t, 0]
    return c


@pytest.mark.parametrize("shift", [0, 3, -7])
def test_offset_search_finds_a_known_shift_of_real_speech(shift):
    c = make_clip(shift)
    starts = sync.windows_of(c, 25, K)
    assert len(starts) >= 2
    scores, offs = sync.offset_scores(audio_embedding, audio_embedding, c, starts, 25, K)
    r = sync.summarise(scores, offs)
    assert all(f == shift for f in r["offset_found"]), r["offset_found"]
    if shift == 0:
        assert r["within_1"] == 1.0 and r["conf"] == pytest.approx(r["conf_peak"]) and r["conf"] > 0.3
    else:
        assert r["within_1"] == 0.0 and r["conf"] < r["conf_peak"]


def test_confidence_definitions():
    offs = np.arange(-2, 3)
    s = np.array([[0.1, 0.2, 0.9, 0.3, 0.0], [0.5, 0.1, 0.2, 0.3, 0.4]], np.float32)
    r = sync.summarise(s, offs)
    assert r["offset_found"] == [0, -2]
    assert r["within_1"] == 0.5
    assert r["conf"] == pytest.approx(np.mean([0.9 - 0.2, 0.2 - 0.3]))
    assert r["conf_peak"] == pytest.approx(np.mean([0.9 - 0.2, 0.5 - 0.3]))


def test_windows_stay_inside_the_clip():
    c = make_clip(0)
    for s in sync.windows_of(c, 25, K):
        for t in (s, s + 24):
            assert c.mel_start(t - K) >= c.pad and c.mel_start(t + K) + c.mel_frames <= c.pad + c.n_mel


def test_sync_net_shapes_and_unit_embeddings():
    net = sync.SyncNet().eval()
    crops = sync.normalise_mouth(np.random.default_rng(0).integers(0, 256, (15, 40, 64)).astype(np.uint8))
    assert crops.shape == (15, sync.CROP_H, sync.CROP_W) == (15, 20, 32)
    v = net.embed_video(torch.from_numpy(crops.reshape(3, 5, 20, 32)))
    a = net.embed_audio(torch.randn(3, 20, 80))
    assert v.shape == a.shape == (3, 128)
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)


def test_video_window_is_resampled_to_25_fps():
    """At 25 fps the window is the 5 frames around t; at 29.97 fps it is 5 crops 1/25 s apart,
    interpolated, so it spans the same 0.2 s (the crops here are their own frame index)."""
    n = 60
    idx = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    mel_ = np.zeros((int(n / 25 * 100) + 1, 80), np.float32)
    c25 = sync.ClipWindows(idx, mel_, 25.0)
    assert c25.video(10)[:, 0, 0].tolist() == [8, 9, 10, 11, 12]
    c30 = sync.ClipWindows(idx, mel_, 29.97)
    got = c30.video(20)[:, 0, 0]
    assert np.allclose(got, 20 + (np.arange(5) - 2) * 29.97 / 25, atol=1e-4)
    v = c30.valid(0)
    assert v[0] >= c30.reach and v[-1] + c30.reach <= n - 1


CACHE = os.environ.get("DUBEVAL_CACHE", "/work/data/eval-cache")


def _cached(stem):
    import glob
    hits = [p for p in glob.glob(os.path.join(CACHE, "clips", f"{stem}-*.npz")) if "-first" not in p]
    if not hits:
        pytest.skip(f"no cached analysis of {stem} under {CACHE}")
    with np.load(hits[0]) as z:
        return {k: z[k] for k in z.files}


def test_a_short_training_run_finds_the_true_offset_better_than_chance():
    """A few steps on one real training clip (a tiny net): the offset search on that clip's own
    windows must already beat chance (±1 of 31 offsets ≈ 10 %)."""
    import dataclasses
    from dubeval.config import EvalConfig
    a = _cached("edtalk_pose_source2")
    cfg = dataclasses.replace(EvalConfig(), sync_steps=50, sync_batch=4, sync_width=8, sync_lr=3e-3)
    net, info = sync.train(cfg, {"clip": a}, log=lambda s: None)
    assert info["steps"] == 50
    r = sync.held_out_accuracy(sync.Scorer(net), {"clip": a}, cfg)
    assert r["windows"] >= 40 and r["within_1"] > 0.3, r


def test_cross_pairs_never_pair_a_speaker_with_itself():
    held = [("speaker-c", "", "speaker-c", True), ("b", "", "b", True), ("vexpress_AOC_gt", "", "speaker-c", True)]
    pairs = cross_pairs(held)
    spk = {h[0]: h[2] for h in held}
    assert set(pairs) == set(spk) and all(spk[k] != spk[v] for k, v in pairs.items())


def test_the_cached_sync_model_is_reused_only_when_it_is_the_current_version(tmp_path):
    """A cache holding the current model loads as it was saved; a missing file, --retrain-sync, or
    a file of the older (MLP) version means training anew."""
    import dataclasses
    from dubeval.config import EvalConfig
    cfg = dataclasses.replace(EvalConfig(), cache_dir=str(tmp_path), sync_width=8)
    assert sync.load_cached(cfg) is None
    net = sync.SyncNet(cfg.sync_window, cfg.sync_window * cfg.mel_per_frame, width=8).eval()
    os.makedirs(tmp_path / "sync")
    torch.save({"state": net.state_dict(), "window": net.window, "mel_frames": net.mel_frames, "width": 8,
                "info": {"held_out": {"within_1": 0.5}}}, sync.weights_path(cfg))
    scorer, info = sync.load_cached(cfg)
    x = np.random.default_rng(0).normal(size=(3, cfg.sync_window, sync.CROP_H, sync.CROP_W)).astype(np.float32)
    with torch.no_grad():
        assert np.allclose(scorer.v(x), net.embed_video(torch.from_numpy(x)).numpy()) and info["held_out"]["within_1"] == 0.5
    assert sync.load_cached(dataclasses.replace(cfg, retrain_sync=True)) is None
    torch.save({"state": {}, "window": 5, "mel_frames": 20, "info": {}}, sync.weights_path(cfg))
    said = []
    assert sync.load_cached(cfg, said.append) is None and "older model version" in said[0]


def test_shift_audio_puts_a_late_track_back_in_sync():
    """A clip whose audio is 3 frames late (audio at t + 3 goes with picture t): after
    offsets.shift_audio(a, 3) the offset search finds 0 where it found 3."""
    from dubeval import offsets
    c = make_clip(3)
    starts = sync.windows_of(c, 25, K)
    found = sync.summarise(*sync.offset_scores(audio_embedding, audio_embedding, c, starts, 25, K))["offset_found"]
    assert set(found) == {3}
    a = {"mel": c.mel[c.pad:-c.pad], "fps": np.float32(FPS)}
    moved = offsets.shift_audio(a, 3)
    assert np.array_equal(moved["mel"][:-12], a["mel"][12:]) and not moved["mel"][-12:].any()
    assert offsets.shift_audio(a, 0) is a
    c2 = sync.ClipWindows(c.mouth, moved["mel"], FPS, window=5, mel_frames=20)
    c2.video = c.video
    found = sync.summarise(*sync.offset_scores(audio_embedding, audio_embedding, c2, starts, 25, K))["offset_found"]
    assert set(found) == {0}, found


def test_clip_offset_and_its_consistency():
    from dubeval import offsets
    offs = np.arange(-3, 4)
    s = np.zeros((4, 7), np.float32)
    for w, d in enumerate([2, 2, 1, -3]):
        s[w, d + 3] = 1.0
    assert offsets.clip_offset(s, offs) == (2, 0.75)
    assert offsets.clip_offset(np.zeros((0, 7)), offs) == (0, 0.0)


def test_envelope_offset_finds_a_known_lag_without_a_model():
    """Lip opening that follows a speech-energy pattern 4 frames later, in 'landmarks'."""
    from dubeval import offsets
    rng = np.random.default_rng(0)
    n = 200
    energy = np.convolve(rng.normal(size=n * 4 + 40), np.ones(12) / 12, "same")
    mel_ = np.repeat(energy[:, None], 80, 1).astype(np.float32)
    lm = np.zeros((n, 68, 2), np.float32)
    lm[:, 16, 0] = 100.0                                        # jaw width 100
    opening = energy[np.arange(n) * 4 + 4 * 4]                  # frame t opens with the energy of t + 4
    lm[:, 66, 1] = 60 + 10 * (opening - opening.min())           # the distance 62–66 stays positive
    lm[:, 62, 1] = 50
    lag, r, r0 = offsets.envelope_offset({"landmarks": lm, "mel": mel_, "fps": np.float32(25.0)})
    assert lag == 4 and r > 0.95 and r0 < r


def test_folds_keep_each_long_speaker_apart():
    from dubeval import offsets
    sizes = {"a": 1800, "b": 1500, "c": 800, **{f"s{i}": 150 for i in range(12)}}
    folds = offsets.folds_of(set(sizes), sizes)
    assert len(folds) == offsets.FOLDS and sorted(sum(folds, [])) == sorted(sizes)
    assert all(sum(x in f for x in "abc") == 1 for f in folds)


def test_the_proof_counts_a_clips_measured_offset_as_its_truth():
    """held_out_accuracy counts within ±1 of split.json's audioOffsetFrames (0 elsewhere)."""
    import dataclasses
    from dubeval.config import EvalConfig

    class Found:                                     # a scorer whose answers are given
        def __init__(self, by_len):
            self.by_len = by_len

        def evaluate(self, clip, length, max_offset):
            return {"offset_found": self.by_len[clip.n], "windows": len(self.by_len[clip.n])}

    cfg = EvalConfig()
    clips = {"late": {"mouth": np.zeros((10, 40, 64), np.uint8), "mel": np.zeros((40, 80), np.float32), "fps": 25.0},
             "ok": {"mouth": np.zeros((11, 40, 64), np.uint8), "mel": np.zeros((44, 80), np.float32), "fps": 25.0}}
    scorer = Found({10: [7, 6, 8, 0], 11: [0, 1, 2, 0]})
    r = sync.held_out_accuracy(scorer, clips, cfg, {"late": 7})
    assert r["per_clip"]["late"]["within_1"] == 0.75 and r["per_clip"]["ok"]["within_1"] == 0.75
    assert r["windows"] == 8 and r["within_1"] == 0.75
    assert sync.held_out_accuracy(scorer, clips, cfg)["per_clip"]["late"]["within_1"] == 0.25


def test_a_cached_sync_model_trained_with_other_offsets_corrected_is_retrained(tmp_path):
    """av_offsets.json changed since the cached model was trained: the cache is not used."""
    import dataclasses
    from dubeval.config import EvalConfig
    cfg = dataclasses.replace(EvalConfig(), cache_dir=str(tmp_path), sync_width=8)
    net = sync.SyncNet(cfg.sync_window, cfg.sync_window * cfg.mel_per_frame, width=8).eval()
    os.makedirs(tmp_path / "sync")
    info = {"held_out": {"within_1": 0.9}, "train_clips": ["a", "b"], "corrected_offsets": {"a": 2}}
    torch.save({"state": net.state_dict(), "window": net.window, "mel_frames": net.mel_frames, "width": 8,
                "info": info}, sync.weights_path(cfg))
    assert sync.load_cached(cfg, corrections={"a": 2, "not-trained-on": 5}) is not None
    said = []
    assert sync.load_cached(cfg, said.append, {"a": 2, "b": -3}) is None and "other audio offsets" in said[0]
    assert sync.load_cached(cfg, said.append, {}) is None
