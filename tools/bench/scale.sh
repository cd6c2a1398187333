#!/usr/bin/env bash
# Scaling benchmark (issue 7, `make bench-scale`): 1, 2, 4 … 64 worker processes on this machine
# run the `sleep-copy` stage (a fixed time per segment, no decoding or encoding: the task's own
# packets go back), so the coordinator's dispatch is the only thing that can stop the farm from
# scaling. Prints workers, segments, dispatch wall time, speedup, parallel efficiency and the
# coordinator's CPU seconds per dispatched segment (utime + stime from /proc/PID/stat).
#
#   tools/bench/scale.sh                       # 1 2 4 8 16 32 64 workers, 1-second segments
#   WORKERS="1 8 64" SEGMENT_SECONDS=1 SEGMENTS_PER_WORKER=8 tools/bench/scale.sh
#
# Wall time runs from the first segment lease to the last segment result (the job's events):
# planning and stitching are the same for every row and not what this measures. Efficiency =
# (segments × segment seconds / workers) / wall time: 100 % means no worker ever waited for work.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.build/release/dubfarm}
BENCH=${BENCH_DIR:-$PWD/.bench}
WORKERS=${WORKERS:-"1 2 4 8 16 32 64"}
SEGMENT_SECONDS=${SEGMENT_SECONDS:-1}
PER_WORKER=${SEGMENTS_PER_WORKER:-8}
MEDIA=../shared/media
AUDIO=${AUDIO:-$MEDIA/dub-1.wav}
mkdir -p "$BENCH"
FARM="$BENCH/scale-farm"
HZ=$(getconf CLK_TCK)

echo "== scaling benchmark ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ)): sleep-copy stage, ${SEGMENT_SECONDS} s per segment, ${PER_WORKER} segments per worker"
# One-frame segments of an all-intra clip, no context frames: a task's packet is a valid segment.
# A fresh coordinator, so that these settings apply.
$BIN local down --dir "$FARM" >/dev/null 2>&1 || true
DUBFARM_SEGMENTS_SECONDS=0.04 DUBFARM_SEGMENTS_CONTEXT_FRAMES=0 DUBFARM_LOGGING_LEVEL=warning \
  DUBFARM_COORDINATOR_DEFAULT_STAGE=sleep-copy \
  $BIN local up --dir "$FARM" --workers 0 >/dev/null
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  $BIN local down --dir "$FARM" >/dev/null 2>&1 || true
}
trap cleanup EXIT
json() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$FARM/farm.json" "$1"; }
WORK=$(json workEndpoint); CTL=$(json controlEndpoint); CPID=$(json coordinatorPID); DB=$(json databaseURL)
export DUBFARM_COORDINATOR=$CTL
# The local farm runs CURVE: the benchmark's workers and its CLI share the farm's worker key
# pair, admitted as a client too (the allow-lists are re-read as peers connect).
cp "$FARM/keys/workers/worker.key" "$FARM/keys/clients/bench-worker.key"
export DUBFARM_KEY_FILE="$FARM/keys/workers/worker.key_secret" DUBFARM_SERVER_KEY="$FARM/keys/coordinator.key"
sleep 1.2   # the allow-lists are re-read at most once a second
cpu() { awk -v hz="$HZ" '{print ($14 + $15) / hz}' "/proc/$CPID/stat"; }

printf "%8s %9s %10s %9s %11s %22s %14s\n" workers segments wall_s speedup efficiency coord_cpu_ms_per_segment segments_per_s
base=""
for n in $WORKERS; do
  segs=$((n * PER_WORKER))
  clip="$BENCH/intra-64x64-$segs.mp4"
  [[ -f "$clip" ]] || ffmpeg -v error -y -f lavfi -i testsrc2=size=64x64:rate=25 -frames:v "$segs" \
    -c:v libx264 -g 1 -bf 0 -pix_fmt yuv420p "$clip"
  PIDS=()
  for i in $(seq 1 "$n"); do
    $BIN worker --connect "$WORK" --name "scale-$n-$i" --stage sleep-copy --sleep-seconds "$SEGMENT_SECONDS" \
      --log-level warning >>"$BENCH/scale-workers.log" 2>&1 &
    PIDS+=($!)
  done
  for _ in $(seq 1 600); do
    c=$($BIN workers --json | python3 -c 'import json,sys; print(sum(1 for w in json.load(sys.stdin) if w["name"].startswith(sys.argv[1])))' "scale-$n-")
    [[ "$c" == "$n" ]] && break
    sleep 0.1
  done
  [[ "$c" == "$n" ]] || { echo "only $c of $n workers connected; see $BENCH/scale-workers.log" >&2; exit 1; }
  cpu0=$(cpu)
  job=$($BIN submit "$clip" --audio "$AUDIO" --stage sleep-copy --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  for _ in $(seq 1 6000); do
    st=$($BIN status "$job" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"]["state"])')
    [[ "$st" == done || "$st" == failed || "$st" == cancelled ]] && break
    sleep 0.1
  done
  cpu1=$(cpu)
  [[ "$st" == done ]] || { echo "job $job is $st: $($BIN status "$job" | head -8)" >&2; exit 1; }
  # Dispatch wall time from the job's events (microsecond timestamps): first lease to last segment done.
  wall=$(psql "$DB" -Atc "SELECT round(extract(epoch FROM max(at) FILTER (WHERE to_state = 'done')
                                                  - min(at) FILTER (WHERE to_state = 'leased'))::numeric, 3)
                          FROM events WHERE job_id = $job AND kind = 'segment'")
  python3 - "$n" "$segs" "$wall" "$SEGMENT_SECONDS" "$cpu0" "$cpu1" "${base:-}" <<'PY'
import sys
n, segs, wall, sec, c0, c1 = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
rate = segs / wall
base = float(sys.argv[7]) if sys.argv[7] else rate
print(f"{n:8d} {segs:9d} {wall:10.2f} {rate / base:9.2f} {segs * sec / n / wall * 100:10.1f}% {(c1 - c0) / segs * 1000:22.2f} {rate:14.2f}")
PY
  [[ -n "$base" ]] || base=$(python3 -c "print($segs / $wall)")
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait "${PIDS[@]}" 2>/dev/null || true
done
echo "speedup: segments/s relative to the first row."
echo "efficiency: (segments × ${SEGMENT_SECONDS} s / workers) / wall time. coordinator CPU: utime+stime of pid $CPID from submit to done, per segment."
