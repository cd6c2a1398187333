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

.PHONY: deps py-deps build test docs demo demo-down bench bench-scale eval clean help

help:
	@echo "make demo      start a local farm and dub the bundled sample"
	@echo "make test      run every test"
	@echo "make bench     print the benchmark figures"
	@echo "make bench-scale  1 to 64 workers on this machine: speedup, efficiency, coordinator CPU per segment"
	@echo "make build     build bin: $(BIN)"
	@echo "make docs      DocC reference of the main modules: $(OUT)/docs/<module>/index.html"
	@echo "make demo-down stop the local farm"
	@echo "make eval      held-out evaluation through the farm: table, out/eval/ (EVAL_ARGS='--model untrained:small')"

deps:
	@tools/install-deps.sh

build: deps
	$(SWIFT) build $(SWIFT_FLAGS) --product dubfarm

# The trainer and the evaluation (training/) run in a virtual environment of their own, with the
# versions training/requirements.txt pins, and so do the deployment files' validators
# (tools/requirements-check.txt, for Tests/DeployTests); it is (re)made when either file changes.
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
py-deps: $(VENV)/.requirements

$(VENV)/.requirements: training/requirements.txt tools/requirements-check.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r training/requirements.txt -r tools/requirements-check.txt
	@cat training/requirements.txt tools/requirements-check.txt > $@

test: deps py-deps
	$(SWIFT) build $(SWIFT_FLAGS) --build-tests
	$(SWIFT) test $(SWIFT_FLAGS) --skip-build
	$(PY) -m pytest -q training/tests

# DocC reference of the main modules, with their package-level API (the package has no public
# API: its only product is the executable). One static site per module under $(OUT)/docs.
DOC_TARGETS ?= DubfarmCore FFmpeg MediaPipeline Worker Coordinator
docs: deps
	@mkdir -p $(OUT)/docs
	@for t in $(DOC_TARGETS); do \
	  echo "documenting $$t"; \
	  $(SWIFT) package --allow-writing-to-directory $(OUT)/docs generate-documentation --target $$t \
	    --symbol-graph-minimum-access-level package --disable-indexing --transform-for-static-hosting \
	    --hosting-base-path $$t --output-path $(OUT)/docs/$$t || exit 1; \
	done
	@echo "open $(OUT)/docs/<module>/index.html through a web server (static hosting), e.g. python3 -m http.server -d $(OUT)/docs"

demo: build
	@mkdir -p $(OUT)
	$(BIN) local up --dir $(FARM_DIR) --workers 2
	@echo "Note: the workers run the trained default model, models/dubfarm-small: a first model (about 2.5 hours of training on 2 CPU cores)."
	@echo "      On unseen speakers: face found in 100 % of frames, identity distance 0.46, face PSNR 22.3 dB (soft), sync about 70 % of the original's (MODEL_CARD.md)."
	@echo "      Its face swap is a first one: demo/face.png's eyes, brows and skin over the speaker's own mouth and jaw, with a visible seam."
	DUBFARM_LOCAL_DIR=$(FARM_DIR) $(BIN) submit demo/speaker.mp4 --audio demo/dub.wav --face demo/face.png --wait --out $(OUT)/demo-dubbed.mp4
	@echo
	@echo "Done. The dubbed video is $(OUT)/demo-dubbed.mp4 (dub stage, trained models/dubfarm-small; 'make eval' measures it)"
	@echo "The farm keeps running: try '$(BIN) jobs' or '$(BIN) workers'; stop it with 'make demo-down'."

demo-down:
	-$(BIN) local down --dir $(FARM_DIR)

bench: build
	tools/bench/farm.sh

# The scaling table (docs/benchmarks.md): 1, 2, 4 … 64 sleep-copy workers against one coordinator.
bench-scale: build
	tools/bench/scale.sh

# Held-out evaluation (training/dubeval): trained, untrained and original video, self- and cross-driven,
# each through a private local farm; table on stdout, pictures and JSON in out/eval/. The evaluation
# sync model is trained on first use (cached in $(EVAL_CACHE), outside git). EVAL_ARGS passes flags.
EVAL_CACHE ?= $(CURDIR)/.cache/eval
eval: build py-deps
	nice -n 15 $(PY) training/evaluate.py --cache-dir $(EVAL_CACHE) --out $(OUT)/eval $(EVAL_ARGS)

clean:
	rm -rf .build out
