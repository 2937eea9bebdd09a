#!/bin/sh
# Run first in the image build: say what BASE_IMAGE lacks, instead of failing later in pip.
set -e
if ! command -v python3 >/dev/null 2>&1; then
  echo "fpga-serve: BASE_IMAGE has no python3; use an image with CPython 3.10-3.12" \
       "(e.g. python:3.11-slim-bookworm, or Debian with python3 and python3-venv)" >&2
  exit 1
fi
python3 -c 'import sys
v = sys.version_info[:2]
if not (3, 10) <= v < (3, 13):
    sys.exit("fpga-serve: BASE_IMAGE has Python %d.%d; fpga-serve needs 3.10-3.12 "
             "(TensorFlow 2.20, numpy<2 and pynq 4.0 wheels)" % v)'
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  echo "fpga-serve: BASE_IMAGE's python3 has no venv/ensurepip module" \
       "(Debian and Ubuntu: install python3-venv)" >&2
  exit 1
fi
# The numeric user the image runs as, with a name for tools that look one up.
echo "fpga:x:10001:10001:fpga-serve:/tmp:/usr/sbin/nologin" >> /etc/passwd
echo "fpga:x:10001:" >> /etc/group
