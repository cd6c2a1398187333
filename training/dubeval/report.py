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


def table(results):
    head = ["system", "drive"] + [h for _, h, _ in COLUMNS]
    rows = [[r["system"], r["drive"]] + [_cell(r, k, f) for k, _, f in COLUMNS] for r in results["results"]]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


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
        "LMD in % of interocular distance; jitter = mouth-landmark acceleration / the original's.", ""]
    tg = targets(results)
    if tg:
        lines += ["Targets (issue 13):", ""] + tg + [""]
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
    (first: the clip's frame number of frames[0], for the labels)."""
    from PIL import Image
    count = min(len(f) for _, f in rows)
    idx = np.linspace(0, count - 1, n + 2)[1:-1].round().astype(int)
    tiles = []
    for label, frames in rows:
        row = []
        for i in idx:
            im = Image.fromarray(frames[i])
            row.append(im.resize((round(im.width * height / im.height), height), Image.Resampling.BILINEAR))
        strip = Image.new("RGB", (sum(t.width for t in row) + 4 * (len(row) - 1), height), (255, 255, 255))
        x = 0
        for t in row:
            strip.paste(t, (x, 0))
            x += t.width + 4
        _label(strip, f"{label}   (frames {', '.join(str(i + first) for i in idx)})")
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
