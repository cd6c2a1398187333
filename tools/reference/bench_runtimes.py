#!/usr/bin/env python3
"""The model benchmark on ONNX Runtime or OpenVINO: same modules, weights, inputs and per-frame
pipeline as `bench.py` / `dubfarm model bench`, on the ONNX files of `export_onnx.py`.

    tools/reference/bench_runtimes.py --runtime onnxruntime|openvino --config small --threads N
                                      [--batch N] [--frames N] [--json] [--onnx DIR]

A frame: encode both halves, quantize both (and concatenate), swap (source face prepared once:
its keys/values are constants of swap.onnx), audio, lip-sync UNet on the lower half, decode
(concatenating its input). Two warm-up frames, then --frames timed ones (default as bench.py:
small 20, paper 3). Inputs and outputs are numpy arrays; the numpy glue between modules is timed
with the module it belongs to, as in bench.py.

  onnxruntime: SessionOptions intra_op_num_threads=N, inter_op_num_threads=1, sequential
               execution, ORT_ENABLE_ALL graph optimisation, CPUExecutionProvider. ORT_NO_SPIN=1 in
               the environment sets session.intra_op.allow_spinning=0 (worker threads sleep instead
               of spinning between ops): on a machine with a busy core, ORT's default spinning
               makes 2 threads on 2 cores slower than 1.
  openvino:    core.compile_model(model, "CPU", INFERENCE_NUM_THREADS=N, PERFORMANCE_HINT=LATENCY,
               NUM_STREAMS=1, INFERENCE_PRECISION_HINT=f32), one infer request per module.

--batch N (throughput mode): every module runs on a batch tensor of N frames (ONNX exported at
that batch), figures per frame of throughput, latency_ms the time of one batch, as bench.py.
The ONNX files are exported on first use (.cache/onnx/CONFIG/bB, needs torch); this script itself
imports only numpy and the runtime, so peak_rss_mb is the runtime's.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
MODULES = ["encode", "quantize_upper", "quantize_lower", "swap", "audio", "lipsync", "decode"]
NAMES = ["encode", "quantize", "swap", "audio", "lipsync", "decode"]


def ort_runner(path, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if os.environ.get("ORT_NO_SPIN"):
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(*xs):
        return sess.run(None, dict(zip(names, xs)))[0]
    return run


def ov_runner(core, path, threads):
    cm = core.compile_model(path, "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": "f32"})
    req = cm.create_infer_request()

    def run(*xs):
        req.infer({i: x for i, x in enumerate(xs)})
        return req.get_output_tensor(0).data.copy()
    return run


def frame(m, target, mel, timings):
    s = target.shape[2]

    def run(name, fn):
        t0 = time.perf_counter()
        r = fn()
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        return r

    zu, zl = run("encode", lambda: (m["encode"](np.ascontiguousarray(target[:, :, : s // 2])),
                                    m["encode"](np.ascontiguousarray(target[:, :, s // 2:]))))
    grid = run("quantize", lambda: np.concatenate([m["quantize_upper"](zu), m["quantize_lower"](zl)], axis=2))
    sw = run("swap", lambda: m["swap"](grid))
    tok = run("audio", lambda: m["audio"](mel))
    h = sw.shape[2] // 2

    def lips():
        lo = np.ascontiguousarray(sw[:, :, h:])
        return m["lipsync"](lo, lo, tok)
    synced = run("lipsync", lips)
    return run("decode", lambda: m["decode"](np.concatenate([sw[:, :, :h], synced], axis=2)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtime", required=True, choices=["onnxruntime", "openvino"])
    ap.add_argument("--config", default="small")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int)
    ap.add_argument("--batch", type=int, help="frames per batch tensor (throughput mode); omit for one frame at a time")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--onnx", help="directory of export_onnx.py's files (default .cache/onnx/CONFIG/bB)")
    ap.add_argument("--dubfarm", default=os.path.join(ROOT, ".build", "release", "dubfarm"))
    a = ap.parse_args()
    bn = a.batch or 1
    d = a.onnx or os.path.join(ROOT, ".cache", "onnx", a.config, f"b{bn}")
    if not os.path.exists(os.path.join(d, "meta.json")):
        py = os.path.join(ROOT, ".venv", "bin", "python")
        subprocess.run([py if os.path.exists(py) else sys.executable, os.path.join(HERE, "export_onnx.py"),
                        "--config", a.config, "--batch", str(bn), "--out", d, "--dubfarm", a.dubfarm],
                       check=True, stdout=sys.stderr)
    with open(os.path.join(d, "meta.json")) as f:
        meta = json.load(f)
    if meta["batch"] != bn:
        sys.exit(f"bench_runtimes: {d} was exported at batch {meta['batch']}, not {bn}")
    inp = np.load(os.path.join(d, "inputs.npz"))
    target, mel = inp["target"], inp["mel"]

    if a.runtime == "onnxruntime":
        import onnxruntime as ort
        version = ort.__version__
        m = {n: ort_runner(os.path.join(d, n + ".onnx"), a.threads) for n in MODULES}
    else:
        import openvino as ov
        version = ov.__version__
        core = ov.Core()
        m = {n: ov_runner(core, os.path.join(d, n + ".onnx"), a.threads) for n in MODULES}

    n = a.frames or {"paper": 3, "small": 20}.get(a.config, 50)
    calls = max(1, -(-n // bn))
    frame(m, target, mel, {})
    frame(m, target, mel, {})  # two warm-ups, as dubfarm and bench.py
    timings, per = {}, []
    for _ in range(calls):
        t0 = time.perf_counter()
        frame(m, target, mel, timings)
        per.append(time.perf_counter() - t0)
    n = calls * bn
    pf = sum(per) / n
    latency = sum(per) / calls
    gf = meta["gflop"]
    total = sum(gf.values())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if a.json:
        print(json.dumps({
            "engine": a.runtime, "version": version, "config": a.config, "threads": a.threads, "frames": n,
            "batch": bn, "mode": "throughput" if a.batch else "latency", "latency_ms": latency * 1000,
            "fps": 1 / pf, "ms_per_frame": pf * 1000, "gflop_per_frame": total, "gflops": total / pf,
            "peak_rss_mb": rss, "ort_allow_spinning": None if a.runtime != "onnxruntime" else not os.environ.get("ORT_NO_SPIN"),
            "load_average": os.getloadavg()[0],
            "modules": {k: {"ms": timings[k] / n * 1000, "gflop": gf[k], "gflops": gf[k] / (timings[k] / n)} for k in NAMES},
        }, sort_keys=True))
    else:
        mode = f"batch tensors of {bn} frames (throughput mode)" if a.batch else "one frame at a time (latency mode)"
        print(f"{a.runtime} {version} bench: config {a.config}, {a.threads} thread(s), {n} frames, {mode}")
        print(f"  {1 / pf:.2f} frames/s, {pf * 1000:.2f} ms/frame, latency {latency * 1000:.2f} ms, {total:.3f} GFLOP/frame, {total / pf:.1f} GFLOP/s")
        for k in NAMES:
            ms = timings[k] / n * 1000
            print(f"  {k:9s} {ms:9.2f} ms {gf[k]:9.3f} GFLOP {gf[k] / (ms / 1000):8.1f} GFLOP/s")
        print(f"  peak RSS {rss:.1f} MB")


if __name__ == "__main__":
    main()
