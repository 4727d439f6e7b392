#!/bin/bash
# Runs a command with a private bpffs mounted at a fresh temporary directory, exported as
# KVSTEER_TEST_BPFFS; unmounts and removes it on every exit path. Exit 77 (skip) without root;
# as root a mount that fails is exit 1.
set -u
dir=$(mktemp -d /tmp/kvsctl-bpffs.XXXXXX) || exit 1
cleanup() {
    umount "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null
    rmdir "$dir" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if ! err=$(mount -t bpf bpf "$dir" 2>&1); then
    # A skip only without root: as root (CI) a bpffs that cannot be mounted is a failure, not a
    # suite left out.
    if [[ $(id -u) != 0 ]]; then
        echo "SKIP: cannot mount a bpffs at $dir (needs root / CAP_SYS_ADMIN)"
        exit 77
    fi
    echo "FAIL: mount -t bpf bpf $dir as root: $err"
    exit 1
fi
KVSTEER_TEST_BPFFS="$dir" "$@"
