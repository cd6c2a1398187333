"""The 'personalised' system of `make eval` (issue 14): per held-out clip, the farm fine-tunes the
model on the clip's own footage (`submit --personalise=SECONDS`) and dubs it with the job's weights.

Like for like: the coordinator's dataset is capped at the clip's first k frames
(`personalise.max_frames` = k, `split_frames`), so the fine-tune never sees frames k… (its
trainer holds back the last 15 % of the k for its own figures), and every metric of the
personalised rows AND of the default weights' rows beside them is computed on frames [k, n) only.

Per clip, on a private farm started with `local up --personalise` and
`DUBFARM_PERSONALISE_MAX_FRAMES=k` in the coordinator's environment (checked in its log):
  self   the clip with its own audio, `--personalise=SECONDS`: the personalisation phase, then the
         dub on the job's weights (`status --json` names them by SHA-256);
  cross  the clip with the paired clip's audio placed so that its speech covers the tail
         (tail_cross_audio; the main table's cross track can be silence there), dubbed on the
         same weights, and by the default weights for the rows beside it. The weights are a directory of the
         coordinator's stored file (store/weights/SHA.safetensors) and the base's manifest, which
         is how a worker loads a job's weights, given to a farm as its --model (the model id its
         workers load, NAME@hash of the tensors, must be the one the job's worker logged). One fine-tune per
         clip serves both drives (a second job with --personalise would train again, on the same
         frames, and land on other weights only through the wall-clock budget's step count).
The phase's wall time comes from the job's history (`logs --json`, 1-s resolution): from the job's
`submitted` event to the job leaving `personalising`.
"""
import json
import math
import os
import re
import shutil
import subprocess
import time
from datetime import datetime

from . import media
from .farm import Farm

MIN_DATASET_FRAMES = 20          # the coordinator's personalise.max_frames floor and its dataset minimum


def split_frames(n, fraction, minimum=MIN_DATASET_FRAMES):
    """k: the fine-tune's dataset is frames [0, k) of an n-frame clip, the metrics frames [k, n).
    None when the clip cannot be split so (fewer than `minimum` frames to train on, or no tail)."""
    if not 0 < fraction < 1:
        raise ValueError(f"personalise fraction {fraction} is not in (0, 1)")
    k = int(math.floor(n * fraction + 1e-9))
    if k < minimum or k >= n:
        return None
    return k


def _t(event):
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()


def phase_times(events):
    """Seconds of the personalisation phase from a job's history (`dubfarm logs JOB --json`):
    phase = job submitted → job leaves `personalising` (planning, the dataset build, waiting for
    a worker and the training, with its setup and measuring, all included); its parts: planning
    (submitted → personalising), dataset (→ the fine-tune is pending), queue (→ first claimed),
    training (first claimed → done: the trainer's start, budget, measure and upload); job =
    submitted → done. None for a part whose events are missing."""
    def first(pred):
        return next((e for e in events if pred(e)), None)
    job = lambda e: e.get("kind") == "job"
    per = lambda e: e.get("kind") == "personalisation"
    submitted = first(lambda e: job(e) and e.get("to") == "queued")
    into = first(lambda e: job(e) and e.get("to") == "personalising")
    out = first(lambda e: job(e) and e.get("from") == "personalising")
    pending = first(lambda e: per(e) and e.get("to") == "pending")
    leased = first(lambda e: per(e) and e.get("to") == "leased")
    trained = first(lambda e: per(e) and e.get("to") == "done")
    done = first(lambda e: job(e) and e.get("to") == "done")

    def span(a, b):
        return None if a is None or b is None else _t(b) - _t(a)
    return {"phase": span(submitted, out), "planning": span(submitted, into), "dataset": span(into, pending),
            "queue": span(pending, leased), "training": span(leased, trained), "job": span(submitted, done),
            "left_to": out.get("to") if out else None, "attempts": sum(1 for e in events if per(e) and e.get("to") == "leased")}


def trainer_report(personalisation):
    """The trainer's final JSON line (status --json's job.personalisation.report) as a dict:
    step, elapsed training seconds and its holdout figures (psnr_before/after …); {} if none."""
    text = (personalisation or {}).get("report")
    if not text:
        return {}
    r = json.loads(text)
    return {"step": r.get("step"), "elapsed": r.get("elapsed"), "holdout": r.get("holdout") or {}}


def max_frames_logged(coordinator_log, job):
    """The personalise.max_frames the coordinator built job's dataset with (its log line), or None."""
    for line in coordinator_log.splitlines():
        if "building the personalisation dataset" in line and f"job={job} " in line:
            for word in line.split():
                if word.startswith("max_frames="):
                    return int(word.split("=", 1)[1])
    return None


def personalised_model_logged(worker_log, sha256):
    """The model id (NAME@VERSION) a worker loaded a job's weights as (its 'personalised weights
    loaded' line), or None."""
    for line in worker_log.splitlines():
        if "personalised weights loaded" in line and f"weights={sha256}" in line:
            m = re.search(r"\bmodel=(\S+)", line)
            if m:
                return m.group(1)
    return None


def weights_directory(weights_file, base, dest):
    """dest/: the job's weights as a model directory (its model.safetensors, the base's
    manifest.json), what a worker builds for itself from a job's WEIGHTS."""
    os.makedirs(dest, exist_ok=True)
    shutil.copyfile(weights_file, os.path.join(dest, "model.safetensors"))
    shutil.copyfile(os.path.join(base, "manifest.json"), os.path.join(dest, "manifest.json"))
    return dest


def tail_audio_delay(k, fps, max_offset):
    """Seconds of silence before the other speaker's speech in a clip's cross-driven track for the
    tail: the speech starts max_offset frames before frame k, so every audio window the sync
    search reads for a window in the tail (frames ≥ k, offsets ±max_offset) is speech."""
    return max(0, k - max_offset) / fps


def tail_cross_audio(cfg, stem, x, k, log):
    """The clip's cross-driven dub track for the tail measurement: the paired clip's audio from
    its start, delayed by tail_audio_delay. (The whole-clip cross track would leave some tails
    silent: a paired clip shorter than this one ends before its tail, and the farm pads the dub
    track with silence to the video's length.)"""
    _, _, fps = media.probe(x["video"])
    delay = tail_audio_delay(k, fps, cfg.sync_max_offset)
    out = os.path.join(cfg.out, "inputs", f"{stem}-from{k}-with-{x['cross_audio_of']}-audio.wav")
    if not os.path.exists(out):
        ms = int(round(delay * 1000))
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", x["cross_wav"], "-af",
                        f"adelay=delays={ms}:all=1", "-c:a", "pcm_s16le", out + ".tmp.wav"], check=True, capture_output=True)
        os.replace(out + ".tmp.wav", out)
    return out, delay


def run(cfg, inputs, frame_counts, log):
    """Per clip: the fine-tune and the personalised self-driven dub (one job), the personalised
    cross-driven dub of the tail's cross track, and the default weights' dub of that same track.
    Returns (videos {system: {drive: {stem: path}}} of the tail measurement — 'trained' has only
    its 'cross' here, its self-driven dub is the main evaluation's — and clips {stem: info}).
    Clips that cannot be split are left out with a line saying why. A fine-tune is reused
    (cfg.reuse) when made with the same budget, split, base model and input; dubs when their
    file exists."""
    vdir = os.path.join(cfg.out, "videos")
    os.makedirs(vdir, exist_ok=True)
    videos = {"personalised": {"self": {}, "cross": {}}, "trained": {"cross": {}}}
    clips = {}
    for stem, x in inputs.items():
        n = frame_counts[stem]
        k = split_frames(n, cfg.personalise_fraction)
        if k is None:
            log(f"personalised: {stem} ({n} frames) cannot be split at {cfg.personalise_fraction:g}: left out")
            continue
        d = os.path.join(cfg.out, "personalised", stem)
        out_self = os.path.join(vdir, f"personalised-self-{stem}.mp4")
        key = {"budget_seconds": int(cfg.personalise_seconds), "max_frames": k, "frames": n,
               "base": os.path.abspath(cfg.model), "video": os.path.abspath(x["video"]),
               "threads": cfg.personalise_threads, "workers": cfg.personalise_workers}
        info_path = os.path.join(d, "info.json")
        info = None
        if cfg.reuse and os.path.exists(info_path) and os.path.exists(out_self):
            with open(info_path) as f:
                info = json.load(f)
            if {a: b for a, b in info.get("key", {}).items() if a != "cross_audio"} == key:
                log(f"personalised: {stem}: reusing the fine-tune in {d}")
            else:
                info = None
        if info is None:
            info = fine_tune(cfg, stem, x, n, k, key, d, out_self, log)
            with open(info_path, "w") as f:
                json.dump(info, f, indent=2)
        wdir = os.path.join(d, "weights")
        # the cross drive of the tail, on the job's weights
        wav, delay = tail_cross_audio(cfg, stem, x, k, log)
        info["cross_audio"] = {"of": x["cross_audio_of"], "path": wav, "speech_from_seconds": round(delay, 3)}
        out_cross = os.path.join(vdir, f"personalised-crosstail-{stem}.mp4")
        if not (cfg.reuse and os.path.exists(out_cross)):
            with Farm(cfg.dubfarm, os.path.join(cfg.cache_dir, "farm", "personalised"), wdir,
                      cfg.workers, cfg.threads, log) as farm:
                farm.dub(x["video"], wav, out_cross)
                cross_model = sorted(set(farm.loaded))
            if info.get("model") and cross_model != [info["model"]]:   # the same tensors make the same model id
                raise RuntimeError(f"{stem}: the self-driven job ran on {info['model']}, the cross-driven farm "
                                   f"loaded {cross_model} from {wdir}")
        with open(info_path, "w") as f:
            json.dump(info, f, indent=2)
        videos["personalised"]["self"][stem], videos["personalised"]["cross"][stem] = out_self, out_cross
        videos["trained"]["cross"][stem] = os.path.join(vdir, f"trained-crosstail-{stem}.mp4")
        clips[stem] = info
    # the default weights on the same tail cross tracks
    jobs = [(inputs[stem]["video"], clips[stem]["cross_audio"]["path"], out)
            for stem, out in videos["trained"]["cross"].items() if not (cfg.reuse and os.path.exists(out))]
    if jobs:
        with Farm(cfg.dubfarm, os.path.join(cfg.cache_dir, "farm", "trained"), cfg.model,
                  cfg.workers, cfg.threads, log) as farm:
            farm.dub_all(jobs)
    return videos, clips


def fine_tune(cfg, stem, x, n, k, key, d, out_self, log):
    """The personalised job: a farm whose coordinator caps the dataset at k frames fine-tunes for
    the budget and dubs the clip with its own audio; the weights are kept in d/weights/."""
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    env = {"DUBFARM_PERSONALISE_MAX_FRAMES": str(k)}
    t0 = time.time()
    with Farm(cfg.dubfarm, os.path.join(cfg.cache_dir, "farm", "personalise"), cfg.model,
              cfg.personalise_workers, cfg.personalise_threads, log, personalise=True, env=env) as farm:
        log(f"personalised: {stem}: fine-tune on frames 0..{k - 1} of {n} for {cfg.personalise_seconds} s, "
            f"then dub (self)")
        t = time.time()
        job = farm.dub(x["video"], x["wav"], out_self, personalise=cfg.personalise_seconds)
        submit_seconds = time.time() - t
        load = os.getloadavg()
        st = farm.status(job)
        view = st["job"]
        segs = st.get("segments") or []
        dub = {"segments": len(segs), "frames": sum((g.get("stats") or {}).get("frames", 0) for g in segs),
               "process_seconds": round(sum(g.get("processSeconds") or 0 for g in segs), 2),
               "threads": cfg.personalise_threads}
        events = farm.events(job)
        logged = max_frames_logged(farm.coordinator_log(), job)
        if logged != k:
            raise RuntimeError(f"the coordinator built job {job}'s dataset with max_frames={logged}, not {k} "
                               f"(DUBFARM_PERSONALISE_MAX_FRAMES not applied?); see {farm.dir}/logs")
        p = view.get("personalisation") or {}
        if p.get("state") != "done" or not view.get("weights"):
            raise RuntimeError(f"job {job}: personalisation {p.get('state')}: {p.get('error')}")
        weights_directory(farm.weights_file(view["weights"]), cfg.model, os.path.join(d, "weights"))
        model = personalised_model_logged(farm.worker_logs(), view["weights"])
    rep = trainer_report(p)
    info = {"key": key, "max_frames": k, "frames": n, "tail_frames": n - k, "job": job,
            "budget_seconds": int(cfg.personalise_seconds), "weights": view["weights"],
            "dataset_frames": p.get("datasetFrames"), "steps": p.get("step"),
            "training_seconds": p.get("elapsedSeconds"), "loss": p.get("loss"),
            "attempts": p.get("leases"), "trainer": rep,
            "phase_seconds": phase_times(events), "submit_to_download_seconds": round(submit_seconds, 1),
            "model": model, "dub": dub, "loadavg_at_end": [round(v, 2) for v in load],
            "seconds": round(time.time() - t0, 1), "events": events}
    ph = info["phase_seconds"]
    h = rep.get("holdout", {})
    sec = lambda v: "?" if v is None else f"{v:.0f}"
    log(f"personalised: {stem}: {info['steps']} steps, phase {sec(ph['phase'])} s (dataset {sec(ph['dataset'])} s, "
        f"training {sec(ph['training'])} s); trainer's held-back PSNR {h.get('psnr_before')} → {h.get('psnr_after')} dB; "
        f"weights {view['weights'][:16]}")
    return info
