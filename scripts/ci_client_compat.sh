#!/usr/bin/env bash
# CI (called by .ci/run): the thin client installs beside tensorflow-serving-api 2.x and
# TensorFlow, and works on what they bring (protobuf 6, numpy 2, a newer grpcio).
# 1. pip resolves ./client with tensorflow-serving-api and tensorflow of the same release
#    (--dry-run: metadata only, nothing of TensorFlow's ~600 MB is installed).
# 2. A venv with ./client on the protobuf/grpcio/numpy releases that resolution chose runs the
#    client's own tests (fakes on loopback; no server, no TensorFlow).
set -euo pipefail
cd "$(dirname "$0")/.."
TFS=${TFS_VERSION:-2.21.0}
VENV=${CLIENT_COMPAT_VENV:-/var/tmp/fpga-serve-client-compat}
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q --dry-run --ignore-installed --report "$VENV/report.json" \
  ./client "tensorflow-serving-api==$TFS" "tensorflow==$TFS"
pins=$("$VENV/bin/python" - "$VENV/report.json" <<'PY'
import json, sys
chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"]
          for i in json.load(open(sys.argv[1]))["install"]}
print(" ".join(f"{n}=={chosen[n]}" for n in ("protobuf", "grpcio", "grpcio-health-checking", "numpy")))
PY
)
echo "client compat: ./client resolves beside tensorflow-serving-api $TFS and tensorflow $TFS ($pins)"
"$VENV/bin/pip" install -q ./client $pins pytest pytest-timeout
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/client/test_client.py tests/client/test_convert.py
