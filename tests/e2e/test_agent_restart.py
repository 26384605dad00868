"""Agent crash and restart end to end (issue #2, item 5): tasks keep running
while the agent is down, the restarted agent re-adopts them from containerd
(same containers, same processes, no duplicates) and reports exits it missed."""

from __future__ import annotations

import time

import pytest

import harness
from harness import assert_forward_only, wait_for

LONG = ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]


def snapshot(cluster, arns: list[str]) -> dict[str, dict[str, str]]:
    """task arn -> {container name: runtimeId} from DescribeTasks."""
    return {t["taskArn"]: {c["name"]: c.get("runtimeId") for c in t["containers"]} for t in cluster.describe(arns)}


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_agent_restart_readopts_tasks(private_cluster, how):
    """`kill -9` (crash) or SIGTERM (service stop): either way the tasks keep running."""
    cluster = private_cluster
    long_td = cluster.register_td([cluster.container(command=LONG, stopTimeout=5)])
    short_td = cluster.register_td([cluster.container(command=["sh", "-c", "sleep 6; exit 7"])])
    long_arns = [cluster.run_task(long_td), cluster.run_task(long_td)]
    short_arn = cluster.run_task(short_td)
    started = time.monotonic()
    for arn in long_arns + [short_arn]:
        cluster.wait_task(arn, "RUNNING", timeout=60)

    before = snapshot(cluster, long_arns)
    runtime_ids = {arn: ids["main"] for arn, ids in before.items()}
    assert all(runtime_ids.values()), before
    assert len(set(runtime_ids.values())) == 2, before
    ctr_before = cluster.ctr_tasks()
    for arn, rid in runtime_ids.items():
        assert rid in ctr_before, f"runtimeId {rid} of {arn} is not a containerd task: {ctr_before}"
        assert ctr_before[rid][1] == "RUNNING"
    pids_before = {rid: ctr_before[rid][0] for rid in runtime_ids.values()}
    short_rid = snapshot(cluster, [short_arn])[short_arn]["main"]

    if how == "kill9":
        cluster.agent.kill9()
    else:
        cluster.agent.stop()
        assert cluster.agent.proc.returncode == 0, f"agent exited {cluster.agent.proc.returncode} on SIGTERM"

    # While the agent is down, the short task's container exits on its own.
    wait_for(lambda: cluster.ctr_tasks().get(short_rid, (0, "RUNNING"))[1] == "STOPPED",
             timeout=max(1.0, 15 - (time.monotonic() - started)), what="short task to exit while the agent is down")
    ctr_down = cluster.ctr_tasks()
    for rid, pid in pids_before.items():
        assert ctr_down[rid] == (pid, "RUNNING"), f"{rid} did not survive the agent's death: {ctr_down}"
    # The coordinator has not been told yet.
    assert cluster.describe_one(short_arn)["lastStatus"] == "RUNNING"

    cluster.agent.start()

    task, seen = cluster.wait_task(short_arn, "STOPPED", timeout=60)
    assert_forward_only(["RUNNING"] + seen)
    assert task["containers"][0]["exitCode"] == 7, task
    assert task["stopCode"] == "EssentialContainerExited", task

    cluster.wait_agent_connected(True, timeout=30)
    # Give the re-adopting agent time to do anything wrong (restart, duplicate).
    time.sleep(3)
    after = snapshot(cluster, long_arns)
    assert after == before, f"runtime ids changed across the agent restart: {before} -> {after}"
    for t in cluster.describe(long_arns):
        assert t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING", t
    ctr_after = cluster.ctr_tasks()
    for rid, pid in pids_before.items():
        assert ctr_after.get(rid) == (pid, "RUNNING"), f"container {rid} was restarted: {pid} -> {ctr_after.get(rid)}"
    for arn in long_arns:
        ids = cluster.containerd_ids_for_task(arn)
        assert ids == [runtime_ids[arn]], f"{arn}: containerd containers {ids}, expected exactly {runtime_ids[arn]}"
    # The exited short task is cleaned up once reported.
    wait_for(lambda: not cluster.containerd_ids_for_task(short_arn), timeout=15,
             what="the stopped short task's container to be removed")

    for arn in long_arns:
        cluster.ecs.stop_task(cluster=cluster.name, task=arn, reason="done")
    for arn in long_arns:
        task, _ = cluster.wait_task(arn, "STOPPED", timeout=60)
        assert task["stopCode"] == "UserInitiated"
        assert task["containers"][0]["exitCode"] == 0, task
    wait_for(lambda: not cluster.ctr_containers() and not cluster.ctr_tasks(), timeout=15,
             what="containerd namespace to be empty")
    for pid in pids_before.values():
        wait_for(lambda: not harness.pid_alive(pid), timeout=5, what=f"container process {pid} to exit")


def test_agent_restart_while_idle_keeps_instance(private_cluster):
    """A restarted agent keeps its identity: same instance, reconnects, runs new tasks."""
    cluster = private_cluster
    arn_before = cluster.container_instance()["containerInstanceArn"]
    cluster.agent.kill9()
    cluster.agent.start()
    ci = cluster.wait_agent_connected(True, timeout=30)
    assert ci["containerInstanceArn"] == arn_before
    instances = cluster.ecs.list_container_instances(cluster=cluster.name)["containerInstanceArns"]
    assert instances == [arn_before]
    td = cluster.register_td([cluster.container(command=["sh", "-c", "exit 5"])])
    arn = cluster.run_task(td)
    task, _ = cluster.wait_task(arn, "STOPPED", timeout=60)
    assert task["containers"][0]["exitCode"] == 5



def test_task_stopped_while_agent_down_is_stopped_on_return(private_cluster):
    """Desired state that changed while the agent was away is applied when it returns."""
    cluster = private_cluster
    td = cluster.register_td([cluster.container(command=LONG, stopTimeout=5)])
    arn = cluster.run_task(td)
    task, _ = cluster.wait_task(arn, "RUNNING", timeout=60)
    rid = task["containers"][0]["runtimeId"]
    pid = cluster.ctr_tasks()[rid][0]

    cluster.agent.kill9()
    out = cluster.ecs.stop_task(cluster=cluster.name, task=arn, reason="while the agent was down")
    assert out["task"]["desiredStatus"] == "STOPPED"
    time.sleep(2)
    assert cluster.ctr_tasks().get(rid) == (pid, "RUNNING"), "nothing should stop it while the agent is down"

    cluster.agent.start()
    task, seen = cluster.wait_task(arn, "STOPPED", timeout=60)
    assert_forward_only(seen)
    assert task["stopCode"] == "UserInitiated", task
    assert task["stoppedReason"] == "while the agent was down", task
    assert task["containers"][0]["exitCode"] == 0, task
    wait_for(lambda: not cluster.ctr_containers() and not cluster.ctr_tasks(), timeout=15,
             what="containerd namespace to be empty")
    wait_for(lambda: not harness.pid_alive(pid), timeout=5, what=f"container process {pid} to exit")


def test_containerd_restart_keeps_tasks_and_agent_working(private_cluster):
    """containerd restarting under a running agent (shims keep the containers)."""
    cluster = private_cluster
    td = cluster.register_td([cluster.container(command=LONG, stopTimeout=5)])
    arn = cluster.run_task(td)
    task, _ = cluster.wait_task(arn, "RUNNING", timeout=60)
    rid = task["containers"][0]["runtimeId"]
    pid = cluster.ctr_tasks()[rid][0]

    cluster.containerd.restart()
    assert cluster.ctr_tasks().get(rid) == (pid, "RUNNING")
    time.sleep(2)
    assert cluster.agent.running(), "the agent died when containerd restarted"
    assert cluster.describe_one(arn)["lastStatus"] == "RUNNING"

    short = cluster.register_td([cluster.container(command=["sh", "-c", "exit 4"])])
    short_arn = cluster.run_task(short)
    task, _ = cluster.wait_task(short_arn, "STOPPED", timeout=60)
    assert task["containers"][0]["exitCode"] == 4, task

    cluster.ecs.stop_task(cluster=cluster.name, task=arn, reason="done")
    task, _ = cluster.wait_task(arn, "STOPPED", timeout=60)
    assert task["containers"][0]["exitCode"] == 0, task
    wait_for(lambda: not cluster.ctr_containers() and not cluster.ctr_tasks(), timeout=15,
             what="containerd namespace to be empty")
