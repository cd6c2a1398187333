"""Face-swap metrics (issue 18) on cases with known answers: synthetic landmarks and descriptors,
and source photos taken from real media (no farm, no training)."""
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest

TRAINING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINING)
MEDIA = os.path.join(os.path.dirname(os.path.dirname(TRAINING)), "shared", "media")

from dubeval import faces as F, media, metrics as M, report, run, swapmetrics as SM  # noqa: E402


def face(eye_right=0.3, eye_left=0.3, inner=0.1, outer=0.4, nose=0.0):
    """68 landmarks [68, 2] of an upright face whose expression features are the given ratios:
    each eye's aspect ratio, inner and outer mouth height over width; nose: the nose tip's offset
    along the eye line in eye-centre distances (the yaw proxy)."""
    p = np.zeros((68, 2))
    p[:36] = np.stack([np.linspace(-60, 60, 36), np.full(36, 40.0)], 1)     # jaw, brows, nose: not used
    for first, x0, ear in ((36, -45.0, eye_right), (42, 15.0, eye_left)):
        h = 15 * ear                                    # EAR = (2h + 2h) / (2·30) for a 30-px-wide eye
        p[first:first + 6] = [(x0, 0), (x0 + 10, -h), (x0 + 20, -h), (x0 + 30, 0), (x0 + 20, h), (x0 + 10, h)]
    p[48:68] = 0, 60
    p[48], p[54], p[51], p[57] = (-30, 60), (30, 60), (0, 60 - 30 * outer), (0, 60 + 30 * outer)
    p[60], p[64], p[62], p[66] = (-20, 60), (20, 60), (0, 60 - 20 * inner), (0, 60 + 20 * inner)
    p[SM.NOSE_TIP] = 60 * nose, 30                     # eye centres at x −30 and +30: 60 px apart
    return p


def clip(n=20, **per_frame):
    """[n, 68, 2]: face() per frame, each keyword a value or a sequence of n values."""
    seq = {k: np.broadcast_to(v, n) for k, v in per_frame.items()}
    return np.stack([face(**{k: v[i] for k, v in seq.items()}) for i in range(n)]).astype(np.float32)


def rotate(lmk, degrees, centre=(5.0, 20.0)):
    t = np.radians(degrees)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return ((lmk - centre) @ r.T + centre).astype(np.float32)


def test_synthetic_face_has_the_features_it_was_built_with():
    f = SM.expression_features(clip(1, eye_right=0.25, eye_left=0.3, inner=0.1, outer=0.4))
    assert f[0] == pytest.approx([0.25, 0.3, 0.1, 0.4], abs=1e-6)
    assert SM.roll(clip(1))[0] == pytest.approx(0, abs=1e-6)
    assert SM.yaw_proxy(clip(1, nose=0.1))[0] == pytest.approx(0.1, abs=1e-6)


def test_an_eye_closing_changes_expr_diff_by_the_known_amount():
    ref = clip(20, eye_right=0.3)
    closed = np.full(20, 0.3)
    closed[[3, 4, 5, 6]] = 0.05                        # four frames of a blink: the median stays 0.3
    out = clip(20, eye_right=closed)
    # |0.05 − 0.3| on 4 of 20 frames, one of four features
    assert SM.expr_diff(out, ref) == pytest.approx(0.25 * 4 / 20 / 4, abs=1e-6)
    assert SM.expr_diff(ref, ref) == 0.0


def test_a_constant_offset_per_clip_is_the_identity_and_cancels():
    wave = 0.2 * np.sin(np.arange(30) / 3)
    ref = clip(30, outer=0.3 + wave, eye_left=0.3)      # the mouth moving
    out = clip(30, outer=0.45 + wave, eye_left=0.22)    # another person's mouth and eyes, same movement
    assert SM.expr_diff(out, ref) == pytest.approx(0, abs=1e-6)
    opposite = clip(30, outer=0.45 - wave, eye_left=0.22)   # the mouth closing where it opened
    assert SM.expr_diff(opposite, ref) > 0.04


def test_a_rotated_face_gives_the_known_roll_and_keeps_expression_and_yaw():
    ref = clip(10, nose=0.05, outer=np.linspace(0.2, 0.6, 10))
    out = rotate(ref, 12.0)
    assert SM.roll(out) == pytest.approx(np.full(10, 12.0), abs=1e-4)
    assert SM.roll_diff(out, ref) == pytest.approx(12.0, abs=1e-4)
    assert SM.yaw_diff(out, ref) == pytest.approx(0, abs=1e-6)
    assert SM.expr_diff(out, ref) == pytest.approx(0, abs=1e-6)
    assert SM.roll_diff(rotate(ref, 179.0), rotate(ref, -179.0)) == pytest.approx(2.0, abs=1e-3)   # wrapped
    assert SM.yaw_diff(clip(10, nose=0.15), ref) == pytest.approx(0.1, abs=1e-6)


def test_frames_without_landmarks_are_skipped():
    ref = clip(10)
    out = clip(10, eye_right=np.r_[np.full(5, 0.3), np.full(5, 0.1)])
    out[5:] = np.nan                                   # the changed frames have no face
    assert SM.expr_diff(out, ref) == 0.0 and SM.roll_diff(out, ref) == pytest.approx(0, abs=1e-5)
    assert np.isnan(SM.expr_diff(np.full_like(ref, np.nan), ref))


def test_descriptor_spread_and_distance_to_the_source():
    e = np.eye(128, dtype=np.float32)
    steady = np.where(np.arange(10)[:, None] % 2 == 0, 0.1 * e[0], -0.1 * e[0]).astype(np.float32)  # each 0.1 from the mean
    wobbly = 3 * steady
    wobbly[1::2] = np.nan                              # descriptor on every other frame only
    assert SM.id_spread(steady) == pytest.approx(0.1, abs=1e-6)
    assert SM.id_spread(3 * steady) == pytest.approx(0.3, abs=1e-6)
    assert SM.spread_ratio(3 * steady, steady) == pytest.approx(3.0, abs=1e-5)
    assert SM.id_spread(wobbly) == pytest.approx(0, abs=1e-6)       # the kept frames are all the same
    assert np.isnan(SM.spread_ratio(steady, np.full_like(steady, np.nan)))
    assert SM.dist_source(wobbly, 0.3 * e[0] + 0.4 * e[1]) == pytest.approx(0.4, abs=1e-6)
    assert np.isnan(SM.dist_source(np.full_like(steady, np.nan), e[0]))


def test_the_photo_frame_is_the_face_nearest_the_middle():
    assert run.middle_face_frame(np.ones(9, bool)) == 4
    assert run.middle_face_frame(np.array([1, 1, 0, 0, 0, 0, 1, 0, 0], bool)) == 6
    assert run.middle_face_frame(np.zeros(5, bool)) is None


@pytest.fixture(scope="module")
def two_speakers():
    """The first 9 frames of speaker-b and speaker-c, analysed as the clip cache does (a
    descriptor on every 4th frame)."""
    faces = F.Faces()
    out = {}
    for name in ("speaker-b", "speaker-c"):
        path = os.path.join(MEDIA, f"{name}.mp4")
        frames, _ = media.read_frames(path, 9)
        out[name] = (path, F.analyse(faces, frames, descriptor_every=4))
    return faces, out


def test_source_photos_are_another_held_out_speakers_face(two_speakers, tmp_path):
    faces, clips = two_speakers
    held = [(k, p, k, True) for k, (p, _) in clips.items()]
    inputs = {"speaker-b": {"cross_audio_of": "speaker-c"}, "speaker-c": {"cross_audio_of": "speaker-b"}}
    os.makedirs(tmp_path / "inputs")
    run.prepare_sources(SimpleNamespace(out=str(tmp_path)), held, inputs, {k: a for k, (_, a) in clips.items()},
                        faces, log=lambda s: None)
    b = inputs["speaker-b"]
    assert b["face"] == str(tmp_path / "inputs" / "speaker-b-face-speaker-c.png") and os.path.exists(b["face"])
    assert b["face_of"] == "speaker-c" and b["face_frame"] == 4
    # the PNG is lossless: its descriptor is the one the analysis took of that very frame
    assert b["face_descriptor"].shape == (128,)
    assert M.identity_distance(b["face_descriptor"][None], clips["speaker-c"][1]["descriptors"][4:5]) < 1e-3
    # to source: the speaker-c frames are near speaker-c's photo, far from speaker-b's
    c_frames = clips["speaker-c"][1]["descriptors"]
    assert SM.dist_source(c_frames, b["face_descriptor"]) < 0.3
    assert SM.dist_source(c_frames, inputs["speaker-c"]["face_descriptor"]) > 0.6


def test_the_weights_metadata_says_whether_the_swap_is_trained(tmp_path):
    header = json.dumps({"__metadata__": {"dubfarm.trained": "encode, quantize,decode,audio,lipsync"}}).encode()
    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    assert run.trained_modules(str(tmp_path)) == ["audio", "decode", "encode", "lipsync", "quantize"]
    assert run.trained_modules("untrained:small") is None
    cfg = SimpleNamespace(model=str(tmp_path))
    rows = [{"system": "swapped", "drive": d, "swapped_frames": 0.0} for d in ("self", "cross")]
    s = run.swap_summary(cfg, rows, {"a": {"face": "a-face-b.png", "face_of": "b", "face_frame": 62, "speaker": "a"}})
    assert s["swap_trained"] is False and s["swap_applied"] is False
    assert "no swap" in s["note"] and s["source_photos"] == {"a": {"face": "a-face-b.png", "face_of": "b", "face_frame": 62}}
    rows[0]["swapped_frames"] = 0.97
    assert run.swap_summary(cfg, rows, {})["swap_applied"] is True


def test_rows_average_the_clips_and_count_swapped_frames():
    per_clip = {"a": {"identity": 0.5, "dist_source": 0.4, "id_spread_ratio": 1.0, "expr_diff": 0.01,
                      "swapped_frames": {"frames": 100, "swapped": 90}},
                "b": {"identity": 0.7, "dist_source": float("nan"), "id_spread_ratio": 2.0, "expr_diff": 0.03,
                      "swapped_frames": {"frames": 50, "swapped": 45}}}
    row = run.aggregate("swapped", "cross", "m", per_clip, [np.ones(150, bool)], [], None)
    assert row["dist_source"] == 0.4 and row["id_spread_ratio"] == 1.5 and row["expr_diff"] == pytest.approx(0.02)
    assert row["swapped_frames"] == pytest.approx(0.9) and row["pose_diff"] is None
    plain = run.aggregate("trained", "cross", "m", {"a": {"identity": 0.5}}, [np.ones(3, bool)], [], None)
    assert plain["dist_source"] is None and "swapped_frames" not in plain


def _results():
    row = lambda system, drive, **kw: dict({"system": system, "drive": drive, "model": "m", "face_found": 1.0,
                                            "identity": 0.3, "id_spread": 0.05, "id_spread_ratio": 1.0,
                                            "expr_diff": 0.0, "pose_diff": 0.0, "yaw_diff": 0.0, "per_clip": {}}, **kw)
    return {"held_out_clips": {"a": {"speaker": "A"}, "b": {"speaker": "B"}},
            "sync_model": {"steps": 800, "seconds": 300, "held_out": {"within_1": 0.9, "windows": 40}},
            "seconds": 1234.0,
            "swap": {"note": "the workers swapped no frame: the face was not applied",
                     "source_photos": {"a": {"face": "a-face-b.png", "face_of": "b", "face_frame": 62},
                                       "b": {"face": "b-face-a.png", "face_of": "a", "face_frame": 87}}},
            "results": [row("original", "self", sync_conf=0.30), row("original", "cross", sync_conf=0.02),
                        row("trained", "self", identity=0.35, sync_conf=0.20, dist_source=0.81),
                        row("trained", "cross", identity=0.36, sync_conf=0.10, expr_diff=0.031, pose_diff=1.2),
                        row("swapped", "self", identity=0.62, dist_source=0.50, face_found=0.99, id_spread_ratio=1.4,
                            sync_conf=0.19, swapped_frames=0.98),
                        row("swapped", "cross", identity=0.64, dist_source=0.58, face_found=0.985, id_spread_ratio=1.7,
                            sync_conf=0.08, expr_diff=0.042, pose_diff=2.346, swapped_frames=0.97)]}


def test_swap_table_and_targets():
    results = _results()
    rows = report.swap_rows(results)
    assert [(d, s) for d, s, _ in rows] == [("cross", "trained"), ("cross", "swapped"), ("self", "trained"), ("self", "swapped")]
    assert rows[1][2]["sync_vs_no_swap"] == pytest.approx(0.8) and rows[3][2]["sync_vs_no_swap"] == pytest.approx(0.95)
    text = report.swap_table(results)
    lines = text.splitlines()
    assert "to source" in lines[1] and "sync vs no swap" in lines[1] and "frames swapped" in lines[1]
    cross = lines[4].split()
    assert cross[:2] == ["cross", "swapped"] and "0.580" in cross and "2.35" in cross and "80 %" in text and "97" in cross
    assert lines[3].split()[:4] == ["cross", "trained", "100.0", "%"] and lines[3].split()[4] == "—"  # not measured: no figure
    assert lines[5].split()[:5] == ["self", "trained", "100.0", "%", "0.810"]                      # the no-swap baseline
    assert len(report.swap_checks(results)) == 6                                                   # targets: swapped rows only
    tg = report.swap_targets(results)
    assert tg[0] == "| target (issue 18) | swapped | wanted | met |"
    assert "| distance to the source photo (face found), cross-driven | 0.580 (98.5 %) | ≤ 0.55 with ≥ 98 % | no |" in tg
    assert "| distance to the source photo (face found), self-driven | 0.500 (99.0 %) | ≤ 0.55 with ≥ 98 % | yes |" in tg
    assert "| identity spread / original's, cross-driven | 1.70× | ≤ 1.5× | no |" in tg
    assert "| identity spread / original's, self-driven | 1.40× | ≤ 1.5× | yes |" in tg
    assert "| sync confidence with / without the swap, cross-driven | 80 % | ≥ 90 % | no |" in tg
    assert "| sync confidence with / without the swap, self-driven | 95 % | ≥ 90 % | yes |" in tg
    assert [c["met"] for c in report.swap_checks(results)] == [False, False, False, True, True, True]
    # the main table shows the new columns on every row; the summary has the face-swap section
    main = report.table(results)
    assert "Identity, expression and pose (issue 18):" in main and "id spread ×orig" in main and "pose diff °" in main
    md = report.summary_markdown(results)
    assert "## Face swap (issue 18)" in md and "a ← frame 62 of b" in md and "the face was not applied" in md
    assert "| sync confidence with / without the swap, self-driven | 95 % | ≥ 90 % | yes |" in md
    # without swapped rows: nothing about the swap
    plain = dict(results, results=results["results"][:4])
    plain.pop("swap")
    assert report.swap_table(plain) == "" and report.swap_targets(plain) == []
    assert "Face swap" not in report.summary_markdown(plain)


def test_contact_sheet_shows_a_photo_once(tmp_path):
    from PIL import Image
    frames = np.random.default_rng(0).integers(0, 256, (10, 50, 80, 3), dtype=np.uint8)
    photo = np.zeros((1, 100, 100, 3), np.uint8)
    path = report.contact_sheet([("video", frames), ("photo", photo)], str(tmp_path / "sheet.png"), height=50)
    im = Image.open(path)
    assert im.size == (4 * 80 + 3 * 4, 2 * 50 + 4)
    below_label = np.asarray(im)[54 + 40]
    assert below_label[5:45].max() == 0 and below_label[60:].min() == 255     # the photo once, then blank


def test_swapped_is_a_default_system():
    from dubeval.config import EvalConfig
    assert EvalConfig().systems.split(",") == ["original", "untrained", "trained", "swapped"]
