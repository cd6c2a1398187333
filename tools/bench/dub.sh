#!/usr/bin/env bash
# Dub stage benchmark: one segment of speaker-long.mp4 through the dub stage exactly as a worker
# renders it (cut, decode, face tracking, model, blend, encode), for `small` and `paper` with
# seeded (untrained) weights: milliseconds per frame of every step and frames per second per worker.
#   tools/bench/dub.sh [CONFIGS...]     (default: small paper; THREADS=2; FRAMES: small 100, paper 25)
# then tools/bench/memory.sh: a worker's peak RSS over a short and a long video (MEMORY=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/../.."
DUBFARM=${DUBFARM:-.build/release/dubfarm}
MEDIA=${MEDIA:-../shared/media}
THREADS=${THREADS:-2}
CONFIGS=("$@")
[ ${#CONFIGS[@]} -eq 0 ] && CONFIGS=(small paper)
[ -x "$DUBFARM" ] || swift build -c release --product dubfarm
echo "== dub stage (seeded untrained weights; speaker-long.mp4 + dub-long.wav + face-source.png, $THREADS threads)"
for cfg in "${CONFIGS[@]}"; do
  case "$cfg" in paper) frames=${FRAMES:-25} ;; *) frames=${FRAMES:-100} ;; esac
  "$DUBFARM" bench dub --config "$cfg" --video "$MEDIA/speaker-long.mp4" --audio "$MEDIA/dub-long.wav" \
    --face "$MEDIA/face-source.png" --frames "$frames" --threads "$THREADS"
done
# Worker memory against video length (a real worker, fresh per input, peak RSS); MEMORY=0 skips it.
[ "${MEMORY:-1}" = 0 ] || tools/bench/memory.sh
