# dubfarm — see README.md. The two commands a new user runs: `make demo` and `make test`.
SWIFT ?= swift
.PHONY: build test
build:
	$(SWIFT) build
test:
	$(SWIFT) test
