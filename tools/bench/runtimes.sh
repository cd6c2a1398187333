#!/usr/bin/env bash
# Runtime benchmark: dubfarm vs ONNX Runtime vs OpenVINO on the same model (same configuration,
# weights, inputs, per-frame pipeline), threads and batch.
#   tools/bench/runtimes.sh [CONFIGS...]     (default: small; THREADS="1 2"; REPEAT=3; BATCH=unset)
# Needs .venv with tools/requirements-bench.txt (onnx, onnxruntime, openvino) and torch for the
# one-off export (tools/reference/export_onnx.py, cached in .cache/onnx/CONFIG/bB).
# Each round runs dubfarm (`dubfarm model bench`), ONNX Runtime and OpenVINO
# (tools/reference/bench_runtimes.py) one after another, each in its own process; REPEAT rounds;
# the run with the median frames/s of each engine is kept (PICK=best keeps the fastest).
# BATCH=N adds --batch N to every run (throughput mode). Ratios are dubfarm fps / runtime fps
# (> 1 = dubfarm faster). The load average (1 min) is printed with every row.
# ORT_NO_SPIN=1: ONNX Runtime with session.intra_op.allow_spinning=0 (see bench_runtimes.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
DUBFARM=${DUBFARM:-.build/release/dubfarm}
PYTHON=${PYTHON:-.venv/bin/python}
THREADS=${THREADS:-"1 2"}
REPEAT=${REPEAT:-3}
PICK=${PICK:-median}
CONFIGS=("$@")
[ ${#CONFIGS[@]} -eq 0 ] && CONFIGS=(small)
[ -x "$DUBFARM" ] || { echo "runtimes.sh: $DUBFARM missing (swift build -c release --product dubfarm)" >&2; exit 1; }
"$PYTHON" -c "import onnxruntime, openvino" || { echo "runtimes.sh: $PYTHON -m pip install -r tools/requirements-bench.txt" >&2; exit 1; }
extra=()
[ -n "${BATCH:-}" ] && extra=(--batch "$BATCH")
pick() { "$PYTHON" -c 'import json,sys; rs=sorted((json.loads(l) for l in sys.stdin if l.startswith("{")), key=lambda r: r["fps"]); print(json.dumps(rs[-1] if sys.argv[1] == "best" else rs[(len(rs) - 1) // 2]))' "$PICK"; }
# export first (outside the timed rounds)
for cfg in "${CONFIGS[@]}"; do
  b=${BATCH:-1}
  [ -f ".cache/onnx/$cfg/b$b/meta.json" ] || "$PYTHON" tools/reference/export_onnx.py --config "$cfg" --batch "$b" --dubfarm "$DUBFARM" >&2
done
echo "runtimes.sh: $PICK of REPEAT=$REPEAT runs per cell${BATCH:+, batch $BATCH}; ORT spinning $([ -n "${ORT_NO_SPIN:-}" ] && echo off || echo "on (default)"); $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-6s %3s | %9s %9s %9s | %7s %7s | %-22s | %s\n" config thr "df fps" "ort fps" "ov fps" "df/ort" "df/ov" "RSS MB df/ort/ov" "load"
cmds=()
for cfg in "${CONFIGS[@]}"; do
  for t in $THREADS; do
    d=""; o=""; v=""
    for _ in $(seq "$REPEAT"); do
      d+="$("$DUBFARM" model bench --config "$cfg" --threads "$t" "${extra[@]}" --json)"$'\n'
      o+="$("$PYTHON" tools/reference/bench_runtimes.py --runtime onnxruntime --config "$cfg" --threads "$t" "${extra[@]}" --json)"$'\n'
      v+="$("$PYTHON" tools/reference/bench_runtimes.py --runtime openvino --config "$cfg" --threads "$t" "${extra[@]}" --json)"$'\n'
    done
    "$PYTHON" - "$cfg" "$t" "$(printf "%s" "$d" | pick)" "$(printf "%s" "$o" | pick)" "$(printf "%s" "$v" | pick)" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, sys
cfg, t, load = sys.argv[1], sys.argv[2], sys.argv[6]
d, o, v = (json.loads(x) for x in sys.argv[3:6])
rss = "%.0f/%.0f/%.0f" % (d["peak_rss_mb"], o["peak_rss_mb"], v["peak_rss_mb"])
print("%-6s %3s | %9.2f %9.2f %9.2f | %7.2f %7.2f | %-22s | %s" % (cfg, t, d["fps"], o["fps"], v["fps"], d["fps"] / o["fps"], d["fps"] / v["fps"], rss, load))
PY
  done
done
echo "reproduce: ${ORT_NO_SPIN:+ORT_NO_SPIN=$ORT_NO_SPIN }REPEAT=$REPEAT THREADS=\"$THREADS\"${BATCH:+ BATCH=$BATCH} PICK=$PICK tools/bench/runtimes.sh ${CONFIGS[*]}"
