#!/usr/bin/env bash
# Start a throwaway local redis-server when nothing answers on the port.
set -euo pipefail
port="${1:-6379}"
if redis-cli -p "$port" ping >/dev/null 2>&1; then exit 0; fi
if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null
  else
    echo "redis-server is not installed and nothing answers on 127.0.0.1:$port" >&2; exit 1
  fi
fi
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no >/dev/null
for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "redis-server did not answer on 127.0.0.1:$port" >&2; exit 1
