#!/usr/bin/env bash
# Worker memory against video length (issue 3: "worker memory independent of video length").
# A real `dubfarm worker --stage dub` (its default weights, the bundled trained models/dubfarm-small,
# or MODEL=DIR|untrained:CONFIG; THREADS threads) dubs each
# input to the end against a local farm: a fresh worker per input, so that its peak resident memory
# (the kernel's VmHWM, which the worker folds into its own figure as it resets it per segment)
# covers exactly that one job. The inputs
# are speaker-long.mp4 (25 s, 3 segments) concatenated N times for each N in COPIES, with
# `ffmpeg -f concat -c copy` into the bench directory (../shared/media is never written).
# The worker logs its memory after every segment (debug level, `segment memory`: VmRSS, VmHWM, and
# glibc's bytes in use and freed-but-held, from mallinfo2); the script prints them segment by
# segment, so whether memory levels off or keeps growing with the number of segments is visible:
# RSS after the segment, the peak while it ran (segment peak) and since the worker started.
# DUBFARM_MALLOC_TUNING=0 runs the workers without their allocator tuning (the figures before it).
#   tools/bench/memory.sh          (COPIES="1 3", THREADS=2; BENCH_DIR=.bench; MODEL=DIR for other weights)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.build/release/dubfarm}
BENCH=${BENCH_DIR:-$PWD/.bench}
MEDIA=${MEDIA:-../shared/media}
THREADS=${THREADS:-2}
COPIES=${COPIES:-1 3}
mkdir -p "$BENCH"
FARM="$BENCH/memory-farm"
[ -x "$BIN" ] || swift build -c release --product dubfarm

# speaker-long.mp4 concatenated $1 times (the file itself for 1).
input_of() {
  local n=$1
  if [[ "$n" == 1 ]]; then echo "$MEDIA/speaker-long.mp4"; return; fi
  local long="$BENCH/speaker-long-x$n.mp4"
  if [[ ! -f "$long" ]]; then
    local list="$BENCH/speaker-long-x$n.txt"
    : >"$list"
    for _ in $(seq "$n"); do echo "file '$(realpath "$MEDIA/speaker-long.mp4")'" >>"$list"; done
    ffmpeg -v error -y -f concat -safe 0 -i "$list" -c copy "$long"
  fi
  echo "$long"
}

$BIN local down --dir "$FARM" >/dev/null 2>&1 || true
DUBFARM_LOGGING_LEVEL=warning $BIN local up --dir "$FARM" --workers 0 --stage dub >/dev/null
WPID=""
cleanup() {
  [[ -n "$WPID" ]] && kill "$WPID" 2>/dev/null && wait "$WPID" 2>/dev/null
  $BIN local down --dir "$FARM" >/dev/null 2>&1 || true
}
trap cleanup EXIT
json() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$FARM/farm.json" "$1"; }
WORK=$(json workEndpoint)
export DUBFARM_COORDINATOR=$(json controlEndpoint)
# The local farm runs CURVE: the bench's worker and CLI use the farm's worker key pair, admitted
# as a client too (the allow-lists are re-read as peers connect, at most once a second).
cp "$FARM/keys/workers/worker.key" "$FARM/keys/clients/bench-worker.key"
export DUBFARM_KEY_FILE="$FARM/keys/workers/worker.key_secret" DUBFARM_SERVER_KEY="$FARM/keys/coordinator.key"
sleep 1.2

echo "== worker memory against video length: dub stage, ${MODEL:-default weights (models/dubfarm-small)}, $THREADS threads, face-source.png + dub-long.wav; load $(cut -d' ' -f1-3 /proc/loadavg)"
summary=()
for copies in $COPIES; do
  input=$(input_of "$copies")
  log="$BENCH/memory-worker-x$copies.log"
  t0=$(date +%s)
  $BIN worker --connect "$WORK" --name "memory-x$copies" --stage dub --threads "$THREADS" --log-level debug \
    ${MODEL:+--model "$MODEL"} >"$log" 2>&1 &
  WPID=$!
  job=$($BIN submit "$input" --audio "$MEDIA/dub-long.wav" --face "$MEDIA/face-source.png" --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  for _ in $(seq 1 36000); do
    st=$($BIN status "$job" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"]["state"])')
    [[ "$st" == done || "$st" == failed || "$st" == cancelled ]] && break
    sleep 0.5
  done
  [[ "$st" == done ]] || { echo "job $job is $st: $($BIN status "$job" | head -8)" >&2; exit 1; }
  read -r rss < <(awk '/^VmRSS/{print $2}' "/proc/$WPID/status")
  read -r frames segs < <($BIN status "$job" --json | python3 -c 'import json,sys; j=json.load(sys.stdin)["job"]; print(j["frames"], j["segments"]["total"])')
  secs=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$input")
  kill "$WPID" 2>/dev/null || true
  wait "$WPID" 2>/dev/null || true
  WPID=""
  echo "-- $(basename "$input"): ${secs%.*} s, $frames frames, $segs segments, $(( $(date +%s) - t0 )) s to dub; after each segment (in the order done), MiB:"
  # "segment memory" lines: segment=N rss_mib=… peak_rss_mib=… malloc_in_use_mib=… malloc_free_mib=…
  python3 - "$log" "$BENCH/memory-peak" <<'PY'
import re, sys
rows = []
for line in open(sys.argv[1], errors="replace"):
    if "segment memory" not in line:
        continue
    f = dict(re.findall(r"(\w+)=([\w.]+)", line))
    rows.append(f)
print(f"  {'#':>3} {'segment':>7} {'RSS after':>9} {'segment peak':>12} {'process peak':>12} {'malloc in use':>14} {'malloc free':>12}")
for i, f in enumerate(rows, 1):
    print(f"  {i:>3} {f.get('segment', '?'):>7} {f.get('rss_mib', '?'):>9} {f.get('segment_peak_rss_mib', '-'):>12} "
          f"{f.get('peak_rss_mib', '?'):>12} {f.get('malloc_in_use_mib', '?'):>14} {f.get('malloc_free_mib', '?'):>12}")
if not rows:
    print("  (no 'segment memory' lines in the worker's log)")
# The worker resets the kernel's VmHWM at each segment start; its process peak is in the log.
open(sys.argv[2], "w").write(max((f.get("peak_rss_mib", "0") for f in rows), key=float, default="0"))
PY
  summary+=("$(printf "%-26s %8.1f %8d %10d %14.1f %12.1f" "$(basename "$input")" "$secs" "$frames" "$segs" \
    "$(cat "$BENCH/memory-peak")" "$(awk -v k="$rss" 'BEGIN{print k / 1024}')")")
done
echo "-- summary (one fresh worker per input)"
printf "%-26s %8s %8s %10s %14s %12s\n" input seconds frames segments "peak RSS MiB" "RSS at end"
printf "%s\n" "${summary[@]}"
echo "peak RSS: the worker's peak since it started (VmHWM over all its segments), RSS at end: VmRSS after the job; DUBFARM_MALLOC_TUNING=0 measures without the worker's allocator tuning; load at the end $(cut -d' ' -f1-3 /proc/loadavg); reproduce: tools/bench/memory.sh"
