# dubfarm — a distributed batch render farm for video dubbing. See README.md.
#
# A new user runs two commands:
#   make demo   installs what is missing, builds, starts a local farm, dubs the bundled sample
#   make test   the whole test suite (unit and integration: real PostgreSQL, ZeroMQ and media)
SHELL := /bin/bash
SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
# One optimised build serves the tests, the demo and the benchmarks (the model and face code are
# far too slow unoptimised); -enable-testing lets the tests reach internal API and costs nothing
# measurable, and sharing the flags means nothing is compiled twice.
SWIFT_FLAGS ?= -c release -Xswiftc -enable-testing
BIN := .build/release/dubfarm
FARM_DIR ?= $(CURDIR)/.farm
OUT ?= $(CURDIR)/out

.PHONY: deps build test demo demo-down bench bench-scale clean help

help:
	@echo "make demo      start a local farm and dub the bundled sample"
	@echo "make test      run every test"
	@echo "make bench     print the benchmark figures"
	@echo "make bench-scale  1 to 64 workers on this machine: speedup, efficiency, coordinator CPU per segment"
	@echo "make build     build bin: $(BIN)"
	@echo "make demo-down stop the local farm"

deps:
	@tools/install-deps.sh

build: deps
	$(SWIFT) build $(SWIFT_FLAGS) --product dubfarm

test: deps
	$(SWIFT) build $(SWIFT_FLAGS) --build-tests
	$(SWIFT) test $(SWIFT_FLAGS) --skip-build

demo: build
	@mkdir -p $(OUT)
	$(BIN) local up --dir $(FARM_DIR) --workers 2
	@echo "Note: the bundled model weights are UNTRAINED (seeded 'small' configuration): the dub stage runs for real"
	@echo "      (face tracking, swap, lip sync, blending), but the face region will not look like a real dub."
	DUBFARM_LOCAL_DIR=$(FARM_DIR) $(BIN) submit demo/speaker.mp4 --audio demo/dub.wav --face demo/face.png --wait --out $(OUT)/demo-dubbed.mp4
	@echo
	@echo "Done. The dubbed video is $(OUT)/demo-dubbed.mp4 (dub stage, UNTRAINED weights; workers take --model DIR for real ones)"
	@echo "The farm keeps running: try '$(BIN) jobs' or '$(BIN) workers'; stop it with 'make demo-down'."

demo-down:
	-$(BIN) local down --dir $(FARM_DIR)

bench: build
	tools/bench/farm.sh

# The scaling table (README "Scaling"): 1, 2, 4 … 64 sleep-copy workers against one coordinator.
bench-scale: build
	tools/bench/scale.sh

clean:
	rm -rf .build out
