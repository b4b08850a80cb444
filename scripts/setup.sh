#!/usr/bin/env bash
# Installs what building and testing psk-edge needs on a Debian machine with Rust:
# the C toolchain pieces wolfSSL's build uses (autoconf, automake, libtool, libclang
# for bindgen), the real TLS clients the tests drive (openssl, gnutls-cli, curl), the
# real servers they start on loopback (Mosquitto, PostgreSQL: the tests run their own
# temporary clusters, not the packaged service), and the wasm32-wasip2 Rust target the
# functions are built for. Idempotent; quiet when everything is present.
set -euo pipefail

packages=(autoconf automake libtool libclang-dev pkg-config make gcc g++ openssl gnutls-bin curl ca-certificates mosquitto mosquitto-dev postgresql)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 Rust target" >&2
    rustup target add wasm32-wasip2
fi
for component in rustfmt clippy; do
    rustup component list --installed | grep -q "^$component" || rustup component add "$component"
done
