#!/usr/bin/env bash
# Run a command next to a throwaway PostgreSQL server:  .ci/postgres.sh make test
#
# Starts a private server on 127.0.0.1 (a free port, a data directory under a temp dir),
# creates a database, exports ONNXOPT_TEST_POSTGRES_URL for the command, then stops the
# server and removes the directory whatever the command's outcome. The command's exit code
# is this script's exit code.
#
# PostgreSQL comes from the system packages: when initdb/pg_ctl are missing it runs
# `apt-get install -y postgresql` (as root, or through passwordless sudo). initdb refuses to
# run as root, so as root the server runs as the `postgres` user the package creates.
# When no server can be set up the command still runs, without the URL: the PostgreSQL test
# then skips locally and fails under CI=1 (it names this script).
# It also exports ONNXOPT_TEST_POSTGRES_CTL, a script that stops and starts that server
# (`ctl stop` = pg_ctl stop -m fast, `ctl start`, `ctl kill` = SIGKILL to the postmaster):
# the restart tests take the server away under a running search.
# ONNXOPT_TEST_POSTGRES_URL already set: that server is used, nothing is started.
# ONNXOPT_CI_POSTGRES=0: start nothing.
set -uo pipefail

PG_USER=onnxopt
PG_DB=onnxopt_test
PG_TMP=""
PG_RUN_AS=()

note() { echo "postgres.sh: $*" >&2; }

find_bin_dir() {
    # Debian/Ubuntu keep the server binaries out of PATH, one folder per major version.
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]] && { echo "$dir"; return 0; }
    done
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

install_postgres() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
            note "PostgreSQL is not installed and this user cannot install it (not root, no passwordless sudo)"
            return 1
        fi
        sudo=(sudo -n)
    fi
    if ! command -v apt-get >/dev/null; then
        note "PostgreSQL is not installed and apt-get is not available to install it"
        return 1
    fi
    note "installing PostgreSQL (apt-get install -y postgresql)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

as_server_user() {
    # cd /: the server user may not be allowed to read the current directory.
    (cd / && "${PG_RUN_AS[@]}" "$@")
}

free_port() {
    "${PYTHON:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_postgres() {
    local bin
    if ! bin=$(find_bin_dir); then
        install_postgres || return 1
        bin=$(find_bin_dir) || { note "initdb/pg_ctl not found after installing PostgreSQL"; return 1; }
    fi
    PG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/onnxopt-pg.XXXXXX") || return 1
    if [[ $(id -u) -eq 0 ]]; then
        local user=postgres
        if ! id "$user" >/dev/null 2>&1; then
            user=onnxopt-pg
            id "$user" >/dev/null 2>&1 || useradd --system --no-create-home "$user" || return 1
        fi
        chown "$user" "$PG_TMP" || return 1
        PG_RUN_AS=(runuser -u "$user" --)
    fi
    local password port
    password=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
    port=$(free_port) || return 1
    printf '%s\n' "$password" >"$PG_TMP/pwfile" && chmod 644 "$PG_TMP/pwfile"
    as_server_user "$bin/initdb" -D "$PG_TMP/data" -U "$PG_USER" --pwfile="$PG_TMP/pwfile" \
        --auth=scram-sha-256 --no-locale -E UTF8 >"$PG_TMP/initdb.log" 2>&1 ||
        { note "initdb failed:"; tail -5 "$PG_TMP/initdb.log" >&2; return 1; }
    rm -f "$PG_TMP/pwfile"
    as_server_user "$bin/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/data/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_TMP/data -c fsync=off" start \
        >/dev/null ||
        { note "the server did not start:"; tail -5 "$PG_TMP/data/server.log" >&2; return 1; }
    PG_BIN=$bin
    PGPASSWORD=$password "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$PG_USER" "$PG_DB" ||
        { note "createdb failed"; return 1; }
    export ONNXOPT_TEST_POSTGRES_URL="postgresql://$PG_USER:$password@127.0.0.1:$port/$PG_DB"
    write_ctl "$port" && export ONNXOPT_TEST_POSTGRES_CTL="$PG_TMP/ctl"
    note "PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port, database $PG_DB"
}

write_ctl() {
    # $PG_TMP/ctl stop|start|kill: the restart tests stop and start this server
    local port=$1 run_as="" pg_ctl data
    [[ ${#PG_RUN_AS[@]} -eq 0 ]] || run_as=$(printf '%q ' "${PG_RUN_AS[@]}")
    pg_ctl=$(printf '%q' "$PG_BIN/pg_ctl")
    data=$(printf '%q' "$PG_TMP/data")
    cat >"$PG_TMP/ctl" <<CTL || return 1
#!/usr/bin/env bash
# stop | start | kill the throwaway PostgreSQL server of .ci/postgres.sh
set -uo pipefail
cd /
case "\${1:-}" in
    stop) $run_as$pg_ctl -D $data -m fast -w -t 60 stop ;;
    start) $run_as$pg_ctl -D $data -l $data/server.log -w -t 60 \\
        -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c fsync=off" start ;;
    kill)  # the postmaster and its backends, as an OOM killer or a crash would
        pid=\$(head -1 $data/postmaster.pid)
        children=\$(pgrep -P "\$pid" || true)
        kill -KILL "\$pid" \$children 2>/dev/null
        for _ in \$(seq 100); do
            kill -0 "\$pid" \$children 2>/dev/null || exit 0
            sleep 0.1
        done
        exit 1 ;;
    *) echo "usage: \$0 stop|start|kill" >&2; exit 2 ;;
esac
CTL
    chmod 755 "$PG_TMP/ctl"
}

stop_postgres() {
    [[ -n "$PG_TMP" ]] || return 0
    if [[ -n "${PG_BIN:-}" && -f "$PG_TMP/data/postmaster.pid" ]]; then
        as_server_user "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m fast -w stop >/dev/null 2>&1 ||
            note "could not stop the server in $PG_TMP/data"
    fi
    rm -rf "$PG_TMP"
    PG_TMP=""
}

[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0  # sourced: only define the functions
if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARG...]   (runs COMMAND with ONNXOPT_TEST_POSTGRES_URL set)" >&2
    exit 2
fi
trap stop_postgres EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [[ -n "${ONNXOPT_TEST_POSTGRES_URL:-}" ]]; then
    note "using the server of ONNXOPT_TEST_POSTGRES_URL"
elif [[ "${ONNXOPT_CI_POSTGRES:-1}" == 0 ]]; then
    note "ONNXOPT_CI_POSTGRES=0: no PostgreSQL server"
elif ! start_postgres; then
    stop_postgres
    unset ONNXOPT_TEST_POSTGRES_URL
    note "no PostgreSQL server: the PostgreSQL test skips (fails when CI is set)"
fi
# In the foreground: Ctrl-C reaches the command, and the EXIT trap runs once it has ended.
"$@"
