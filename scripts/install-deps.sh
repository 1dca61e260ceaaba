#!/usr/bin/env bash
# Installs the Debian packages shelf needs to build and test. Idempotent: it
# calls apt-get only when something is missing. Needs root (there is no sudo
# on a bare machine).
#   scripts/install-deps.sh          build dependencies
#   scripts/install-deps.sh --test   and what the tests and CI checks need
set -euo pipefail

# The Python package builds against Debian's python3 and its numpy/pandas.
packages=(build-essential cmake pkg-config libboost-dev libboost-program-options-dev
          libxxhash-dev libcsv-dev python3-dev pybind11-dev python3-numpy python3-pandas)
# zlib, libzstd: gzip and zstd CSV inputs of `shelf publish` (tools/csv_source.cc).
packages+=(zlib1g-dev libzstd-dev)
if [[ ${1:-} == --test ]]; then
  # clang: the fuzzers; dask/distributed: the Dask tests and bench/python_bench.py.
  packages+=(libgtest-dev libgmock-dev clang-format clang libclang-rt-14-dev python3-pytest
             python3-dask python3-distributed)
  # prometheus-client: its parser reads shelfd's /metrics in python/tests/test_metrics.py.
  packages+=(python3-prometheus-client)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if ((EUID != 0)); then
  echo "install-deps: missing Debian packages: ${missing[*]}" >&2
  echo "install-deps: run as root: apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
