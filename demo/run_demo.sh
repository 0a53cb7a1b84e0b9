#!/usr/bin/env bash
# Reproduce the OVMS guide "Dynamic batch size with OpenVINO Model Server Demultiplexer"
# (/work/shared/spec/seed-guide.md) end to end with ovserve, on the cached demo model and photos.
#
# Run by `make demo` once the cache is prepared (demo/demo.mk); stand-alone from the repo root:
#   demo/run_demo.sh
# Environment: DEMO_CACHE (default .cache/demo), VENV (default .venv), PORT (default 9000; a free
# port is picked when it is busy).
# Exits non-zero unless both client reports (batch size 1 and 8, run at the same time) classify every
# image correctly and the server stops cleanly.
set -euo pipefail

DEMO_CACHE=${DEMO_CACHE:-.cache/demo}
VENV=${VENV:-.venv}
PORT=${PORT:-9000}
READY_SECONDS=60

CONFIG="$DEMO_CACHE/config.json"
SERVER_LOG="$DEMO_CACHE/server.log"
SERVER_PID=""

die() {
    echo "run_demo: error: $*" >&2
    exit 1
}

port_busy() {  # port_busy PORT: true when something listens on 127.0.0.1:PORT or the port cannot be bound
    "$VENV/bin/python" -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT leftovers are not busy
try:
    s.bind(("0.0.0.0", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)' "$1"
}

free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_config() {  # the guide's config.json, base_path relative to the config's directory
    cat >"$CONFIG" <<'EOF'
{
    "model_config_list": [
        {
            "config": {
                "name": "efficientnet",
                "base_path": "models/efficientnet",
                "plugin_config": {
                    "NUM_STREAMS": "1"
                }
            }
        }
    ],
    "pipeline_config_list": [
        {
            "name": "resnet50DAG",
            "inputs": [
                "0"
            ],
            "demultiply_count": -1,
            "nodes": [
                {
                    "name": "resnetNode",
                    "model_name": "efficientnet",
                    "type": "DL model",
                    "inputs": [
                        {
                            "0": {
                                "node_name": "request",
                                "data_item": "0"
                            }
                        }
                    ],
                    "outputs": [
                        {
                            "data_item": "1463",
                            "alias": "1463"
                        }
                    ]
                }
            ],
            "outputs": [
                {
                    "1463": {
                        "node_name": "resnetNode",
                        "data_item": "1463"
                    }
                }
            ]
        }
    ]
}
EOF
}

stop_server() {  # SIGTERM and wait; sets SERVER_STATUS to the server's exit status
    SERVER_STATUS=0
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" || SERVER_STATUS=$?
        SERVER_PID=""
    fi
}

on_exit() {
    local status=$?
    if [[ -n "$SERVER_PID" ]]; then
        stop_server
        echo "run_demo: server stopped (exit status $SERVER_STATUS)" >&2
    fi
    exit "$status"
}

server_died() {
    echo "run_demo: the server exited early; last lines of $SERVER_LOG:" >&2
    tail -n 30 "$SERVER_LOG" >&2 || true
    SERVER_PID=""
    exit 1
}

wait_ready() {  # poll the pipeline's metadata until it answers, the server dies or READY_SECONDS pass
    local deadline=$((SECONDS + READY_SECONDS))
    while ((SECONDS < deadline)); do
        kill -0 "$SERVER_PID" 2>/dev/null || server_died
        if "$VENV/bin/ovserve-metadata" --grpc_port "$PORT" --model_name resnet50DAG --timeout 2 >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    echo "run_demo: the server was not ready within ${READY_SECONDS}s; last lines of $SERVER_LOG:" >&2
    tail -n 30 "$SERVER_LOG" >&2 || true
    exit 1
}

predict() {  # predict BATCHSIZE: the guide's client command line
    "$VENV/bin/ovserve-predict" --grpc_port "$PORT" --images_numpy_path "$DEMO_CACHE/imgs.npy" \
        --labels_numpy_path "$DEMO_CACHE/lbs.npy" --input_name 0 --output_name 1463 --model_name resnet50DAG \
        --dag-batch-size-auto --transpose_input False --batchsize "$1"
}

check_report() {  # check_report FILE: every image classified correctly
    grep -q "Classification accuracy: 100.00" "$1" && ! grep -q "Incorrect match" "$1"
}

main() {
    local started=$SECONDS
    [[ -x "$VENV/bin/ovserve" ]] || die "$VENV/bin/ovserve not found: run $VENV/bin/pip install -e '.[dev]'"
    [[ -f "$DEMO_CACHE/models/efficientnet/1/model.xml" ]] || die "no demo model in $DEMO_CACHE: run make demo"
    [[ -f "$DEMO_CACHE/imgs.npy" && -f "$DEMO_CACHE/lbs.npy" ]] || die "no demo images in $DEMO_CACHE: run make demo"
    if port_busy "$PORT"; then
        local busy=$PORT
        PORT=$(free_port)
        echo "port $busy is busy: using port $PORT"
    fi

    write_config
    trap on_exit EXIT
    "$VENV/bin/ovserve" --config_path "$CONFIG" --port "$PORT" >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    echo "== ovserve started (pid $SERVER_PID, port $PORT, config $CONFIG, log $SERVER_LOG)"
    wait_ready

    echo "== pipeline metadata"
    "$VENV/bin/ovserve-metadata" --grpc_port "$PORT" --model_name resnet50DAG

    echo "== clients with --batchsize 1 and --batchsize 8, at the same time"
    local b1=0 b8=0 pid1 pid8
    predict 1 >"$DEMO_CACHE/b1.txt" 2>&1 &
    pid1=$!
    predict 8 >"$DEMO_CACHE/b8.txt" 2>&1 &
    pid8=$!
    wait "$pid1" || b1=$?
    wait "$pid8" || b8=$?
    echo "== b1.txt (exit status $b1)"
    cat "$DEMO_CACHE/b1.txt"
    echo "== b8.txt (exit status $b8)"
    cat "$DEMO_CACHE/b8.txt"

    local failed=""
    ((b1 == 0)) && check_report "$DEMO_CACHE/b1.txt" || failed+=" b1.txt"
    ((b8 == 0)) && check_report "$DEMO_CACHE/b8.txt" || failed+=" b8.txt"

    stop_server
    ((SERVER_STATUS == 0)) || failed+=" server-exit-status-$SERVER_STATUS"
    [[ -z "$failed" ]] || die "demo failed:$failed (server log: $SERVER_LOG)"
    echo "== demo passed: batch sizes 1 and 8 at the same time, 100.00% accuracy, server stopped cleanly" \
        "($((SECONDS - started))s)"
}

main "$@"
