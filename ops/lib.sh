# shellcheck shell=bash
# Shared helpers for ops/serve and ops/test. Source it; it defines functions only
# (plus SHOAL_ROOT), so sourcing has no side effects beyond that.
#
# Why a library: both scripts must create the same .venv the same way on a fresh Debian
# machine (where python3-venv may be missing) and on a developer's box.

SHOAL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHOAL_VENV="$SHOAL_ROOT/.venv"
# Touched after every successful install; ops/serve reinstalls when pyproject.toml is newer.
SHOAL_STAMP="$SHOAL_VENV/.shoal-installed"

# A short, greppable header so CI logs read as a list of steps.
section() {
    printf '\n==> %s\n' "$*"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

is_root() {
    [ "$(id -u)" = 0 ]
}

# Echo the path of a Python >= 3.11 (python3.11 first, then python3), or fail.
find_python() {
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    die "Python 3.11 or newer is needed (tried python3.11, python3)"
}

# Create .venv when it is missing or broken (e.g. its Python was removed by an upgrade).
ensure_venv() {
    if [ -x "$SHOAL_VENV/bin/python" ] && "$SHOAL_VENV/bin/python" -c '' 2>/dev/null; then
        return 0
    fi
    local python
    python="$(find_python)"
    section "creating .venv with $python ($("$python" --version 2>&1))"
    rm -rf "$SHOAL_VENV"
    if ! "$python" -m venv "$SHOAL_VENV" 2>/dev/null; then
        # Debian ships venv's ensurepip separately (python3-venv / python3.11-venv).
        rm -rf "$SHOAL_VENV"
        if is_root && command -v apt-get >/dev/null 2>&1; then
            local minor
            minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq "python${minor}-venv" >/dev/null ||
                apt-get install -y -qq python3-venv >/dev/null
            "$python" -m venv "$SHOAL_VENV" || die "could not create .venv"
        else
            die "could not create .venv: install the python3-venv package (as root: apt-get install python3-venv)"
        fi
    fi
    "$SHOAL_VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip ||
        die "could not upgrade pip in .venv"
}

# pip_install SPEC...: install into .venv quietly; show pip's output only when it fails
# (setuptools prints pages of build warnings even on success).
pip_install() {
    local log
    log="$(mktemp)"
    if ! (cd "$SHOAL_ROOT" && "$SHOAL_VENV/bin/python" -m pip install -q \
        --disable-pip-version-check --no-input "$@") >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "pip install $* failed"
    fi
    rm -f "$log"
    touch "$SHOAL_STAMP"
}

# Whether the `shoal` distribution is installed in .venv.
shoal_installed() {
    [ -x "$SHOAL_VENV/bin/shoal" ] &&
        "$SHOAL_VENV/bin/python" -c 'import importlib.metadata as m; m.distribution("shoal")' \
            >/dev/null 2>&1
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    "$SHOAL_VENV/bin/python" - <<'EOF'
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
EOF
}

# pg_answers URL: whether PostgreSQL at URL accepts a connection (and a query).
pg_answers() {
    "$SHOAL_VENV/bin/python" - "$1" <<'EOF' >/dev/null 2>&1
import sys
import psycopg
with psycopg.connect(sys.argv[1], connect_timeout=3) as conn:
    conn.execute("SELECT 1")
EOF
}
