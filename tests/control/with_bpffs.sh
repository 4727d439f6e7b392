#!/bin/bash
# Runs a command with a private bpffs mounted at a fresh temporary directory, exported as
# KVSTEER_TEST_BPFFS; unmounts and removes it on every exit path. Exit 77 (skip) without root.
set -u
dir=$(mktemp -d /tmp/kvsctl-bpffs.XXXXXX) || exit 1
cleanup() {
    umount "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null
    rmdir "$dir" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if ! mount -t bpf bpf "$dir" 2>/dev/null; then
    echo "SKIP: cannot mount a bpffs at $dir (needs root / CAP_SYS_ADMIN)"
    exit 77
fi
KVSTEER_TEST_BPFFS="$dir" "$@"
