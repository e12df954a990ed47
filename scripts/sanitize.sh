#!/usr/bin/env bash
# The sanitizer passes of .ci/run (after scripts/test.sh). Exit status 0 = all passed.
#   scripts/sanitize.sh            # both passes
#   scripts/sanitize.sh asan|tsan  # one
# asan: every ctest test against an AddressSanitizer + UndefinedBehaviorSanitizer build in
#       build-asan/ (-DKITEQ_SANITIZE=ON).
# tsan: the tests of the threaded parts against a ThreadSanitizer build in build-tsan/
#       (-DKITEQ_TSAN=ON; TSan and ASan cannot share a build).
# A pass fails on a failed test and on any sanitizer report, in a broker's log or in a test's
# own output.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/test-dirs.sh

# Reports go to stderr (no log_path): the tests send a broker's stderr to its log
# (kiteq-test-*/broker.log, kiteq-run.out), so a report sits next to the lines that led to it.
# ASan stops a process at its first error (it cannot go on); LeakSanitizer reports when a
# process exits (a broker stopped by SIGTERM then exits 23, which the tests check).
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1
# UBSan and TSan go on after a report, so that one run lists every finding: the scan below,
# not the process, fails the run (TSan also makes a process with a report exit 66).
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=0
export TSAN_OPTIONS=halt_on_error=0:second_deadlock_stack=1
REPORTS='runtime error:|ERROR: AddressSanitizer|ERROR: LeakSanitizer|WARNING: ThreadSanitizer'

# The ThreadSanitizer pass runs only the tests that exercise threads (the rest of the broker
# is one libuv loop): the mailbox of core (test_mailbox), the file store's writer (test_store_file, test_crash), the MySQL pool
# (test_store_mysql), the ZooKeeper workers of the registry and of the cluster client
# (test_zk_registry, test_zk_broker, test_zk_client), reloads built on libuv's threadpool
# (test_offloop, test_reload), the client's reader thread (test_client, test_client_embed) and
# logging from threads (test_log). Left out to keep .ci/run within its 20 minutes on 2 cores
# (docs/TESTING.md has the times): the whole single-threaded rest, and the two slowest tests
# whose threads the list already covers, test_mysql_broker (45 s: the same pool, in a broker)
# and test_reliability (25 s: the same client reader thread, reconnecting).
TSAN_TESTS=(test_mailbox test_store_file test_crash test_store_mysql test_zk_registry test_zk_broker
            test_zk_client test_offloop test_reload test_client test_client_embed test_log)
TSAN_PROGRAMS=(kiteq kiteq-cli) # what those tests start

# Prints every file with a report (and the report's first lines); 1 when there was one.
# Files: those at the top of the tests' directories made since marker (brokers' logs), and
# ctest's record of every test's output (a UBSan report does not fail the test that hit it).
scan_reports() {
    local marker=$1 build=$2 found=0 f
    while IFS= read -r -d '' f; do
        grep -a -q -E "$REPORTS" "$f" || continue
        echo "sanitize.sh: sanitizer report in $f:" >&2
        grep -a -E -A14 "$REPORTS" "$f" | head -n 60 >&2
        found=1
    done < <(test_dirs_since "$marker" -print0 | xargs -0 -r -I{} find {} -maxdepth 1 -type f -print0
             printf '%s\0' "$build/Testing/Temporary/LastTest.log")
    return $found
}

# run_pass BUILD_DIR "CMAKE FLAGS" "BUILD TARGETS" [CTEST ARGS...]
run_pass() {
    local build=$1 flags=$2 targets=$3 status=0 marker start=$SECONDS
    shift 3
    echo "sanitize.sh: building $build ($flags)"
    # (set -e does not reach into a function called with ||: a failed build must not let
    # ctest run the binaries of an older one)
    # -O1: with ASan + UBSan, -O2 takes twice the compile time for little (measured: 5 large
    # files 9.9 s of CPU at -O2, 5.9 s at -O1); -O1 is what the sanitizers' docs suggest.
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g -DNDEBUG" $flags >/dev/null || return 1
    cmake --build "$build" -j"$(nproc)" ${targets:+--target $targets} >/dev/null || return 1
    echo "sanitize.sh: $build built in $((SECONDS - start)) s"
    marker=$(mktemp /tmp/kiteq-test-run.XXXXXX)
    (cd "$build" && ctest -j"$(nproc)" --output-on-failure --timeout 300 "$@") || status=1
    scan_reports "$marker" "$build" || status=1
    if [ $status = 0 ]; then
        remove_test_dirs_since "$marker"
    else
        echo "sanitize.sh: $build failed; the tests' directories are kept in /tmp (kiteq-test-*, kq-*)" >&2
    fi
    rm -f "$marker"
    return $status
}

passes=("$@")
[ ${#passes[@]} -gt 0 ] || passes=(asan tsan)
status=0
for pass in "${passes[@]}"; do
    start=$SECONDS
    case $pass in
    asan) run_pass build-asan "-DKITEQ_SANITIZE=ON -DKITEQ_TSAN=OFF" "" || status=1 ;;
    tsan) run_pass build-tsan "-DKITEQ_TSAN=ON -DKITEQ_SANITIZE=OFF" \
              "${TSAN_TESTS[*]} ${TSAN_PROGRAMS[*]}" \
              -R "^($(IFS='|'; echo "${TSAN_TESTS[*]}"))\$" || status=1 ;;
    *) echo "usage: scripts/sanitize.sh [asan|tsan]..." >&2; exit 2 ;;
    esac
    echo "sanitize.sh: $pass pass took $((SECONDS - start)) s"
done
exit $status
