#!/usr/bin/env bash
# The broker benchmark of BENCHMARKS.md ("Credentials at the broker"), in one go, on one
# node with its managed Mosquitto and the psk-edge plugin, at two fleet sizes (by
# default 1k and 1M devices) so the figures can be read as ratios of one run:
#   - fresh credentials: 1,000 devices created by SIMs at 500/s, each answer's
#     credentials tried at the broker at once: the delay until it accepts them;
#   - revocation: 200 rotations through the admin API, each with a live MQTT session
#     on the old password: until the session ends and until the old password is refused;
#   - MQTT CONNECT rate with a cold cache (every connect a device the broker never saw),
#     then the same devices again (the plugin's cache warm);
#   - node and broker CPU per connect and RSS.
# Devices beyond the first are written by `psk-edge-bench seed-devices` (the store's
# own insert, 5,000 per transaction); SIMs register through the bulk endpoint.
#
# Usage: bash scripts/bench-broker.sh [OUT_DIR]   (default: bench-results/broker)
# Knobs: BENCH_FLEETS ("1000 1000000"), BENCH_CONNECTS (20000), BENCH_CONCURRENCY (16).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
out=${1:-bench-results/broker}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
fleets=${BENCH_FLEETS:-1000 1000000}
connects=${BENCH_CONNECTS:-20000}
concurrency=${BENCH_CONCURRENCY:-16}
# Devices revoked per fleet size come from a range of their own, far above the fleet,
# so that the connect runs never meet a revoked one.
revoke_base=100000000
revocations=200

log() { printf '\n== %s\n' "$*" >&2; }

bash scripts/setup.sh
log "building psk-edge, psk-edge-bench and the Mosquitto plugin (release)"
cargo build --release --quiet --locked --bin psk-edge --bin psk-edge-bench
cargo build --release --quiet --locked -p psk-edge-mosquitto
bin=$CARGO_TARGET_DIR/release

ulimit -n "$(ulimit -Hn)"
node_pid=""
cleanup() {
    [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

. scripts/bench-lib.sh

bench() { "$bin/psk-edge-bench" "$@"; }

node_dir=$(mktemp -d "$out/node.XXXX")
sim_port=$(free_port)
admin_port=$(free_port)
broker_listen=$(free_port)
admin_url=https://127.0.0.1:$admin_port
log "starting a node with its managed broker in $node_dir"
RUST_LOG=warn env -u RUST_BACKTRACE "$bin/psk-edge" up --data-dir "$node_dir" --no-demo \
    --sim-listen "127.0.0.1:$sim_port" --admin-listen "127.0.0.1:$admin_port" \
    --broker-listen "127.0.0.1:$broker_listen" --mqtt-plugin "$bin/libpsk_edge_mosquitto.so" \
    >"$node_dir/node.log" 2>&1 &
node_pid=$!
wait_port "$sim_port"
wait_port "$admin_port"
for _ in $(seq 1 100); do [ -s "$node_dir/mosquitto/mosquitto.pid" ] && break; sleep 0.1; done
mqtt=127.0.0.1:$(cat "$node_dir/mosquitto/port")
broker_pid=$(cat "$node_dir/mosquitto/mosquitto.pid")
pids=(--node-pid "$node_pid" --broker-pid "$broker_pid")

bench --sim "127.0.0.1:$sim_port" --admin "$admin_url" --data-dir "$node_dir" \
    --identities 1000 --register-only
# The fleet is larger than an account's default device quota (1,000,000).
curl -fsS --cacert "$node_dir/admin-cert.pem" -u "$(cat "$node_dir/operator.secret")" \
    -X PUT "$admin_url/v3/accounts/bench/limits" -d '{"devices":100000000}' >/dev/null

seeded=0
stage=0
for fleet in $fleets; do
    log "fleet of $fleet devices"
    bench seed-devices --data-dir "$node_dir" --from "$seeded" --devices $((fleet - seeded)) \
        | tee "$out/seed-$fleet.txt"
    # This stage's revocation pool: seeded devices no other run touches.
    pool=$((revoke_base + stage * revocations))
    bench seed-devices --data-dir "$node_dir" --from "$pool" --devices "$revocations" >/dev/null

    log "fresh credentials at the broker ($fleet devices)"
    bench fresh-credentials --sim "127.0.0.1:$sim_port" --mqtt "$mqtt" --identities 1000 \
        --devices 1000 --rate 500 --prefix "fresh$stage" | tee "$out/fresh-$fleet.txt"

    log "rotations and deletions through the admin API ($fleet devices)"
    bench revoke --admin "$admin_url" --data-dir "$node_dir" --mqtt "$mqtt" \
        --from "$pool" --devices $((revocations / 2)) --how rotate | tee "$out/rotate-$fleet.txt"
    bench revoke --admin "$admin_url" --data-dir "$node_dir" --mqtt "$mqtt" \
        --from $((pool + revocations / 2)) --devices $((revocations / 2)) --how delete \
        | tee "$out/delete-$fleet.txt"

    log "MQTT CONNECT, cold then warm cache ($fleet devices)"
    n=$connects
    [ "$n" -gt $((fleet - seeded)) ] && n=$((fleet - seeded))
    # Only devices seeded at this stage: none of them has connected before.
    bench mqtt-connect --mqtt "$mqtt" --lowest "$seeded" --seeded "$fleet" --connects "$n" \
        --concurrency "$concurrency" "${pids[@]}" --label "cold cache, $fleet devices" \
        | tee "$out/connect-cold-$fleet.txt"
    bench mqtt-connect --mqtt "$mqtt" --lowest "$seeded" --seeded "$fleet" --connects "$n" \
        --concurrency "$concurrency" "${pids[@]}" --label "warm cache, $fleet devices" \
        | tee "$out/connect-warm-$fleet.txt"
    seeded=$fleet
    stage=$((stage + 1))
done

log "results in $out"
grep -h -A4 -e '^fresh' -e '^revocations' -e '^MQTT' -e '^seeded' "$out"/*.txt
