#!/usr/bin/env bash
# A two-node Ray cluster on this machine (a head and a second raylet, each with its own CPUs and logical "GPU"
# slots for the CPU platform), to rehearse trainer.nnodes=2 without a second machine.
#
#   bash scripts/local_cluster.sh start     # prints the address; export RAY_ADDRESS=... for the run
#   bash scripts/local_cluster.sh stop      # stops the processes of this cluster only (found by its temp dir)
#   bash scripts/local_cluster.sh status
#
# Settings (environment): RAY_PORT (head port, default 6390), CLUSTER_DIR (temp dir, default /tmp/rlsd_ray_<port>:
# short, Ray's socket paths must stay under 107 characters), CPUS_PER_NODE (8), GPUS_PER_NODE (1, logical).
# Every port is chosen per node so that the cluster does not collide with another Ray instance on the machine;
# `stop` never runs `ray stop` (that would stop every Ray instance of the user).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
# the CLI through this interpreter (a copied venv's bin/ray may name another Python in its first line)
RAY_CLI=("$PYTHON" -m ray.scripts.scripts)
PORT="${RAY_PORT:-6390}"
DIR="${CLUSTER_DIR:-/tmp/rlsd_ray_$PORT}"
CPUS="${CPUS_PER_NODE:-8}"
GPUS="${GPUS_PER_NODE:-1}"
ADDRESS="127.0.0.1:$PORT"

free_ports() {  # N free TCP ports on 127.0.0.1
    "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

node_args() {  # ports of one raylet (its agents included) and its worker port range
    local p base
    read -r -a p <<<"$(free_ports 6)"
    base=$(( 20000 + (PORT % 100) * 200 + $1 * 100 ))
    echo "--node-manager-port=${p[0]} --object-manager-port=${p[1]} --dashboard-agent-listen-port=${p[2]}" \
         "--dashboard-agent-grpc-port=${p[3]} --metrics-export-port=${p[4]} --runtime-env-agent-port=${p[5]}" \
         "--min-worker-port=$base --max-worker-port=$(( base + 99 ))"
}

pids() {  # processes of this cluster: their command line names its temp dir (or its GCS address)
    pgrep -f -- "$DIR" || true
}

case "${1:-}" in
    start)
        if [ -n "$(pids)" ]; then
            echo "a cluster is already running under $DIR (stop it first)" >&2
            exit 1
        fi
        mkdir -p "$DIR"
        # VERL_PLATFORM=cpu in the raylets' environment: the workers start from it
        # token authentication off: the second raylet would need the head's token (a loopback-only rehearsal)
        export VERL_PLATFORM=cpu RAY_DEDUP_LOGS=0 RAY_AUTH_MODE=disabled
        # shellcheck disable=SC2046
        "${RAY_CLI[@]}" start --head --node-ip-address=127.0.0.1 --port="$PORT" --temp-dir="$DIR" --num-cpus="$CPUS" \
            --num-gpus="$GPUS" --include-dashboard=false --disable-usage-stats \
            --ray-client-server-port="$(free_ports 1)" $(node_args 0) >"$DIR/head.log" 2>&1 \
            || { cat "$DIR/head.log" >&2; exit 1; }
        # shellcheck disable=SC2046
        "${RAY_CLI[@]}" start --address="$ADDRESS" --node-ip-address=127.0.0.1 --num-cpus="$CPUS" --num-gpus="$GPUS" \
            --disable-usage-stats $(node_args 1) >"$DIR/worker.log" 2>&1 \
            || { cat "$DIR/worker.log" >&2; "$0" stop; exit 1; }
        echo "Ray cluster of 2 nodes at $ADDRESS ($CPUS CPUs, $GPUS logical GPU each); temp dir $DIR"
        echo "run with: RAY_ADDRESS=$ADDRESS (and ray_kwargs.ray_init.num_cpus=null ray_kwargs.ray_init.num_gpus=null)"
        ;;
    stop)
        mine="$(pids)"
        if [ -z "$mine" ]; then
            echo "no cluster running under $DIR"
            exit 0
        fi
        # shellcheck disable=SC2086
        kill $mine 2>/dev/null || true
        for _ in $(seq 20); do
            [ -z "$(pids)" ] && break
            sleep 0.5
        done
        left="$(pids)"
        # shellcheck disable=SC2086
        [ -n "$left" ] && kill -9 $left 2>/dev/null || true
        echo "stopped the cluster under $DIR"
        ;;
    status)
        if [ -z "$(pids)" ]; then echo "no cluster running under $DIR"; exit 1; fi
        RAY_ADDRESS="$ADDRESS" "${RAY_CLI[@]}" status
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
