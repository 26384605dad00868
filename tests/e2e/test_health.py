"""Container health checks end to end (issue #4, "Container health checks"):
real coordinator, agent, containerd and registry; boto3 as the client.

The agent runs each container's `healthCheck` inside the container (containerd
exec) and reports the verdict; DescribeTasks shows container and task
`healthStatus`; `dependsOn` with condition HEALTHY holds the dependent back
until its dependency's check has passed."""

from __future__ import annotations

import glob
import time

from harness import wait_for

# Creates /tmp/ok after ~3 s, then idles; exits promptly on SIGTERM.
BECOMES_OK = ["sh", "-c", "trap 'exit 0' TERM; sleep 3; touch /tmp/ok; sleep 1000 & wait"]
IDLES = ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]


def check(command: list[str], **kw) -> dict:
    hc = {"command": command, "interval": 5, "timeout": 2, "retries": 2}
    hc.update(kw)
    return hc


def health(task: dict) -> tuple[str, dict[str, str]]:
    return task.get("healthStatus"), {c["name"]: c.get("healthStatus") for c in task["containers"]}


def container_processes(runtime_id: str) -> list[str]:
    """Command lines of the processes in a container's cgroup (/berth/<id>),
    exec'd health checks included."""
    for procs in glob.glob(f"/sys/fs/cgroup/*/berth/{runtime_id}/cgroup.procs"):
        out = []
        with open(procs) as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as c:
                        out.append(c.read().replace(b"\0", b" ").decode().strip())
                except OSError:
                    pass
        return out
    return []


def stop_and_check_empty(cluster, arns: list[str]) -> None:
    for arn in arns:
        cluster.ecs.stop_task(cluster=cluster.name, task=arn, reason="test done")
    for arn in arns:
        cluster.wait_task(arn, "STOPPED", timeout=60)
    wait_for(lambda: not cluster.ctr_containers() and not cluster.ctr_tasks(), timeout=20,
             what="containerd namespace to be empty (no leftover containers or exec processes)")


def test_passing_check_makes_container_and_task_healthy(cluster):
    td = cluster.register_td([
        cluster.container("web", command=BECOMES_OK,
                          healthCheck=check(["CMD-SHELL", "test -f /tmp/ok"])),
        cluster.container("side", command=IDLES),
    ])
    described = cluster.ecs.describe_task_definition(taskDefinition=td)["taskDefinition"]
    assert described["containerDefinitions"][0]["healthCheck"]["command"] == ["CMD-SHELL", "test -f /tmp/ok"]
    arn = cluster.run_task(td)
    cluster.wait_task(arn, "RUNNING", timeout=60)
    t_running = time.monotonic()
    seen = []

    def healthy():
        task = cluster.describe_one(arn)
        h = health(task)
        if not seen or seen[-1] != h:
            seen.append(h)
        return h[0] == "HEALTHY" and task

    task = wait_for(healthy, timeout=40, interval=0.2, what="task HEALTHY")
    took = time.monotonic() - t_running
    _, containers = health(task)
    assert containers == {"web": "HEALTHY", "side": "UNKNOWN"}, task
    # The first check runs one interval (5 s) after the start; /tmp/ok exists by then.
    assert 3.0 <= took <= 15.0, f"HEALTHY {took:.1f}s after RUNNING; seen {seen}"
    assert seen[0][1]["web"] == "UNKNOWN", seen
    assert task["lastStatus"] == "RUNNING"
    stop_and_check_empty(cluster, [arn])


def test_failing_and_timing_out_checks_make_containers_unhealthy(cluster):
    td = cluster.register_td([
        cluster.container("web", command=IDLES,
                          healthCheck=check(["CMD-SHELL", "test -f /tmp/never"])),
        # Each check sleeps past its 2 s timeout and is killed.
        cluster.container("slow", command=IDLES, essential=False,
                          healthCheck=check(["CMD", "sleep", "30"], retries=1)),
    ])
    arn = cluster.run_task(td)
    cluster.wait_task(arn, "RUNNING", timeout=60)
    task = wait_for(lambda: (t := cluster.describe_one(arn))["healthStatus"] == "UNHEALTHY" and t,
                    timeout=40, interval=0.2, what="task UNHEALTHY")
    task = wait_for(lambda: (t := cluster.describe_one(arn))["containers"][1].get("healthStatus") == "UNHEALTHY"
                    and t, timeout=30, interval=0.2, what="slow container UNHEALTHY after its check timed out")
    assert health(task) == ("UNHEALTHY", {"web": "UNHEALTHY", "slow": "UNHEALTHY"}), task
    # A task run outside a service keeps running when unhealthy (ECS does the same).
    assert task["lastStatus"] == "RUNNING", task
    # Timed-out checks were killed: at most the check in flight runs in the
    # container, not one per past check.
    slow_id = task["containers"][1]["runtimeId"]
    time.sleep(6)  # at least one more check has run and timed out
    procs = container_processes(slow_id)
    assert procs, f"no processes found for container {slow_id}"
    lingering = [p for p in procs if p == "sleep 30"]
    assert len(lingering) <= 1, f"timed-out checks still running: {procs}"
    stop_and_check_empty(cluster, [arn])


def test_depends_on_healthy_starts_the_dependent_after_the_check_passes(cluster):
    td = cluster.register_td([
        cluster.container("app", command=IDLES,
                          dependsOn=[{"containerName": "db", "condition": "HEALTHY"}]),
        cluster.container("db", command=BECOMES_OK,
                          healthCheck=check(["CMD-SHELL", "test -f /tmp/ok"])),
    ])
    arn = cluster.run_task(td)
    observations = []

    def running():
        # containerd first: the agent reports db HEALTHY a moment after it
        # acts on it, so a count taken after the describe could see app
        # created while the (older) report still says otherwise.
        n_containers = len(cluster.containerd_ids_for_task(arn))
        task = cluster.describe_one(arn)
        by_name = {c["name"]: c for c in task["containers"]}
        observations.append((by_name["db"].get("healthStatus"), by_name["db"]["lastStatus"],
                             by_name["app"]["lastStatus"], n_containers))
        return task["lastStatus"] == "RUNNING" and task

    task = wait_for(running, timeout=60, interval=0.2, what="task RUNNING")
    # While db was not yet HEALTHY, app was neither running nor even created.
    before = [o for o in observations if o[0] != "HEALTHY"]
    assert any(o[1] == "RUNNING" for o in before), f"db never seen running before healthy: {observations}"
    for db_health, _, app_status, n_containers in before:
        assert app_status == "PENDING", observations
    # containerd against the coordinator's view: all but the last sample
    # before HEALTHY was reported (that one may race the report in flight).
    for db_health, _, app_status, n_containers in before[:-1]:
        assert n_containers <= 1, observations
    assert health(task) == ("HEALTHY", {"app": "UNKNOWN", "db": "HEALTHY"}), task
    stop_and_check_empty(cluster, [arn])


def test_depends_on_healthy_fails_when_the_dependency_turns_unhealthy(cluster):
    td = cluster.register_td([
        cluster.container("app", command=IDLES,
                          dependsOn=[{"containerName": "db", "condition": "HEALTHY"}]),
        cluster.container("db", command=IDLES,
                          healthCheck=check(["CMD-SHELL", "exit 1"], retries=1)),
    ])
    arn = cluster.run_task(td)
    task, _ = cluster.wait_task(arn, "STOPPED", timeout=60)
    assert task["stopCode"] == "TaskFailedToStart", task
    app = task["containers"][0]
    assert "dependency db is UNHEALTHY" in app.get("reason", ""), task
    wait_for(lambda: not cluster.ctr_containers() and not cluster.ctr_tasks(), timeout=20,
             what="containerd namespace to be empty")


def test_restarted_agent_checks_readopted_containers(private_cluster):
    """The agent dies (kill -9) while a checked container runs; the container
    breaks while the agent is down; the restarted agent re-adopts it, checks
    it again and reports it UNHEALTHY."""
    cluster = private_cluster
    td = cluster.register_td([
        cluster.container("web", command=BECOMES_OK,
                          healthCheck=check(["CMD-SHELL", "test -f /tmp/ok"])),
    ])
    arn = cluster.run_task(td)
    task = wait_for(lambda: (t := cluster.describe_one(arn))["healthStatus"] == "HEALTHY" and t,
                    timeout=60, interval=0.2, what="task HEALTHY")
    rid = task["containers"][0]["runtimeId"]

    cluster.agent.kill9()
    cluster.containerd.ctr("tasks", "exec", "--exec-id", "test-break", rid, "rm", "/tmp/ok",
                           namespace=cluster.namespace)
    # Nobody checks while the agent is down: the coordinator still has HEALTHY.
    time.sleep(6)
    assert cluster.describe_one(arn)["healthStatus"] == "HEALTHY"

    cluster.agent.start()
    task = wait_for(lambda: (t := cluster.describe_one(arn))["containers"][0].get("healthStatus") == "UNHEALTHY"
                    and t, timeout=60, interval=0.2, what="re-adopted container UNHEALTHY")
    assert task["healthStatus"] == "UNHEALTHY", task
    assert task["containers"][0]["runtimeId"] == rid, "the container was re-adopted, not replaced"
    assert task["lastStatus"] == "RUNNING", task
    stop_and_check_empty(cluster, [arn])
