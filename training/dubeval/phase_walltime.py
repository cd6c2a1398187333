"""Wall time of the personalisation phase by video length (issue 14: "on one 2-core worker for a
1-, 3- and 10-minute video").

    python -m dubeval.phase_walltime [--minutes 1,3,10] [--seconds 300] [--source ../shared/media/speaker-c.mp4]
                                     [--work /tmp/dubeval-phase] [--max-frames 750] [--threads 2]

(from training/). For each length the source clip (a held-out speaker's) is looped with ffmpeg
(stream copy) into WORK/looped-Nmin.mp4 and its own audio into a WAV; a private local farm with
ONE worker of --threads threads that can personalise (`local up --personalise`,
personalise.max_frames from --max-frames, the coordinator's default 750) takes `submit VIDEO
--audio WAV --personalise=SECONDS`; the job is polled every second until it leaves
`personalising`, then cancelled (the dub itself is not timed here: its speed is the dub stage's,
docs/benchmarks.md). Prints one JSON line per length and a table: upload (the submit command,
until it returns the job id), then from the job's history (`logs --json`, 1-s resolution)
planning, dataset build, training lease (trainer start, the budget, measuring, weights back) and
the whole phase from `submitted` to leaving `personalising`. Nothing under ../shared is written.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

from . import media, personal
from .config import EvalConfig
from .farm import Farm


def looped(source, minutes, work):
    """WORK/looped-Nmin.mp4: `source` repeated until it lasts `minutes` (stream copy), and its audio as WAV."""
    out = os.path.join(work, f"looped-{minutes:g}min.mp4")
    wav = os.path.join(work, f"looped-{minutes:g}min.wav")
    if not os.path.exists(out):
        _, _, fps = media.probe(source)
        seconds = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                        source], check=True, capture_output=True, text=True).stdout)
        loops = int(math.ceil(minutes * 60 / seconds - 1e-6))
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-stream_loop", str(loops - 1), "-i", source,
                        "-map", "0:v:0", "-map", "0:a:0", "-c", "copy", out + ".tmp.mp4"], check=True, capture_output=True)
        os.replace(out + ".tmp.mp4", out)
    if not os.path.exists(wav):
        media.extract_wav(out, wav)
    return out, wav


def frame_count(path):
    r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                        "stream=nb_read_packets", "-of", "csv=p=0", path], check=True, capture_output=True, text=True)
    return int(r.stdout.strip())


def measure(cfg, video, wav, seconds, max_frames, threads, farm_dir, log):
    env = {"DUBFARM_PERSONALISE_MAX_FRAMES": str(max_frames)}
    with Farm(cfg.dubfarm, farm_dir, cfg.model, 1, threads, log, personalise=True, env=env) as farm:
        denv = dict(os.environ, DUBFARM_LOCAL_DIR=farm.dir)
        t0 = time.time()
        job = json.loads(farm._run(["nice", "-n", "15", cfg.dubfarm, "submit", video, "--audio", wav,
                                    f"--personalise={int(seconds)}", "--json"], env=denv))["id"]
        upload = time.time() - t0
        polled = None
        while True:
            view = farm.status(job)["job"]
            if view["state"] not in ("queued", "planning", "personalising"):
                polled = time.time() - t0
                break
            time.sleep(1)
        farm._run([cfg.dubfarm, "cancel", str(job)], env=denv)
        events = farm.events(job)
        logged = personal.max_frames_logged(farm.coordinator_log(), job)
    p = view.get("personalisation") or {}
    return {"video": video, "frames": frame_count(video), "budget_seconds": int(seconds), "max_frames": logged,
            "dataset_frames": p.get("datasetFrames"), "steps": p.get("step"), "training_seconds": p.get("elapsedSeconds"),
            "state_after": view["state"], "upload_seconds": round(upload, 1),
            "submit_to_running_polled": round(polled, 1), "phase_seconds": personal.phase_times(events),
            "trainer": personal.trainer_report(p)}


def main(argv=None):
    cfg = EvalConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", default="1,3,10")
    ap.add_argument("--seconds", type=int, default=300)
    ap.add_argument("--source", default=os.path.join(cfg.media, "speaker-c.mp4"))
    ap.add_argument("--work", default="/tmp/dubeval-phase")
    ap.add_argument("--max-frames", type=int, default=750)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=cfg.cache_dir)
    ap.add_argument("--json", default="", help="also write the results here")
    a = ap.parse_args(argv)
    os.makedirs(a.work, exist_ok=True)
    t00 = time.time()
    log = lambda s: print(f"[phase {time.time() - t00:5.0f} s] {s}", file=sys.stderr, flush=True)
    rows = []
    for m in [float(x) for x in a.minutes.split(",")]:
        video, wav = looped(a.source, m, a.work)
        log(f"{m:g} min: {video} ({frame_count(video)} frames), --personalise={a.seconds}")
        r = measure(cfg, video, wav, a.seconds, a.max_frames, a.threads,
                    os.path.join(a.cache_dir, "farm", "phase-walltime"), log)
        r["minutes"] = m
        r["loadavg_after"] = os.getloadavg()
        print(json.dumps(r), flush=True)
        rows.append(r)
    print(f"{'video':>8} {'frames':>7} {'upload s':>9} {'planning s':>11} {'dataset s':>10} {'training s':>11} "
          f"{'phase s':>8} {'steps':>6}")
    for r in rows:
        ph = r["phase_seconds"]
        f = lambda v: "—" if v is None else f"{v:.0f}"
        print(f"{r['minutes']:>6g} m {r['frames']:>7} {r['upload_seconds']:>9.1f} {f(ph['planning']):>11} "
              f"{f(ph['dataset']):>10} {f(ph['training']):>11} {f(ph['phase']):>8} {r['steps']!s:>6}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
