#!/usr/bin/env bash
# Dub stage benchmark: one segment of speaker-long.mp4 through the dub stage exactly as a worker
# renders it (cut, decode, face tracking, model, blend, encode): milliseconds per frame of every
# step and frames per second per worker. CONFIGS are weights a worker takes with --model:
# `trained` is the bundled default (models/dubfarm-small, trained swap and lip sync: it swaps in
# face-source.png), `small` and `paper` are seeded untrained weights of those configurations
# (untrained:CONFIG, which swap too: the paper's full path).
# The engine's speed does not depend on the weights' values, only on the configuration and path.
#   tools/bench/dub.sh [CONFIGS...]     (default: trained small paper; THREADS=2; FRAMES: paper 25, else 100)
# then tools/bench/memory.sh: a worker's peak RSS over a short and a long video (MEMORY=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/../.."
DUBFARM=${DUBFARM:-.build/release/dubfarm}
MEDIA=${MEDIA:-../shared/media}
THREADS=${THREADS:-2}
CONFIGS=("$@")
[ ${#CONFIGS[@]} -eq 0 ] && CONFIGS=(trained small paper)
[ -x "$DUBFARM" ] || swift build -c release --product dubfarm
echo "== dub stage (speaker-long.mp4 + dub-long.wav + face-source.png, $THREADS threads)"
for cfg in "${CONFIGS[@]}"; do
  case "$cfg" in paper) frames=${FRAMES:-25} ;; *) frames=${FRAMES:-100} ;; esac
  case "$cfg" in trained) model=() ;; *) model=(--model "untrained:$cfg") ;; esac
  echo "-- $cfg"
  "$DUBFARM" bench dub "${model[@]}" --video "$MEDIA/speaker-long.mp4" --audio "$MEDIA/dub-long.wav" \
    --face "$MEDIA/face-source.png" --frames "$frames" --threads "$THREADS"
done
# Worker memory against video length (a real worker, fresh per input, peak RSS); MEMORY=0 skips it.
[ "${MEMORY:-1}" = 0 ] || tools/bench/memory.sh
