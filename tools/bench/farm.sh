#!/usr/bin/env bash
# The farm's benchmarks (issue: farm core). Prints figures with the command that reproduces each.
# Needs: a release build (.build/release/dubfarm), ffmpeg, PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=.build/release/dubfarm
BENCH=${BENCH_DIR:-$PWD/.bench}
mkdir -p "$BENCH"
MEDIA=../shared/media

echo "== farm benchmarks ($(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ))"

# 1. Store: segment state transitions per second, one connection.
FARM="$BENCH/farm"
# A fresh farm every run: the figures must not depend on how many earlier runs' jobs and events
# the database holds.
$BIN local down --dir "$FARM" >/dev/null 2>&1 || true
rm -rf "$FARM"
DUBFARM_SEGMENTS_SECONDS=0.04 DUBFARM_SEGMENTS_CONTEXT_FRAMES=0 DUBFARM_LOGGING_LEVEL=warning \
  $BIN local up --dir "$FARM" --workers 0 >/dev/null
trap '$BIN local down --dir "$FARM" >/dev/null 2>&1 || true' EXIT
DB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["databaseURL"])' "$FARM/farm.json")
# The local farm runs CURVE: the benchmark's workers and its CLI share the farm's worker key
# pair, admitted as a client too (the allow-lists are re-read as peers connect).
cp "$FARM/keys/workers/worker.key" "$FARM/keys/clients/bench-worker.key"
export DUBFARM_KEY_FILE="$FARM/keys/workers/worker.key_secret" DUBFARM_SERVER_KEY="$FARM/keys/coordinator.key"
sleep 1.2   # the allow-lists are re-read at most once a second
# Four configurations, median of 3 runs each: the coordinator's own (async segment commits,
# complete-then-claim) first, then durable commits, then separate claim and complete calls.
echo "-- $BIN bench store --database <local farm> --count 2000 --runs 3"
$BIN bench store --database "$DB" --count 2000 --runs 3

# 2. Dispatch: no-op workers against a real coordinator (one-frame segments of an all-intra clip).
CLIP="$BENCH/intra-64x64-60s.mp4"
[[ -f "$CLIP" ]] || ffmpeg -v error -y -f lavfi -i testsrc2=size=64x64:rate=25 -t 60 -c:v libx264 -g 1 -bf 0 -pix_fmt yuv420p "$CLIP"
# CPU time (user + system, clock ticks) of the farm's coordinator and of its PostgreSQL
# (postmaster and backends), and of the benchmark's own no-op workers: milliseconds of CPU per
# segment do not depend on what else runs on the machine, unlike transitions per second.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
fresh_farm() {
  $BIN local down --dir "$FARM" >/dev/null 2>&1 || true
  rm -rf "$FARM"
  DUBFARM_SEGMENTS_SECONDS=0.04 DUBFARM_SEGMENTS_CONTEXT_FRAMES=0 DUBFARM_LOGGING_LEVEL=warning \
    $BIN local up --dir "$FARM" --workers 0 >/dev/null
  cp "$FARM/keys/workers/worker.key" "$FARM/keys/clients/bench-worker.key"
  sleep 1.2   # the allow-lists are re-read at most once a second
  WORK=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["workEndpoint"])' "$FARM/farm.json")
  CTL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["controlEndpoint"])' "$FARM/farm.json")
}
# Three runs, each on a fresh farm (the database holds nothing from an earlier run), and their median.
: >"$BENCH/dispatch.rates"
for run in 1 2 3; do
  fresh_farm
  COORD=$(pgrep -f "coordinator --config $FARM" || true)
  PM=$(head -1 "$FARM/postgres/data/postmaster.pid")
  PGS="$PM $(pgrep -P "$PM" | tr '\n' ' ')"
  c0=$(ticks $COORD); p0=$(ticks $PGS)
  echo "-- $BIN bench dispatch --workers 4 (1500 one-frame segments; run $run of 3, fresh farm)"
  /usr/bin/time -f "%U %S" -o "$BENCH/bench.cpu" \
    $BIN bench dispatch --work "$WORK" --control "$CTL" --workers 4 --video "$CLIP" --audio "$MEDIA/dub-1.wav" | tee "$BENCH/dispatch.out"
  c1=$(ticks $COORD); p1=$(ticks $PGS)
  grep -o '[0-9]* segment transitions/s' "$BENCH/dispatch.out" | awk '{print $1}' >>"$BENCH/dispatch.rates"
  python3 -c "import sys, os; hz = os.sysconf('SC_CLK_TCK'); c0, c1, p0, p1 = map(int, sys.argv[1:5]); u, s = map(float, open(sys.argv[5]).read().split()[-2:]); print(f'dispatch: CPU per segment: coordinator {1000 * (c1 - c0) / hz / 1500:.2f} ms, PostgreSQL {1000 * (p1 - p0) / hz / 1500:.2f} ms, no-op workers and client {1000 * (u + s) / 1500:.2f} ms (whole job: upload, plan, dispatch)')" "$c0" "$c1" "$p0" "$p1" "$BENCH/bench.cpu"
done
echo "dispatch: median of 3 runs $(sort -n "$BENCH/dispatch.rates" | sed -n 2p) segment transitions/s (runs: $(tr '\n' ' ' <"$BENCH/dispatch.rates"); target >= 2,000)"
echo "-- $BIN bench dispatch --workers 1 (latency: one worker, nothing queued)"
$BIN bench dispatch --work "$WORK" --control "$CTL" --workers 1 --video "$CLIP" --audio "$MEDIA/dub-1.wav"

# 3. Cut + stitch of a 10-minute 720p file against a plain stream-copy remux.
LONG="$BENCH/720p-10min.mp4"
if [[ ! -f "$LONG" ]]; then
  echo "(making a 10-minute 720p test file once: $LONG)"
  ffmpeg -v error -y -f lavfi -i testsrc2=size=1280x720:rate=25 -t 600 -c:v libx264 -preset ultrafast -crf 23 \
    -g 250 -keyint_min 250 -sc_threshold 0 -bf 0 -pix_fmt yuv420p "$LONG"
fi
# ffmpeg's remux leaves its output in the page cache; the farm fsyncs every segment result and the
# output (a crash never leaves a half-written file taken as finished). The like-for-like figure runs
# the farm under eatmydata (fsync a no-op), as ffmpeg runs; the durable figure is printed beside it.
tools/install-deps.sh eatmydata >/dev/null 2>&1 || true
sync
# Medians of 5 runs, remux and farm runs interleaved so both see the same load (the machine is
# shared; single runs vary by ±50 % here).
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: >"$BENCH/remux.times"; : >"$BENCH/fast.times"; : >"$BENCH/durable.times"
for i in 1 2 3 4 5; do
  /usr/bin/time -f %e ffmpeg -v error -y -i "$LONG" -c copy -map 0:v "$BENCH/remux.mp4" 2>&1 >/dev/null | tail -1 >>"$BENCH/remux.times"
  if command -v eatmydata >/dev/null; then
    eatmydata $BIN bench media --input "$LONG" --scratch "$BENCH" | grep media-total-seconds | awk '{print $2}' >>"$BENCH/fast.times"
  fi
  $BIN bench media --input "$LONG" --scratch "$BENCH" | grep media-total-seconds | awk '{print $2}' >>"$BENCH/durable.times"
done
remux=$(median <"$BENCH/remux.times")
ours=$(median <"$BENCH/durable.times")
echo "-- ffmpeg -i 720p-10min.mp4 -c copy (median of 5: $(tr '\n' ' ' <"$BENCH/remux.times")): ${remux} s"
if command -v eatmydata >/dev/null; then
  fast=$(median <"$BENCH/fast.times")
  echo "-- eatmydata $BIN bench media --input 720p-10min.mp4 (index + cut 60 segments + store results + stitch, no fsync, median of 5: $(tr '\n' ' ' <"$BENCH/fast.times")): ${fast} s"
  python3 -c "import sys; print(f'media: cut+stitch / remux = {float(sys.argv[1])/float(sys.argv[2]):.2f}x like for like (target <= 1.5x)')" "$fast" "$remux"
fi
echo "-- $BIN bench media --input 720p-10min.mp4 (the same, durable: every result and the output fsynced, median of 5: $(tr '\n' ' ' <"$BENCH/durable.times")): ${ours} s"
python3 -c "import sys; print(f'media: durable cut+stitch / remux = {float(sys.argv[1])/float(sys.argv[2]):.2f}x')" "$ours" "$remux"
$BIN bench media --input "$LONG" --audio "$MEDIA/dub-long.wav" --scratch "$BENCH" | head -1
rm -f "$BENCH/remux.mp4" "$BENCH/remux.times" "$BENCH/fast.times" "$BENCH/durable.times"

# 4. The model engine (its own script), when present.
if [[ -x tools/bench/model.sh ]]; then tools/bench/model.sh; fi

# 5. The dub stage per step (its own script).
if [[ -x tools/bench/dub.sh ]]; then tools/bench/dub.sh; fi

# 6. The engine against ONNX Runtime and OpenVINO on the same model (its own script; needs
#    .venv/bin/pip install -r tools/requirements-bench.txt).
if .venv/bin/python -c "import onnxruntime, openvino" 2>/dev/null; then
  echo "-- tools/bench/runtimes.sh small paper (THREADS=\"1 2\", REPEAT=3)"
  ORT_NO_SPIN=1 tools/bench/runtimes.sh small paper
else
  echo "-- runtimes: skipped (install them with: .venv/bin/pip install -r tools/requirements-bench.txt; then tools/bench/runtimes.sh)"
fi
