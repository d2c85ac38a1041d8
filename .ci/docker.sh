#!/usr/bin/env bash
# Builds the Docker image and runs it for real (.ci/run calls it after the test suite):
#   1. a Docker engine: the running one, else a private dockerd started here (Debian's
#      docker.io, installed with apt-get when missing) with its own data root (in a tmpfs
#      when memory allows: deleting GBs of layers on this disk takes minutes), socket and
#      containerd namespace, no bridge and no iptables rules (every container here uses the
#      host's loopback or no network at all), overlay2 or, where that fails, vfs on disk;
#   2. the base image: the Dockerfile's default (python:3.11-slim) when a registry gives it,
#      else Debian bookworm from debootstrap (minbase, python3, python3-venv, python3-pip) with
#      a venv first on PATH, imported with `docker import`; either way plus the host's CA
#      bundle (PIP_CERT), which a TLS-inspecting proxy needs;
#   3. `docker build` of the Dockerfile on that base, torch's CPU wheel taken from the host
#      (`pip download torch==PIN --no-deps` into docker/wheels/), the rest from PyPI;
#   4. checks: a non-root user, `onnxopt` as the entry point, torch CPU-only; a 5-trial
#      search in a container (no network) on a run directory mounted from the host, its files
#      checked on the host (owner, modes, onnx.checker, onnxruntime); the compose file's
#      distributed search: PostgreSQL (postgres:16 when it can be pulled, else Debian's
#      package on the same base: docker/postgres) and two worker containers on one study on
#      127.0.0.1:<free port>, which must end with exactly n_trials, no point twice, trials
#      from both workers, and `onnxopt status` in a container saying so.
# Exits non-zero on any failure (the failing step's log is printed). Whatever happens, it
# removes the containers, volumes and images it made, stops the daemon it started and deletes
# its work folder (/var/tmp/onnxopt-docker.*; leftovers of a killed run are removed at the
# next start). Every docker command runs under a timeout.
#
# Environment: ONNXOPT_CI_DOCKER=0 skips everything; ONNXOPT_DOCKER_DAEMON=private starts a
# private dockerd even when one runs; ONNXOPT_DOCKER_BASE=IMAGE uses that base image as is;
# ONNXOPT_DOCKER_TMPFS=0 keeps the images on disk (ONNXOPT_DOCKER_TMPFS_GB: its size, 10);
# ONNXOPT_DOCKER_LOGS=DIR keeps every step's log there; ONNXOPT_DEBIAN_MIRROR (default
# http://deb.debian.org/debian); PYTHON (host checks, default python3).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
RUN_ID="$(date +%Y%m%d%H%M%S)-$$"
LABEL="onnxopt.ci.run=$RUN_ID"
WORK_PREFIX=/var/tmp/onnxopt-docker.
WORK=""
LOGS=""
STORE=""           # images and rootfs: a tmpfs in WORK/mem when memory allows, else WORK/disk
PG_BUILD_PID=""    # the PostgreSQL image's build, in the background
CHILD_PID=""       # the command run() waits for
OWN_DAEMON=0
DOCKERD_PID=""
DOCKERD_KEY=""     # /etc/docker/key.json when our dockerd created it (it writes it there)
SHIM_DIR=""        # /run/containerd when our containerd created it (its shims' sockets)
COMPOSE=()
COMPOSE_UP=0
BUILT_IMAGES=()    # removed at the end (a private daemon's are removed with its data root)
ADDED_WHEELS=()    # wheels this run put into docker/wheels/
STEP_NAMES=()
STEP_TIMES=()
STEP_NAME=""
STEP_START=0
IMAGE_USER_UID=10001

export DOCKER_BUILDKIT=0          # the classic builder: no buildx, no registry look-ups
export COMPOSE_DOCKER_CLI_BUILD=0
export PYTHONDONTWRITEBYTECODE=1

elapsed() { printf '%d:%02d' $((SECONDS / 60)) $((SECONDS % 60)); }
note() { printf 'docker.sh [%s] %s\n' "$(elapsed)" "$*"; }
fail() {
    printf 'docker.sh [%s] FAILED: %s\n' "$(elapsed)" "$*" >&2
    exit 1
}

step() {
    # ends the current step (recording its duration) and starts the next one
    if [[ -n "$STEP_NAME" ]]; then
        STEP_NAMES+=("$STEP_NAME")
        STEP_TIMES+=($((SECONDS - STEP_START)))
    fi
    STEP_NAME=$1
    STEP_START=$SECONDS
    [[ -n "$STEP_NAME" ]] && note "== $STEP_NAME"
}

show_log() {
    # the last lines of a step's log, for the CI log
    local log=$1 lines=${2:-40}
    [[ -s "$log" ]] || return 0
    echo "---- last $lines lines of $(basename "$log") ----" >&2
    tail -n "$lines" "$log" >&2
    echo "----" >&2
}

# run LOG SECONDS COMMAND...: COMMAND under a timeout, its output in LOG; on failure the log's
# tail is printed and the script stops. In the background with `wait`, so that a TERM or
# Ctrl-C reaches the clean-up at once (which stops COMMAND) instead of after COMMAND.
run() {
    local log=$1 limit=$2 rc=0
    shift 2
    timeout --kill-after=20 "$limit" "$@" >>"$log" 2>&1 &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    if [[ $rc -ne 0 ]]; then
        show_log "$log"
        [[ $rc -eq 124 || $rc -eq 137 ]] && fail "timed out after ${limit}s: $*"
        fail "exit $rc: $*"
    fi
}

d() { timeout --kill-after=10 "${DOCKER_TIMEOUT:-120}" docker "$@"; }

root_prefix() {
    # ROOT_CMD: what runs a command as root (nothing as root, else passwordless sudo)
    if [[ $(id -u) -eq 0 ]]; then
        ROOT_CMD=()
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        ROOT_CMD=(sudo -n)
    else
        fail "needs root (or passwordless sudo) to install $*"
    fi
}

# ---------------------------------------------------------------------------------------
# packages, work folder, daemon

install_packages() {
    # apt-get install -y PACKAGE... (an index update first; its failure alone is not fatal)
    command -v apt-get >/dev/null || fail "missing $*, and apt-get is not available to install them"
    note "installing $* (apt-get install -y --no-install-recommends)"
    local log="$LOGS/apt.log" ROOT_CMD
    root_prefix "$@"
    timeout 300 "${ROOT_CMD[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$log" 2>&1 ||
        note "apt-get update reported errors ($(grep -m1 -E '^(E|W):' "$log" | cut -c1-150));" \
            "installing from the current index"
    run "$log" 900 "${ROOT_CMD[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}

clean_stale_work() {
    # work folders of earlier runs whose docker.sh is gone (killed before its clean-up)
    local dir pid
    for dir in "$WORK_PREFIX"*; do
        [[ -d "$dir" && -f "$dir/owner.pid" ]] || continue
        pid=$(cat "$dir/owner.pid" 2>/dev/null)
        [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && continue
        note "removing the leftovers of an earlier run: $dir"
        stop_daemon_in "$dir"
        stop_processes_of "$dir"
        [[ -e "$dir/made-key.json" ]] && rm -f /etc/docker/key.json && rmdir /etc/docker 2>/dev/null
        [[ -e "$dir/made-run-containerd" ]] && rmdir /run/containerd/s /run/containerd 2>/dev/null
        remove_work "$dir"
    done
}

stop_pidfile() {
    # stop the process of pid file $1 if it still runs and its command line names folder $3:
    # TERM, then KILL after $2 seconds
    local file=$1 wait_s=$2 dir=$3 pid i
    [[ -f "$file" ]] || return 0
    pid=$(cat "$file" 2>/dev/null)
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir" || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < wait_s * 2; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    note "pid $pid ($file) did not stop in ${wait_s}s: killing it"
    kill -KILL "$pid" 2>/dev/null
    sleep 1
}

stop_processes_of() {
    # what a killed run left running (debootstrap, a docker client, ...): the processes whose
    # command line names its work folder (a unique mktemp path); TERM, then KILL after 20 s
    local dir=$1 pid i left file
    for ((i = 0; i < 40; i++)); do
        left=()
        for file in /proc/[0-9]*/cmdline; do
            pid=${file#/proc/}
            pid=${pid%/cmdline}
            [[ "$pid" == "$$" ]] && continue
            [[ "$(tr '\0' ' ' <"$file" 2>/dev/null)" == *"$dir/"* ]] && left+=("$pid")
        done
        [[ ${#left[@]} -eq 0 ]] && return 0
        if [[ $i -eq 0 ]]; then
            kill -TERM "${left[@]}" 2>/dev/null
        elif [[ $i -eq 39 ]]; then
            kill -KILL "${left[@]}" 2>/dev/null
        fi
        sleep 0.5
    done
}

stop_daemon_in() {
    local dir=$1
    stop_pidfile "$dir/dockerd.pid" 60 "$dir"
    # its containerd stops with it, unless dockerd was killed
    stop_pidfile "$dir/exec/containerd/containerd.pid" 10 "$dir"
}

remove_work() {
    # unmount what a killed daemon or debootstrap left mounted, then delete the folder
    local dir=$1 mnt
    [[ -n "$dir" && "$dir" == "$WORK_PREFIX"* && -d "$dir" ]] || return 0
    while read -r mnt; do
        umount -l "$mnt" 2>/dev/null
    done < <(awk -v p="$dir" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r)
    rm -rf --one-file-system "$dir" 2>/dev/null || note "could not remove all of $dir"
}

use_tmpfs() {
    # STORE: where the images and the debootstrap rootfs go. A tmpfs when memory allows:
    # deleting a few GB of small files on this disk (mounted with discard) takes minutes,
    # unmounting a tmpfs takes none. ONNXOPT_DOCKER_TMPFS=0: always the disk.
    STORE="$WORK/disk"
    mkdir -p "$STORE"
    [[ "${ONNXOPT_DOCKER_TMPFS:-1}" != 0 && $(id -u) -eq 0 ]] || return 0
    local avail_gb size_gb=${ONNXOPT_DOCKER_TMPFS_GB:-10}
    avail_gb=$(awk '/^MemAvailable:/ {printf "%d", $2 / 1048576}' /proc/meminfo)
    if [[ $avail_gb -lt $((size_gb + 4)) ]]; then
        note "only ${avail_gb} GB of memory available: images on disk (slower to delete)"
        return 0
    fi
    mkdir -p "$WORK/mem" && mount -t tmpfs -o "size=${size_gb}g,mode=0700" onnxopt-ci "$WORK/mem" ||
        { note "cannot mount a tmpfs: images on disk"; return 0; }
    STORE="$WORK/mem"
    note "images and rootfs in a ${size_gb} GB tmpfs ($avail_gb GB of memory available)"
}

start_dockerd() {
    local driver=$1 data=$2 i log="$WORK/dockerd-$1.log"
    rm -f "$WORK/dockerd.pid"
    # what dockerd and its containerd create outside the work folder, for the clean-up (the
    # files in the work folder tell the next run when this one is killed)
    [[ -e /etc/docker/key.json ]] || { DOCKERD_KEY=/etc/docker/key.json; : >"$WORK/made-key.json"; }
    [[ -e /run/containerd ]] || { SHIM_DIR=/run/containerd; : >"$WORK/made-run-containerd"; }
    note "starting dockerd ($(dockerd --version 2>/dev/null | cut -d, -f1)), storage driver $driver," \
        "no bridge, no iptables; data root $data"
    dockerd --data-root "$data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
        -H "unix://$WORK/docker.sock" --storage-driver "$driver" \
        --iptables=false --ip-masq=false --bridge=none --userland-proxy=false \
        --containerd-namespace "onnxopt-ci" --containerd-plugins-namespace "onnxopt-ci-plugins" \
        --log-level warn >>"$log" 2>&1 &
    DOCKERD_PID=$!
    OWN_DAEMON=1
    export DOCKER_HOST="unix://$WORK/docker.sock"
    # the client of the same package as this dockerd, whatever else is first on PATH
    if [[ -x /usr/bin/docker && ! -e "$WORK/bin/docker" ]]; then
        mkdir -p "$WORK/bin" && ln -s /usr/bin/docker "$WORK/bin/docker" && PATH="$WORK/bin:$PATH"
    fi
    for ((i = 0; i < 120; i++)); do
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            note "dockerd exited while starting:"
            tail -n 8 "$log"
            return 1
        fi
        if timeout 10 docker info >/dev/null 2>&1; then
            local got
            got=$(timeout 10 docker info --format '{{.Driver}}' 2>/dev/null)
            [[ "$got" == "$driver" ]] && return 0
            note "dockerd runs with storage driver '$got', not $driver"
            return 1
        fi
        sleep 0.5
    done
    note "dockerd did not answer within 60s:"
    tail -n 8 "$log"
    return 1
}

stop_own_daemon() {
    [[ $OWN_DAEMON -eq 1 ]] || return 0
    note "stopping the dockerd this run started (pid $DOCKERD_PID)"
    stop_daemon_in "$WORK"
    OWN_DAEMON=0
    if [[ -n "$DOCKERD_KEY" ]]; then
        rm -f "$DOCKERD_KEY"
        rmdir /etc/docker 2>/dev/null
    fi
    # empty once the shims are gone
    [[ -n "$SHIM_DIR" ]] && rmdir "$SHIM_DIR/s" "$SHIM_DIR" 2>/dev/null
}

daemon_running() {
    [[ "${ONNXOPT_DOCKER_DAEMON:-auto}" != private ]] && command -v docker >/dev/null &&
        timeout 20 docker info >/dev/null 2>&1
}

ensure_packages() {
    # what is missing of docker.io, docker-compose and debootstrap, in one apt-get call
    local missing=()
    if ! command -v docker >/dev/null || { ! daemon_running && ! command -v dockerd >/dev/null; }; then
        missing+=(docker.io)
    fi
    if ! command -v docker-compose >/dev/null && ! timeout 20 docker compose version >/dev/null 2>&1; then
        missing+=(docker-compose)
    fi
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [[ ${#missing[@]} -gt 0 ]]; then
        install_packages "${missing[@]}"
    else
        note "docker, dockerd, docker-compose and debootstrap are installed"
    fi
}

ensure_daemon() {
    step "Docker engine"
    ensure_packages
    if daemon_running; then
        note "using the running Docker daemon: $(docker info --format \
            'server {{.ServerVersion}}, storage driver {{.Driver}}, cgroup v{{.CgroupVersion}}' 2>/dev/null)" \
            "${DOCKER_HOST:+at $DOCKER_HOST}"
        return 0
    fi
    command -v dockerd >/dev/null || fail "dockerd not found after installing docker.io"
    [[ $(id -u) -eq 0 ]] || fail "no Docker daemon runs, and only root can start one"
    local driver=overlay2 fstype
    use_tmpfs
    fstype=$(stat -f -c %T "$STORE" 2>/dev/null)
    if ! grep -qw overlay /proc/filesystems; then
        note "the kernel has no overlay filesystem: using the vfs storage driver (slow, several GB)"
        driver=vfs
    elif [[ "$fstype" == overlayfs || "$fstype" == overlay ]]; then
        note "$STORE is on overlayfs, where overlay2 cannot stack: using vfs (slow, several GB)"
        driver=vfs
    fi
    # vfs copies every layer in full (tens of GB for this image): on disk, never in the tmpfs
    local data="$STORE/docker"
    [[ $driver == vfs ]] && data="$WORK/disk/docker"
    if ! start_dockerd "$driver" "$data"; then
        stop_own_daemon
        [[ $driver == overlay2 ]] || fail "dockerd did not start (log above)"
        if [[ "$STORE" != "$WORK/disk" ]]; then
            note "overlay2 failed in the tmpfs: retrying on disk"
            if start_dockerd overlay2 "$WORK/disk/docker"; then driver=started; else stop_own_daemon; fi
        fi
        if [[ $driver != started ]]; then
            note "overlay2 failed: retrying with the vfs storage driver (slow, several GB)"
            start_dockerd vfs "$WORK/disk/docker-vfs" ||
                { stop_own_daemon; fail "dockerd did not start with vfs either (log above)"; }
        fi
    fi
    note "dockerd $(docker info --format '{{.ServerVersion}}, {{.Driver}}, cgroup v{{.CgroupVersion}}' \
        2>/dev/null) at $DOCKER_HOST; client $(docker version --format '{{.Client.Version}}' 2>/dev/null)"
}

ensure_compose() {
    if command -v docker-compose >/dev/null; then
        COMPOSE=(docker-compose)
    elif timeout 20 docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    else
        install_packages docker-compose
        command -v docker-compose >/dev/null || fail "docker-compose not found after installing it"
        COMPOSE=(docker-compose)
    fi
    note "compose: $("${COMPOSE[@]}" version 2>/dev/null | head -n 1)"
}

# ---------------------------------------------------------------------------------------
# images

dockerfile_default_base() {
    sed -n 's/^ARG BASE_IMAGE=\([^ ]*\).*/\1/p' "$ROOT/Dockerfile" | head -n 1
}

compose_default_postgres() {
    sed -n 's/.*\${ONNXOPT_POSTGRES_IMAGE:-\([^}]*\)}.*/\1/p' "$ROOT/docker-compose.yml" | head -n 1
}

host_ca_bundle() {
    local file
    for file in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
        [[ -n "$file" && -s "$file" ]] && { echo "$file"; return 0; }
    done
    return 1
}

# pull_image IMAGE: 0 when it is there (already, or pulled now); the pull's error otherwise
pull_image() {
    local image=$1 log="$LOGS/pull.log"
    d image inspect "$image" >/dev/null 2>&1 && { note "$image is already there"; return 0; }
    if DOCKER_TIMEOUT=600 d pull -q "$image" >>"$log" 2>&1; then
        note "pulled $image"
        BUILT_IMAGES+=("$image")
        return 0
    fi
    note "cannot pull $image: $(tail -n 1 "$log" | cut -c1-200)"
    return 1
}

debootstrap_base() {
    # Debian bookworm (Python 3.11, as requires-python wants) in a folder, imported as an image
    local image=$1 rootfs="${STORE:-$WORK}/rootfs" log="$LOGS/debootstrap.log" ca
    local mirror=${ONNXOPT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
    command -v debootstrap >/dev/null || install_packages debootstrap
    note "debootstrap --variant=minbase bookworm from $mirror (python3, python3-venv, python3-pip)"
    run "$log" 1200 debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$mirror"
    # where Python comes from: a venv first on PATH (Debian's own Python refuses pip
    # installs, PEP 668); python:3.11-slim has its Python in /usr/local instead
    run "$log" 300 chroot "$rootfs" python3 -m venv /opt/venv
    # what Debian's official images do: no package caches in the layers
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
    local changes=(
        --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
        --change 'ENV LANG=C.UTF-8'
        --change 'CMD ["python3"]'
    )
    if ca=$(host_ca_bundle); then
        mkdir -p "$rootfs/usr/local/share/onnxopt-ci"
        cp "$ca" "$rootfs/usr/local/share/onnxopt-ci/ca-bundle.crt"
        changes+=(--change 'ENV PIP_CERT=/usr/local/share/onnxopt-ci/ca-bundle.crt')
    fi
    note "docker import of the rootfs ($(du -sh "$rootfs" | cut -f1)) as $image"
    tar -C "$rootfs" -c . | DOCKER_TIMEOUT=300 d import "${changes[@]}" - "$image" >>"$log" 2>&1 ||
        { show_log "$log"; fail "docker import of $rootfs"; }
    BUILT_IMAGES+=("$image")
    rm -rf --one-file-system "$rootfs"
}

with_host_ca() {
    # BASE = a pulled image plus the host's CA bundle as PIP_CERT (nothing else changes)
    local base=$1 image=$2 ca ctx="$WORK/ca-context"
    BASE=$base
    ca=$(host_ca_bundle) || return 0
    mkdir -p "$ctx" && cp "$ca" "$ctx/ca-bundle.crt"
    printf '%s\n' "FROM $base" \
        "COPY ca-bundle.crt /usr/local/share/onnxopt-ci/ca-bundle.crt" \
        "ENV PIP_CERT=/usr/local/share/onnxopt-ci/ca-bundle.crt" >"$ctx/Dockerfile"
    run "$LOGS/base.log" 300 docker build --network host --label "$LABEL" -t "$image" "$ctx"
    BUILT_IMAGES+=("$image")
    BASE=$image
    note "base: $base plus the host's CA bundle ($ca) as PIP_CERT"
}

ensure_base() {
    step "base image"
    local default
    default=$(dockerfile_default_base)
    [[ -n "$default" ]] || fail "no 'ARG BASE_IMAGE=...' default in the Dockerfile"
    if [[ -n "${ONNXOPT_DOCKER_BASE:-}" ]]; then
        BASE=$ONNXOPT_DOCKER_BASE
        note "base image from ONNXOPT_DOCKER_BASE: $BASE"
    elif pull_image "$default"; then
        with_host_ca "$default" "onnxopt-ci-base:$RUN_ID"
    else
        note "no registry: building the base from Debian's packages instead"
        BASE="onnxopt-ci-base:$RUN_ID"
        debootstrap_base "$BASE"
    fi
    d run --rm --network none --label "$LABEL" "$BASE" python3 -c \
        'import sys; print("base:", sys.version.split()[0], sys.executable)' ||
        fail "a container of $BASE does not run python3 (the error above; the daemon's log below)"
}

torch_pin() {
    sed -n 's/.*"torch==\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n 1
}

build_image() {
    step "build the onnxopt image"
    local pin log="$LOGS/build.log" wheels="$ROOT/docker/wheels" wheel="" file index_args=()
    pin=$(torch_pin)
    [[ -n "$pin" ]] || fail "no torch==PIN in pyproject.toml"
    # torch's CPU wheel from the host's pip sources into the build context (through the work
    # folder, so that only whole wheels of this run land there and are removed afterwards)
    # (+cpu: a pip that has no CPU wheel fails here instead of fetching the CUDA one)
    timeout 600 "$PYTHON" -m pip download -q --no-deps -d "$WORK/wheels" "torch==$pin+cpu" \
        >>"$LOGS/wheel.log" 2>&1
    for file in "$WORK/wheels"/*.whl; do
        [[ -e "$file" && ! -e "$wheels/${file##*/}" ]] || continue
        ADDED_WHEELS+=("$wheels/${file##*/}")
        cp "$file" "$wheels/" || fail "cannot copy $file into $wheels"
    done
    for file in "$wheels/torch-$pin+cpu-"*.whl; do
        [[ -e "$file" ]] && wheel=$(basename "$file")
    done
    if [[ -n "$wheel" ]]; then
        note "torch from the host's CPU wheel in the build context: docker/wheels/$wheel" \
            "(torch's dependencies from PyPI)"
        index_args=(--build-arg TORCH_INDEX_URL=https://pypi.org/simple)
    else
        show_log "$LOGS/wheel.log" 5
        note "no torch $pin CPU wheel from the host's pip: the build uses PyTorch's CPU index"
    fi
    note "docker build --network host --build-arg BASE_IMAGE=$BASE ${index_args[*]} -t $IMAGE ."
    run "$log" 1500 docker build --network host --force-rm --label "$LABEL" \
        --build-arg "BASE_IMAGE=$BASE" "${index_args[@]}" -t "$IMAGE" "$ROOT"
    BUILT_IMAGES+=("$IMAGE")
    grep -E '^Step [0-9]+/' "$log" | sed 's/^/  /'
    note "built $IMAGE: $(d image inspect "$IMAGE" --format '{{.Id}}' | cut -c8-19)," \
        "$(d image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.2f GB", $1 / 1e9}')"
}

check_image() {
    step "image checks: user, entry point, torch"
    local user uid entry out
    user=$(d image inspect "$IMAGE" --format '{{.Config.User}}')
    entry=$(d image inspect "$IMAGE" --format '{{json .Config.Entrypoint}}')
    uid=$(d run --rm --network none --label "$LABEL" --entrypoint id "$IMAGE" -u) ||
        fail "cannot run id in the image"
    note "image user '$user' (uid $uid), entry point $entry"
    [[ -n "$user" && "$user" != root && "$user" != 0 && "$uid" != 0 ]] ||
        fail "the container runs as root (USER '$user', uid $uid)"
    [[ "$uid" == "$IMAGE_USER_UID" ]] || fail "the container's uid is $uid, not $IMAGE_USER_UID"
    [[ "$entry" == '["onnxopt"]' ]] || fail "the entry point is $entry, not [\"onnxopt\"]"
    out=$(d run --rm --network none --label "$LABEL" "$IMAGE" 2>&1) ||
        fail "docker run IMAGE (onnxopt --help) failed: $out"
    grep -q "Usage: onnxopt" <<<"$out" || fail "docker run IMAGE did not print onnxopt's help: $out"
    out=$(d run --rm --network none --label "$LABEL" "$IMAGE" --help 2>&1) ||
        fail "docker run IMAGE --help failed: $out"
    note "docker run IMAGE --help: $(grep -m1 'Usage:' <<<"$out")"
    out=$(d run --rm --network none --label "$LABEL" --entrypoint python "$IMAGE" -c \
        'import torch, onnxruntime; print(torch.__version__, torch.version.cuda, onnxruntime.__version__)') ||
        fail "torch does not import in the image: $out"
    read -r tv cuda ortv <<<"$out"
    note "in the image: torch $tv (CUDA: $cuda), onnxruntime $ortv"
    [[ "$tv" == "$(torch_pin)+cpu" && "$cuda" == None ]] ||
        fail "the image has torch $tv (CUDA $cuda), not the $(torch_pin) CPU build"
    if d run --rm --network none --label "$LABEL" --entrypoint sh "$IMAGE" -c \
        'pip list 2>/dev/null | grep -i "^nvidia-"'; then
        fail "CUDA packages (nvidia-*) are installed in the image"
    fi
}

container_search() {
    step "search in a container on a host folder"
    local runs="$WORK/runs" log="$LOGS/search.log" config=/configs/search-digits-mlp-quant-tpe.toml
    mkdir -p "$runs"
    # the image's user writes there (README: chown the folder to uid 10001, or use --user)
    chown "$IMAGE_USER_UID:$IMAGE_USER_UID" "$runs"
    note "docker run --rm --network none -v $runs:/runs IMAGE search $config --run-dir /runs/demo --n-trials 5"
    run "$log" 900 docker run --rm --name "onnxopt-ci-$RUN_ID-search" --label "$LABEL" \
        --network none -v "$runs:/runs" "$IMAGE" \
        search "$config" --run-dir /runs/demo --n-trials 5 --no-progress
    grep -E '^[0-9]+ trials|^trial [0-9]+:|^->' "$log" | sed 's/^/  /'
    run "$LOGS/files.log" 300 "$PYTHON" "$ROOT/.ci/docker_check.py" files "$runs/demo" \
        --uid "$IMAGE_USER_UID"
    cat "$LOGS/files.log"
}

start_postgres_image() {
    # the official image when it can be pulled; else Debian's postgresql on the same base,
    # built in the background while the onnxopt image builds
    local official
    official=$(compose_default_postgres)
    [[ -n "$official" ]] || fail "no \${ONNXOPT_POSTGRES_IMAGE:-...} default in docker-compose.yml"
    if pull_image "$official"; then
        PG_IMAGE=$official
        return 0
    fi
    PG_IMAGE="onnxopt-ci-postgres:$RUN_ID"
    BUILT_IMAGES+=("$PG_IMAGE")
    note "building $PG_IMAGE from $BASE with Debian's postgresql package (docker/postgres)," \
        "in the background"
    timeout --kill-after=20 900 docker build --network host --force-rm --label "$LABEL" \
        --build-arg "BASE_IMAGE=$BASE" -t "$PG_IMAGE" "$ROOT/docker/postgres" \
        >"$LOGS/postgres-build.log" 2>&1 &
    PG_BUILD_PID=$!
}

wait_postgres_image() {
    step "PostgreSQL image (what is left of its build)"
    [[ -n "${PG_BUILD_PID:-}" ]] || return 0
    local rc=0
    wait "$PG_BUILD_PID" || rc=$?
    PG_BUILD_PID=""
    if [[ $rc -ne 0 ]]; then
        show_log "$LOGS/postgres-build.log"
        fail "building $PG_IMAGE (exit $rc)"
    fi
    note "built $PG_IMAGE: $(d image inspect "$PG_IMAGE" --format '{{.Size}}' | awk '{printf "%.2f GB", $1 / 1e9}')"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

compose() {
    timeout --kill-after=10 "${COMPOSE_TIMEOUT:-180}" "${COMPOSE[@]}" \
        --project-name "onnxopt-ci-$RUN_ID" --project-directory "$ROOT" -f "$ROOT/docker-compose.yml" "$@"
}

write_ci_config() {
    # the example brute-force space (18 points) on the model the container search exported, so
    # both workers start in seconds; a longer latency measurement makes each trial take about a
    # second, so the two workers share the 12 trials instead of the first one taking them all
    local dir=$1
    mkdir -p "$dir"
    cp "$WORK/runs/demo/base.onnx" "$dir/digits-mlp.onnx"
    cat >"$dir/ci-two-workers.toml" <<'EOF'
# .ci/docker.sh: two worker containers on one PostgreSQL study
[model]
onnx = "digits-mlp.onnx"

[data]
dataset = "digits"

[search.quantization]
storage = "container"

[search.quantization.by_type.linear]
data_in_width = [4, 8]
data_in_frac_width = ["NA"]
weight_width = [2, 4, 8]
weight_frac_width = ["NA"]
bias_width = [2, 4, 8]
bias_frac_width = ["NA"]

[search.strategy]
sampler = "brute-force"
n_trials = 20
seed = 0

[search.metrics.accuracy]
direction = "maximize"

[search.metrics.average_bitwidth]
direction = "minimize"

[search.evaluation]
min_time_s = 0.5
EOF
    chmod -R a+rX "$dir"
}

compose_search() {
    step "compose: PostgreSQL and two workers on one study"
    local n_trials=12 study=ci port log="$LOGS/compose.log" url ids id codes attempt server
    ensure_compose
    write_ci_config "$WORK/configs"
    export POSTGRES_PASSWORD
    POSTGRES_PASSWORD=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    export ONNXOPT_IMAGE="$IMAGE" ONNXOPT_POSTGRES_IMAGE="$PG_IMAGE"
    export ONNXOPT_CONFIGS="$WORK/configs" ONNXOPT_CONFIG=ci-two-workers.toml
    export ONNXOPT_STUDY=$study ONNXOPT_N_TRIALS=$n_trials ONNXOPT_WORKERS=2
    for attempt in 1 2; do
        port=$(free_port) || fail "no free port on 127.0.0.1"
        export ONNXOPT_POSTGRES_PORT=$port
        note "PostgreSQL ($PG_IMAGE) on 127.0.0.1:$port, a generated password; 2 workers," \
            "study '$study', $n_trials trials of configs ci-two-workers.toml"
        COMPOSE_UP=1
        COMPOSE_TIMEOUT=300 compose up -d --no-build worker >>"$log" 2>&1 && break
        server=$(compose logs --no-color postgres 2>&1 | tail -n 20)
        if [[ $attempt -eq 1 ]] && grep -qE "could not bind|already in use" <<<"$server"; then
            note "port $port was taken before PostgreSQL could bind it: trying another one"
            compose_down
            continue
        fi
        show_log "$log"
        printf '%s\n' "$server" >&2
        fail "compose up (PostgreSQL's log above)"
    done
    url="postgresql://onnxopt@127.0.0.1:$port/onnxopt"
    mapfile -t ids < <(compose ps -q worker 2>>"$log")
    [[ ${#ids[@]} -eq 2 ]] || fail "compose started ${#ids[@]} worker containers, not 2"
    note "workers: $(for id in "${ids[@]}"; do d inspect --format '{{.Name}}' "$id"; done | tr -d / | xargs)"
    # both must end, with exit code 0
    run "$LOGS/wait.log" 900 docker wait "${ids[@]}"
    mapfile -t codes <"$LOGS/wait.log"
    compose logs --no-color worker >"$LOGS/workers.log" 2>&1
    for id in "${ids[@]}"; do
        d logs "$id" 2>&1 | grep -E '^[0-9]+ trials|^->' | sed "s|^|  $(d inspect --format '{{.Name}}' "$id" | tr -d /): |"
    done
    if [[ ${#codes[@]} -ne 2 || "${codes[0]}" != 0 || "${codes[1]}" != 0 ]]; then
        show_log "$LOGS/workers.log" 60
        fail "worker exit codes: ${codes[*]:-none (timed out)}"
    fi
    note "docker-compose run --rm onnxopt status $url --study $study --json"
    compose run -T --rm --no-deps onnxopt status "$url" --study "$study" --json \
        >"$LOGS/status.json" 2>>"$log" || { show_log "$log"; fail "onnxopt status in a container"; }
    PGPASSWORD=$POSTGRES_PASSWORD run "$LOGS/study.log" 120 "$PYTHON" "$ROOT/.ci/docker_check.py" \
        study "$url" "$study" --n-trials "$n_trials" --workers 2 --status-json "$LOGS/status.json"
    cat "$LOGS/study.log"
    compose_down
}

compose_down() {
    [[ $COMPOSE_UP -eq 1 ]] || return 0
    COMPOSE_TIMEOUT=180 compose down -v --remove-orphans >>"$LOGS/compose.log" 2>&1 ||
        note "compose down failed (the containers are removed below)"
    COMPOSE_UP=0
}

# ---------------------------------------------------------------------------------------

cleanup() {
    local rc=$?
    set +e
    trap - INT TERM
    step ""
    local log
    if [[ $rc -ne 0 && -n "$WORK" ]]; then
        for log in "$WORK"/dockerd-*.log; do
            [[ -s "$log" ]] && show_log "$log" 15
        done
    fi
    local pid
    for pid in "$CHILD_PID" "$PG_BUILD_PID"; do
        # timeout passes the TERM on to its command
        [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
    done
    for pid in "$CHILD_PID" "$PG_BUILD_PID"; do
        [[ -n "$pid" ]] && wait "$pid" 2>/dev/null
    done
    if [[ -n "$LOGS" && -n "${ONNXOPT_DOCKER_LOGS:-}" ]]; then
        mkdir -p "$ONNXOPT_DOCKER_LOGS" && cp -r "$LOGS/." "$ONNXOPT_DOCKER_LOGS/" &&
            cp "$WORK"/dockerd-*.log "$ONNXOPT_DOCKER_LOGS/" 2>/dev/null
        note "logs copied to $ONNXOPT_DOCKER_LOGS"
    fi
    if [[ -n "$WORK" ]]; then
        note "cleaning up"
        if timeout 20 docker info >/dev/null 2>&1; then
            compose_down
            local ids
            ids=$(d ps -aq --filter "label=$LABEL" 2>/dev/null)
            ids+=" $(d ps -aq --filter "label=com.docker.compose.project=onnxopt-ci-$RUN_ID" 2>/dev/null)"
            # shellcheck disable=SC2086
            [[ -n "${ids// /}" ]] && d rm -f -v $ids >/dev/null 2>&1
            if [[ $OWN_DAEMON -eq 0 && ${#BUILT_IMAGES[@]} -gt 0 ]]; then
                d rmi -f "${BUILT_IMAGES[@]}" >/dev/null 2>&1
                d image prune -f --filter "label=$LABEL" >/dev/null 2>&1
            fi
        fi
        stop_own_daemon
        remove_work "$WORK"
    fi
    [[ ${#ADDED_WHEELS[@]} -gt 0 ]] && rm -f "${ADDED_WHEELS[@]}"
    if [[ ${#STEP_NAMES[@]} -gt 0 ]]; then
        note "durations:"
        local i
        for i in "${!STEP_NAMES[@]}"; do
            printf '  %-50s %4ds\n' "${STEP_NAMES[$i]}" "${STEP_TIMES[$i]}"
        done
    fi
    if [[ $rc -eq 0 ]]; then
        note "Docker step passed in $(elapsed)"
    else
        note "Docker step FAILED (exit $rc) after $(elapsed)"
    fi
    exit $rc
}

main() {
    if [[ "${ONNXOPT_CI_DOCKER:-1}" == 0 ]]; then
        note "ONNXOPT_CI_DOCKER=0: skipped"
        exit 0
    fi
    "$PYTHON" -c 'import onnx, onnxruntime, optuna, psycopg2' 2>/dev/null ||
        fail "$PYTHON lacks onnx/onnxruntime/optuna/psycopg2 for the host-side checks (run make install)"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    clean_stale_work
    WORK=$(mktemp -d "${WORK_PREFIX}XXXXXX") || fail "cannot create a work folder"
    echo $$ >"$WORK/owner.pid"
    LOGS="$WORK/logs"
    mkdir -p "$LOGS"
    local free_gb
    free_gb=$(df -Pk "$WORK" | awk 'NR == 2 {printf "%d", $4 / 1048576}')
    [[ $free_gb -ge 10 ]] || fail "only ${free_gb} GB free in $(dirname "$WORK"); the Docker step needs 10"
    note "run $RUN_ID, work folder $WORK (${free_gb} GB free)"
    IMAGE="onnxopt-ci:$RUN_ID"
    ensure_daemon
    ensure_base
    start_postgres_image
    build_image
    check_image
    container_search
    wait_postgres_image
    compose_search
}

main "$@"
