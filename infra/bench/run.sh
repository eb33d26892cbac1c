#!/usr/bin/env bash
# Reproduces every figure and plot in BENCHMARKS.md, on this machine, in one run:
#   - the model: the cores' peak, throughput per batch size and on 256-token windows,
#     start-up, memory, micro-batching, and the anchors (sentence-transformers, ONNX
#     Runtime, OpenVINO) on the same sentences and windows (docs/bench/model.json),
#     then the same with float32 products, what CPUs without AVX-512 BF16 run
#     (docs/bench/model-float32.json);
#   - a 1 MiB document end to end on the embedded backend with 1 and 2 pollers, and
#     sentence-transformers on the same chunks (docs/bench/document.json);
#   - the service on the embedded backend and on moto: responsiveness, submit
#     overhead, pipeline throughput, cost; cold starts of the cargo-lambda bootstraps
#     (docs/bench/service-*.json, docs/bench/*.png).
# The anchors (infra/bench/requirements.txt: sentence-transformers, PyTorch, ONNX
# Runtime, OpenVINO) go into target/bench-venv (about 6 GB), unless OFFPATH_ST_PYTHON
# names a Python that has them. Takes about 25 minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-target}"

infra/venv.sh
python="${OFFPATH_ST_PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ ! -x "$target/bench-venv/bin/python" ]]; then
    echo "==> installing the anchors into $target/bench-venv" >&2
    python3 -m venv "$target/bench-venv"
    "$target/bench-venv/bin/pip" install --quiet -r infra/bench/requirements.txt >&2
  fi
  python="$target/bench-venv/bin/python"
fi

PATH="$root/.venv/bin:$PATH" cargo lambda build --release --locked \
  -p offpath-api -p offpath-worker --target x86_64-unknown-linux-gnu
cargo build --release --locked -p offpath -p offpath-bench
"$target/release/offpath" model fetch >/dev/null
bench="$target/release/offpath-bench"

echo "==> bench model" >&2
"$bench" model --json docs/bench/model.json --python "$python"
echo "==> bench model, float32 products" >&2
"$bench" model --precision float32 --json docs/bench/model-float32.json \
  --python "$python"
echo "==> bench document" >&2
"$bench" document --mib 1 --pollers 1,2 --json docs/bench/document.json \
  --python "$python"
echo "==> bench fairness" >&2
"$bench" fairness --json docs/bench/fairness.json
echo "==> bench service, embedded" >&2
"$bench" service --backend embedded --out docs/bench

eval "$(infra/moto/start.sh)"
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
echo "==> bench service, moto at $AWS_ENDPOINT_URL" >&2
"$bench" service --backend aws --bootstraps "$target/lambda" --out docs/bench
