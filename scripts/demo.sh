#!/usr/bin/env bash
# Brings up a local one-host Berth cluster on this machine, as root:
#   its own containerd (own config, root, state and socket; CRI off),
#   a local registry on 127.0.0.1 holding a busybox web-server image,
#   the coordinator (embedded store), one registered agent,
# then registers the task definition `berth-demo` (host network, port 8080),
# runs it, waits until it is RUNNING and fetches its page once.
#
# Everything lives in ${BERTH_DEMO_DIR:-/tmp/berth-demo}; the PIDs of the
# processes it starts are recorded in $BERTH_DEMO_DIR/pids, and
# scripts/demo-down.sh stops exactly those and cleans up.
#
# Settings (environment): BERTH_DEMO_DIR, BERTH_DEMO_PORT (coordinator, 7700),
# BERTH_DEMO_REGISTRY_PORT (5000). The demo task listens on 127.0.0.1:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

berth_require_root
exec </dev/null 3>&2

DEMO=${BERTH_DEMO_DIR:-/tmp/berth-demo}
PORT=${BERTH_DEMO_PORT:-7700}
REG_PORT=${BERTH_DEMO_REGISTRY_PORT:-5000}
APP_PORT=8080
SOCK_DIR=/run/berth-demo
SOCK=$SOCK_DIR/containerd.sock
ENDPOINT=http://127.0.0.1:$PORT
REGISTRY=127.0.0.1:$REG_PORT
IMAGE=$REGISTRY/berth-demo:latest
PIDS=$DEMO/pids

# ---- refuse to start twice: stop the previous demo first (by its PID file)
if [ -f "$PIDS" ]; then
    berth_log "a previous demo is recorded in $PIDS: stopping it first"
    bash "$REPO/scripts/demo-down.sh"
fi

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
for p in "$PORT" "$REG_PORT" "$APP_PORT"; do
    port_busy "$p" && berth_die "port $p is already in use on this machine (set BERTH_DEMO_PORT / BERTH_DEMO_REGISTRY_PORT, or free $APP_PORT)"
done

berth_step "install dependencies" berth_install_deps
berth_step "cargo build --release" cargo build --release -p berth-coordinator -p berth-agent
BIN=$REPO/target/release

mkdir -p "$DEMO"/{containerd/root,containerd/state,containerd/opt,registry/storage,coordinator,agent,logs}
mkdir -p "$SOCK_DIR"
: >"$PIDS"

# On failure, say where the logs are and stop what was started (unless asked not to).
on_exit() {
    local rc=$?
    [ "$rc" -eq 0 ] && return 0
    printf '\ndemo failed (exit %s); logs are in %s/logs\n' "$rc" "$DEMO" >&2
    if [ "${BERTH_DEMO_KEEP_ON_FAILURE:-0}" = 1 ]; then
        printf 'left running (BERTH_DEMO_KEEP_ON_FAILURE=1); stop with: bash scripts/demo-down.sh\n' >&2
    else
        BERTH_DEMO_KEEP_LOGS=1 bash "$REPO/scripts/demo-down.sh" || true
    fi
}
trap on_exit EXIT

# Starts "$@" in its own session (so it outlives this script and the terminal),
# with output in $DEMO/logs/NAME.log, and records "NAME PID".
start_bg() {
    local name=$1
    shift
    setsid "$@" >"$DEMO/logs/$name.log" 2>&1 </dev/null &
    echo "$name $!" >>"$PIDS"
    echo $!
}

wait_until() { # wait_until SECONDS WHAT CMD...
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    berth_die "timed out after ${secs}s waiting for $what (logs in $DEMO/logs)"
}

alive() { kill -0 "$1" 2>/dev/null; }

# ---- containerd
cat >"$DEMO/containerd/config.toml" <<EOF
version = 2
root = "$DEMO/containerd/root"
state = "$DEMO/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$DEMO/containerd/opt"
EOF
berth_log "starting containerd ($SOCK)"
CONTAINERD_PID=$(start_bg containerd containerd --config "$DEMO/containerd/config.toml")
wait_until 30 "containerd" ctr --address "$SOCK" version
alive "$CONTAINERD_PID" || berth_die "containerd exited (see $DEMO/logs/containerd.log)"

# ---- registry with the demo image
cat >"$DEMO/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DEMO/registry/storage
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
berth_log "starting the registry on $REGISTRY"
start_bg registry docker-registry serve "$DEMO/registry/config.yml" >/dev/null
wait_until 20 "the registry" curl -fsS "http://$REGISTRY/v2/"
berth_log "building and pushing $IMAGE"
python3 tests/tools/mkimage.py --registry "$REGISTRY" --name berth-demo:latest \
    --cmd "[\"httpd\",\"-f\",\"-p\",\"$APP_PORT\",\"-h\",\"/www\"]" >"$DEMO/logs/mkimage.log" 2>&1 \
    || berth_die "image build/push failed (see $DEMO/logs/mkimage.log)"

# ---- coordinator
berth_log "starting the coordinator on $ENDPOINT"
COORD_PID=$(start_bg coordinator env RUST_LOG=info "$BIN/berth-coordinator" \
    --listen "127.0.0.1:$PORT" --data-dir "$DEMO/coordinator")
wait_until 30 "the coordinator" grep -q '^listening on ' "$DEMO/logs/coordinator.log"
alive "$COORD_PID" || berth_die "the coordinator exited (see $DEMO/logs/coordinator.log)"
wait_until 10 "the coordinator's credentials" test -s "$DEMO/coordinator/credentials"

export AWS_SHARED_CREDENTIALS_FILE=$DEMO/coordinator/credentials AWS_CONFIG_FILE=/dev/null \
    AWS_DEFAULT_REGION=us-east-1 AWS_PAGER="" AWS_EC2_METADATA_DISABLED=true
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE
awsb() { aws "$@" --endpoint-url "$ENDPOINT" --region us-east-1 --output json; }

awsb ecs create-cluster --cluster-name default >/dev/null

# ---- agent: ECS Anywhere-style activation, registration, run
berth_log "registering the agent with a one-time activation"
ACT=$(awsb ssm create-activation --iam-role berth --registration-limit 1)
ACT_ID=$(jq -r .ActivationId <<<"$ACT")
ACT_CODE=$(jq -r .ActivationCode <<<"$ACT")
"$BIN/berth-agent" register --coordinator "$ENDPOINT" --activation-id "$ACT_ID" \
    --activation-code "$ACT_CODE" --cluster default --data-dir "$DEMO/agent" \
    >"$DEMO/logs/agent-register.log" 2>&1 || berth_die "agent registration failed (see $DEMO/logs/agent-register.log)"
berth_log "starting the agent"
AGENT_PID=$(start_bg agent env RUST_LOG=info "$BIN/berth-agent" run --data-dir "$DEMO/agent" \
    --containerd-socket "$SOCK" --insecure-registry "$REGISTRY")
agent_connected() {
    local arns
    arns=$(awsb ecs list-container-instances --cluster default | jq -r '.containerInstanceArns[]')
    [ -n "$arns" ] || return 1
    # shellcheck disable=SC2086
    awsb ecs describe-container-instances --cluster default --container-instances $arns \
        | jq -e '.containerInstances | any(.agentConnected == true)'
}
wait_until 60 "the agent to connect" agent_connected
alive "$AGENT_PID" || berth_die "the agent exited (see $DEMO/logs/agent.log)"

# ---- the demo task
berth_log "registering task definition berth-demo and running it"
cat >"$DEMO/taskdef.json" <<EOF
{
  "family": "berth-demo",
  "networkMode": "host",
  "containerDefinitions": [
    {
      "name": "web",
      "image": "$IMAGE",
      "essential": true,
      "memory": 32,
      "command": ["httpd", "-f", "-p", "$APP_PORT", "-h", "/www"],
      "portMappings": [{"containerPort": $APP_PORT, "hostPort": $APP_PORT, "protocol": "tcp"}]
    }
  ]
}
EOF
awsb ecs register-task-definition --cli-input-json "file://$DEMO/taskdef.json" >/dev/null
RUN=$(awsb ecs run-task --cluster default --task-definition berth-demo --started-by berth-demo)
TASK=$(jq -r '.tasks[0].taskArn // empty' <<<"$RUN")
[ -n "$TASK" ] || berth_die "run-task placed nothing: $(jq -c .failures <<<"$RUN")"
echo "$TASK" >"$DEMO/task-arn"
task_running() {
    local status
    status=$(awsb ecs describe-tasks --cluster default --tasks "$TASK" | jq -r '.tasks[0].lastStatus')
    if [ "$status" = STOPPED ]; then
        printf 'error: the demo task stopped: %s\n' \
            "$(awsb ecs describe-tasks --cluster default --tasks "$TASK" | jq -c '.tasks[0] | {stopCode, stoppedReason, containers: [.containers[] | {name, exitCode, reason}]}')" >&3
        exit 1
    fi
    [ "$status" = RUNNING ]
}
wait_until 120 "the demo task to be RUNNING" task_running
wait_until 20 "the demo web server" curl -fsS "http://127.0.0.1:$APP_PORT/"
PAGE=$(curl -fsS "http://127.0.0.1:$APP_PORT/")

berth_summary
cat <<EOF

Berth demo is up (state and logs in $DEMO).
  task:   $TASK  (RUNNING)
  page:   curl http://127.0.0.1:$APP_PORT/   ->  $PAGE

Talk to the coordinator with the AWS CLI:
  export AWS_SHARED_CREDENTIALS_FILE=$DEMO/coordinator/credentials AWS_CONFIG_FILE=/dev/null
  aws ecs list-tasks --cluster default --endpoint-url $ENDPOINT --region us-east-1
  aws ecs describe-tasks --cluster default --tasks $TASK --endpoint-url $ENDPOINT --region us-east-1

Stop it all:
  bash scripts/demo-down.sh
EOF
