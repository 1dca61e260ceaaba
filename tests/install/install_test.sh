#!/usr/bin/env bash
# Installs this build into a temporary prefix and uses it as a user would:
# examples/ configured and built as a project of its own with
# find_package(shelf) (CMAKE_PREFIX_PATH=<prefix>), sum_column.cc compiled with
# `pkg-config --cflags --libs shelf` alone, both run against the installed
# shelfd. Everything is removed at the end, pass or fail.
#
#   install_test.sh BUILD_DIR SOURCE_DIR CXX [FLAGS]
# FLAGS: compiler and linker flags the user's program needs with this build
# (the sanitizer flags of a sanitized build, whose archives need its runtime).
set -euo pipefail
build=$1 src=$2 cxx=$3 flags=${4:-}

tmp=$(mktemp -d /tmp/shelf-install-test.XXXXXX)
prefix=$tmp/prefix
socket=$tmp/run/shelf.sock
segment=shelf-test-$$-install
cleanup() {
  if [[ -f $socket.lock ]]; then
    pid=$(cat "$socket.lock" 2>/dev/null || true)
    if [[ -n $pid ]] && kill "$pid" 2>/dev/null; then
      # shelfd holds an flock on its lock file until it is gone.
      flock "$socket.lock" true || true
    fi
  fi
  rm -f "/dev/shm/$segment"
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== install into $prefix"
cmake --install "$build" --prefix "$prefix" --component devel
cmake --install "$build" --prefix "$prefix" --component runtime
# Only <shelf/*.h> is installed: the layers' headers stay private.
headers=$(cd "$prefix/include" && find . -type f | sort | tr '\n' ' ')
echo "installed headers: $headers"
if [[ -n $(find "$prefix/include" -type f ! -path "$prefix/include/shelf/*") ]]; then
  echo "install_test: headers outside include/shelf/ were installed" >&2
  exit 1
fi

echo "== examples/ against the installed package (find_package)"
cmake -S "$src/examples" -B "$tmp/examples" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags"
found=$(sed -n 's/^shelf_DIR:PATH=//p' "$tmp/examples/CMakeCache.txt")
if [[ $found != "$prefix"/* ]]; then
  echo "install_test: find_package(shelf) found '$found', not the package in $prefix" >&2
  exit 1
fi
cmake --build "$tmp/examples" -j2

echo "== sum_column.cc with pkg-config alone"
pc=$(dirname "$(find "$prefix" -name shelf.pc)")
pkg=$(PKG_CONFIG_PATH=$pc pkg-config --cflags --libs shelf)
echo "pkg-config --cflags --libs shelf: $pkg"
# shellcheck disable=SC2086 # the flags are words
"$cxx" -std=c++20 $flags "$src/examples/sum_column.cc" $pkg -o "$tmp/sum_column_pc"

echo "== run them against the installed shelfd"
mkdir -m 700 "$tmp/run"
# Without --foreground shelfd returns once it serves.
"$prefix/bin/shelfd" --socket "$socket" --segment "$segment" --memory-limit 64MiB
export SHELF_SOCKET=$socket
out=$("$tmp/examples/quickstart")
echo "quickstart: $out"
[[ $out == "negative_accounts: 3 rows, sum(balance) = -600" ]]
printf 'name,balance\nAlice,-100\nBob,-200\n"Charlie, Jr.",-300\n' >"$tmp/accounts.csv"
"$prefix/bin/shelf" publish accounts "$tmp/accounts.csv"
for reader in "$tmp/examples/sum_column" "$tmp/sum_column_pc"; do
  out=$("$reader" accounts balance)
  echo "$(basename "$reader"): $out"
  [[ $out == *"sum(accounts.balance) = -600 over 3 rows"* ]]
done
echo "== install test passed"
