#!/usr/bin/env bash
# Installs the Debian packages dubfarm needs, if any are missing. Works as root (apt-get) or as an
# ordinary user (sudo -n when available; otherwise it prints the command to run and fails).
set -euo pipefail

packages=(
  pkg-config
  libzmq3-dev
  libavformat-dev libavcodec-dev libavutil-dev libswscale-dev libswresample-dev
  libopenblas-dev
  libpq-dev postgresql-15
  ffmpeg            # ffprobe cross-checks in tests, the remux baseline in benchmarks
  opencv-data       # the Haar face cascade (read by our own code)
  libdlib-data      # dlib's 68-point landmark model (read by our own code)
  tmux              # monitoring tests drive `dubfarm top` in a real terminal
  chromium          # monitoring tests load the dashboard in headless Chromium
  fonts-dejavu-core # …and screenshot it with real glyphs
  iproute2          # ip netns: the multi-host test (workers in their own network namespaces)
  python3-venv      # training/ and make eval run in a virtual environment (Makefile py-deps)
  systemd           # systemd-analyze verify/security: the deployment tests check Deploy/systemd with it
  util-linux        # setpriv: the deployment tests read key files as the user the units and pods run
)
# Not installed here: kubectl. The deployment tests render Deploy/kubernetes with `kubectl kustomize`
# and need kustomize v4 or later (kubectl 1.21+); Debian 12 has only kubernetes-client 1.20
# (kustomize v2.0.3). Without one, those tests are skipped and say so; install kubectl from the
# Kubernetes project to run them.
# Extra packages for optional features can be added by callers: install-deps.sh pkg...
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "installing: ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  apt=(apt-get)
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  apt=(sudo apt-get)
else
  echo "dubfarm needs these Debian packages: ${missing[*]}" >&2
  echo "run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${apt[@]}" update -qq || true
"${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
