#!/usr/bin/env bash
# `make bench`: builds the operator, the Graph emulator and the benchmark
# driver for release, starts a fresh kube-apiserver and etcd, and runs the
# driver (benches/operator/). The last line of output is the summary:
#   bench: calls_ratio=X token_ratio=X converge_ratio=X change_p99_ms=X rss_mib=X retry_after_violations=N
# Settings: BENCH_POLICIES (default 1000), BENCH_LATENCY_MS (50),
# BENCH_CONCURRENCY (16, --max-concurrent-graph-requests), BENCH_RECONCILES
# (--max-concurrent-reconciles, default the operator's), BENCH_CHANGES (100),
# BENCH_THROTTLE (10/60),
# BENCH_TOKEN_LIFETIME (120), BENCH_PROBES, BENCH_RETRY_AFTER (10).
# BENCH_KIND=cluster measures one ClusterPhotoUpdatePolicy over
# BENCH_POLICIES tenant Secrets instead (tests/bench_cluster.rs); its last
# line starts with "bench-cluster:".
# For profiling: BENCH_SKIP_STEADY=1 stops after the throttle phase, and
# BENCH_OPERATOR_WRAPPER (such as "heaptrack -o /tmp/ppo") runs the
# operator under that command.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${BENCH_KIND:-namespaced}" == cluster ]]; then
    echo "== building for release (operator, graph-emulator, cluster benchmark)"
    cargo test --release --test bench_cluster --no-run
    echo "== starting kube-apiserver and etcd"
    eval "$(tests/apiserver/env.sh start)"
    trap 'tests/apiserver/env.sh stop' EXIT
    echo "== running the cluster benchmark"
    PPO_E2E=1 PPO_BENCH=1 PPO_BENCH_TENANTS="${BENCH_POLICIES:-1000}" \
        PPO_BENCH_LATENCY_MS="${BENCH_LATENCY_MS:-50}" \
        cargo test --release --test bench_cluster -- --nocapture
    exit 0
fi

echo "== building for release (operator, graph-emulator, benchmark driver)"
cargo bench --bench operator --no-run

echo "== starting kube-apiserver and etcd"
eval "$(tests/apiserver/env.sh start)"
trap 'tests/apiserver/env.sh stop' EXIT

echo "== running the benchmark (about 7 minutes at 1,000 policies: one sync interval is 5 minutes)"
cargo bench --bench operator
