#!/usr/bin/env bash
# Builds shelf twice (plain, and with AddressSanitizer + UBSan), warnings as
# errors, and runs the whole test suite in each; then a ThreadSanitizer build
# of the unit and client tests only. Checks formatting and the socket rule
# first (the other layering rules are ctest tests, `ctest -L layering`), and
# fuzzes the decoders for a bounded time last (scripts/fuzz.sh;
# SHELF_FUZZ_SECONDS per target, default 15). This is what CI runs (.ci/run).
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

# suite NAME [CMAKE_ARGS...]: configures and builds build/NAME, runs ctest
# there. $targets (default: all) is what is built, $ctest_args (default:
# every test) what is run.
suite() {
  local name=$1
  shift
  echo "== build $name"
  local log start=$SECONDS
  log=$(mktemp)
  local build_args=()
  if [[ -n ${targets:-} ]]; then
    # shellcheck disable=SC2206 # a list of target names
    build_args=(--target $targets)
  fi
  if ! { cmake -S . -B "build/$name" -DSHELF_WERROR=ON "$@" &&
         cmake --build "build/$name" -j"$jobs" "${build_args[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
  rm -f "$log"
  echo "== build $name took $((SECONDS - start)) s"
  echo "== test $name"
  start=$SECONDS
  # shellcheck disable=SC2086 # a list of ctest arguments
  (cd "build/$name" && ctest --output-on-failure -j"$jobs" --timeout 600 ${ctest_args:-})
  echo "== test $name took $((SECONDS - start)) s"
}

suite plain
suite asan -DSHELF_SANITIZE=address,undefined -DSHELF_BUILD_BENCH=OFF
echo "== all tests passed in both builds"

# ThreadSanitizer: the client has threads (Dataset::prefault, leases released
# from other threads than the one that took them); the daemon's only other
# thread is the metrics server, which shares a mutex-guarded snapshot and two
# eventfds with the event loop (server/metrics_server.h). Only
# the test binaries it runs are built (no Python, no bench, no CLI tests), to
# keep CI short: the unit tests and the client tests (labels unit, client:
# tests/unit, tests/integration; the torture, stress, CLI and Python suites run
# in the two builds above). Their forked children and setpriv'ed CLIs run
# under TSan too. handle_segv=0: the death tests expect a plain SIGSEGV from
# writes into read-only mappings, not TSan's report of it. Left out:
TSAN_EXCLUDE=(
  # It counts the page faults of a scan after prefault(); TSan's shadow
  # memory faults on first touch too, so the count measures TSan. prefault()
  # itself runs in it, under TSan, before the count.
  'PrefaultTest\.MapsThePagesSoTheFirstScanDoesNotFault'
)
export TSAN_OPTIONS=handle_segv=0
targets="shelf_unit_tests shelf_integration_tests shelf_client_tests" \
ctest_args="-L ^(unit|client)$ -E $(IFS='|'; echo "${TSAN_EXCLUDE[*]}")" \
  suite tsan -DSHELF_SANITIZE=thread -DSHELF_BUILD_BENCH=OFF -DSHELF_BUILD_PYTHON=OFF
unset TSAN_OPTIONS
echo "== the TSan subset passed"
bash scripts/fuzz.sh
