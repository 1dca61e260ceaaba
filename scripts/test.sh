#!/usr/bin/env bash
# Builds shelf twice (plain, and with AddressSanitizer + UBSan), warnings as
# errors, and runs the whole test suite in each; checks formatting and the
# layering rule first, and fuzzes the decoders for a bounded time last
# (scripts/fuzz.sh; SHELF_FUZZ_SECONDS per target, default 15). This is what
# CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

bash scripts/install-deps.sh --test

# Which layer includes which is enforced by the build (cmake/ShelfLayers.cmake,
# tests/layering/). Sockets are system headers every target can reach, so
# that rule stays a grep.
echo "== layering: shm/ and protocol/ know nothing of sockets"
if grep -rnE 'sys/socket|sys/un\.h' shm/ protocol/; then
  echo "test: shm/ and protocol/ must not use sockets" >&2
  exit 1
fi

echo "== format (clang-format --dry-run -Werror)"
find base shm protocol server libclient tools examples tests bench fuzz python \
     \( -name '*.h' -o -name '*.cc' \) -print0 | xargs -0 clang-format --dry-run -Werror

suite() {
  local name=$1
  shift
  echo "== build $name"
  local log
  log=$(mktemp)
  if ! { cmake -S . -B "build/$name" -DSHELF_WERROR=ON "$@" &&
         cmake --build "build/$name" -j"$jobs"; } >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
  rm -f "$log"
  echo "== test $name"
  (cd "build/$name" && ctest --output-on-failure -j"$jobs" --timeout 600)
}

suite plain
suite asan -DSHELF_SANITIZE=address,undefined -DSHELF_BUILD_BENCH=OFF
echo "== all tests passed in both builds"
bash scripts/fuzz.sh
