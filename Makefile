# Common tasks. `make demo` and `make test` are the two set-up commands in
# the README; both work on a fresh clone with only Rust and Go installed.

CARGO ?= cargo

.PHONY: all build test unit lint demo bench crds apiserver clean

all: build

build:
	$(CARGO) build --bins

## Run every check CI runs: formatting, clippy, and all tests against a real
## kube-apiserver and etcd built from the Go module registry (cached in
## ~/.cache/photo-policy-operator).
test:
	bash scripts/test.sh

## Only the tests that need no API server.
unit:
	$(CARGO) test

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## Start a local API server, the Graph emulator and the operator, apply the
## five documented settings and show them converge.
demo:
	bash scripts/demo.sh

## Measure the operator, built for release, against the fewest Graph and
## token requests its job needs: 1,000 policies by default (BENCH_POLICIES),
## on a local API server and the Graph emulator. See BENCHMARKS.md.
bench:
	bash scripts/bench.sh

## Regenerate the CRD from the Rust types.
crds:
	$(CARGO) run --quiet --bin photo-policy-operator -- crd > crds/photoupdatepolicies.yaml
	cp crds/photoupdatepolicies.yaml deploy/crd.yaml

## Build (or reuse) kube-apiserver, etcd and kubectl.
apiserver:
	bash tests/apiserver/build.sh

clean:
	$(CARGO) clean
