# Shell helpers the benchmark scripts share (sourced, not run): loopback ports.

# A free 127.0.0.1 port below the ephemeral range (32768+), where 10k client sockets
# would collide; nothing answers there: free enough for a loopback benchmark.
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

# Waits (up to 30 s) until something accepts connections on 127.0.0.1:$1.
wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}
