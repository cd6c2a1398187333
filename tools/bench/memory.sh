#!/usr/bin/env bash
# Worker memory against video length (issue 3: "worker memory independent of video length").
# A real `dubfarm worker --stage dub` (seeded untrained `small` weights, THREADS threads) dubs each
# input to the end against a local farm: a fresh worker per input, so that its peak resident memory
# (VmHWM in /proc/PID/status, read before it is stopped) covers exactly that one job. The inputs
# are speaker-long.mp4 (25 s, 3 segments) and the same file concatenated COPIES times with
# `ffmpeg -f concat -c copy` into the bench directory (../shared/media is never written).
#   tools/bench/memory.sh          (COPIES=3, THREADS=2; BENCH_DIR=.bench)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.build/release/dubfarm}
BENCH=${BENCH_DIR:-$PWD/.bench}
MEDIA=${MEDIA:-../shared/media}
THREADS=${THREADS:-2}
COPIES=${COPIES:-3}
mkdir -p "$BENCH"
FARM="$BENCH/memory-farm"
[ -x "$BIN" ] || swift build -c release --product dubfarm

long="$BENCH/speaker-long-x$COPIES.mp4"
if [[ ! -f "$long" ]]; then
  list="$BENCH/speaker-long-x$COPIES.txt"
  : >"$list"
  for _ in $(seq "$COPIES"); do echo "file '$(realpath "$MEDIA/speaker-long.mp4")'" >>"$list"; done
  ffmpeg -v error -y -f concat -safe 0 -i "$list" -c copy "$long"
fi

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

echo "== worker memory against video length: dub stage, small (untrained), $THREADS threads, face-source.png + dub-long.wav; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-26s %8s %8s %10s %14s %12s\n" input seconds frames segments "peak RSS MiB" "RSS at end"
n=0
for input in "$MEDIA/speaker-long.mp4" "$long"; do
  n=$((n + 1))
  $BIN worker --connect "$WORK" --name "memory-$n" --stage dub --threads "$THREADS" --log-level warning \
    >>"$BENCH/memory-worker.log" 2>&1 &
  WPID=$!
  job=$($BIN submit "$input" --audio "$MEDIA/dub-long.wav" --face "$MEDIA/face-source.png" --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  for _ in $(seq 1 36000); do
    st=$($BIN status "$job" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"]["state"])')
    [[ "$st" == done || "$st" == failed || "$st" == cancelled ]] && break
    sleep 0.5
  done
  [[ "$st" == done ]] || { echo "job $job is $st: $($BIN status "$job" | head -8)" >&2; exit 1; }
  read -r hwm rss < <(awk '/^VmHWM/{h=$2} /^VmRSS/{r=$2} END{print h, r}' "/proc/$WPID/status")
  read -r frames segs < <($BIN status "$job" --json | python3 -c 'import json,sys; j=json.load(sys.stdin)["job"]; print(j["frames"], j["segments"]["total"])')
  secs=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$input")
  printf "%-26s %8.1f %8d %10d %14.1f %12.1f\n" "$(basename "$input")" "$secs" "$frames" "$segs" \
    "$(awk -v k="$hwm" 'BEGIN{print k / 1024}')" "$(awk -v k="$rss" 'BEGIN{print k / 1024}')"
  kill "$WPID" 2>/dev/null || true
  wait "$WPID" 2>/dev/null || true
  WPID=""
done
echo "peak RSS: the worker's VmHWM after the job (one fresh worker per input); reproduce: tools/bench/memory.sh"
