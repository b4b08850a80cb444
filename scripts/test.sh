#!/usr/bin/env bash
# Sets up what is missing and runs the whole test suite: the host's unit tests, the
# black-box tests in tests/ (real openssl, gnutls-cli, curl and wolfSSL clients against
# real `psk-edge up` processes on loopback, a real Mosquitto, tenant components from
# functions/fixtures, several nodes sharing a real PostgreSQL), and the unit tests of
# the functions and the worked example. The host's suite runs twice: on SQLite, then
# with every node and store on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The tests' brokers load the plugin from beside the psk-edge binary.
cargo build --locked -p psk-edge-mosquitto
cargo test --locked --workspace
PSK_EDGE_TEST_BACKEND=postgres cargo test --locked --workspace
cargo test --locked --manifest-path functions/Cargo.toml
cargo test --locked --manifest-path functions/examples/iccid-profile/Cargo.toml
