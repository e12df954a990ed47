# Sourced by scripts/test.sh and scripts/sanitize.sh. The tests make their directories and
# files in /tmp: brokers' logs (kiteq-test-*/broker.log, kiteq-run.out), data, ZooKeeper and
# MariaDB instances. They are kept for a post-mortem when a run fails.

# test_dirs_since MARKER [FIND-ACTION...]: the ones made after MARKER (a file made when the
# run started); printed, or given to the find action.
test_dirs_since() {
    find /tmp -maxdepth 1 -newer "$1" \( -name 'kiteq-test-*' -o -name 'kq-*' \
        -o -name 'kqzk.*' -o -name 'kqmb.*' -o -name 'kqmy.*' -o -name 'kiteq-full-*' \) \
        "${@:2}"
}

# remove_test_dirs_since MARKER: after a green run.
remove_test_dirs_since() {
    test_dirs_since "$1" -exec rm -rf {} + 2>/dev/null || true
}
