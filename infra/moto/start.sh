#!/usr/bin/env bash
# Starts moto server (from .venv, through infra/moto/server.py) on a free loopback
# port and prints the environment that points the AWS SDKs at it, for
# `eval "$(infra/moto/start.sh)"`. The server's pid is in the printed MOTO_PID; stop
# it with `kill $MOTO_PID`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
"$root/infra/venv.sh"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="${MOTO_LOG:-$root/target/moto.log}"
mkdir -p "$(dirname "$log")"
# moto server with DynamoDB requests one at a time (infra/moto/server.py says why).
"$root/.venv/bin/python" "$root/infra/moto/server.py" 127.0.0.1 "$port" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then
    cat <<ENV
export MOTO_PID=$pid
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_REGION=\${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=\${AWS_ACCESS_KEY_ID:-testing}
export AWS_SECRET_ACCESS_KEY=\${AWS_SECRET_ACCESS_KEY:-testing}
ENV
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  sleep 0.1
done
echo "moto server did not start on 127.0.0.1:$port; see $log" >&2
kill "$pid" 2>/dev/null || true
exit 1
