"""The evaluation itself: inputs per held-out clip, the systems through the farm, the analysis
of every output, the metrics per (system, drive)."""
import json
import os
import time

import numpy as np

from . import cache, clips as C, faces as F, media, mel, metrics as M, offsets, personal, swapmetrics as SM, sync
from .farm import Farm

DRIVES = ("self", "cross")


def cross_pairs(held):
    """Each held-out clip takes the audio of the next held-out clip of another speaker."""
    pairs = {}
    for i, (stem, _, spk, _) in enumerate(held):
        for j in range(1, len(held) + 1):
            other = held[(i + j) % len(held)]
            if other[2] != spk:
                pairs[stem] = other[0]
                break
    return pairs


def prepare_inputs(cfg, held, log):
    """Per clip: the video to dub (the clip, or its first --max-seconds), its own audio as WAV,
    and for the cross drive the paired clip's audio; the original system's cross-driven video is
    the original picture muxed with that audio."""
    d = os.path.join(cfg.out, "inputs")
    os.makedirs(d, exist_ok=True)
    inputs = {}
    for stem, path, spk, _ in held:
        video = path
        if cfg.max_seconds:
            video = os.path.join(d, f"{stem}-first{cfg.max_seconds:g}s.mp4")
            if not os.path.exists(video):
                media.trim_video(path, video, cfg.max_seconds)
        wav = os.path.join(d, f"{stem}.wav")
        if not os.path.exists(wav):
            media.extract_wav(video, wav)
        inputs[stem] = {"video": video, "wav": wav, "speaker": spk}
    for stem, other in cross_pairs(held).items():
        inputs[stem]["cross_audio_of"] = other
        inputs[stem]["cross_wav"] = inputs[other]["wav"]
        muxed = os.path.join(d, f"{stem}-with-{other}-audio.mp4")
        if not os.path.exists(muxed):
            media.mux(inputs[stem]["video"], inputs[other]["wav"], muxed)
        inputs[stem]["cross_original"] = muxed
    return inputs


def middle_face_frame(found):
    """The frame nearest the clip's middle where the detector found a face (None: no face)."""
    idx = np.flatnonzero(found)
    return int(idx[np.argmin(np.abs(idx - (len(found) - 1) / 2))]) if len(idx) else None


def photo_descriptor(faces, rgb):
    """The dlib descriptor of the largest face of a picture (None: no face found)."""
    box = faces.detect(rgb)
    if box is None:
        return None
    return faces.descriptor(rgb, faces.landmarks(rgb, box)[1])


def write_source_photo(video, analysis, png, faces):
    """One frame of another speaker's clip as the swap's source photo: the frame nearest the
    middle with a face (from the clip's cached analysis), written as PNG. Returns (frame index,
    the descriptor of the PNG as read back), or (None, None) when the clip has no face."""
    from PIL import Image
    i = middle_face_frame(analysis["found"])
    if i is None:
        return None, None
    if not os.path.exists(png):
        Image.fromarray(media.read_frames(video, i + 1)[0][i]).save(png)
    return i, photo_descriptor(faces, np.asarray(Image.open(png).convert("RGB")))


def prepare_sources(cfg, held, inputs, full, faces, log):
    """The 'swapped' system's source photos (held-out speakers, held-out photos): each clip takes a
    frame of its cross-drive partner, another held-out speaker (inputs[stem]: face, face_of,
    face_frame, face_descriptor)."""
    d = os.path.join(cfg.out, "inputs")
    paths = {stem: path for stem, path, _, _ in held}
    for stem, x in inputs.items():
        other = x["cross_audio_of"]
        png = os.path.join(d, f"{stem}-face-{other}.png")
        i, desc = write_source_photo(paths[other], full[other], png, faces)
        if i is None:
            log(f"swapped: no face in {other}: {stem} has no source photo")
            continue
        if desc is None:
            log(f"swapped: no face found in {png} itself: its distance to the source is not measured")
        x.update({"face": png, "face_of": other, "face_frame": i, "face_descriptor": desc})


def trained_modules(model):
    """The modules a weights directory's model.safetensors lists as trained (its `dubfarm.trained`
    metadata, what the worker reads), or None (seeded weights, or not recorded)."""
    from safetensors import safe_open
    p = os.path.join(model, "model.safetensors")
    if not os.path.exists(p):
        return None
    with safe_open(p, framework="numpy") as f:
        meta = f.metadata() or {}
    v = meta.get("dubfarm.trained")
    return None if v is None else sorted(m.strip() for m in v.split(",") if m.strip())


def run_systems(cfg, inputs, systems, log):
    """videos[system][drive][stem] = path of the output file; models[system] = what the workers
    loaded; swaps[output file name] = {frames, swapped} of each 'swapped' output (`dubfarm status`'s
    per-segment counts, kept in videos/swapped.frames.json for reused outputs)."""
    vdir = os.path.join(cfg.out, "videos")
    os.makedirs(vdir, exist_ok=True)
    videos, models = {}, {}
    swaps_path = os.path.join(vdir, "swapped.frames.json")
    swaps = {}
    if cfg.reuse and os.path.exists(swaps_path):
        with open(swaps_path) as f:
            swaps = json.load(f)
    for system in systems:
        videos[system] = {d: {} for d in DRIVES}
        if system == "original":
            for stem, x in inputs.items():
                videos[system]["self"][stem] = x["video"]
                videos[system]["cross"][stem] = x["cross_original"]
            models[system] = "original video"
            continue
        spec = cfg.untrained if system == "untrained" else cfg.model
        jobs = []
        for stem, x in inputs.items():
            face = x.get("face") if system == "swapped" else None
            if system == "swapped" and face is None:
                continue
            for drive, wav in (("self", x["wav"]), ("cross", x["cross_wav"])):
                out = os.path.join(vdir, f"{system}-{drive}-{stem}.mp4")
                videos[system][drive][stem] = out
                if not (cfg.reuse and os.path.exists(out)):
                    jobs.append((x["video"], wav, out, face))
        stamp = os.path.join(vdir, f"{system}.model")
        if jobs:
            t = time.time()
            with Farm(cfg.dubfarm, os.path.join(cfg.cache_dir, "farm", system), spec,
                      cfg.workers, cfg.threads, log) as farm:
                ids = farm.dub_all(jobs)
                models[system] = ", ".join(sorted(set(farm.loaded)))
                if system == "swapped":
                    for (_, _, out, _), job in zip(jobs, ids):
                        swaps[os.path.basename(out)] = farm.frame_counts(job)
            with open(stamp, "w") as f:
                f.write(models[system])
            log(f"{system}: {len(jobs)} dubs through the farm in {time.time() - t:.0f} s")
        else:
            models[system] = open(stamp).read() if os.path.exists(stamp) else spec
    if swaps:
        with open(swaps_path, "w") as f:
            json.dump(swaps, f, indent=2)
    return videos, models, swaps


def analyse_output(cfg, path, ref, faces, log):
    """dlib analysis of an output video (cached next to it, keyed by size and mtime)."""
    st = os.stat(path)
    p = os.path.join(cfg.out, "analysis", f"{os.path.basename(path)}-{st.st_size}-{int(st.st_mtime)}.npz")
    if cfg.reuse and os.path.exists(p):
        with np.load(p) as z:
            return {k: z[k] for k in z.files}
    t = time.time()
    a, _ = cache.analyse_clip(path, faces, cfg.identity_every, ref)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    np.savez_compressed(p, **a)
    log(f"analysed {os.path.basename(path)}: {len(a['found'])} frames, {time.time() - t:.0f} s")
    return a


def evaluate(cfg, systems, log=print):
    t0 = time.time()
    held = C.held_out(cfg)
    train = [c for c in C.training(cfg) if c[0] not in C.SYNC_UNVERIFIED]
    faces = F.Faces(cfg.detect_max_side)
    full = {s: cache.load_or_build(cfg, s, p, faces, log) for s, p, _, _ in held}
    # 1. inputs and the systems through the farm
    inputs = prepare_inputs(cfg, held, log)
    if "swapped" in systems:
        prepare_sources(cfg, held, inputs, full, faces, log)
    videos, models, swaps = run_systems(cfg, inputs, systems, log)
    # the original's analysis (the reference of every metric)
    refs = {}
    for stem, x in inputs.items():
        if cfg.max_seconds:
            refs[stem] = cache.load_or_build(cfg, f"{stem}-first{cfg.max_seconds:g}s", x["video"], faces, log)
        else:
            refs[stem] = full[stem]
    # 1b. the personalised system (issue 14): a fine-tune per clip on its first part, beside 'trained'
    pclips = {}
    if cfg.personalise_seconds > 0:
        if "trained" not in systems or not os.path.exists(os.path.join(cfg.model, "manifest.json")):
            log("personalised: needs the 'trained' system and a weights directory (--model DIR): left out")
        else:
            tail_videos, pclips = personal.run(cfg, inputs, {s: len(r["found"]) for s, r in refs.items()}, log)
            if pclips:
                videos["personalised"] = tail_videos["personalised"]
                tail_videos["trained"]["self"] = videos["trained"]["self"]
                if "original" in videos:
                    tail_videos["original"] = {"self": videos["original"]["self"]}
                models["personalised"] = (f"{models['trained']} fine-tuned per clip for {cfg.personalise_seconds} s "
                                          f"on its first {100 * cfg.personalise_fraction:g} %")
    # 2. the evaluation sync model (trained once, cached), and its proof on held-out originals
    fixes, truth = offsets.corrections(), C.audio_offsets(cfg)
    cached = sync.load_cached(cfg, log, fixes)
    if cached is None:
        tr = {s: cache.load_or_build(cfg, s, p, faces, log) for s, p, _, _ in train}
        scorer, sync_info = sync.train_and_save(cfg, tr, full, log, fixes, truth)
    else:
        scorer, sync_info = cached
        sync_info["held_out"] = sync.held_out_accuracy(scorer, full, cfg, truth)   # cheap; split.json may have changed
    log(f"sync model: true offset found within ±1 frame in {sync_info['held_out']['within_1']:.0%} of "
        f"{sync_info['held_out']['windows']} one-second windows of the held-out original videos")
    # 4. metrics
    results = []
    ref_frames = {}
    for system in systems:
        for drive in DRIVES:
            per_clip, found_all, scores, offs = {}, [], [], None
            for stem, path in videos[system][drive].items():
                # Every row gets the distance to the clip's source photo when there is one: on the
                # rows without a swap it is the baseline, how far the person already is from it.
                source = inputs[stem].get("face_descriptor")
                r, found, s, offs_ = measure(cfg, scorer, system, path, refs[stem], ref_frames,
                                             inputs[stem]["video"], stem, drive, faces, log, source=source)
                if system == "swapped":
                    r["swapped_frames"] = swaps.get(os.path.basename(path))
                per_clip[stem] = r
                found_all.append(found)
                if s is not None:
                    scores.append(s)
                    offs = offs_
            results.append(aggregate(system, drive, models[system], per_clip, found_all, scores, offs))
            log(f"{system}/{drive}: done")
    clips = {s: {k: v for k, v in x.items() if k != "face_descriptor"} for s, x in inputs.items()}
    out = {"held_out_clips": clips, "sync_model": sync_info, "results": results, "systems": systems,
           "config": cfg.to_dict(), "seconds": None}
    if "swapped" in systems:
        out["swap"] = swap_summary(cfg, results, clips)
    # 5. the personalised system against the default weights, on each clip's held-back tail
    if pclips:
        out["personalisation"] = personalisation_results(cfg, scorer, inputs, tail_videos, models, pclips, refs,
                                                          ref_frames, faces, log)
    out["seconds"] = round(time.time() - t0, 1)
    return out, videos


def measure(cfg, scorer, system, path, ref, ref_frames, ref_video, stem, drive, faces, log, first=0, source=None):
    """One output video's metrics against the original, on frames [first, n): (per-clip figures,
    face found per frame, sync scores of its windows or None, their offsets). source: the
    descriptor of the swap's source photo (its distance is measured only then)."""
    frames, fps = media.read_frames(path)
    if system == "original":
        a = dict(ref)
        a["mel"] = mel.log_mel(media.read_audio(path))
    else:
        a = analyse_output(cfg, path, ref, faces, log)
    n = min(len(frames), len(ref["found"]))
    clip = sync.clip_of(a["mouth"][:n], a["mel"], fps, cfg)
    starts = sync.windows_of(clip, cfg.sync_eval_window, cfg.sync_max_offset, first)
    s = offs = None
    if starts:
        s, offs = sync.offset_scores(scorer.v, scorer.a, clip, starts, cfg.sync_eval_window, cfg.sync_max_offset)
    t = slice(first, n)
    r = {"frames": int(n - first), "face_found": M.face_found(a["found"][t]),
         "identity": M.identity_distance(a["descriptors"][t], ref["descriptors"][t]),
         "jitter_ratio": M.jitter_ratio(a["landmarks"][t], ref["landmarks"][t]),
         "id_spread": SM.id_spread(a["descriptors"][t]),
         "id_spread_ratio": SM.spread_ratio(a["descriptors"][t], ref["descriptors"][t]),
         "expr_diff": SM.expr_diff(a["landmarks"][t], ref["landmarks"][t]),
         "pose_diff": SM.roll_diff(a["landmarks"][t], ref["landmarks"][t]),
         "yaw_diff": SM.yaw_diff(a["landmarks"][t], ref["landmarks"][t])}
    if source is not None:
        r["dist_source"] = SM.dist_source(a["descriptors"][t], source)
    if first:
        r["first_frame"] = int(first)
    if drive == "self":
        if stem not in ref_frames:            # the original's frames, decoded once for every system
            ref_frames[stem] = media.read_frames(ref_video)[0]
        r["psnr"], r["ssim"] = M.face_region_quality(frames[t], ref_frames[stem][t], ref["landmarks"][t])
        r["lmd"] = M.lmd(a["landmarks"][t], ref["landmarks"][t])
    if starts:
        r.update({"sync_" + k: v for k, v in sync.summarise(s, offs).items() if k != "offset_found"})
    return r, a["found"][t], s, offs


MEAN_OVER_CLIPS = ("identity", "psnr", "ssim", "lmd", "jitter_ratio", "dist_source", "id_spread", "id_spread_ratio",
                   "expr_diff", "pose_diff", "yaw_diff")


def aggregate(system, drive, model, per_clip, found_all, scores, offs):
    """A table row: face found over every frame, the other figures the mean of the clips' (sync:
    over every window of every clip)."""
    row = {"system": system, "drive": drive, "model": model,
           "face_found": M.face_found(np.concatenate(found_all)) if found_all else float("nan")}
    for k in MEAN_OVER_CLIPS:
        vals = [r[k] for r in per_clip.values() if r.get(k) is not None and not np.isnan(r[k])]
        row[k] = float(np.mean(vals)) if vals else None
    counts = [r["swapped_frames"] for r in per_clip.values() if r.get("swapped_frames")]
    if counts:                                      # 'swapped' rows: what the workers did with the face
        row["swapped_frames"] = sum(c["swapped"] for c in counts) / max(1, sum(c["frames"] for c in counts))
    if scores:
        sm = sync.summarise(np.concatenate(scores), offs)
        row.update({"sync_conf": sm["conf"], "sync_conf_peak": sm["conf_peak"],
                    "sync_within_1": sm["within_1"], "sync_windows": sm["windows"]})
    row["per_clip"] = per_clip
    return row


def swap_summary(cfg, results, clips):
    """The JSON's "swap" section: the source photos, what the weights say of the swap, and whether
    the workers applied it (frames swapped per 'swapped' row; a swap the weights' metadata marks
    untrained is not applied, and those rows are then the trained model without a swap)."""
    modules = trained_modules(cfg.model)
    trained = None if modules is None else "swap" in modules
    frac = {r["drive"]: r.get("swapped_frames") for r in results if r["system"] == "swapped"}
    known = [v for v in frac.values() if v is not None]
    applied = any(v > 0 for v in known) if known else None
    if applied is False:
        note = ("the workers swapped no frame: the face was not applied" +
                (f" (the weights' trained modules are {', '.join(modules)}: no swap)" if trained is False else "") +
                "; the swapped rows are the trained model without a swap")
    elif applied is None:
        note = "no frame counts from the farm (reused outputs without videos/swapped.frames.json)"
    else:
        note = "the workers applied the source face"
    return {"model": cfg.model, "trained_modules": modules, "swap_trained": trained, "swap_applied": applied,
            "swapped_frames": frac, "note": note,
            "source_photos": {s: {k: x.get(k) for k in ("face", "face_of", "face_frame")} for s, x in clips.items()}}


def personalisation_results(cfg, scorer, inputs, videos, models, pclips, refs, ref_frames, faces, log):
    """The 'trained' (default weights) and 'personalised' rows, every figure on frames [k, n) of
    each clip (k = the clip's personalise.max_frames), per clip and over all clips; and the
    original video's self-driven row on the same frames (the sync figures' reference).
    videos[system][drive][stem]: the cross drive is the tail's own cross track (personal.run)."""
    rows = []
    for system in ("original", "trained", "personalised"):
        for drive in DRIVES:
            if drive not in videos.get(system, {}):
                continue
            per_clip, found_all, scores, offs = {}, [], [], None
            for stem, info in pclips.items():
                r, found, s, offs_ = measure(cfg, scorer, system, videos[system][drive][stem], refs[stem], ref_frames,
                                             inputs[stem]["video"], stem, drive, faces, log, first=info["max_frames"])
                per_clip[stem] = r
                found_all.append(found)
                if s is not None:
                    scores.append(s)
                    offs = offs_
            rows.append(aggregate(system, drive, models[system], per_clip, found_all, scores, offs))
            log(f"{system}/{drive} on the held-back tails: done")
    clips = {stem: {k: v for k, v in info.items() if k not in ("key", "events")} for stem, info in pclips.items()}
    return {"budget_seconds": int(cfg.personalise_seconds), "fraction": cfg.personalise_fraction,
            "workers": cfg.personalise_workers, "threads": cfg.personalise_threads,
            "clips": clips, "results": rows}


