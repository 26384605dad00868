# shellcheck shell=bash
# Shared helpers for scripts/test.sh and scripts/demo.sh: dependency
# installation (Debian packages, Python packages, the Rust toolchain check)
# and small logging/timing helpers. Source it; it defines functions only.

# Debian packages Berth's build, tests and demo need.
BERTH_DEB_PACKAGES=(
    containerd runc protobuf-compiler busybox-static docker-registry
    iproute2 iptables containernetworking-plugins systemd
    build-essential pkg-config curl jq ca-certificates sqlite3 python3
)

# Python modules (import name=pip name) the end-to-end suite needs.
BERTH_PY_PACKAGES=(
    "awscli=awscli" "boto3=boto3" "pytest=pytest" "xdist=pytest-xdist"
    "pytest_timeout=pytest-timeout"
)

berth_log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
berth_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

berth_require_root() {
    [ "$(id -u)" -eq 0 ] || berth_die "run this as root (it starts containerd and configures networking)"
}

# Installs the missing Debian packages, running `apt-get update` once and only
# when something is missing. Never prompts.
berth_install_debs() {
    local missing=() p
    for p in "${BERTH_DEB_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        berth_log "Debian packages: all present"
        return 0
    fi
    berth_log "Debian packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
}

# Installs the Python packages that are not importable yet.
berth_install_python() {
    command -v python3 >/dev/null || berth_die "python3 is missing"
    local missing=() entry mod pkg
    for entry in "${BERTH_PY_PACKAGES[@]}"; do
        mod=${entry%%=*}
        pkg=${entry#*=}
        if [ "$mod" = awscli ]; then
            command -v aws >/dev/null && python3 -c 'import awscli' 2>/dev/null && continue
        elif python3 -c "import $mod" 2>/dev/null; then
            continue
        fi
        missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        berth_log "Python packages: all present"
        return 0
    fi
    berth_log "Python packages: installing ${missing[*]}"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pip </dev/null
    fi
    # Debian's own python3 is "externally managed"; a pyenv/venv python is not.
    if ! python3 -m pip install -q "${missing[@]}" </dev/null; then
        python3 -m pip install -q --break-system-packages "${missing[@]}" </dev/null
    fi
    hash -r
    command -v aws >/dev/null || berth_die "aws CLI not on PATH after installing awscli"
}

# Makes sure cargo is usable (rustup's env is sourced when present). Debian 12's
# own rustc is older than the workspace's rust-version, so we do not apt it.
berth_require_cargo() {
    if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null || berth_die "cargo not found: install a Rust toolchain >= 1.80 (rustup) first"
}

berth_install_deps() {
    berth_install_debs
    berth_install_python
    berth_require_cargo
}

# Step timing for the summary: berth_step NAME CMD... runs CMD, records
# "NAME <seconds> ok|FAILED" in BERTH_STEPS, and returns CMD's status.
BERTH_STEPS=()
berth_step() {
    local name=$1 start rc
    shift
    berth_log "$name"
    start=$(date +%s)
    set +e
    "$@"
    rc=$?
    set -e
    local secs=$(( $(date +%s) - start ))
    if [ "$rc" -eq 0 ]; then
        BERTH_STEPS+=("$(printf '%-28s %5ss  ok' "$name" "$secs")")
    else
        BERTH_STEPS+=("$(printf '%-28s %5ss  FAILED (exit %s)' "$name" "$secs" "$rc")")
    fi
    return "$rc"
}

berth_summary() {
    local line
    printf '\n%s\n' "---- summary ----" >&2
    for line in "${BERTH_STEPS[@]}"; do
        printf '%s\n' "$line" >&2
    done
}
