#!/usr/bin/env bash
# jaeger.sh: a real OTLP receiver for firstcome's traces — Jaeger v2 (all-in-one: OTLP
# receiver, in-memory store, query API and UI), built from its Go module and cached under the
# stack's state folder like the other services.
#
#   stack/otel/jaeger.sh install   build once (idempotent; a few minutes on a fresh machine)
#   stack/otel/jaeger.sh up        install if needed, start if stopped, wait until ready
#   stack/otel/jaeger.sh down      stop (SIGTERM, then SIGKILL)
#   stack/otel/jaeger.sh status    one line: state, pid, ports
#   stack/otel/jaeger.sh env       export lines: OTEL_EXPORTER_OTLP_ENDPOINT, FIRSTCOME_JAEGER_QUERY_URL
#
# Ports (moved by FIRSTCOME_STACK_PORT_OFFSET like the rest of the stack): OTLP/gRPC 4317,
# OTLP/HTTP 4318, query API and UI 16686.
set -euo pipefail

STACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$STACK_DIR/.." && pwd)"
JAEGER_VERSION="${JAEGER_VERSION:-v1.76.0}"
STATE_DIR="${FIRSTCOME_STATE_DIR:-$REPO_DIR/.stack}"
mkdir -p "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"
BUILD_DIR="$STATE_DIR/cache/jaeger-$JAEGER_VERSION"
BIN="$BUILD_DIR/jaeger"
RUN_DIR="$STATE_DIR/jaeger"
PORT_OFFSET="${FIRSTCOME_STACK_PORT_OFFSET:-0}"
OTLP_GRPC_PORT=$((4317 + PORT_OFFSET))
OTLP_HTTP_PORT=$((4318 + PORT_OFFSET))
QUERY_PORT=$((16686 + PORT_OFFSET))
READY_TIMEOUT=60

log() { echo "jaeger: $*" >&2; }

install() {
  if [[ -x "$BIN" ]]; then return 0; fi
  command -v go >/dev/null || { log "error: go is not installed"; exit 1; }
  mkdir -p "$BUILD_DIR"
  log "building Jaeger $JAEGER_VERSION from its Go module (once; cached in $BUILD_DIR)"
  # Go's module and build caches for this one build (~3 GB) live in a scratch folder removed
  # afterwards: only the binary is kept.
  local scratch="$BUILD_DIR/go-scratch"
  (
    cd "$BUILD_DIR"
    export GOMODCACHE="$scratch/mod" GOCACHE="$scratch/build"
    [[ -f go.mod ]] || go mod init firstcome-jaeger >/dev/null 2>&1
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
    # Built under a temporary name, renamed when complete: an interrupted build leaves no binary.
    nice -n 5 go build -trimpath -o jaeger.partial github.com/jaegertracing/jaeger/cmd/jaeger
    mv jaeger.partial jaeger
    go clean -modcache # the module cache is read-only: go removes it
  )
  chmod -R u+w "$scratch" 2>/dev/null || true
  rm -rf "$scratch"
  log "built $BIN"
}

config() {
  mkdir -p "$RUN_DIR"
  # The all-in-one configuration, with our ports: OTLP in, memory store, query API out.
  cat >"$RUN_DIR/config.yaml" <<YAML
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:$((13133 + PORT_OFFSET))
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:$QUERY_PORT
    grpc:
      endpoint: 127.0.0.1:$((16685 + PORT_OFFSET))
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$OTLP_GRPC_PORT
      http:
        endpoint: 127.0.0.1:$OTLP_HTTP_PORT
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
YAML
}

pid() { [[ -f "$RUN_DIR/pid" ]] && kill -0 "$(cat "$RUN_DIR/pid")" 2>/dev/null && cat "$RUN_DIR/pid"; }

ready() { curl -fsS "http://127.0.0.1:$QUERY_PORT/api/services" >/dev/null 2>&1; }

up() {
  install
  if pid >/dev/null; then return 0; fi
  config
  log "starting (OTLP gRPC $OTLP_GRPC_PORT, HTTP $OTLP_HTTP_PORT, query $QUERY_PORT)"
  setsid "$BIN" --config "$RUN_DIR/config.yaml" >"$RUN_DIR/jaeger.log" 2>&1 </dev/null &
  echo $! >"$RUN_DIR/pid"
  for ((i = 0; i < READY_TIMEOUT * 5; i++)); do
    if ready; then log "ready"; return 0; fi
    pid >/dev/null || { log "error: exited; see $RUN_DIR/jaeger.log"; tail -20 "$RUN_DIR/jaeger.log" >&2; exit 1; }
    sleep 0.2
  done
  log "error: not ready after ${READY_TIMEOUT}s; see $RUN_DIR/jaeger.log"
  exit 1
}

down() {
  local p
  p="$(pid)" || return 0
  kill -TERM "$p" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$p" 2>/dev/null || true
  rm -f "$RUN_DIR/pid"
}

status() {
  local p
  if p="$(pid)"; then echo "jaeger running pid=$p otlp-grpc=$OTLP_GRPC_PORT otlp-http=$OTLP_HTTP_PORT query=$QUERY_PORT"
  elif [[ -x "$BIN" ]]; then echo "jaeger stopped (installed)"
  else echo "jaeger not installed"; fi
}

env_lines() {
  echo "export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$OTLP_HTTP_PORT"
  echo "export FIRSTCOME_JAEGER_QUERY_URL=http://127.0.0.1:$QUERY_PORT"
}

case "${1:-}" in
  install) install ;;
  up | start) up ;;
  down | stop) down ;;
  status) status ;;
  env) env_lines ;;
  *) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
