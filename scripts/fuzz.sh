#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang++, ASan and UBSan in
# build/fuzz, writes their seed corpora from the real encoders, and runs each
# target for a bounded time. Fails on the first crash, leak, sanitizer report
# or broken invariant; libFuzzer leaves the input that did it in build/fuzz/
# as crash-*/leak-*/timeout-* (reproduce: build/fuzz/fuzz/fuzz_X THAT_FILE).
#
#   scripts/fuzz.sh                  every target, SHELF_FUZZ_SECONDS each (default 15)
#   SHELF_FUZZ_SECONDS=600 scripts/fuzz.sh fuzz_protocol
#
# The corpus each run grows is kept in build/fuzz/corpus/<target>, so
# longer runs on one machine build on the earlier ones.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SHELF_FUZZ_SECONDS:-15}
jobs=$(nproc)
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(fuzz_protocol fuzz_descriptor fuzz_csv fuzz_store fuzz_cli_values)
fi

bash scripts/install-deps.sh --test

echo "== build fuzz (clang++, libFuzzer, ASan, UBSan)"
log=$(mktemp)
if ! { cmake -S . -B build/fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
         -DSHELF_BUILD_FUZZ=ON -DSHELF_BUILD_TESTS=OFF -DSHELF_BUILD_BENCH=OFF -DSHELF_WERROR=ON &&
       cmake --build build/fuzz -j"$jobs" --target make_fuzz_seeds "${targets[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"

seeds=build/fuzz/seeds
rm -rf "$seeds"
build/fuzz/fuzz/make_fuzz_seeds "$seeds"

for target in "${targets[@]}"; do
  short=${target#fuzz_}
  corpus=build/fuzz/corpus/$short
  mkdir -p "$corpus"
  echo "== fuzz $target for ${seconds}s"
  log=build/fuzz/$target.log
  # -max_len: the seeds are small; 64 KiB leaves room to grow past every
  # fixed-size part (a store script of 4 KiB is ~1000 requests already).
  # -rss_limit_mb: the decoders must never need much.
  max_len=65536
  [[ $target == fuzz_cli_values ]] && max_len=4096
  [[ $target == fuzz_store ]] && max_len=4096
  if ! (cd build/fuzz && "fuzz/$target" -max_total_time="$seconds" -max_len="$max_len" \
          -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
          "corpus/$short" "seeds/$short") >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target failed; the input is in build/fuzz (crash-*, leak-*, timeout-*)" >&2
    exit 1
  fi
  # One line of figures per target: executions, speed, coverage.
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
  echo "   $target: $execs runs, $speed/s, $cov, corpus $(ls "$corpus" | wc -l) inputs"
done
echo "== fuzzing found nothing"
