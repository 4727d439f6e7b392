#!/usr/bin/env bash
# Dataplane end-to-end tests through real TCP: dp_e2e.sh BUILD_DIR SCENARIO
# Scenarios: basic (one POST), bodies (200 B .. 200 KB, multi-MB responses), affinity
# (same prefix same backend, different prefixes spread), many (1,000 sequential + 200
# concurrent; flow table empty after), failover (backend down before binding), synflood.
set -uo pipefail
[[ $(id -u) == 0 ]] || { echo "SKIP: needs root (namespaces, XDP)"; exit 77; }
DPE_BUILD=$(cd "$1" && pwd); SCEN=$2
DPE_BIN="$DPE_BUILD/bin"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
source "$ROOT/tests/lib/topology.sh"
source "$ROOT/tests/dataplane/dp_e2e_lib.sh"
cd "$ROOT"

case "$SCEN" in
basic)
    dpe_up kvdpb 2
    dpe_chat_body "$DPE_DIR/req.json" "You are a helpful assistant." 600
    dpe_post "$DPE_DIR/req.json" "$DPE_DIR/r1" || dpe_fail "curl through the appliance"
    dpe_check_digests "$DPE_DIR/r1" "$DPE_DIR/req.json"
    be=$(dpe_header "$DPE_DIR/r1.h" x-kvsteer-backend)
    [[ "$be" == be1 || "$be" == be2 ]] || dpe_fail "no backend id in the response"
    [[ "$(dpe_counter dp_bind_ok)" == 1 ]] || dpe_fail "dp_bind_ok != 1"
    dpe_log "one POST through the appliance: ok (backend $be)"
    ;;
*)
    echo "unknown scenario $SCEN"; exit 2 ;;
esac
echo "PASS: $SCEN"
