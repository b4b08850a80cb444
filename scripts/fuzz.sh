#!/usr/bin/env bash
# Fuzzes every parser of untrusted input (fuzz/README.md): each target from its seeds
# in fuzz/seeds/ plus the corpus earlier runs grew in fuzz/corpus/, for a fixed number
# of executions, then prints one line per target. Any crash, hang (over 10 s), single
# allocation over 64 MiB, RSS over 512 MiB or RSS growth over 32 MiB during the run
# fails it; libFuzzer saves the input that did it under fuzz/artifacts/.
#
#   scripts/fuzz.sh                          # every target, 100,000 executions each
#   scripts/fuzz.sh --runs 10000000 --jobs 2 # the release bar, two targets at a time
#   scripts/fuzz.sh --runs 1000 sim_http     # one target
#
# Stable Rust: cargo-fuzz with `--sanitizer none`, so no nightly-only flag is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=100000
jobs=1
targets=()
while (($#)); do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "fuzz: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
all=(client_hello iccid sim_http admin_json ndjson spin_toml topic_template)
((${#targets[@]})) || targets=("${all[@]}")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi
# The instrumented build must not share the product's target directory: its flags
# differ, so each would rebuild the other's dependencies.
target_dir="${FUZZ_TARGET_DIR:-$PWD/fuzz/target}"
fuzz() { cargo fuzz "$1" --sanitizer none --fuzz-dir fuzz --target-dir "$target_dir" "${@:2}"; }
fuzz build >&2

# Inputs longer than any real one teach nothing; a ClientHello may span the whole
# wire bound (8 KiB) and a bit more, to reach the refusal past it.
max_len() {
    case "$1" in
        client_hello) echo 9000 ;;
        spin_toml) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run() {
    local t="$1"
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    if fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -runs="$runs" -max_len="$(max_len "$t")" -timeout=10 \
        -malloc_limit_mb=64 -rss_limit_mb=512 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$logs/$t" 2>&1; then
        echo ok >"$logs/$t.status"
    else
        echo failed >"$logs/$t.status"
    fi
}

running=0
for t in "${targets[@]}"; do
    [ -d "fuzz/seeds/$t" ] || { echo "fuzz: no target $t" >&2; exit 2; }
    run "$t" &
    running=$((running + 1))
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

failed=0
printf '%-15s %12s %10s %9s %9s %s\n' target executions exec/s "rss@init" "rss@peak" result
for t in "${targets[@]}"; do
    log="$logs/$t"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    init=$(grep -m1 -o 'INITED.* rss: [0-9]*Mb' "$log" | grep -o '[0-9]*Mb$' | tr -d Mb || true)
    result=$(cat "$log.status")
    if [ "$result" = ok ] && { [ -z "$execs" ] || [ "$execs" -lt "$runs" ]; }; then
        result="failed (ran ${execs:-0} of $runs)"
    fi
    if [ "$result" = ok ] && [ -n "$init" ] && [ -n "$peak" ] && ((peak - init > 32)); then
        result="failed (RSS grew ${init} -> ${peak} MiB)"
    fi
    printf '%-15s %12s %10s %9s %9s %s\n' "$t" "${execs:-?}" "${speed:-?}" "${init:-?}MB" "${peak:-?}MB" "$result"
    if [ "$result" != ok ]; then
        failed=1
        echo "---- $t: the end of libFuzzer's output" >&2
        tail -40 "$log" >&2
    fi
done
exit "$failed"
