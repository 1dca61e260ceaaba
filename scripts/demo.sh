#!/usr/bin/env bash
# The demo: build shelf, start shelfd, publish generated `accounts` CSV files
# from one process, then list, show and sum them from others (C++ and
# Python; the Python package is installed for /usr/bin/python3), publish
# Dask's example, the negative accounts, filtered while loading, and a view of
# them, which costs no data. Leaves nothing running and nothing in /dev/shm.
#   scripts/demo.sh [ROWS_PER_FILE]      (default 200000, three files)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-200000}

bash scripts/install-deps.sh
echo "== build (Release)"
log=$(mktemp)
if ! { cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DSHELF_BUILD_TESTS=OFF \
         -DSHELF_BUILD_BENCH=OFF && cmake --build build/release -j"$(nproc)"; } >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
rm -f "$log"
bin=build/release
# `import shelf` for Debian's /usr/bin/python3, without PYTHONPATH.
cmake --install build/release --component python >/dev/null

work=$(mktemp -d /tmp/shelf-demo.XXXXXX)
export SHELF_SOCKET=$work/shelf.sock
cleanup() {
  if [[ -f $SHELF_SOCKET.lock ]]; then
    pid=$(cat "$SHELF_SOCKET.lock" 2>/dev/null || true)
    [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
    # flock returns once the daemon is gone (the kernel drops its lock then).
    flock "$SHELF_SOCKET.lock" true 2>/dev/null || true
  fi
  # A stopped shelfd keeps its segment (and datasets) for the next one; the
  # demo's is not wanted after the demo.
  rm -f "/dev/shm/shelf-demo-$$"
  rm -rf "$work"
}
trap cleanup EXIT

echo "== start shelfd"
"$bin/server/shelfd" --memory-limit 512MiB --segment "shelf-demo-$$"

echo "== generate accounts-1..3.csv ($rows rows each: name,balance)"
for i in 1 2 3; do
  awk -v n="$rows" -v seed="$i" 'BEGIN {
    split("Alice Bob Charlie Dennis Edith Frank Grace Heidi Ivan Judy", names, " ");
    print "name,balance";
    for (r = 0; r < n; r++) {
      b = ((r * 7919 + seed * 104729) % 2001) - 1000;   # -1000..1000, reproducible
      printf "%s,%d\n", names[(r + seed) % 10 + 1], b;
    }
  }' >"$work/accounts-$i.csv"
done
expected=$(awk -F, 'FNR > 1 { s += $2 } END { printf "%d", s }' "$work"/accounts-*.csv)

echo "== publish (process 1): shelf publish accounts accounts-*.csv"
"$bin/tools/shelf" publish accounts "$work"/accounts-*.csv

echo "== list (process 2): shelf list"
"$bin/tools/shelf" list
echo "== head (process 3): shelf head accounts"
"$bin/tools/shelf" head accounts
echo "== sum the balance (process 4, C++ API, zero-copy): sum_column accounts balance"
out=$("$bin/examples/sum_column" accounts balance)
echo "$out"
got=$(sed -E 's/^sum\(accounts.balance\) = (-?[0-9]+) .*/\1/' <<<"$out")
if [[ $got != "$expected" ]]; then
  echo "demo: FAILED: sum is $got, the CSV files add up to $expected" >&2
  exit 1
fi
echo "   matches the sum of the CSV files ($expected)"
echo "== read it from Python (process 5): pandas, zero-copy numpy"
out=$(/usr/bin/python3 - <<'PY'
import shelf
client = shelf.Client()
print(client.list_datasets())
ds = client.get_dataset('accounts')
print(ds.head())
# One partition per CSV file; each column of each is a numpy view on shared memory.
total = sum(int(ds.column('balance', partition=p).sum()) for p in range(ds.npartitions))
print(f"rows {len(ds)}, partitions {ds.npartitions}, sum {total}")
PY
)
echo "$out"
if [[ $(tail -1 <<<"$out") != "rows $((rows * 3)), partitions 3, sum $expected" ]]; then
  echo "demo: FAILED: Python read back something else (expected sum $expected)" >&2
  exit 1
fi
echo "== Dask's example (process 6): the accounts with a negative balance, filtered while loading"
echo "   shelf publish negative_accounts accounts-*.csv --where 'balance < 0'"
"$bin/tools/shelf" publish negative_accounts "$work"/accounts-*.csv --where 'balance < 0'
"$bin/tools/shelf" head negative_accounts -n 3
negative=$(awk -F, 'FNR > 1 && $2 < 0 { s += $2 } END { printf "%d", s }' "$work"/accounts-*.csv)
out=$("$bin/examples/sum_column" negative_accounts balance)
echo "$out"
got=$(sed -E 's/^sum\(negative_accounts.balance\) = (-?[0-9]+) .*/\1/' <<<"$out")
if [[ $got != "$negative" ]]; then
  echo "demo: FAILED: negative_accounts sums to $got, the negative balances to $negative" >&2
  exit 1
fi
echo "   matches the sum of the negative balances in the CSV files ($negative)"
echo "== a view of it (process 7): a definition only, evaluated by each reader"
echo "   shelf publish-view big_debts --from negative_accounts --where 'balance < -900' --columns name,balance"
"$bin/tools/shelf" publish-view big_debts --from negative_accounts --where 'balance < -900' \
  --columns name,balance
"$bin/tools/shelf" head big_debts -n 3
big=$(awk -F, 'FNR > 1 && $2 < -900 { n += 1 } END { printf "%d", n }' "$work"/accounts-*.csv)
out=$("$bin/examples/sum_column" big_debts balance)
echo "$out"
rows=$(sed -E 's/.* over ([0-9]+) rows .*/\1/' <<<"$out")
if [[ $rows != "$big" ]]; then
  echo "demo: FAILED: big_debts has $rows rows, the CSV files $big below -900" >&2
  exit 1
fi
echo "   matches the rows of the CSV files below -900 ($big)"
echo "== list (process 8): negative_accounts, and big_debts marked as a view"
listing=$("$bin/tools/shelf" list)
echo "$listing"
if ! grep -q "^negative_accounts " <<<"$listing" || ! grep -q "view of 'negative_accounts'" <<<"$listing"; then
  echo "demo: FAILED: shelf list does not show negative_accounts and the view big_debts" >&2
  exit 1
fi
echo "== status: the view takes a page for its definition, no data"
"$bin/tools/shelf" status
echo "== demo OK"
