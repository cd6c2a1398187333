"""The pure parts of `make eval`'s personalised rows (dubeval.personal, the tail metrics and the
report): the frame split, the phase's times from a job's history, the trainer's report, the
coordinator's log line, sync windows in a clip's tail, the table rows. No farm here: the farm
runs in `make eval` and in Tests/IntegrationTests/PersonaliseTests.swift."""
import json
import os
import sys

import numpy as np
import pytest

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINING)

from dubeval import metrics as M, personal, report, sync  # noqa: E402
from dubeval.config import EvalConfig  # noqa: E402

# A real job's history and status (a 125-frame clip, --personalise=5, max_frames 80), as
# `dubfarm logs 1 --json` and `status 1 --json` printed them on 2026-12-06.
EVENTS = [json.loads(line) for line in """
{"at":"2026-12-06T18:33:17Z","id":2,"job":1,"kind":"job","reason":"submitted","to":"queued"}
{"at":"2026-12-06T18:33:17Z","from":"queued","id":3,"job":1,"kind":"job","reason":"taken for planning","to":"planning"}
{"at":"2026-12-06T18:33:17Z","id":4,"job":1,"kind":"personalisation","reason":"personalise for 5 s","to":"preparing"}
{"at":"2026-12-06T18:33:17Z","from":"planning","id":5,"job":1,"kind":"job","reason":"planned: 1 segments of 250 frames; personalising first","to":"personalising"}
{"at":"2026-12-06T18:33:22Z","from":"preparing","id":6,"job":1,"kind":"personalisation","reason":"dataset built: 80 frames","to":"pending"}
{"at":"2026-12-06T18:33:22Z","from":"pending","id":7,"job":1,"kind":"personalisation","reason":"claimed","to":"leased","worker":"local-1"}
{"at":"2026-12-06T18:34:23Z","from":"leased","id":9,"job":1,"kind":"personalisation","reason":"trained 1 steps in 12 s: weights af0e5fdcefb3c6c2","to":"done","worker":"local-1"}
{"at":"2026-12-06T18:34:23Z","from":"personalising","id":10,"job":1,"kind":"job","reason":"personalised: weights af0e5fdcefb3c6c2","to":"running"}
{"at":"2026-12-06T18:34:23Z","from":"pending","id":11,"job":1,"kind":"segment","reason":"claimed","segment":0,"to":"leased","worker":"local-1"}
{"at":"2026-12-06T18:34:46Z","from":"leased","id":12,"job":1,"kind":"segment","reason":"completed","segment":0,"to":"done","worker":"local-1"}
{"at":"2026-12-06T18:34:46Z","from":"running","id":13,"job":1,"kind":"job","reason":"all segments done","to":"stitching"}
{"at":"2026-12-06T18:34:47Z","from":"stitching","id":15,"job":1,"kind":"job","reason":"stitched: audio trimmed by 0.016 s","to":"done"}
""".strip().splitlines()]

PERSONALISATION = {
    "budgetSeconds": 5, "checkpointStep": 1, "datasetFrames": 80, "elapsedSeconds": 12.24, "failures": 0,
    "fallback": False, "leases": 1, "loss": 3.2910256385803223, "resumedFrom": 0, "state": "done", "step": 1,
    "weights": "af0e5fdcefb3c6c24c59fd9da83244505666d9eee3b0ed7bd140e05a83cfe452",
    "report": "{\"step\": 1, \"event\": \"done\", \"elapsed\": 12.24, \"holdout\": {\"frames\": 12, \"psnr_after\": "
              "17.4961, \"psnr_before\": 16.4629, \"code_ce_after\": 18.4003}, \"weights\": \"/tmp/x/model.safetensors\"}"}

COORDINATOR_LOG = """\
2026-12-06T18:33:13+0000 info dubfarm: control=tcp://127.0.0.1:50539 curve=on [Coordinator] coordinator ready
2026-12-06T18:33:17+0000 info dubfarm: job=1 max_frames=80 [Coordinator] building the personalisation dataset
2026-12-06T18:33:22+0000 info dubfarm: frames=80 job=1 seconds=4.8 [Coordinator] personalisation dataset built
2026-12-06T18:35:01+0000 info dubfarm: job=12 max_frames=242 [Coordinator] building the personalisation dataset
"""


def test_split_gives_the_fine_tune_the_first_part_and_the_metrics_the_rest():
    assert personal.split_frames(125, 0.7) == 87          # frames 0..86 train (and the trainer's holdout), 87..124 measured
    assert personal.split_frames(346, 0.7) == 242
    assert personal.split_frames(100, 0.7) == 70          # no float rounding down to 69
    assert personal.split_frames(137, 0.5) == 68
    # too little to train on (the coordinator's floor is 20 frames), or nothing left to measure
    assert personal.split_frames(25, 0.7) is None
    assert personal.split_frames(28, 0.72) == 20
    with pytest.raises(ValueError):
        personal.split_frames(100, 1.0)
    with pytest.raises(ValueError):
        personal.split_frames(100, 0)


def test_phase_times_from_a_real_jobs_history():
    t = personal.phase_times(EVENTS)
    assert t["phase"] == 66           # submitted 18:33:17 → personalising → running 18:34:23
    assert t["planning"] == 0 and t["dataset"] == 5 and t["queue"] == 0 and t["training"] == 61
    assert t["job"] == 90 and t["left_to"] == "running" and t["attempts"] == 1
    # a job whose phase has not ended has no phase time (and no crash)
    t = personal.phase_times(EVENTS[:6])
    assert t["phase"] is None and t["training"] is None and t["dataset"] == 5


def test_phase_times_count_every_attempt_and_the_first_claim():
    ev = EVENTS[:6] + [
        {"at": "2026-12-06T18:33:52Z", "from": "leased", "job": 1, "kind": "personalisation", "reason": "worker lost", "to": "pending"},
        {"at": "2026-12-06T18:33:55Z", "from": "pending", "job": 1, "kind": "personalisation", "reason": "claimed", "to": "leased"},
    ] + EVENTS[6:]
    t = personal.phase_times(ev)
    assert t["attempts"] == 2 and t["training"] == 61 and t["phase"] == 66


def test_trainer_report_and_the_coordinators_max_frames():
    r = personal.trainer_report(PERSONALISATION)
    assert r["step"] == 1 and r["elapsed"] == 12.24
    assert r["holdout"]["psnr_before"] == 16.4629 and r["holdout"]["psnr_after"] == 17.4961
    assert personal.trainer_report({"state": "leased"}) == {} and personal.trainer_report(None) == {}
    assert personal.max_frames_logged(COORDINATOR_LOG, 1) == 80
    assert personal.max_frames_logged(COORDINATOR_LOG, 12) == 242
    assert personal.max_frames_logged(COORDINATOR_LOG, 2) is None   # job=2 is not job=12


def test_the_model_id_a_worker_loaded_a_jobs_weights_as():
    log = ("2026-12-06T18:52:53+0000 info dubfarm: base=dubfarm-small@ca3158f526e57c22 model=dubfarm-small@fe4dd374c1986736 "
           "seconds=0.22 weights=41b32f07c3e13ac1d1ed29c5a35142e5474194d16cef6a5106d29a1ab35be552 [Dubbing] personalised weights loaded\n")
    sha = "41b32f07c3e13ac1d1ed29c5a35142e5474194d16cef6a5106d29a1ab35be552"
    assert personal.personalised_model_logged(log, sha) == "dubfarm-small@fe4dd374c1986736"
    assert personal.personalised_model_logged(log, "0" * 64) is None


def test_the_cross_track_of_a_tail_has_speech_wherever_the_sync_search_reads():
    # speaker-c split at 87 (25 fps): the other speaker's speech starts at frame 72 = 2.88 s
    assert personal.tail_audio_delay(87, 25.0, 15) == pytest.approx(72 / 25)
    assert personal.tail_audio_delay(10, 25.0, 15) == 0          # never negative
    d = personal.tail_audio_delay(95, 30000 / 1001, 15)          # vexpress_AOC_gt at 29.97 fps
    assert d == pytest.approx(80 * 1001 / 30000)


def test_tail_cross_track_is_silence_then_the_other_speakers_speech(tmp_path):
    """ffmpeg on the real media: the track is the paired clip's audio, delayed to frame k − 15."""
    from dubeval import media
    root = os.path.dirname(TRAINING)
    cfg = EvalConfig(out=str(tmp_path))
    os.makedirs(tmp_path / "inputs")
    x = {"video": os.path.join(root, "demo", "speaker.mp4"), "cross_wav": os.path.join(root, "demo", "dub.wav"),
         "cross_audio_of": "dub"}
    wav, delay = personal.tail_cross_audio(cfg, "speaker", x, 87, print)
    assert delay == pytest.approx(2.88) and os.path.basename(wav) == "speaker-from87-with-dub-audio.wav"
    got, src = media.read_audio(wav), media.read_audio(x["cross_wav"])
    sr, d = media.SAMPLE_RATE, int(round(2.88 * media.SAMPLE_RATE))
    assert np.abs(got[:d - 200]).max() < 1e-3                    # silence before the speech
    n = min(len(src), len(got) - d) - 400
    seg, ref = got[d:d + n], src[:n]
    assert np.corrcoef(seg, ref)[0, 1] > 0.99                    # then the paired clip's speech from its start


def test_weights_directory_is_the_file_beside_the_bases_manifest(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "manifest.json").write_text('{"config": "small"}')
    (base / "model.safetensors").write_bytes(b"base")
    w = tmp_path / "abc.safetensors"
    w.write_bytes(b"personalised")
    d = personal.weights_directory(str(w), str(base), str(tmp_path / "out"))
    assert open(os.path.join(d, "model.safetensors"), "rb").read() == b"personalised"
    assert open(os.path.join(d, "manifest.json")).read() == '{"config": "small"}'


def _clip(n, fps=25.0):
    rng = np.random.default_rng(0)
    mouth = rng.normal(size=(n, 20, 32)).astype(np.float32)
    mel_ = rng.normal(size=(int(round(n * 100 / fps)), 80)).astype(np.float32)
    return sync.ClipWindows(mouth, mel_, fps, 5, 20)


def test_sync_windows_of_a_tail_lie_wholly_after_the_split():
    clip = _clip(346)
    whole = sync.windows_of(clip, 25, 15)
    assert sync.windows_of(clip, 25, 15, first=0) == whole
    tail = sync.windows_of(clip, 25, 15, first=242)
    assert tail and tail[0] - clip.reach >= 242          # every video frame of every window is ≥ 242
    assert all(b - a == 25 for a, b in zip(tail, tail[1:]))
    valid = set(clip.valid(15).tolist())
    assert all(t in valid for s in tail for t in range(s, s + 25))
    # a 125-frame clip split at 87: 38 tail frames, too few once the audio search needs ±15 frames
    assert sync.windows_of(_clip(125), 25, 15, first=87) == []
    # 29.97 fps: the video window reaches 3 frames either side
    c = _clip(346, 30000 / 1001)
    assert c.reach == 3 and sync.windows_of(c, 25, 15, first=200)[0] >= 203


def test_tail_metrics_use_only_the_tail():
    """The figures on frames [k, n) are those of the tail alone: a head that is all wrong does not move them."""
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (10, 40, 40, 3)).astype(np.uint8)
    out = ref.copy()
    out[:6] = 255 - out[:6]                                  # the head is badly wrong, the tail exact
    lmk = np.tile(np.stack(np.meshgrid(np.linspace(5, 35, 17), np.linspace(5, 35, 4)), -1).reshape(-1, 2)[:68], (10, 1, 1))
    psnr_tail, ssim_tail = M.face_region_quality(out[6:], ref[6:], lmk[6:])
    psnr_all, _ = M.face_region_quality(out, ref, lmk)
    assert psnr_tail == M.PSNR_CAP and ssim_tail == pytest.approx(1.0) and psnr_all < 60


def _row(system, drive, per_clip, **kw):
    return dict({"system": system, "drive": drive, "model": "m", "face_found": 1.0, "per_clip": per_clip}, **kw)


def test_report_rows_and_targets():
    clips = {"a": {"frames": 125, "max_frames": 87, "tail_frames": 38, "budget_seconds": 300, "dataset_frames": 87,
                   "steps": 40, "weights": "ab" * 32, "phase_seconds": {"phase": 360.0, "dataset": 6.0, "training": 350.0},
                   "trainer": {"holdout": {"psnr_before": 20.1, "psnr_after": 24.3, "frames": 14}}},
             "b": {"frames": 346, "max_frames": 242, "tail_frames": 104, "budget_seconds": 300, "dataset_frames": 240,
                   "steps": 38, "weights": "cd" * 32, "phase_seconds": {"phase": 370.0, "dataset": 12.0, "training": 352.0},
                   "trainer": {}}}
    pc = lambda psnr, conf, win: {"a": {"frames": 38, "psnr": psnr, "face_found": 1.0},
                                  "b": {"frames": 104, "psnr": None if psnr is None else psnr + 1, "face_found": 1.0, "sync_conf": conf, "sync_windows": win}}
    results = {"personalisation": {"budget_seconds": 300, "fraction": 0.7, "workers": 1, "threads": 2, "clips": clips,
               "results": [_row("original", "self", pc(100.0, 0.2, 3), psnr=100.0, sync_conf=0.2, sync_windows=3),
                           _row("trained", "self", pc(21.0, 0.10, 3), psnr=21.5, sync_conf=0.10, sync_windows=3),
                           _row("trained", "cross", pc(None, 0.05, 3), sync_conf=0.05, sync_windows=3),
                           _row("personalised", "self", pc(23.0, 0.12, 3), psnr=23.5, sync_conf=0.12, sync_windows=3),
                           _row("personalised", "cross", pc(None, 0.04, 3), sync_conf=0.04, sync_windows=3)]}}
    rows = report.personalisation_rows(results["personalisation"])
    # per clip: each drive, the original (self-driven only), 'trained' then 'personalised'; then over all clips
    assert [(c, d, s) for c, d, s, _ in rows] == [
        (c, d, s) for c in ("a", "b", "all") for d, s in (
            ("self", "original"), ("self", "trained"), ("self", "personalised"), ("cross", "trained"), ("cross", "personalised"))]
    assert rows[2][3]["psnr"] == 23.0 and rows[7][3]["psnr"] == 24.0 and rows[10][3]["psnr"] == 100.0
    text = report.personalisation_table(results)
    assert "a (87-124)" in text and "b (242-345)" in text and "all clips" in text
    assert "20.10 → 24.30 (14 fr)" in text and "0-86 (87)" in text and "360" in text
    tg = report.personalisation_targets(results)
    assert "| face-region PSNR, self-driven | 21.50 dB | 23.50 dB (+2.00) | ≥ +2 dB | yes |" in tg
    assert any(t.startswith("| sync confidence, cross-driven (3 windows) | 0.050 | 0.040 |") and t.endswith("| no |") for t in tg)
    assert any(t.startswith("| sync confidence, self-driven") and t.endswith("| yes |") for t in tg)
    # no personalisation section: nothing added to the table or the summary
    assert report.personalisation_table({}) == "" and report.personalisation_targets({}) == []


def test_the_budget_flag_defaults_to_the_issues_five_minutes():
    cfg = EvalConfig()
    assert cfg.personalise_seconds == 300 and cfg.personalise_fraction == 0.7
    assert cfg.personalise_workers == 1 and cfg.personalise_threads == 2
    import evaluate
    assert evaluate.parse(["--personalise-seconds", "0"]).personalise_seconds == 0
