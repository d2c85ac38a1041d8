#!/usr/bin/env bash
# Make QEMU's user-mode emulator available, then run a command:  .ci/qemu.sh make test
#
# tests/runtime/test_cpu.py runs onnxruntime under `qemu-x86_64 -cpu Haswell` (AVX2, no
# AVX-512, no VNNI) so the suite checks both integer paths whichever CPU CI has. QEMU comes
# from the system packages (Debian's qemu-user), installed with apt-get when missing (as
# root or through passwordless sudo). When it cannot be installed the command still runs:
# the emulated tests then skip locally and fail under CI=1. The command's exit code is this
# script's exit code.
set -uo pipefail

note() { echo "qemu.sh: $*" >&2; }

install_qemu() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
            note "qemu-user is not installed and this user cannot install it (not root, no passwordless sudo)"
            return 1
        fi
        sudo=(sudo -n)
    fi
    if ! command -v apt-get >/dev/null; then
        note "qemu-user is not installed and apt-get is not available to install it"
        return 1
    fi
    note "installing QEMU user-mode emulation (apt-get install -y qemu-user)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends qemu-user >/dev/null
}

if [[ $(uname -m) == x86_64 ]] && ! command -v qemu-x86_64 >/dev/null; then
    install_qemu || note "continuing without qemu-x86_64"
fi
exec "$@"
