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

## Regenerate the CRDs from the Rust types.
crds:
	$(CARGO) run --quiet --bin photo-policy-operator -- crd > deploy/kustomize/base/crd.yaml
	awk '/^---$$/{n++; next} n==0' deploy/kustomize/base/crd.yaml > crds/photoupdatepolicies.yaml
	awk '/^---$$/{n++; next} n==1' deploy/kustomize/base/crd.yaml > crds/clusterphotoupdatepolicies.yaml
	cp crds/photoupdatepolicies.yaml crds/clusterphotoupdatepolicies.yaml deploy/helm/photo-policy-operator/crds/

## Build (or reuse) kube-apiserver, etcd and kubectl.
apiserver:
	bash tests/apiserver/build.sh

clean:
	$(CARGO) clean
