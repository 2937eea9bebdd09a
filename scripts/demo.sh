#!/usr/bin/env bash
# The main job on a fresh machine: set up, build ResNet-50 for the FPGA overlay, serve it on the
# bit-exact twin (the default when no board is present), score a real JPEG, print the top 5.
# Environment: SIZE (input size, default 224), PORT (default 8500), IMAGE (default: a photo
# scikit-learn ships), WEIGHTS (a Keras resnet50 *_notop.h5; without it weights are random).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
SIZE=${SIZE:-224}
PORT=${PORT:-8500}
IMAGE=${IMAGE:-$(.venv/bin/python -c "import sklearn.datasets, os; print(os.path.join(os.path.dirname(sklearn.datasets.__file__), 'images', 'china.jpg'))")}
mkdir -p out
args=(build resnet50 --size "$SIZE" -o "out/resnet50_${SIZE}.zip")
[ -n "${WEIGHTS:-}" ] && args+=(--weights "$WEIGHTS")
.venv/bin/fpga-serve "${args[@]}"
.venv/bin/fpga-serve inspect "out/resnet50_${SIZE}.zip" | tail -n 3
.venv/bin/fpga-serve serve "out/resnet50_${SIZE}.zip" --port "$PORT" --metrics-port -1 \
  > out/server.log 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if .venv/bin/fpga-serve-client health --address "127.0.0.1:$PORT" >/dev/null 2>&1; then break; fi
  if ! kill -0 $server 2>/dev/null; then cat out/server.log; exit 1; fi
  sleep 1
done
echo "scoring $IMAGE on the twin:"
.venv/bin/fpga-serve-client score "$IMAGE" --address "127.0.0.1:$PORT" --top 5
