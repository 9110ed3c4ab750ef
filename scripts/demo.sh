#!/usr/bin/env bash
# `make demo`: a real kube-apiserver and etcd, the Graph emulator and the
# operator, all on loopback. Applies the five documented settings (one
# tenant each), waits for them to converge, shows drift being corrected, a
# bad policy refused and a cluster policy over three tenant Secrets, then
# cleans up.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

client_id=6731de76-14a6-49ae-97bc-6eba6914391e
# A made-up secret that only the local emulator accepts.
client_secret=demo-only-secret-value
tenants=(contoso fabrikam tailspin northwind adatum)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ppo-demo.XXXXXX")
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${PPO_TESTENV_PID:-}" ]; then tests/apiserver/env.sh stop || true; fi
    if [ "$status" -ne 0 ]; then
        echo "demo failed; operator log (last 40 lines):" >&2
        tail -n 40 "$work/operator.log" 2>/dev/null >&2 || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

step "building the operator and the Graph emulator"
cargo build --quiet --bins
bin="${CARGO_TARGET_DIR:-$repo/target}/debug"

step "starting kube-apiserver and etcd (built from the Go module registry on first use)"
eval "$(tests/apiserver/env.sh start)"
kubectl version

step "starting the Graph emulator"
"$bin/graph-emulator" --listen 127.0.0.1:0 --client "*:$client_id:$client_secret" \
    >"$work/emulator.out" 2>"$work/emulator.log" &
pids+=($!)
for _ in $(seq 100); do
    grep -q "listening on" "$work/emulator.out" 2>/dev/null && break
    sleep 0.1
done
emulator=$(sed -n 's/.*listening on //p' "$work/emulator.out")
echo "emulator at $emulator"

step "installing the CRD and least-privilege RBAC from deploy/kustomize/base/"
kubectl apply -f deploy/kustomize/base/namespace.yaml -f deploy/kustomize/base/crd.yaml -f deploy/kustomize/base/rbac.yaml
kubectl wait --for=condition=Established crd/photoupdatepolicies.photopolicy.io \
    crd/clusterphotoupdatepolicies.photopolicy.io --timeout=60s

step "starting the operator with its own ServiceAccount token"
testenv token --kubeconfig "$KUBECONFIG" --namespace photo-policy-system \
    --serviceaccount photo-policy-operator --out "$work/operator.kubeconfig"
KUBECONFIG="$work/operator.kubeconfig" "$bin/photo-policy-operator" run \
    --authority-host "$emulator" --graph-endpoint "$emulator" \
    --credentials-namespace photo-policy-tenants \
    --metrics-bind-address 127.0.0.1:0 >"$work/operator.log" 2>&1 &
pids+=($!)

step "applying the five documented settings, one tenant each"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
for tenant in "${tenants[@]}"; do
    kubectl -n demo create secret generic "$tenant-graph" \
        --from-literal=clientSecret="$client_secret" --dry-run=client -o yaml | kubectl apply -f -
done
kubectl -n demo apply -f examples/
kubectl -n demo wait --for=condition=Ready photoupdatepolicies --all --timeout=120s
kubectl get photoupdatepolicies -A -o wide

step "each tenant's setting as the emulator holds it"
for tenant in "${tenants[@]}"; do
    printf '%-28s %s\n' "$tenant.onmicrosoft.com" \
        "$(curl -sf "$emulator/_emulator/tenants/$tenant.onmicrosoft.com/settings")"
done

step "drift: someone clears fabrikam's role list behind the operator's back"
curl -sf -X PUT -H 'content-type: application/json' \
    -d '{"source":"cloud","allowedRoles":null}' \
    "$emulator/_emulator/tenants/fabrikam.onmicrosoft.com/settings"
echo
# The operator reads each tenant every syncInterval (1h here); the
# annotation asks for a pass now.
kubectl -n demo annotate photoupdatepolicy fabrikam --overwrite \
    "photopolicy.io/reconcile-requested-at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
for _ in $(seq 100); do
    settings=$(curl -sf "$emulator/_emulator/tenants/fabrikam.onmicrosoft.com/settings")
    case "$settings" in *62e90394*) break ;; esac
    sleep 0.2
done
echo "fabrikam after the operator's pass: $settings"
case "$settings" in *62e90394*) ;; *) echo "drift was not corrected" >&2; exit 1 ;; esac
kubectl -n demo get events --field-selector involvedObject.name=fabrikam \
    -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message

step "a bad policy is refused by the API server (role ID with a leading space, as in the Graph docs)"
if kubectl -n demo apply -f - <<EOF 2>"$work/refused.txt"; then
apiVersion: photopolicy.io/v1alpha1
kind: PhotoUpdatePolicy
metadata:
  name: copied-from-docs
spec:
  tenantId: wingtip.onmicrosoft.com
  credentials:
    type: ClientSecret
    clientId: $client_id
    secretRef: {name: wingtip-graph}
  source: cloud
  allowedRoles: [" fe930be7-5e62-47db-91af-98c3a49a38b1"]
EOF
    echo "the API server accepted a policy it should refuse" >&2
    exit 1
fi
cat "$work/refused.txt"

step "one cluster policy for a fleet: three tenant Secrets labelled tier=gold"
# northwind already has a namespaced policy, which wins: it counts as overridden.
for tenant in northwind litware wingtip; do
    kubectl -n photo-policy-tenants create secret generic "$tenant" \
        --from-literal=tenantId="$tenant.onmicrosoft.com" \
        --from-literal=clientId="$client_id" \
        --from-literal=clientSecret="$client_secret" --dry-run=client -o yaml | kubectl apply -f -
    kubectl -n photo-policy-tenants label secret "$tenant" tier=gold --overwrite
done
kubectl apply -f - <<EOF
apiVersion: photopolicy.io/v1alpha1
kind: ClusterPhotoUpdatePolicy
metadata:
  name: gold-tenants
spec:
  tenantSelector:
    matchLabels:
      tier: gold
  source: cloud
  allowedRoles: [GlobalAdministrator]
EOF
kubectl wait --for=condition=Ready clusterphotoupdatepolicy/gold-tenants --timeout=120s
kubectl get clusterphotoupdatepolicies
settings=$(curl -sf "$emulator/_emulator/tenants/wingtip.onmicrosoft.com/settings")
echo "wingtip as the emulator holds it: $settings"

step "one-shot plan, with no cluster: what would change if contoso allowed only People Administrators"
sed 's/^  source: cloud$/  source: cloud\n  allowedRoles: [PeopleAdministrator]/' examples/cloud-all-users.yaml \
    >"$work/contoso-people-admins.yaml"
set +e
AZURE_CLIENT_SECRET=$client_secret "$bin/photo-policy-operator" plan \
    -f "$work/contoso-people-admins.yaml" --authority-host "$emulator" --graph-endpoint "$emulator"
code=$?
set -e
echo "plan exit code: $code (0: in sync, 2: would change, 1: error)"
[ "$code" -eq 2 ] || { echo "expected plan to report a change" >&2; exit 1; }

step "the operator's metrics"
metrics=$(sed -n 's/.*serving \/metrics.*address=\([0-9.:]*\).*/\1/p' "$work/operator.log" | head -n 1)
curl -sf "http://$metrics/metrics" | grep -E '^photo_policy_operator_(reconciles|graph_requests|token_requests|drift_corrections)_total'

step "done; cleaning up"
