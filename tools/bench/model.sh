#!/usr/bin/env bash
# Model benchmark: dubfarm vs PyTorch for `small` and `paper` at 1 and 2 threads.
# Prints both engines' figures and the ratio dubfarm / PyTorch (frames per second; > 1 = dubfarm faster).
#   tools/bench/model.sh [CONFIGS...]     (default: small paper; THREADS="1 2"; REPEAT=3; BATCH=1)
# Rows `thr` = N: one frame at a time, each frame's work split over N threads (latency mode).
# Rows `Nb` (BATCH=1, the default, for N >= 2): throughput mode, batches of N frames, dubfarm running
# them side by side on N single-threaded contexts (`model bench --batch N`), PyTorch as one batch
# tensor of N frames at N threads (`bench.py --batch N`); frames/s, GFLOP/s and %dec are then
# throughput figures. BATCH=0 leaves them out.
# Each pair is measured REPEAT times, alternating engines; the run with the median frames/s of
# each is kept (PICK=best keeps the fastest instead). The load average is printed with every row:
# on a shared machine 2-thread figures mean little when it is above the core count.
set -euo pipefail
cd "$(dirname "$0")/../.."
DUBFARM=${DUBFARM:-.build/release/dubfarm}
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-"1 2"}
REPEAT=${REPEAT:-3}
CONFIGS=("$@")
[ ${#CONFIGS[@]} -eq 0 ] && CONFIGS=(small paper)
[ -x "$DUBFARM" ] || swift build -c release --product dubfarm
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "model.sh: PyTorch is not installed (pip install torch==2.13.0+cpu); showing dubfarm only" >&2
  NO_TORCH=1
fi
PICK=${PICK:-median}
best() { "$PYTHON" -c 'import json,sys; rs=sorted((json.loads(l) for l in sys.stdin if l.startswith("{")), key=lambda r: r["fps"]); print(json.dumps(rs[-1] if sys.argv[1] == "best" else rs[(len(rs) - 1) // 2]))' "$PICK"; }
echo "model.sh: $PICK of REPEAT=$REPEAT runs per cell; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-6s %3s | %9s %8s %6s %6s %7s | %9s %8s %6s %6s %7s | %6s | %s\n" config thr "df fps" "GFLOP/s" "%peak" "%dec" "RSS MB" "pt fps" "GFLOP/s" "%peak" "%dec" "RSS MB" ratio "swap ms df/pt, load"
BATCH=${BATCH:-1}
for cfg in "${CONFIGS[@]}"; do
  rows=()
  for t in $THREADS; do rows+=("$t"); done
  if [ "$BATCH" != 0 ]; then for t in $THREADS; do [ "$t" -ge 2 ] && rows+=("${t}b"); done; fi
  for row in "${rows[@]}"; do
    t=${row%b}; extra=()
    [ "$row" != "$t" ] && extra=(--batch "$t")
    d=""; p=""
    for _ in $(seq "$REPEAT"); do
      d+="$("$DUBFARM" model bench --config "$cfg" --threads "$t" "${extra[@]}" --json)"$'\n'
      [ -z "${NO_TORCH:-}" ] && p+="$("$PYTHON" tools/reference/bench.py --config "$cfg" --threads "$t" "${extra[@]}" --json --dubfarm "$DUBFARM")"$'\n'
    done
    D=$(printf "%s" "$d" | best)
    P=${NO_TORCH:+'{}'}; [ -z "${NO_TORCH:-}" ] && P=$(printf "%s" "$p" | best)
    "$PYTHON" - "$cfg" "$row" "$D" "$P" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, sys
cfg, t, d, p, load = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
def cols(r):
    if not r: return "%9s %8s %6s %6s %7s" % ("-", "-", "-", "-", "-")
    return "%9.2f %8.1f %5.0f%% %5.0f%% %7.0f" % (r["fps"], r["gflops"], 100 * r["peak_share"], 100 * r["decoder_peak_share"], r["peak_rss_mb"])
ratio = "%6.2f" % (d["fps"] / p["fps"]) if p else "     -"
sw = "%.2f/%s" % (d["modules"]["swap"]["ms"], "%.2f" % p["modules"]["swap"]["ms"] if p else "-")
print("%-6s %3s | %s | %s | %s | %s, load %s" % (cfg, t, cols(d), cols(p), ratio, sw, load))
PY
  done
done
