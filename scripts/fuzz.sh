#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan + UBSan) into build-fuzz/ and run each for SECONDS
# (default 60), one after the other, starting from tests/fuzz/corpus/<target>.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 30 frame admin
# New inputs found go to build-fuzz/corpus/<target> (the committed corpus is not touched). A
# crash, leak, UB, failed check or hang keeps its input as build-fuzz/findings/<target>/crash-*
# (or leak-*, timeout-*) and makes the script exit 1 after the remaining targets ran. To keep
# a finding as a regression test, fix it and copy the file into tests/fuzz/corpus/<target>/
# (ctest fuzz_corpus_<target> replays it in every build). Details: docs/TESTING.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
case $secs in '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;; esac
build=build-fuzz
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in tests/fuzz/fuzz_*.c; do
    n=${f##*/fuzz_}
    targets+=("${n%.c}")
  done
fi

cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKITEQ_FUZZ=ON -DKITEQ_WERROR=ON >/dev/null # clang's warnings fail CI too
cmake --build "$build" -j"$(nproc)" --target "${targets[@]/#/fuzz_}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${targets[@]}"; do
  corpus=$build/corpus/$t findings=$build/findings/$t
  mkdir -p "$corpus" "$findings"
  echo "== fuzz_$t for ${secs}s"
  # -timeout: an input taking over 25 s is a hang (the admin server gives up after 10 s);
  # -rss_limit_mb: the file store scan buffer and LuaJIT under ASan need some room.
  if "$build/fuzz_$t" -max_total_time="$secs" -timeout=25 -rss_limit_mb=4096 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$findings/" \
      "$corpus" "tests/fuzz/corpus/$t" >"$build/fuzz_$t.log" 2>&1; then
    echo "   ok: $(grep -E '^stat::number_of_executed_units' "$build/fuzz_$t.log" | awk '{print $2}') runs, no finding"
  else
    echo "   FINDING: $(ls "$findings" | head -3 | tr '\n' ' ')(log: $build/fuzz_$t.log)"
    tail -40 "$build/fuzz_$t.log"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "findings in: ${failed[*]}" >&2
  exit 1
fi
