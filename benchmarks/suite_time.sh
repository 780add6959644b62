#!/usr/bin/env bash
# The full test suite of several commits, one after the other, each from a clean clone with its own
# `.ci/run` install, each time also as a ratio to the first one measured: run side by side, the machine's
# speed, which swings from hour to hour on shared machines, divides out.
#   bash benchmarks/suite_time.sh 6815dce HEAD   # the suite when its time target was set, then today
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash benchmarks/suite_time.sh COMMIT COMMIT [COMMIT...]  (times are given relative to the first)" >&2
  exit 2
fi
repo="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
work="$(mktemp -d)"
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores;" \
     "$(grep -o -w -E 'avx512[a-z0-9_]*|amx_[a-z0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
first=""
for index in $(seq 1 $#); do
  commit="$(git -C "$repo" rev-parse --short "${!index}")"
  clone="$work/$index-$commit"
  git clone -q "$repo" "$clone" && git -C "$clone" checkout -q "$commit"
  started="$(date -u +%T)"
  (cd "$clone" && CI=true bash .ci/run > "$clone.log" 2>&1) || true  # a failing test still gives a time
  summary="$({ grep -E '^=+ .* in [0-9.]+s' "$clone.log" || true; } | tail -1 | sed -E 's/^=+ //; s/ \(.*//')"
  if [ -z "$summary" ]; then
    echo "$commit (started $started UTC): no pytest summary, see $clone.log"
    continue
  fi
  seconds="$(sed -E 's/.* in ([0-9.]+)s$/\1/' <<< "$summary")"
  first="${first:-$seconds}"
  echo "$commit (started $started UTC): $summary; ratio to the first $(python3 -c "print(f'{$seconds / $first:.3f}')")"
done
echo "clones and logs: $work (each clone holds its .ci/run install; remove the folder when done)"
