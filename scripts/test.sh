#!/usr/bin/env bash
# `make test`: formatting, clippy, then every test, with a real
# kube-apiserver and etcd started for the end-to-end suite and stopped after.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings

echo "== building or reusing helm and gitops-verdict (tests/gitops)"
PPO_GITOPS_BIN="$(tests/gitops/build.sh | tail -n 1)"
export PPO_GITOPS_BIN

echo "== starting kube-apiserver and etcd"
# Policy watches are served by etcd rather than the API server's watch
# cache, so that the fault suite can expire them (410 Gone) by compacting
# etcd.
export PPO_TESTENV_APISERVER_ARGS="--watch-cache-sizes=photoupdatepolicies.photopolicy.io#0 ${PPO_TESTENV_APISERVER_ARGS:-}"
eval "$(tests/apiserver/env.sh start)"
trap 'tests/apiserver/env.sh stop' EXIT
# The end-to-end suite runs only when asked, so that a stray KUBECONFIG on
# a developer's machine is never touched by accident.
export PPO_E2E=1
# The benchmark driver runs once with a few policies, to check that it
# still works and that its request counts hold (no timing is checked).
export PPO_BENCH_SMOKE=1

echo "== cargo test"
cargo test --all-targets
