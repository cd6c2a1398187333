"""`make eval`: the held-out evaluation of the dub model through the real farm.

    python training/evaluate.py                      # trained (models/dubfarm-small), untrained, original, swapped
    python training/evaluate.py --model untrained:small --max-seconds 4   # quick, no trained weights
    python training/evaluate.py --json -             # also the results as JSON on stdout
    python training/evaluate.py --personalise-seconds 300   # + 'personalised' rows (the default; 0: none)

Every flag is a field of dubeval.config.EvalConfig. Writes to out/eval/: results.json, table.txt,
summary.md (for the model card), contact-SPEAKER.png, loss-curves.png, the dubbed videos.

Per-job personalisation (issue 14, dubeval/personal.py): with --personalise-seconds N (300; 0
skips it) every held-out clip is also dubbed by a farm that fine-tunes the trained model on the
clip's first --personalise-fraction (0.7) of frames for N s ('personalised'); the table then has a
second part where 'trained' and 'personalised' are measured on the rest of each clip only (the
tail the fine-tune never saw), per clip and over all, and the JSON a "personalisation" section
(per clip: split, phase wall time, steps, the trainer's own held-back PSNR, weights' SHA-256).

Face swap (issue 18, dubeval/swapmetrics.py): the 'swapped' system is the trained model with a
source face (submit --face): per held-out clip, the frame nearest the middle (with a face) of its
cross-drive partner, another held-out speaker, written to OUT/inputs/STEM-face-OTHER.png; it runs
both drives. Every row gets identity spread over time (×the original's), expression difference
with the identity removed, pose difference and the distance to the clip's source photo (on the
rows without a swap, the baseline). A "Face swap" table sets them beside 'trained' (with sync with/without the swap) against
the issue's targets, and the JSON's "swap" section says whether the workers applied the face
(weights whose metadata marks the swap untrained do not: those rows are then the no-swap baseline).
"""
import argparse
import dataclasses
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dubeval import media, report          # noqa: E402
from dubeval.config import EvalConfig      # noqa: E402
from dubeval.run import evaluate           # noqa: E402


def parse(argv=None):
    cfg = EvalConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cfg):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(cfg, f.name)
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif f.name == "json":
            p.add_argument(flag, nargs="?", const="-", default=default,
                           help="write the results as JSON to this file (no value: print them)")
        else:
            p.add_argument(flag, type=type(default), default=default, help=f"default: {default}")
    return EvalConfig(**vars(p.parse_args(argv)))


def swap_label(system, clip):
    """The contact sheet's word on the source face of a 'swapped' row."""
    return f"face of {clip['face_of']}, " if system == "swapped" and clip.get("face_of") else ""


def main(argv=None):
    cfg = parse(argv)
    t0 = time.time()
    os.makedirs(cfg.out, exist_ok=True)
    log = lambda s: print(f"[eval {time.time() - t0:5.0f} s] {s}", file=sys.stderr, flush=True)
    systems = [s.strip() for s in cfg.systems.split(",") if s.strip()]
    if not cfg.model.startswith("untrained:") and not os.path.exists(os.path.join(cfg.model, "manifest.json")):
        for s in [s for s in ("trained", "swapped") if s in systems]:
            log(f"no trained weights at {cfg.model} (manifest.json): the '{s}' system is left out; "
                "give --model DIR (or --model untrained:small to exercise the harness)")
            systems.remove(s)
    results, videos = evaluate(cfg, systems, log)
    results["seconds"] = round(time.time() - t0, 1)

    # pictures: a contact sheet per held-out speaker (its first clip, cross-driven: the dubbing case)
    seen = set()
    sheets = []
    for stem, x in results["held_out_clips"].items():
        if x["speaker"] in seen:
            continue
        seen.add(x["speaker"])
        rows = [(f"{s} ({'own picture, ' if s == 'original' else ''}{swap_label(s, x)}audio of {x['cross_audio_of']})",
                 media.read_frames(videos[s]["cross"][stem])[0]) for s in ("original", "untrained", "trained", "swapped")
                if s in videos and stem in videos[s]["cross"]]
        if "swapped" in videos and x.get("face"):
            rows.append((f"source photo of 'swapped': frame {x['face_frame']} of {x['face_of']}",
                         np.asarray(Image.open(x["face"]).convert("RGB"))[None]))
        sheets.append(report.contact_sheet(rows, os.path.join(cfg.out, f"contact-{x['speaker']}.png")))
    # the personalised system beside the default weights on the held-back tail (self-driven: the original is the truth)
    p = results.get("personalisation")
    if p:
        seen_p = set()
        for stem, c in p["clips"].items():
            spk = results["held_out_clips"][stem]["speaker"]
            if spk in seen_p:
                continue
            seen_p.add(spk)
            k = c["max_frames"]
            rows = [(f"{s}, self-driven (held back from the fine-tune)",
                     media.read_frames(videos[s]["self"][stem])[0][k:]) for s in ("original", "trained", "personalised")
                    if s in videos and stem in videos[s]["self"]]
            sheets.append(report.contact_sheet(rows, os.path.join(cfg.out, f"contact-personalised-{spk}.png"), first=k))
    log_dir = cfg.logs or os.path.join(cfg.model, "logs")
    curves = report.loss_curves(log_dir, os.path.join(cfg.out, "loss-curves.png"))
    results["pictures"] = {"contact_sheets": sheets, "loss_curves": curves}
    if curves is None:
        log(f"no training logs (*.csv) in {log_dir}: no loss-curves.png")

    if "swap" in results:
        results["swap"]["targets"] = report.swap_checks(results)
    text = report.table(results)
    for part in (report.swap_table(results), report.personalisation_table(results)):
        if part:
            text += "\n\n" + part
    with open(os.path.join(cfg.out, "table.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(cfg.out, "summary.md"), "w") as f:
        f.write(report.summary_markdown(results))
    report.write_json(results, os.path.join(cfg.out, "results.json"))
    s = results["sync_model"]["held_out"]
    print(f"held-out speakers: {', '.join(sorted(seen))}")
    print(f"sync model: true offset within ±1 frame in {100 * s['within_1']:.0f} % of {s['windows']} "
          f"one-second windows of the held-out original videos (target ≥ 80 %)")
    print(text)
    if "swap" in results:
        print(f"face swap: {results['swap']['note']}")
    for line in report.swap_targets(results) + report.personalisation_targets(results):
        print(line)
    print(f"\nwrote {cfg.out}/: table.txt, summary.md, results.json, {len(sheets)} contact sheet(s)"
          f"{', loss-curves.png' if curves else ''}; {results['seconds']:.0f} s")
    if cfg.json:
        report.write_json(results, cfg.json)


if __name__ == "__main__":
    main()
