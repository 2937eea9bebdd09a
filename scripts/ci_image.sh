#!/usr/bin/env bash
# CI for the image (called by .ci/run): build docker/Dockerfile and run it as an operator would
# (tests/deploy/test_image.py: read-only root, numeric user, health SERVING, a JPEG scored through the
# thin client, /metrics with and without the key, SIGTERM -> exit 0, bad bases refused).
#
# 1. Docker's engine from Debian's packages (docker.io) when dockerd is missing.
# 2. A private dockerd of its own (own socket, data root and exec root under $STATE; no default
#    bridge, no iptables rules): builds and containers use the host's network, so every test
#    connection stays on loopback and nothing of another engine on this machine is touched.
# 3. The base image: BASE_IMAGE if pullable, else Debian bookworm (its Python 3.11) made with
#    debootstrap from the host's apt mirror and `docker import`ed. Where the host trusts extra
#    CAs (a TLS-inspecting proxy), the made base gets the host's bundle so pip can verify.
# 4. `docker build`, timed; then pytest -m image.
# Skips, loudly and with exit 0, only when no engine can be installed or started here.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${FPGA_SERVE_CI_DOCKER_DIR:-/var/tmp/fpga-serve-ci-docker}
IMAGE=${FPGA_SERVE_TEST_IMAGE:-fpga-serve:ci}
PUBLIC_BASE=${BASE_IMAGE:-python:3.11-slim-bookworm}
MADE_BASE=fpga-serve-base:bookworm-gomp  # renamed when its package list changes
SUITE=bookworm

skip() {
  printf '\n%s\n' "################################################################"
  printf '%s\n' "## IMAGE TESTS SKIPPED: $*" "## (the Docker image was NOT built or run)"
  printf '%s\n\n' "################################################################"
  exit 0
}

# 1. The engine.
if ! command -v dockerd >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io) \
    >/dev/null 2>&1 || skip "could not install docker.io from Debian's packages"
fi
command -v debootstrap >/dev/null 2>&1 \
  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap) \
     >/dev/null 2>&1 || echo "warning: could not install debootstrap"

# 2. A private daemon, stopped when this script ends.
mkdir -p "$STATE"
export DOCKER_HOST="unix://$STATE/docker.sock"
export DOCKER_BUILDKIT=0  # Debian's engine without buildx: the classic builder, same Dockerfile
dockerd_pid=""
cleanup() {
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
  fi
}
trap cleanup EXIT
if ! docker version >/dev/null 2>&1; then
  dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
    -H "$DOCKER_HOST" --bridge=none --iptables=false --ip6tables=false \
    >"$STATE/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 60); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 1
  done
  if ! docker version >/dev/null 2>&1; then
    tail -n 20 "$STATE/dockerd.log" || true
    dockerd_pid=""
    skip "dockerd did not start on this machine (log above)"
  fi
fi
echo "image CI: engine $(docker version --format '{{.Server.Version}}') at $DOCKER_HOST"

# 3. The base image.
mirror() {  # the host's Debian mirror (deb822 or one-line sources), else debootstrap's default
  sed -n 's/^URIs: *\([^ ]*\).*/\1/p; s/^deb  *\(\[[^]]*\] *\)\{0,1\}\([^ ]*\) .*/\2/p' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -v -e security -e '^$' | head -n 1
}
base=""
if timeout 60 docker pull -q "$PUBLIC_BASE" >/dev/null 2>&1; then
  base=$PUBLIC_BASE
elif docker image inspect "$MADE_BASE" >/dev/null 2>&1; then
  base=$MADE_BASE
else
  echo "image CI: cannot pull $PUBLIC_BASE; making $MADE_BASE with debootstrap"
  start=$SECONDS
  rootfs="$STATE/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 \
    "$SUITE" "$rootfs" $(mirror) >"$STATE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$STATE/debootstrap.log"; echo "debootstrap failed" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  env_args=(-c "ENV LANG=C.UTF-8")
  if ! cmp -s /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"; then
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    env_args+=(-c "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt")
  fi
  tar -C "$rootfs" -c . | docker import "${env_args[@]}" - "$MADE_BASE" >/dev/null
  rm -rf "$rootfs"
  base=$MADE_BASE
  echo "image CI: base made in $((SECONDS - start)) s"
fi

# 4. Build (timed), then the tests.
start=$SECONDS
docker build -q --network host --build-arg "BASE_IMAGE=$base" -f docker/Dockerfile -t "$IMAGE" . \
  >"$STATE/build.log" 2>&1 || { tail -n 40 "$STATE/build.log"; echo "image build failed" >&2; exit 1; }
echo "image CI: built $IMAGE FROM $base in $((SECONDS - start)) s" \
  "($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}'))"
FPGA_SERVE_TEST_IMAGE=$IMAGE FPGA_SERVE_TEST_BASE=$base \
  .venv/bin/python -m pytest -q -m image tests/deploy/test_image.py
