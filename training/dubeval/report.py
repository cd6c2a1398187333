"""What a person reads: the table, the JSON, contact sheets, loss curves, the model-card summary."""
import csv
import glob
import json
import math
import os

import numpy as np

COLUMNS = [  # key, header, format
    ("face_found", "face found", lambda v: f"{100 * v:.1f} %"),
    ("identity", "identity dist", lambda v: f"{v:.3f}"),
    ("psnr", "face PSNR dB", lambda v: f"{v:.2f}"),
    ("ssim", "face SSIM", lambda v: f"{v:.3f}"),
    ("lmd", "LMD % IOD", lambda v: f"{v:.2f}"),
    ("sync_conf", "sync conf", lambda v: f"{v:.3f}"),
    ("sync_conf_peak", "sync peak", lambda v: f"{v:.3f}"),
    ("sync_within_1", "offset ±1", lambda v: f"{100 * v:.0f} %"),
    ("jitter_ratio", "jitter ×orig", lambda v: f"{v:.2f}"),
]


def _cell(row, key, fmt):
    v = row.get(key)
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt(v)


FACE_COLUMNS = [  # identity over time, expression and pose against the original (issue 18, dubeval/swapmetrics.py)
    ("dist_source", "to source", lambda v: f"{v:.3f}"),
    ("id_spread", "id spread", lambda v: f"{v:.3f}"),
    ("id_spread_ratio", "id spread ×orig", lambda v: f"{v:.2f}"),
    ("expr_diff", "expr diff", lambda v: f"{v:.3f}"),
    ("pose_diff", "pose diff °", lambda v: f"{v:.2f}"),
    ("yaw_diff", "yaw diff", lambda v: f"{v:.3f}"),
]


def _system_rows(rows, columns):
    return _grid(["system", "drive"] + [h for _, h, _ in columns],
                 [[r["system"], r["drive"]] + [_cell(r, k, f) for k, _, f in columns] for r in rows])


def table(results):
    """Every (system, drive) row twice: image quality, sync and jitter; then identity, expression
    and pose (two blocks keep the lines short)."""
    rows = results["results"]
    return "\n".join(_system_rows(rows, COLUMNS) + ["", "Identity, expression and pose (issue 18):"]
                     + _system_rows(rows, FACE_COLUMNS))


TAIL_COLUMNS = COLUMNS[:8] + [("sync_windows", "windows", lambda v: f"{v:d}")] + COLUMNS[8:]


def _grid(head, rows, left=2):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]


PERSONALISATION_SYSTEMS = ("original", "trained", "personalised")


def personalisation_rows(p):
    """[(clip, drive, system, figures)] of the personalisation section: per clip and drive, the
    original (self-driven: the reference), 'trained' then 'personalised'; then the same over all
    clips ('all')."""
    by = {(r["system"], r["drive"]): r for r in p["results"]}
    out = []
    for stem in list(p["clips"]) + ["all"]:
        for drive in ("self", "cross"):
            for system in PERSONALISATION_SYSTEMS:
                r = by.get((system, drive))
                if r and stem == "all":
                    out.append(("all", drive, system, r))
                elif r and stem in r["per_clip"]:
                    out.append((stem, drive, system, r["per_clip"][stem]))
    return out


def personalisation_table(results):
    """Default weights ('trained') against the per-clip fine-tune ('personalised'), every figure
    on the held-back tail of each clip; then what each clip's personalisation phase did."""
    p = results.get("personalisation")
    if not p:
        return ""
    head = ["clip (tail frames)", "drive", "system"] + [h for _, h, _ in TAIL_COLUMNS]
    rows = []
    for stem, drive, system, r in personalisation_rows(p):
        if stem == "all":
            label = "all clips"
        else:
            c = p["clips"][stem]
            label = f"{stem} ({c['max_frames']}-{c['frames'] - 1})"
        rows.append([label, drive, system] + [_cell(r, k, f) for k, _, f in TAIL_COLUMNS])
    lines = [f"Personalised (issue 14): each clip fine-tuned for {p['budget_seconds']} s on its first "
             f"{100 * p['fraction']:g} % of frames ({p['workers']} worker, {p['threads']} threads); every figure on "
             "the frames after it (the tail), for every system; cross-driven: the paired clip's speech over the tail"]
    lines += _grid(head, rows, left=3)
    head2 = ["clip", "frames", "dataset", "tail", "budget s", "steps", "phase wall s", "dataset s", "training s",
             "trainer held-back PSNR dB", "weights"]
    rows2 = []
    for stem, c in p["clips"].items():
        ph = c.get("phase_seconds") or {}
        h = (c.get("trainer") or {}).get("holdout") or {}
        sec = lambda v: "—" if v is None else f"{v:.0f}"
        psnr = (f"{h['psnr_before']:.2f} → {h['psnr_after']:.2f} ({h.get('frames', '?')} fr)"
                if h.get("psnr_before") is not None and h.get("psnr_after") is not None else "—")
        rows2.append([stem, c["frames"], f"0-{c['max_frames'] - 1} ({c.get('dataset_frames')})", c["tail_frames"],
                      c["budget_seconds"], c.get("steps"), sec(ph.get("phase")), sec(ph.get("dataset")),
                      sec(ph.get("training")), psnr, (c.get("weights") or "")[:16]])
    lines += ["", "Personalisation phase per clip (phase: job submitted → leaves 'personalising'; dataset: with a face "
              "of the first max_frames; trainer: its own last 15 % of the dataset, before → after)"]
    lines += _grid(head2, rows2, left=1)
    return "\n".join(lines)


def personalisation_targets(results):
    """Issue 14's targets on the held-back tails: self-driven face PSNR ≥ 2 dB above the default's,
    sync confidence ≥ the default's (cross-driven, the dubbing case; self-driven beside it)."""
    p = results.get("personalisation")
    if not p:
        return []
    by = {(r["system"], r["drive"]): r for r in p["results"]}
    out = ["| target (held-back tails) | default (trained) | personalised | wanted | met |", "|---|---|---|---|---|"]
    d, q = by.get(("trained", "self")), by.get(("personalised", "self"))
    if d and q and d.get("psnr") is not None and q.get("psnr") is not None:
        gain = q["psnr"] - d["psnr"]
        out.append(f"| face-region PSNR, self-driven | {d['psnr']:.2f} dB | {q['psnr']:.2f} dB ({gain:+.2f}) | "
                   f"≥ +2 dB | {'yes' if gain >= 2 else 'no'} |")
    for drive in ("cross", "self"):
        d, q = by.get(("trained", drive)), by.get(("personalised", drive))
        if d and q and d.get("sync_conf") is not None and q.get("sync_conf") is not None:
            out.append(f"| sync confidence, {drive}-driven ({q.get('sync_windows')} windows) | {d['sync_conf']:.3f} | "
                       f"{q['sync_conf']:.3f} | ≥ default | {'yes' if q['sync_conf'] >= d['sync_conf'] else 'no'} |")
    return out


def targets(results):
    """The issue's targets against the trained model's figures (cross-driven unless said)."""
    by = {(r["system"], r["drive"]): r for r in results["results"]}
    t, o_self, o_cross = by.get(("trained", "cross")), by.get(("original", "self")), by.get(("original", "cross"))
    ts = by.get(("trained", "self"))
    if not t:
        return []
    def chk(name, value, ok, target):
        return f"| {name} | {value} | {target} | {'yes' if ok else 'no'} |"
    out = ["| target | trained | wanted | met |", "|---|---|---|---|"]
    out.append(chk("face found, cross-driven", f"{100 * t['face_found']:.1f} %", t["face_found"] >= 0.98, "≥ 98 %"))
    if t.get("identity") is not None:
        out.append(chk("identity distance, cross-driven", f"{t['identity']:.3f}", t["identity"] <= 0.45, "≤ 0.45"))
    if ts and ts.get("psnr") is not None:
        out.append(chk("face-region PSNR, self-driven", f"{ts['psnr']:.2f} dB", ts["psnr"] >= 28, "≥ 28 dB"))
    if o_self and t.get("sync_conf") is not None and o_self.get("sync_conf"):
        ratio = t["sync_conf"] / o_self["sync_conf"]
        out.append(chk("sync confidence / original with own audio", f"{100 * ratio:.0f} %", ratio >= 0.9, "≥ 90 %"))
        if o_cross and o_cross.get("sync_conf") is not None:
            out.append(chk("sync confidence vs original with the new audio",
                           f"{t['sync_conf']:.3f} vs {o_cross['sync_conf']:.3f}",
                           t["sync_conf"] > o_cross["sync_conf"] + 0.5 * abs(o_self["sync_conf"] - o_cross["sync_conf"]),
                           "clearly above"))
    if t.get("jitter_ratio") is not None:
        out.append(chk("mouth jitter / original's", f"{t['jitter_ratio']:.2f}×", t["jitter_ratio"] <= 1.5, "≤ 1.5×"))
    return out


SWAP_COLUMNS = [
    ("face_found", "face found", lambda v: f"{100 * v:.1f} %"),
    ("dist_source", "to source", lambda v: f"{v:.3f}"),
    ("identity", "to target", lambda v: f"{v:.3f}"),
    ("id_spread_ratio", "id spread ×orig", lambda v: f"{v:.2f}"),
    ("expr_diff", "expr diff", lambda v: f"{v:.3f}"),
    ("pose_diff", "pose diff °", lambda v: f"{v:.2f}"),
    ("sync_conf", "sync conf", lambda v: f"{v:.3f}"),
    ("sync_vs_no_swap", "sync vs no swap", lambda v: f"{100 * v:.0f} %"),
    ("swapped_frames", "frames swapped", lambda v: f"{100 * v:.0f} %"),
]


def swap_rows(results):
    """[(drive, system, figures)]: per drive (cross first: the dubbing case) 'trained' then
    'swapped'; a swapped row's sync_vs_no_swap is its sync confidence over the trained row's of
    the same drive (None where the trained one is not positive)."""
    by = {(r["system"], r["drive"]): r for r in results["results"]}
    out = []
    for drive in ("cross", "self"):
        t, w = by.get(("trained", drive)), by.get(("swapped", drive))
        if not w:
            continue
        if t:
            out.append((drive, "trained", t))
        ratio = None
        if t and t.get("sync_conf") and t["sync_conf"] > 0 and w.get("sync_conf") is not None:
            ratio = w["sync_conf"] / t["sync_conf"]
        out.append((drive, "swapped", dict(w, sync_vs_no_swap=ratio)))
    return out


def swap_table(results):
    """The face swap (issue 18): the trained model with and without a source face, per drive."""
    rows = swap_rows(results)
    if not rows:
        return ""
    head = ["drive", "system"] + [h for _, h, _ in SWAP_COLUMNS]
    lines = ["Face swap (issue 18): the trained model without and with a source face (a frame of another "
             "held-out speaker); to target = identity dist; to source without the swap: the baseline"]
    return "\n".join(lines + _grid(head, [[d, s] + [_cell(r, k, f) for k, _, f in SWAP_COLUMNS] for d, s, r in rows]))


def swap_checks(results):
    """Issue 18's targets on each drive's swapped row: [{target, drive, value, wanted, met}]."""
    out = []
    for drive, system, r in swap_rows(results):
        if system != "swapped":
            continue
        if r.get("dist_source") is not None:
            out.append({"target": "distance to the source photo (face found)", "drive": drive,
                        "value": f"{r['dist_source']:.3f} ({100 * r['face_found']:.1f} %)", "wanted": "≤ 0.55 with ≥ 98 %",
                        "met": r["dist_source"] <= 0.55 and r["face_found"] >= 0.98})
        if r.get("id_spread_ratio") is not None:
            out.append({"target": "identity spread / original's", "drive": drive, "value": f"{r['id_spread_ratio']:.2f}×",
                        "wanted": "≤ 1.5×", "met": r["id_spread_ratio"] <= 1.5})
        if r.get("sync_vs_no_swap") is not None:
            out.append({"target": "sync confidence with / without the swap", "drive": drive,
                        "value": f"{100 * r['sync_vs_no_swap']:.0f} %", "wanted": "≥ 90 %", "met": r["sync_vs_no_swap"] >= 0.9})
    return out


def swap_targets(results):
    """swap_checks as a markdown table (empty without swapped rows)."""
    checks = swap_checks(results)
    if not checks:
        return []
    return ["| target (issue 18) | swapped | wanted | met |", "|---|---|---|---|"] + [
        f"| {c['target']}, {c['drive']}-driven | {c['value']} | {c['wanted']} | {'yes' if c['met'] else 'no'} |"
        for c in checks]


def summary_markdown(results):
    s = results["sync_model"]
    clips = ", ".join(f"{k} ({v['speaker']})" for k, v in results["held_out_clips"].items())
    models = {r["system"]: r["model"] for r in results["results"]}
    lines = [
        "## Evaluation (`make eval`)", "",
        f"Held-out clips: {clips}. Cross-driven: each clip with another held-out speaker's audio.",
        f"Models: " + "; ".join(f"{k}: `{v}`" for k, v in models.items()) + ".", "",
        "```", table(results), "```", "",
        f"Sync model (pixel mouth crops + log-mel, trained on the training speakers only, "
        f"{s.get('steps', '?')} steps in {s.get('seconds', '?')} s): the true audio offset is found within ±1 frame in "
        f"**{100 * s['held_out']['within_1']:.0f} %** of {s['held_out']['windows']} one-second windows of the held-out "
        "original videos (offsets −15..+15 frames searched). "
        "sync conf = mean over 1-s windows of s(0) − median s(d); sync peak = max s(d) − median s(d); "
        "s(d) = mean cosine of mouth and audio embeddings at audio offset d. Identity: dlib descriptor "
        "distance to the input frame (same person < 0.6). PSNR/SSIM on the original's landmark box; "
        "LMD in % of interocular distance; jitter = mouth-landmark acceleration / the original's. "
        "To source: descriptor distance to the swap's source photo (on rows without a swap, the baseline: "
        "how far the clip's person already is from it). Id spread: mean distance of a clip's "
        "descriptors to their mean (×orig: over the original video's, per clip). Expr diff: mean |difference| of "
        "the eyes' aspect ratios and the inner and outer mouth's height/width, each minus its clip median "
        "(identity removed). Pose diff: mean |difference| of head roll (the eye line), degrees; yaw diff: of the "
        "nose tip's offset along the eye line, in eye distances.", ""]
    tg = targets(results)
    if tg:
        lines += ["Targets (issue 13):", ""] + tg + [""]
    st = swap_table(results)
    if st:
        sw = results.get("swap") or {}
        photos = ", ".join(f"{k} ← frame {v['face_frame']} of {v['face_of']}"
                           for k, v in (sw.get("source_photos") or {}).items() if v.get("face_of"))
        lines += ["## Face swap (issue 18)", "", "```", st, "```", "",
                  f"Source photos (clip ← photo): {photos}." if photos else "No source photos.",
                  f"Swap: {sw['note']}." if sw.get("note") else "", "", "Targets (issue 18):", ""] + swap_targets(results) + [""]
    pt = personalisation_table(results)
    if pt:
        lines += ["## Per-job personalisation (issue 14)", "", "```", pt, "```", "",
                  "Targets (issue 14):", ""] + personalisation_targets(results) + [""]
    lines.append(f"`make eval` took {results['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def _label(img, text, size=18):
    from PIL import ImageDraw, ImageFont
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size)
    except TypeError:
        font = ImageFont.load_default()
    d.rectangle([0, 0, img.width, size + 8], fill=(0, 0, 0))
    d.text((6, 3), text, fill=(255, 255, 255), font=font)


def contact_sheet(rows, path, n=4, height=200, first=0):
    """rows: [(label, frames [N, H, W, 3])]; n frames evenly spaced, side by side, one row each
    (first: the clip's frame number of frames[0], for the labels). A row of one frame (a photo)
    shows it once."""
    from PIL import Image
    count = min(len(f) for _, f in rows if len(f) > 1)
    idx = np.linspace(0, count - 1, n + 2)[1:-1].round().astype(int)
    strips = []
    for label, frames in rows:
        row = []
        for i in (idx if len(frames) > 1 else [0]):
            im = Image.fromarray(frames[i])
            row.append(im.resize((round(im.width * height / im.height), height), Image.Resampling.BILINEAR))
        strips.append((label if len(frames) == 1 else f"{label}   (frames {', '.join(str(i + first) for i in idx)})", row))
    width = max(sum(t.width for t in row) + 4 * (len(row) - 1) for _, row in strips)
    tiles = []
    for label, row in strips:
        strip = Image.new("RGB", (width, height), (255, 255, 255))   # full width: a photo's label is not cut
        x = 0
        for t in row:
            strip.paste(t, (x, 0))
            x += t.width + 4
        _label(strip, label)
        tiles.append(strip)
    sheet = Image.new("RGB", (max(t.width for t in tiles), sum(t.height for t in tiles) + 4 * (len(tiles) - 1)),
                      (255, 255, 255))
    y = 0
    for t in tiles:
        sheet.paste(t, (0, y))
        y += t.height + 4
    sheet.save(path)
    return path


def read_loss_csv(path):
    """{column: (steps, values)} for every numeric column but step and seconds; tolerant of
    empty cells and of columns that appear only in some rows (validation rows)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "step" not in rows[0]:
        return {}
    out = {}
    for col in rows[0]:
        if col in ("step", "seconds") or col is None:
            continue
        xs, ys = [], []
        for r in rows:
            try:
                x, y = float(r["step"]), float(r[col])
            except (TypeError, ValueError):
                continue
            if math.isfinite(y):
                xs.append(x)
                ys.append(y)
        if xs:
            out[col] = (xs, ys)
    return out


def loss_curves(log_dir, path):
    """One panel per CSV in log_dir (a training stage), every loss column in it; None if no logs."""
    files = sorted(glob.glob(os.path.join(log_dir, "*.csv")))
    curves = [(os.path.splitext(os.path.basename(f))[0], read_loss_csv(f)) for f in files]
    curves = [(n, c) for n, c in curves if c]
    if not curves:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, (name, cols) in zip(axes[0], curves):
        for col, (xs, ys) in cols.items():
            ax.plot(xs, ys, label=col, linewidth=1)
        if all(min(ys) > 0 for _, ys in cols.values()):
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(results, path):
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, np.generic):
            return clean(x.item())
        return x
    text = json.dumps(clean(results), indent=2)
    if path == "-":
        print(text)
    else:
        with open(path, "w") as f:
            f.write(text + "\n")
    return text
