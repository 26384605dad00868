#!/usr/bin/env bash
# Installs the Berth agent on this host and registers it with a coordinator,
# the way Amazon's ecs-anywhere-install.sh does for ECS Anywhere:
#   1. installs the agent binary as /usr/local/bin/berth-agent,
#   2. installs berth-agent.service and writes /etc/berth/agent.env,
#   3. runs `berth-agent register` with a one-time SSM-style activation,
#   4. enables and starts the unit (when systemd is running).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)

usage() {
    cat <<USAGE
Usage: install-agent.sh --coordinator URL --activation-id ID --activation-code CODE [options]

Registers this host as a Berth container instance (ECS Anywhere style) and
installs the berth-agent systemd service.

Create the activation on an admin machine first:
  aws ssm create-activation --iam-role berth --registration-limit 1 \\
      --endpoint-url URL --region us-east-1

Required:
  --coordinator URL          coordinator endpoint, e.g. http://10.0.0.5:7700
  --activation-id ID         ActivationId from create-activation
  --activation-code CODE     ActivationCode from create-activation

Options:
  --cluster NAME             cluster to join (default: default)
  --binary PATH              berth-agent binary to install
                             (default: berth-agent next to this script, then on PATH)
  --containerd-socket PATH   containerd socket (default: /run/containerd/containerd.sock)
  --data-dir DIR             agent state directory (default: /var/lib/berth-agent)
  --insecure-registry H:P    allow plain HTTP to this registry (repeatable)
  --attribute K=V            custom container-instance attribute (repeatable)
  --install-deps             apt-get install containerd, runc and the CNI plugins if missing
  --no-start                 install and register, but do not enable/start the unit
  --root DIR                 install under DIR instead of / (for packaging and tests;
                             implies --no-start)
  -h, --help                 show this help
USAGE
}

die() { printf 'install-agent.sh: %s\n' "$*" >&2; exit 1; }
log() { printf 'install-agent.sh: %s\n' "$*" >&2; }

COORDINATOR="" ACT_ID="" ACT_CODE="" CLUSTER="default" BINARY=""
SOCKET=/run/containerd/containerd.sock DATA_DIR=/var/lib/berth-agent
ROOT="" START=1 INSTALL_DEPS=0
INSECURE=() ATTRS=()

need_arg() { [ "$#" -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }
while [ "$#" -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --coordinator) need_arg "$@"; COORDINATOR=$2; shift 2 ;;
        --activation-id) need_arg "$@"; ACT_ID=$2; shift 2 ;;
        --activation-code) need_arg "$@"; ACT_CODE=$2; shift 2 ;;
        --cluster) need_arg "$@"; CLUSTER=$2; shift 2 ;;
        --binary) need_arg "$@"; BINARY=$2; shift 2 ;;
        --containerd-socket) need_arg "$@"; SOCKET=$2; shift 2 ;;
        --data-dir) need_arg "$@"; DATA_DIR=$2; shift 2 ;;
        --insecure-registry) need_arg "$@"; INSECURE+=("$2"); shift 2 ;;
        --attribute) need_arg "$@"; ATTRS+=("$2"); shift 2 ;;
        --install-deps) INSTALL_DEPS=1; shift ;;
        --no-start) START=0; shift ;;
        --root) need_arg "$@"; ROOT=$(cd "$2" && pwd) || die "--root $2: no such directory"; START=0; shift 2 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[ -n "$COORDINATOR" ] || die "--coordinator is required (see --help)"
[ -n "$ACT_ID" ] || die "--activation-id is required (see --help)"
[ -n "$ACT_CODE" ] || die "--activation-code is required (see --help)"
case "$COORDINATOR" in http://*|https://*) ;; *) die "--coordinator must be an http:// or https:// URL" ;; esac
for a in "${ATTRS[@]}"; do
    case "$a" in ?*=*) ;; *) die "--attribute $a: expected K=V" ;; esac
done
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (the agent manages containers and networking)"
fi

if [ -z "$BINARY" ]; then
    if [ -x "$SCRIPT_DIR/berth-agent" ]; then
        BINARY=$SCRIPT_DIR/berth-agent
    elif command -v berth-agent >/dev/null; then
        BINARY=$(command -v berth-agent)
    else
        die "no berth-agent binary found: pass --binary PATH"
    fi
fi
[ -x "$BINARY" ] || die "--binary $BINARY is not an executable file"

UNIT_SRC=$SCRIPT_DIR/berth-agent.service
[ -f "$UNIT_SRC" ] || die "berth-agent.service not found next to this script ($SCRIPT_DIR)"

if [ "$INSTALL_DEPS" -eq 1 ]; then
    missing=()
    for p in containerd runc containernetworking-plugins iptables iproute2; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q </dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
    fi
fi

BIN_DST=$ROOT/usr/local/bin/berth-agent
UNIT_DST=$ROOT/etc/systemd/system/berth-agent.service
DROPIN_DIR=$ROOT/etc/systemd/system/berth-agent.service.d
ENV_FILE=$ROOT/etc/berth/agent.env
STATE=$ROOT$DATA_DIR

log "installing $BINARY as $BIN_DST"
install -D -m 0755 "$BINARY" "$BIN_DST"
install -D -m 0644 "$UNIT_SRC" "$UNIT_DST"

log "writing $ENV_FILE"
install -d -m 0755 "$(dirname "$ENV_FILE")"
umask 077
cat >"$ENV_FILE" <<ENV
# Written by install-agent.sh; read by berth-agent.service.
BERTH_DATA_DIR=$DATA_DIR
BERTH_CONTAINERD_SOCKET=$SOCKET
RUST_LOG=info
ENV
umask 022

# Repeatable flags go on the command line through a drop-in, so they do not
# depend on how a list is spelled in an environment variable.
install -d -m 0755 "$DROPIN_DIR"
{
    echo "# Written by install-agent.sh."
    echo "[Service]"
    echo "ExecStart="
    printf 'ExecStart=/usr/local/bin/berth-agent run'
    for r in "${INSECURE[@]}"; do printf ' --insecure-registry %s' "$r"; done
    printf '\n'
} >"$DROPIN_DIR/10-install.conf"

log "registering with $COORDINATOR (cluster $CLUSTER)"
install -d -m 0700 "$STATE"
register=("$BIN_DST" register --coordinator "$COORDINATOR" --activation-id "$ACT_ID"
          --activation-code "$ACT_CODE" --cluster "$CLUSTER" --data-dir "$STATE")
for a in "${ATTRS[@]}"; do register+=(--attribute "$a"); done
"${register[@]}"

if [ "$START" -eq 0 ]; then
    log "installed and registered; not starting (start with: systemctl enable --now berth-agent)"
    exit 0
fi
if [ ! -d /run/systemd/system ]; then
    log "systemd is not running on this host; start the agent yourself:"
    log "  $BIN_DST run --data-dir $DATA_DIR --containerd-socket $SOCKET"
    exit 0
fi
systemctl daemon-reload
systemctl enable --now berth-agent.service
log "berth-agent is running: systemctl status berth-agent"
