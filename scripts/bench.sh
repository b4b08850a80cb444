#!/usr/bin/env bash
# Runs the whole benchmark of BENCHMARKS.md on this machine, in one go:
#   1. the SIM request against three servers, same request bytes, same load:
#      the bare wolfSSL responder (the limit), psk-edge (its own components, then the
#      bench-static component uploaded as a tenant function), and stunnel (TLS 1.3 PSK)
#      in front of `wasmtime serve` running that same bench-static component;
#   2. upload of a tenant function to its first served request;
#   3. Wasm dispatch cost per request (in-process);
#   4. idle keep-alive memory at 1k and 10k connections;
#   5. handshake rate and RSS with 1k, 100k and 1M registered identities.
# Every server binds 127.0.0.1 on free ports and is stopped at the end. Server and load
# share the machine's cores, as they would on a small box; each summary also states the
# server's own CPU time per request, which the load generator's cost does not blur.
#
# One-time builds are cached outside the clone: wasmtime-cli (~12 min on 2 cores) in
# $PSK_EDGE_TOOLS (default ~/.cache/psk-edge/tools), stunnel from Debian (apt).
#
# Usage: bash scripts/bench.sh [OUT_DIR]      (default: bench-results/, git-ignored)
# Knobs: BENCH_DURATION (10s), BENCH_CONCURRENCY (16), BENCH_SCALE ("1000 100000 1000000"),
#        BENCH_IDLE ("1000 10000"), BENCH_SKIP_SCALE=1.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
out=${1:-bench-results}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tools=${PSK_EDGE_TOOLS:-$HOME/.cache/psk-edge/tools}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
duration=${BENCH_DURATION:-10s}
concurrency=${BENCH_CONCURRENCY:-16}
scale=${BENCH_SCALE:-1000 100000 1000000}
idle=${BENCH_IDLE:-1000 10000}
identities=1000
wasmtime_version=48.0.8

log() { printf '\n== %s\n' "$*" >&2; }

# --- one-time builds -------------------------------------------------------------
bash scripts/setup.sh
if ! command -v stunnel4 >/dev/null; then
    log "installing stunnel4 (Debian)"
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends stunnel4 >/dev/null
fi
wasmtime=$tools/wasmtime-$wasmtime_version/bin/wasmtime
if [ ! -x "$wasmtime" ]; then
    log "building wasmtime-cli $wasmtime_version (once; only what \`serve\` needs)"
    CARGO_TARGET_DIR=$tools/build cargo install wasmtime-cli --version "$wasmtime_version" --locked \
        --root "$tools/wasmtime-$wasmtime_version" --no-default-features \
        --features run,serve,cranelift,parallel-compilation,pooling-allocator,component-model,component-model-async
fi
log "building psk-edge, psk-edge-bench, psk-edge-bare (release) and the bench-static component"
cargo build --release --quiet --bin psk-edge --bin psk-edge-bench --bin psk-edge-bare
bin=$CARGO_TARGET_DIR/release
fixtures_target=$CARGO_TARGET_DIR/tmp/bench-fixtures
(cd functions/fixtures && env -u CARGO_TARGET_DIR cargo build --quiet --release --locked \
    --target wasm32-wasip2 -p bench-static --target-dir "$fixtures_target")
static_wasm=$fixtures_target/wasm32-wasip2/release/bench_static.wasm

# --- helpers ----------------------------------------------------------------------
ulimit -n "$(ulimit -Hn)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

. scripts/bench-lib.sh

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# RUST_BACKTRACE (often set in developer shells) makes every error value capture a
# backtrace; servers run as in production, without it.
# `exec`, so that `server … &` leaves $! naming the server itself, not a subshell.
server() { exec env -u RUST_BACKTRACE "$@"; }
load() { "$bin/psk-edge-bench" "$@"; }

# Starts a psk-edge node in a fresh data dir; sets node_pid, node_dir, sim_port, admin_url.
start_node() {
    node_dir=$(mktemp -d "$out/node.XXXX")
    sim_port=$(free_port)
    local admin_port
    admin_port=$(free_port)
    admin_url=https://127.0.0.1:$admin_port
    RUST_LOG=warn server "$bin/psk-edge" up --data-dir "$node_dir" --no-mqtt --no-demo \
        --sim-listen "127.0.0.1:$sim_port" --admin-listen "127.0.0.1:$admin_port" "$@" \
        >"$node_dir/node.log" 2>&1 &
    node_pid=$!
    pids+=("$node_pid")
    wait_port "$sim_port"
    wait_port "$admin_port"
}

# One load run: LABEL PORT PIDS... -- EXTRA ARGS; writes $out/LABEL.txt (last line JSON).
run_load() {
    local label=$1 port=$2
    shift 2
    local pid_args=()
    while [ "$1" != -- ]; do pid_args+=(--server-pid "$1"); shift; done
    shift
    log "load: $label"
    load --sim "127.0.0.1:$port" --label "$label" --identities "$identities" \
        --concurrency "$concurrency" --duration "$duration" --json "${pid_args[@]}" "$@" \
        | tee "$out/$label.txt"
}

mix=(--keepalive-share 0.5 --post-share 0.25)
new=(--keepalive-share 0 --post-share 0.25)

# --- 1. the comparison --------------------------------------------------------------
log "1. the same SIM request against each server ($identities identities, concurrency $concurrency, $duration each)"

bare_port=$(free_port)
server "$bin/psk-edge-bare" --listen "127.0.0.1:$bare_port" --identities "$identities" >"$out/bare.log" 2>&1 &
bare_pid=$!
pids+=("$bare_pid")
wait_port "$bare_port"
run_load bare-new "$bare_port" "$bare_pid" -- --skip-register "${new[@]}"
run_load bare-mix "$bare_port" "$bare_pid" -- --skip-register "${mix[@]}"
stop "$bare_pid"

start_node --idle-timeout-ms 600000
load --sim "127.0.0.1:$sim_port" --admin "$admin_url" --data-dir "$node_dir" \
    --identities "$identities" --register-only
run_load psk-edge-new "$sim_port" "$node_pid" -- --skip-register "${new[@]}"
run_load psk-edge-mix "$sim_port" "$node_pid" -- --skip-register "${mix[@]}"

log "2. tenant upload to first served request (bench-static as the account's device-credentials)"
load upload --sim "127.0.0.1:$sim_port" --admin "$admin_url" --data-dir "$node_dir" \
    --route device-credentials --json "$static_wasm" | tee "$out/upload.txt"
# POSTs too, so every request of the mix runs the bench-static component.
"$bin/psk-edge" function deploy --admin-url "$admin_url" --data-dir "$node_dir" \
    --account bench --route device-create "$static_wasm" >/dev/null
run_load psk-edge-static-new "$sim_port" "$node_pid" -- --skip-register "${new[@]}"
run_load psk-edge-static-mix "$sim_port" "$node_pid" -- --skip-register "${mix[@]}"

log "4. idle keep-alive memory"
for n in $idle; do
    load hold --sim "127.0.0.1:$sim_port" --connections "$n" --identities "$identities" \
        --hold 2s --server-pid "$node_pid" | tee "$out/idle-$n.txt"
    sleep 2
done
stop "$node_pid"

wasmtime_port=$(free_port)
stunnel_port=$(free_port)
server "$wasmtime" serve --addr "127.0.0.1:$wasmtime_port" -Scli "$static_wasm" >"$out/wasmtime.log" 2>&1 &
wasmtime_pid=$!
pids+=("$wasmtime_pid")
# stunnel reads hexadecimal keys as binary: the same keys the bench derives.
secrets=$out/stunnel.psk
"$bin/psk-edge-bench" psk-table --identities "$identities" >"$secrets"
chmod 600 "$secrets"
cat >"$out/stunnel.conf" <<EOF
foreground = yes
pid =
debug = 3
[sim]
accept = 127.0.0.1:$stunnel_port
connect = 127.0.0.1:$wasmtime_port
PSKsecrets = $secrets
sslVersionMin = TLSv1.3
sslVersionMax = TLSv1.3
ciphersuites = TLS_AES_128_CCM_SHA256:TLS_AES_128_GCM_SHA256
options = ALLOW_NO_DHE_KEX
EOF
server stunnel4 "$out/stunnel.conf" >"$out/stunnel.log" 2>&1 &
stunnel_pid=$!
pids+=("$stunnel_pid")
wait_port "$wasmtime_port"
wait_port "$stunnel_port"
run_load stunnel-wasmtime-new "$stunnel_port" "$stunnel_pid" "$wasmtime_pid" -- --skip-register "${new[@]}"
run_load stunnel-wasmtime-mix "$stunnel_port" "$stunnel_pid" "$wasmtime_pid" -- --skip-register "${mix[@]}"
stop "$stunnel_pid"
stop "$wasmtime_pid"

log "3. Wasm dispatch per request (in-process: fresh instance + call + body)"
env -u RUST_BACKTRACE "$bin/psk-edge-bench" dispatch --requests 20000 --wasm "$static_wasm" --json | tee "$out/dispatch.txt"

# --- 5. scale -------------------------------------------------------------------------
if [ -z "${BENCH_SKIP_SCALE:-}" ]; then
    log "5. handshake rate and RSS by registered identities"
    start_node
    registered=0
    for n in $scale; do
        load --sim "127.0.0.1:$sim_port" --admin "$admin_url" --data-dir "$node_dir" \
            --identities "$n" --register-from "$registered" --register-only 2>&1 | tee "$out/register-$n.txt"
        registered=$n
        # run_load passes --identities from this variable: all registered SIMs take part.
        comparison_identities=$identities
        identities=$n
        run_load "handshake-$n" "$sim_port" "$node_pid" -- --skip-register --handshake-only
        identities=$comparison_identities
    done
    stop "$node_pid"
fi

# --- the tables -------------------------------------------------------------------------
{
    echo "### New-connection requests (one request per TLS connection)"
    echo
    "$bin/psk-edge-bench" report bare="$out/bare-new.txt" psk-edge="$out/psk-edge-new.txt" \
        psk-edge+bench-static="$out/psk-edge-static-new.txt" \
        stunnel+wasmtime-serve="$out/stunnel-wasmtime-new.txt"
    echo
    echo "### Mixed: half keep-alive, a quarter POST"
    echo
    "$bin/psk-edge-bench" report bare="$out/bare-mix.txt" psk-edge="$out/psk-edge-mix.txt" \
        psk-edge+bench-static="$out/psk-edge-static-mix.txt" \
        stunnel+wasmtime-serve="$out/stunnel-wasmtime-mix.txt"
    if [ -z "${BENCH_SKIP_SCALE:-}" ]; then
        echo
        echo "### Handshakes by registered identities (ratio to the first)"
        echo
        runs=()
        for n in $scale; do runs+=("$n=$out/handshake-$n.txt"); done
        "$bin/psk-edge-bench" report "${runs[@]}"
        for n in $scale; do grep -h '^registered' "$out/register-$n.txt" || true; done
        for n in $scale; do grep -h '^server:' "$out/handshake-$n.txt" | sed "s/^/$n identities: /"; done
    fi
    echo
    grep -h '^upload:' "$out/upload.txt"
    grep -h '^dispatch' "$out/dispatch.txt"
    grep -h '^server RSS' "$out"/idle-*.txt
} | tee "$out/results.md"
log "results in $out/results.md"
