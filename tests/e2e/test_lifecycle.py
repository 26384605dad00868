"""Task lifecycle end to end (issue #2, item 1): real coordinator, agent,
containerd and registry; boto3 and the AWS CLI as clients.

Each test gets its own cluster, agent and containerd namespace on a host shared
by the module, and checks that containerd holds nothing once its tasks stopped."""

from __future__ import annotations

import json
import os
import time

import pytest

import harness
from harness import assert_forward_only, wait_for

# Long-lived commands. The container's sh is PID 1 of its PID namespace, so the
# kernel drops signals it has no handler for: without a trap, SIGTERM does nothing.
IGNORES_TERM = ["sh", "-c", "trap '' TERM; sleep 1000 & wait"]
EXITS_ON_TERM = ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; sleep 1000 & wait"]


def assert_containerd_empty(cluster, timeout: float = 15) -> None:
    """No containerd container (nor task) is left in the agent's namespace."""
    try:
        wait_for(lambda: not cluster.ctr_containers() and not cluster.ctr_tasks(), timeout=timeout,
                 what="containerd namespace to be empty")
    except harness.HarnessError:
        pytest.fail(f"containerd still holds containers {cluster.ctr_containers()} / tasks {cluster.ctr_tasks()} "
                    f"in namespace {cluster.namespace} after the tasks stopped")


def test_task_runs_and_reports_exit_code(cluster):
    td = cluster.register_td([cluster.container(command=["sh", "-c", "sleep 2; exit 3"])])
    out = cluster.ecs.run_task(cluster=cluster.name, taskDefinition=td)
    assert out["failures"] == []
    task = out["tasks"][0]
    assert task["desiredStatus"] == "RUNNING"
    seen = [task["lastStatus"]]
    assert seen[0] in ("PROVISIONING", "PENDING"), seen

    cluster.wait_task(task["taskArn"], "RUNNING", timeout=60, seen=seen)
    task, seen = cluster.wait_task(task["taskArn"], "STOPPED", timeout=30, seen=seen)

    assert "PENDING" in seen and "RUNNING" in seen, seen
    assert seen.index("RUNNING") < seen.index("STOPPED"), seen
    assert_forward_only(seen)
    assert task["stopCode"] == "EssentialContainerExited", task
    assert "Essential container" in task.get("stoppedReason", ""), task
    assert task["desiredStatus"] == "STOPPED"
    container = task["containers"][0]
    assert container["lastStatus"] == "STOPPED"
    assert container["exitCode"] == 3, container
    assert container.get("runtimeId"), container
    assert task["startedAt"] <= task["stoppedAt"], task
    assert_containerd_empty(cluster)


def stop_and_time(cluster, arn: str, reason: str) -> tuple[dict, float]:
    t0 = time.monotonic()
    out = cluster.ecs.stop_task(cluster=cluster.name, task=arn, reason=reason)
    assert out["task"]["desiredStatus"] == "STOPPED", out
    task, seen = cluster.wait_task(arn, "STOPPED", timeout=60, interval=0.1)
    assert_forward_only(seen)
    return task, time.monotonic() - t0


def test_stop_task_sigkills_after_stop_timeout(cluster):
    td = cluster.register_td([cluster.container(command=IGNORES_TERM, stopTimeout=3)])
    arn = cluster.run_task(td)
    cluster.wait_task(arn, "RUNNING", timeout=60)
    time.sleep(0.5)  # let sh install its trap

    reason = "stopped by test_stop_task_sigkills_after_stop_timeout"
    task, took = stop_and_time(cluster, arn, reason)

    assert task["stopCode"] == "UserInitiated", task
    assert task["stoppedReason"] == reason, task
    assert 3.0 <= took < 15.0, f"stop took {took:.1f}s; stopTimeout is 3s"
    assert task["containers"][0]["exitCode"] == 137, task["containers"]
    assert_containerd_empty(cluster)


def test_stop_task_sigterm_stops_quickly(cluster):
    td = cluster.register_td([cluster.container(command=EXITS_ON_TERM, stopTimeout=20)])
    arn = cluster.run_task(td)
    cluster.wait_task(arn, "RUNNING", timeout=60)
    time.sleep(0.5)

    task, took = stop_and_time(cluster, arn, "quick stop")

    assert task["stopCode"] == "UserInitiated", task
    assert task["stoppedReason"] == "quick stop"
    assert took < 8.0, f"stop took {took:.1f}s although the container exits on SIGTERM (stopTimeout 20s)"
    assert task["containers"][0]["exitCode"] == 0, task["containers"]
    log = cluster.agent.log_path(arn, "main")
    assert "got TERM" in log.read_text(), f"{log}: the container never saw SIGTERM"
    assert_containerd_empty(cluster)


def test_essential_exit_stops_non_essential_container(cluster):
    td = cluster.register_td([
        cluster.container("app", command=["sh", "-c", "sleep 2; exit 0"]),
        cluster.container("sidecar", command=["sleep", "1000"], essential=False, stopTimeout=2),
    ])
    arn = cluster.run_task(td)
    seen: list[str] = []
    cluster.wait_task(arn, "RUNNING", timeout=60, seen=seen)
    t0 = time.monotonic()
    task, seen = cluster.wait_task(arn, "STOPPED", timeout=40, seen=seen)
    assert_forward_only(seen)
    # sidecar is `sleep` as PID 1 (ignores SIGTERM): killed after its 2 s stopTimeout.
    assert time.monotonic() - t0 < 20

    assert task["stopCode"] == "EssentialContainerExited", task
    by_name = {c["name"]: c for c in task["containers"]}
    assert set(by_name) == {"app", "sidecar"}
    assert by_name["app"]["lastStatus"] == "STOPPED"
    assert by_name["sidecar"]["lastStatus"] == "STOPPED"
    assert by_name["app"]["exitCode"] == 0, by_name
    assert by_name["sidecar"]["exitCode"] == 137, by_name
    assert_containerd_empty(cluster)


def test_missing_image_fails_to_start(cluster):
    image = f"{cluster.registry.addr}/does-not-exist:latest"
    td = cluster.register_td([cluster.container(command=["true"], image=image)])
    arn = cluster.run_task(td)
    task, seen = cluster.wait_task(arn, "STOPPED", timeout=60)
    assert_forward_only(seen)
    assert "RUNNING" not in seen, seen

    assert task["stopCode"] == "TaskFailedToStart", task
    reason = task.get("stoppedReason", "")
    assert "CannotPullContainerError" in reason, task
    assert "does-not-exist" in reason, task
    assert task["containers"][0]["lastStatus"] == "STOPPED"
    assert_containerd_empty(cluster)


def test_network_mode_none_has_only_loopback(cluster):
    td = cluster.register_td([cluster.container(command=["ls", "/sys/class/net"])], network_mode="none")
    arn = cluster.run_task(td)
    task, _ = cluster.wait_task(arn, "STOPPED", timeout=60)
    assert task["containers"][0]["exitCode"] == 0, task
    log = cluster.agent.log_path(arn, "main")
    assert log.exists(), f"no container log at {log}"
    assert log.read_text().split() == ["lo"], log.read_text()
    assert_containerd_empty(cluster)


def test_network_mode_host_sees_host_interfaces(cluster):
    td = cluster.register_td([cluster.container(command=["ls", "/sys/class/net"])], network_mode="host")
    arn = cluster.run_task(td)
    task, _ = cluster.wait_task(arn, "STOPPED", timeout=60)
    assert task["containers"][0]["exitCode"] == 0, task
    names = cluster.agent.log_path(arn, "main").read_text().split()
    assert sorted(names) == sorted(os.listdir("/sys/class/net")), names


@pytest.mark.parametrize("network_mode", ["bridge", None])
def test_bridge_mode_without_cni_is_refused_clearly(cluster, network_mode):
    # The single-host harness runs its agent with --no-cni (see harness.Agent).
    td = cluster.register_td([cluster.container(command=["true"])], network_mode=network_mode)
    arn = cluster.run_task(td)
    task, seen = cluster.wait_task(arn, "STOPPED", timeout=60)
    assert "RUNNING" not in seen, seen
    assert task["stopCode"] == "TaskFailedToStart", task
    reason = task.get("stoppedReason", "").lower()
    assert "bridge" in reason and "--no-cni" in reason, task
    assert_containerd_empty(cluster)


def test_aws_cli_flow(cluster, tmp_path):
    family = f"cli-{cluster.name}"
    spec = {
        "family": family,
        "networkMode": "host",
        "containerDefinitions": [{
            "name": "web", "image": cluster.image, "essential": True, "memory": 32,
            "command": EXITS_ON_TERM, "stopTimeout": 10,
        }],
    }
    path = tmp_path / "td.json"
    path.write_text(json.dumps(spec))
    coord = cluster.coordinator

    td = coord.aws("ecs", "register-task-definition", "--cli-input-json", f"file://{path}")["taskDefinition"]
    assert td["family"] == family and td["revision"] >= 1 and td["status"] == "ACTIVE"

    run = coord.aws("ecs", "run-task", "--cluster", cluster.name, "--task-definition", f"{family}:{td['revision']}")
    assert run["failures"] == []
    arn = run["tasks"][0]["taskArn"]
    assert arn.startswith("arn:aws:ecs:us-east-1:") and f":task/{cluster.name}/" in arn

    def cli_status():
        out = coord.aws("ecs", "describe-tasks", "--cluster", cluster.name, "--tasks", arn)
        assert out["failures"] == []
        return out["tasks"][0]

    harness.wait_task_status(cli_status, "RUNNING", timeout=60, seen=None, interval=0.5)
    listed = coord.aws("ecs", "list-tasks", "--cluster", cluster.name)["taskArns"]
    assert arn in listed

    stopped = coord.aws("ecs", "stop-task", "--cluster", cluster.name, "--task", arn, "--reason", "cli stop")
    assert stopped["task"]["desiredStatus"] == "STOPPED"
    task, seen = harness.wait_task_status(cli_status, "STOPPED", timeout=60, seen=None, interval=0.5)
    assert_forward_only(seen)
    assert task["stopCode"] == "UserInitiated"
    assert task["stoppedReason"] == "cli stop"
    assert task["containers"][0]["exitCode"] == 0
    assert_containerd_empty(cluster)


def test_container_definition_shapes_the_process(cluster):
    """environment, workingDirectory, user and the container's log file."""
    td = cluster.register_td([cluster.container(
        command=["sh", "-c", 'echo "FOO=$FOO"; pwd; id -u; echo to-stderr >&2'],
        environment=[{"name": "FOO", "value": "bar baz"}],
        workingDirectory="/tmp",
        user="65534",
    )])
    arn = cluster.run_task(td)
    task, _ = cluster.wait_task(arn, "STOPPED", timeout=60)
    assert task["containers"][0]["exitCode"] == 0, task
    # containerd 1.6's runc shim writes both streams to the stdout `file://` URI
    # (documented on `CreateRequest::stdout_path`), so the log is the combined output,
    # the two pipes interleaved in no fixed order.
    out = cluster.agent.log_path(arn, "main").read_text().splitlines()
    assert [line for line in out if line != "to-stderr"] == ["FOO=bar baz", "/tmp", "65534"], out
    assert out.count("to-stderr") == 1, out
    assert_containerd_empty(cluster)


def test_run_task_container_overrides(cluster):
    td = cluster.register_td([cluster.container(command=["sh", "-c", "exit 1"])])
    out = cluster.ecs.run_task(
        cluster=cluster.name, taskDefinition=td,
        overrides={"containerOverrides": [{
            "name": "main", "command": ["sh", "-c", 'echo "$MODE"; exit 9'],
            "environment": [{"name": "MODE", "value": "overridden"}],
        }]},
    )
    assert out["failures"] == []
    arn = out["tasks"][0]["taskArn"]
    task, _ = cluster.wait_task(arn, "STOPPED", timeout=60)
    assert task["containers"][0]["exitCode"] == 9, task
    assert cluster.agent.log_path(arn, "main").read_text().split() == ["overridden"]


def test_missing_executable_fails_to_start(cluster):
    td = cluster.register_td([cluster.container(command=["/nonexistent-binary"])])
    arn = cluster.run_task(td)
    task, seen = cluster.wait_task(arn, "STOPPED", timeout=60)
    assert_forward_only(seen)
    assert "RUNNING" not in seen, seen
    assert task["stopCode"] == "TaskFailedToStart", task
    container = task["containers"][0]
    reasons = task.get("stoppedReason", "") + " " + container.get("reason", "")
    assert "CannotStartContainerError" in reasons or "CannotCreateContainerError" in reasons, task
    assert "/nonexistent-binary" in reasons, task
    assert_containerd_empty(cluster)
