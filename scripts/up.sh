#!/usr/bin/env bash
# Sets up what is missing, builds psk-edge in release mode and runs `psk-edge up`
# (SQLite in ~/.local/share/psk-edge, a demo account and SIM on first start, a
# managed Mosquitto with the psk-edge plugin).
# Extra arguments go to `up`, e.g. scripts/up.sh --data-dir /tmp/psk.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The managed broker loads the plugin built beside the binary.
cargo build --locked --release -p psk-edge-mosquitto
exec cargo run --locked --release --bin psk-edge -- up "$@"
