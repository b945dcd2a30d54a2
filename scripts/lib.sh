# Shared by scripts/demo, scripts/test and scripts/bench: find Python 3.12+, make .venv.
# Source it from the repository root.

PY_MIN_MINOR=12

say() { printf 'httpjail-setup: %s\n' "$*" >&2; }

_python_ok() {
    "$1" -c "import sys; sys.exit(0 if sys.version_info >= (3, $PY_MIN_MINOR) else 1)" 2>/dev/null
}

# Prints the path of a Python >= 3.12, or fails with what to do.
find_python() {
    local candidates=() c
    [ -n "${HTTPJAIL_PYTHON:-}" ] && candidates+=("$HTTPJAIL_PYTHON")
    for c in python3.13 python3.12 python3; do
        command -v "$c" >/dev/null 2>&1 && candidates+=("$(command -v "$c")")
    done
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    if command -v pyenv >/dev/null 2>&1; then pyenv_root="$(pyenv root)"; fi
    for c in $(ls -d "$pyenv_root"/versions/3.* 2>/dev/null | sort -t. -k2,2nr); do
        [ -x "$c/bin/python" ] && candidates+=("$c/bin/python")
    done
    for c in "${candidates[@]}"; do
        if _python_ok "$c"; then printf '%s\n' "$c"; return 0; fi
    done
    say "no Python 3.$PY_MIN_MINOR or newer found (tried: ${candidates[*]:-nothing on PATH or in pyenv})."
    say "install one (e.g. 'pyenv install 3.12' or 'apt-get install python3.12 python3.12-venv'),"
    say "or point HTTPJAIL_PYTHON at it."
    return 1
}

# Creates .venv with a suitable Python if missing or broken, then installs the project
# (editable) with the given extras when pyproject.toml changed since the last install.
ensure_venv() {
    local extras="${1:-}" py stamp want
    if [ ! -x .venv/bin/python ] || ! _python_ok .venv/bin/python; then
        py="$(find_python)" || return 1
        say "creating .venv with $py"
        rm -rf .venv
        "$py" -m venv .venv || { say "could not create .venv with $py (is the venv module installed?)"; return 1; }
    fi
    stamp=.venv/.httpjail-installed
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${extras}"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "installing httpjail-py${extras:+ [$extras]} into .venv"
        # The grep drops this machine's pip-config noise about missing local mirrors.
        .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}" \
            2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) \
            || { say "pip install failed: see the messages above"; return 1; }
        printf '%s' "$want" > "$stamp"
    fi
}
