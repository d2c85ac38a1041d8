#!/usr/bin/env bash
# Make a headless Chromium available, then run a command:  .ci/chromium.sh make test
#
# tests/report/test_report_browser.py opens a search's report.html in headless Chromium and
# checks that its plots and its table render. Chromium comes from the system packages
# (Debian's `chromium`, Ubuntu's `chromium-browser`), installed with apt-get when missing (as
# root or through passwordless sudo); running it again installs nothing. When it cannot be
# installed the command still runs: the browser test then skips locally and fails under CI=1
# (it names this script). The command's exit code is this script's exit code.
# ONNXOPT_CHROMIUM set (a path): that browser is used, nothing is installed.
set -uo pipefail

note() { echo "chromium.sh: $*" >&2; }

find_chromium() {
    local name
    for name in chromium chromium-browser google-chrome-stable google-chrome; do
        command -v "$name" >/dev/null && { command -v "$name"; return 0; }
    done
    return 1
}

install_chromium() {
    local sudo=() package
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
            note "Chromium is not installed and this user cannot install it (not root, no passwordless sudo)"
            return 1
        fi
        sudo=(sudo -n)
    fi
    if ! command -v apt-get >/dev/null; then
        note "Chromium is not installed and apt-get is not available to install it"
        return 1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || return 1
    # Debian names the package chromium; Ubuntu's chromium-browser (a snap shim on recent ones)
    for package in chromium chromium-browser; do
        if apt-cache show "$package" >/dev/null 2>&1; then
            note "installing Chromium (apt-get install -y $package)"
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends "$package" fonts-dejavu-core \
                >/dev/null && return 0
        fi
    done
    note "no chromium package could be installed with apt-get"
    return 1
}

if [[ -n "${ONNXOPT_CHROMIUM:-}" ]]; then
    note "using $ONNXOPT_CHROMIUM (ONNXOPT_CHROMIUM)"
elif ! find_chromium >/dev/null; then
    if install_chromium && browser=$(find_chromium); then
        export ONNXOPT_CHROMIUM=$browser
    else
        note "continuing without Chromium"
    fi
else
    export ONNXOPT_CHROMIUM=$(find_chromium)
fi
exec "$@"
