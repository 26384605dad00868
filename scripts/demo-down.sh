#!/usr/bin/env bash
# Stops the demo started by scripts/demo.sh and cleans up after it.
#
# It stops exactly the processes recorded in $BERTH_DEMO_DIR/pids (checking
# that each PID still runs the program that was recorded, so a reused PID is
# never signalled): the agent first, then it removes the demo's containers
# through the demo's own containerd (which also ends their shims), then the
# coordinator, the registry and containerd. Finally it unmounts anything left
# under the demo directory and removes it (BERTH_DEMO_KEEP_LOGS=1 keeps logs/).
set -euo pipefail

DEMO=${BERTH_DEMO_DIR:-/tmp/berth-demo}
PIDS=$DEMO/pids
SOCK_DIR=/run/berth-demo
SOCK=$SOCK_DIR/containerd.sock

log() { printf '==> %s\n' "$*" >&2; }

case "$DEMO" in
    /*/*) ;;
    *) printf 'error: refusing BERTH_DEMO_DIR=%s (must be an absolute path below a directory)\n' "$DEMO" >&2; exit 1 ;;
esac

if [ ! -f "$PIDS" ]; then
    log "no demo recorded in $PIDS; nothing to stop"
    exit 0
fi

# The program each recorded name must be running.
expected_program() {
    case "$1" in
        containerd) echo containerd ;;
        registry) echo docker-registry ;;
        coordinator) echo berth-coordinator ;;
        agent) echo berth-agent ;;
        *) echo "" ;;
    esac
}

pid_of() { awk -v n="$1" '$1 == n { print $2 }' "$PIDS" | tail -n 1; }

# True when PID is alive and runs the program recorded for NAME.
is_ours() {
    local name=$1 pid=$2 prog argv0
    prog=$(expected_program "$name")
    [ -n "$prog" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    argv0=$({ tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null | head -n 1)
    [ "$(basename "$argv0")" = "$prog" ] || return 1
    # A zombie is already gone.
    ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

stop_one() {
    local name=$1 pid i
    pid=$(pid_of "$name")
    [ -n "$pid" ] || return 0
    if ! is_ours "$name" "$pid"; then
        log "$name (pid $pid) is not running"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        is_ours "$name" "$pid" || return 0
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM for 15s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        is_ours "$name" "$pid" || return 0
        sleep 0.1
    done
    log "warning: $name (pid $pid) is still alive"
}

DEMO_NAMESPACES=()
remove_containers() {
    local ctr=(ctr --address "$SOCK") ns t c
    "${ctr[@]}" version >/dev/null 2>&1 || return 0
    for ns in $("${ctr[@]}" namespaces ls -q 2>/dev/null); do
        DEMO_NAMESPACES+=("$ns")
        for t in $("${ctr[@]}" -n "$ns" tasks ls -q 2>/dev/null); do
            log "removing container task $ns/$t"
            "${ctr[@]}" -n "$ns" tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
        done
        for t in $("${ctr[@]}" -n "$ns" tasks ls -q 2>/dev/null); do
            for _ in $(seq 1 50); do
                "${ctr[@]}" -n "$ns" tasks delete "$t" >/dev/null 2>&1 && break
                sleep 0.1
            done
        done
        for c in $("${ctr[@]}" -n "$ns" containers ls -q 2>/dev/null); do
            "${ctr[@]}" -n "$ns" containers delete "$c" >/dev/null 2>&1 || true
        done
    done
}

stop_one agent
remove_containers
stop_one coordinator
stop_one registry
stop_one containerd

# Shims of the demo's containerd should have exited with their tasks.
for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -q -- "-address $SOCK "; then
        log "warning: shim pid $pid of the demo's containerd is still running"
    fi
done

# Unmount anything left under the demo dir (deepest first), then remove it.
awk -v p="$DEMO" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo \
    | awk '{ print gsub("/", "/"), $0 }' | sort -rn | cut -d' ' -f2- | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done

rm -rf "$SOCK_DIR"
# The runc shim keeps per-namespace state dirs; remove ours if now empty
# (rmdir never removes one another containerd still uses).
for ns in "${DEMO_NAMESPACES[@]}"; do
    rmdir "/run/containerd/runc/$ns" 2>/dev/null || true
done
if [ "${BERTH_DEMO_KEEP_LOGS:-0}" = 1 ]; then
    find "$DEMO" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
    log "demo stopped; logs kept in $DEMO/logs"
else
    rm -rf "$DEMO"
    log "demo stopped and $DEMO removed"
fi
