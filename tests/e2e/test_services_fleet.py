"""ECS services on three simulated hosts (issue #4, acceptance 1 and 2): each host
a network namespace with its own real containerd and berth-agent (multihost.Fleet),
one coordinator and registry; the AWS CLI (`create-service`, `update-service`,
`update-container-instances-state`, the `services-stable` waiter) and boto3 as
clients.

1. A REPLICA service of 6 tasks spread over the hosts' availability zones; a
   killed container is replaced; a rolling update (minimumHealthyPercent 50,
   maximumPercent 200) completes while a poller thread (DescribeServices +
   ListTasks/DescribeTasks every ~0.3 s) never sees fewer than 3 healthy tasks
   or more than 12 active ones; a revision whose health check always fails
   trips the deployment circuit breaker, which rolls back to the previous
   revision; `aws ecs wait services-stable` returns.
2. A DAEMON service runs one task on each host (a killed one is replaced on its
   host) and on a host that joins later;
   draining a host moves its REPLICA tasks elsewhere within the deployment
   limits, leaves its standalone (RunTask) task running, stops its DAEMON task
   and places nothing there until the host is ACTIVE again.
3. A host whose agent dies (kill -9): once it counts as disconnected, its
   REPLICA tasks are replaced on the other hosts; its containers keep running
   until the agent returns and stops them.
4. A revision whose container exits right after starting trips the circuit
   breaker too (with minimumHealthyPercent 100 nothing old stops meanwhile).

The coordinator runs with `--service-settle-secs 1` (ECS's 40 s settle period
would make the suite wait minutes for nothing)."""

from __future__ import annotations

import collections
import threading
import time

import pytest

import multihost
from harness import wait_for

SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]
SETTLE_ARGS = ["--service-settle-secs", "1"]
# ECS's smallest health check: the agent runs it 5 s after the start, then every 5 s.
PASSING_CHECK = {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1}
FAILING_CHECK = {"command": ["CMD-SHELL", "exit 1"], "interval": 5, "timeout": 2, "retries": 1}
STEADY = "has reached a steady state."


# ------------------------------------------------------------------ helpers


def describe_service(client, cluster: str, name: str) -> dict:
    out = client.describe_services(cluster=cluster, services=[name])
    assert out["failures"] == [], out
    return out["services"][0]


def service_task_arns(client, cluster: str, name: str) -> list[str]:
    """Every task of the service the coordinator still lists (desired RUNNING and
    STOPPED), each once: a task stopped between the two listings is in both."""
    arns: list[str] = []
    pages = client.get_paginator("list_tasks")
    for desired in ("RUNNING", "STOPPED"):
        for page in pages.paginate(cluster=cluster, serviceName=name, desiredStatus=desired):
            arns += page["taskArns"]
    return list(dict.fromkeys(arns))


def describe_tasks(client, cluster: str, arns: list[str]) -> list[dict]:
    tasks = []
    for i in range(0, len(arns), 100):
        out = client.describe_tasks(cluster=cluster, tasks=arns[i:i + 100])
        assert out["failures"] == [], out
        tasks += out["tasks"]
    return tasks


def service_tasks(fleet, name: str) -> list[dict]:
    return describe_tasks(fleet.client, fleet.cluster, service_task_arns(fleet.client, fleet.cluster, name))


def live(tasks: list[dict]) -> list[dict]:
    """Tasks that hold resources: not STOPPED (what maximumPercent bounds)."""
    return [t for t in tasks if t["lastStatus"] != "STOPPED"]


def is_healthy(task: dict, checked_tds: set[str]) -> bool:
    """ECS's rule: RUNNING (and not being stopped), and HEALTHY where the task
    definition has a container health check."""
    if task["lastStatus"] != "RUNNING" or task["desiredStatus"] != "RUNNING":
        return False
    return task["taskDefinitionArn"] not in checked_tds or task.get("healthStatus") == "HEALTHY"


def wait_stable_cli(fleet, *names: str, timeout: float = 300) -> None:
    """The real AWS CLI waiter, bounded by `timeout`: returns 0 once stable."""
    r = fleet.coordinator.aws_raw("ecs", "wait", "services-stable", "--cluster", fleet.cluster,
                                  "--services", *names, timeout=timeout)
    assert r.returncode == 0, f"services-stable exited {r.returncode}: {r.stderr}"


def containerd_ids_for_task(host: multihost.SimHost, task_arn: str) -> list[str]:
    """The host's containerd containers labelled with `task_arn`."""
    ids = []
    for cid in host.ctr_containers():
        labels = host.containerd.container_info(host.namespace, cid).get("Labels") or {}
        if labels.get("com.amazonaws.ecs.task-arn") == task_arn:
            ids.append(cid)
    return ids


def delete_services(fleet, *names: str) -> None:
    """Force-delete the services and wait until they are INACTIVE with no tasks
    left, so the fleet's teardown does not race a scheduler replacing tasks."""
    for name in names:
        try:
            fleet.client.delete_service(cluster=fleet.cluster, service=name, force=True)
        except fleet.client.exceptions.ServiceNotFoundException:
            continue
    if names:
        r = fleet.coordinator.aws_raw("ecs", "wait", "services-inactive", "--cluster", fleet.cluster,
                                      "--services", *names, timeout=180)
        assert r.returncode == 0, r.stderr


class ServiceWatch(threading.Thread):
    """Polls one service every ~0.3 s with its own boto3 client (DescribeServices,
    then ListTasks + DescribeTasks) and records, across the whole run: the fewest
    healthy tasks, the most active (not STOPPED) tasks, each sample that broke
    the bounds. A second thread reads DescribeServices alone every ~0.1 s and
    records every deployment's rolloutState and reason seen: a deployment leaves
    the list as soon as its last task stops, which can be within half a second
    of the circuit breaker failing it."""

    def __init__(self, fleet, name: str, checked_tds: set[str], min_healthy: int, max_total: int,
                 interval: float = 0.3):
        super().__init__(daemon=True, name=f"watch-{name}")
        self.client = fleet.ecs()
        self.cluster = fleet.cluster
        self.service = name
        self.checked_tds = checked_tds
        self.min_healthy = min_healthy
        self.max_total = max_total
        self.interval = interval
        self.samples = 0
        self.fewest_healthy: int | None = None
        self.most_total = 0
        self.violations: list[str] = []
        self.errors: list[str] = []
        self.rollout_states: dict[str, set[str]] = collections.defaultdict(set)
        self.deployment_tds: dict[str, str] = {}
        self.rollout_reasons: dict[str, set[str]] = collections.defaultdict(set)
        # (deployment id, rolloutState) -> [first, last] time.monotonic() seen.
        self.seen_when: dict[tuple[str, str], list[float]] = {}
        self._halt = threading.Event()
        self._deployments = threading.Thread(target=self._watch_deployments, args=(fleet.ecs(),), daemon=True,
                                             name=f"watch-{name}-deployments")

    def _record(self, svc: dict) -> None:
        now = time.monotonic()
        for d in svc["deployments"]:
            self.seen_when.setdefault((d["id"], d.get("rolloutState", "")), [now, now])[1] = now
            self.rollout_states[d["id"]].add(d.get("rolloutState", ""))
            self.deployment_tds[d["id"]] = d["taskDefinition"]
            self.rollout_reasons[d["id"]].add(d.get("rolloutStateReason", ""))

    def _watch_deployments(self, client) -> None:
        while not self._halt.is_set():
            try:
                self._record(describe_service(client, self.cluster, self.service))
            except Exception as e:  # noqa: BLE001 - reported by check()
                self.errors.append(repr(e))
            self._halt.wait(0.1)

    def sample(self) -> None:
        svc = describe_service(self.client, self.cluster, self.service)
        self._record(svc)
        tasks = describe_tasks(self.client, self.cluster,
                               service_task_arns(self.client, self.cluster, self.service))
        total = len(live(tasks))
        healthy = sum(is_healthy(t, self.checked_tds) for t in tasks)
        counted = svc["runningCount"] + svc["pendingCount"]
        self.samples += 1
        self.fewest_healthy = healthy if self.fewest_healthy is None else min(self.fewest_healthy, healthy)
        self.most_total = max(self.most_total, total, counted)
        if healthy < self.min_healthy or total > self.max_total or counted > self.max_total:
            states = sorted((t["taskArn"].rsplit("/", 1)[1][:8], t["lastStatus"], t["desiredStatus"],
                             t.get("healthStatus"), t["taskDefinitionArn"].rsplit(":", 1)[1]) for t in live(tasks))
            self.violations.append(f"t={time.monotonic():.1f} healthy={healthy} total={total} "
                                   f"running+pending={counted} tasks={states}")

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.sample()
            except Exception as e:  # noqa: BLE001 - reported by check()
                self.errors.append(repr(e))
            self._halt.wait(self.interval)

    def begin(self) -> "ServiceWatch":
        """Start polling; return once the first sample (before the change under test) is in."""
        self.start()
        self._deployments.start()
        wait_for(lambda: self.samples >= 1 or self.errors, timeout=30, what="the poller's first sample")
        return self

    def finish(self) -> None:
        self._halt.set()
        self.join(timeout=30)
        self._deployments.join(timeout=30)
        assert not self.is_alive() and not self._deployments.is_alive(), "the service poller did not stop"

    def check(self, min_samples: int) -> None:
        """Fail unless the poller ran throughout and every sample kept the bounds."""
        assert not self.errors, f"poller errors: {self.errors[:5]}"
        assert self.samples >= min_samples, f"only {self.samples} samples"
        assert not self.violations, (f"bounds healthy >= {self.min_healthy}, total <= {self.max_total} "
                                     f"broken: {self.violations[:10]}")


# ------------------------------------------------------------------ tests


@pytest.mark.fleet(coordinator_args=SETTLE_ARGS)
def test_replica_service_replaces_rolls_out_and_rolls_back(private_fleet):
    f = private_fleet
    azs = {h.instance_arn: h.container_instance() for h in f.hosts}
    az_of = {arn: {a["name"]: a.get("value") for a in ci["attributes"]}["ecs.availability-zone"]
             for arn, ci in azs.items()}
    assert len(set(az_of.values())) == 3, az_of

    family = "fleet-web"
    rev1 = f.register_taskdef([f.container(command=SLEEPER)], family=family)
    rev2 = f.register_taskdef([f.container(command=SLEEPER, healthCheck=PASSING_CHECK)], family=family)
    # rev3 also ignores SIGTERM (stopTimeout 4 s): the rev3 tasks the breaker
    # stops when it trips take seconds to stop, so the FAILED deployment stays
    # in DescribeServices long enough for the poller to see it.
    rev3 = f.register_taskdef([f.container(command=["sh", "-c", "trap '' TERM; sleep 1000 & wait"],
                                           healthCheck=FAILING_CHECK, stopTimeout=4)], family=family)
    checked = {rev2, rev3}

    created = f.coordinator.aws(
        "ecs", "create-service", "--cluster", f.cluster, "--service-name", "web", "--task-definition", rev1,
        "--desired-count", "6", "--deployment-configuration",
        "minimumHealthyPercent=50,maximumPercent=200,"
        "deploymentCircuitBreaker={enable=true,rollback=true}")["service"]
    assert created["schedulingStrategy"] == "REPLICA" and created["desiredCount"] == 6, created
    try:
        wait_stable_cli(f, "web")
        wait_for(lambda: describe_service(f.client, f.cluster, "web")["deployments"][0]["rolloutState"]
                 == "COMPLETED", timeout=60, what="first rollout COMPLETED")

        # Spread: two tasks on each host, one pair per availability zone.
        first = live(service_tasks(f, "web"))
        assert len(first) == 6 and all(t["lastStatus"] == "RUNNING" for t in first), first
        per_host = collections.Counter(f.host_of(t).index for t in first)
        assert sorted(per_host.values()) == [2, 2, 2], per_host
        per_az = collections.Counter(t.get("availabilityZone") or az_of[t["containerInstanceArn"]] for t in first)
        assert sorted(per_az.values()) == [2, 2, 2], per_az
        for t in first:
            assert az_of[t["containerInstanceArn"]] == (t.get("availabilityZone") or az_of[t["containerInstanceArn"]])

        # Kill one task's container on its host: the task stops, a new one replaces it.
        victim = first[0]
        host = f.host_of(victim)
        cids = containerd_ids_for_task(host, victim["taskArn"])
        assert len(cids) == 1, cids
        pid = host.ctr_tasks()[cids[0]][0]
        assert pid > 0
        host.containerd.ctr("task", "kill", "--signal", "SIGKILL", cids[0], namespace=host.namespace)
        stopped, _ = f.wait_task(victim["taskArn"], "STOPPED", timeout=60)
        assert stopped["stopCode"] == "EssentialContainerExited", stopped
        assert stopped["containers"][0].get("exitCode") == 137, stopped["containers"]

        def replaced():
            now = live(service_tasks(f, "web"))
            running = [t for t in now if t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING"]
            fresh = {t["taskArn"] for t in now} - {t["taskArn"] for t in first}
            return len(running) == 6 and len(now) == 6 and len(fresh) == 1 and fresh
        fresh = wait_for(replaced, timeout=90, interval=0.3, what="the killed task to be replaced")
        # Spread by zone: the replacement goes to the zone that lost a task.
        replacement = f.describe_one(next(iter(fresh)))
        assert az_of[replacement["containerInstanceArn"]] == az_of[victim["containerInstanceArn"]], replacement
        wait_stable_cli(f, "web")
        svc = describe_service(f.client, f.cluster, "web")
        assert svc["runningCount"] == 6 and svc["pendingCount"] == 0, svc
        new_word = next(iter(fresh)).rsplit("/", 1)[1]
        msgs = [e["message"] for e in svc["events"]]
        assert any(m.startswith("(service web) has started 1 tasks:") and new_word in m for m in msgs), msgs
        assert f.describe_one(victim["taskArn"])["lastStatus"] == "STOPPED"
        wait_for(lambda: describe_service(f.client, f.cluster, "web")["deployments"][0]["rolloutState"]
                 == "COMPLETED" and STEADY in describe_service(f.client, f.cluster, "web")["events"][0]["message"],
                 timeout=60, what="steady again after the replacement")

        # Rolling update to rev2 (min 50 / max 200 of 6: >= 3 healthy, <= 12 active).
        watch = ServiceWatch(f, "web", checked, min_healthy=3, max_total=12).begin()
        try:
            f.coordinator.aws("ecs", "update-service", "--cluster", f.cluster, "--service", "web",
                              "--task-definition", rev2)

            def rolled_out():
                svc = describe_service(f.client, f.cluster, "web")
                deps = svc["deployments"]
                if len(deps) != 1 or deps[0]["taskDefinition"] != rev2 or deps[0]["rolloutState"] != "COMPLETED":
                    return False
                tasks = live(service_tasks(f, "web"))
                return (len(tasks) == 6 and all(t["taskDefinitionArn"] == rev2 and is_healthy(t, checked)
                                                for t in tasks) and svc)
            svc = wait_for(rolled_out, timeout=180, interval=0.5, what="the rev2 deployment to complete")
            assert svc["taskDefinition"] == rev2 and svc["runningCount"] == 6, svc
            wait_stable_cli(f, "web")
            rev2_tasks = {t["taskArn"] for t in live(service_tasks(f, "web"))}
            assert rev2_tasks.isdisjoint({t["taskArn"] for t in first}), "every rev1 task was replaced"
            # maximumPercent 200 lets the whole new set start beside the old one.
            assert watch.most_total > 6, watch.most_total
            rev2_dep = svc["deployments"][0]["id"]

            # rev3 never becomes healthy: the circuit breaker (threshold
            # max(ceil(6/2), 3) = 3 failed tasks) fails it and rolls back to rev2.
            out = f.coordinator.aws("ecs", "update-service", "--cluster", f.cluster, "--service", "web",
                                    "--task-definition", rev3)["service"]
            rev3_dep = out["deployments"][0]["id"]
            assert out["deployments"][0]["taskDefinition"] == rev3, out["deployments"]

            def rolled_back():
                svc = describe_service(f.client, f.cluster, "web")
                deps = svc["deployments"]
                if svc["taskDefinition"] != rev2 or len(deps) != 1 or deps[0]["rolloutState"] != "COMPLETED":
                    return False
                tasks = live(service_tasks(f, "web"))
                return (len(tasks) == 6 and all(t["taskDefinitionArn"] == rev2 and is_healthy(t, checked)
                                                for t in tasks) and svc)
            svc = wait_for(rolled_back, timeout=240, interval=0.5, what="the rollback to rev2 to complete")
        finally:
            watch.finish()
        # Two deployments of tasks with 5 s health checks take well over 20 s.
        watch.check(min_samples=40)
        assert watch.fewest_healthy is not None and watch.fewest_healthy >= 3
        assert watch.most_total <= 12

        assert "FAILED" in watch.rollout_states[rev3_dep], (dict(watch.rollout_states), watch.seen_when)
        first, last = watch.seen_when[(rev3_dep, "FAILED")]
        print(f"rev3 deployment seen FAILED for {last - first:.1f} s")
        assert watch.deployment_tds[rev3_dep] == rev3
        rollback_dep = svc["deployments"][0]
        assert rollback_dep["id"] not in (rev2_dep, rev3_dep)
        assert rollback_dep["taskDefinition"] == rev2
        msgs = [e["message"] for e in svc["events"]]
        assert f"(service web) (deployment {rev3_dep}) deployment failed: tasks failed to start." in msgs, msgs
        # ECS names the COMPLETED deployment it rolls back to (rev2's).
        assert f"(service web) rolling back to deployment {rev2_dep}." in msgs, msgs
        assert ("ECS deployment circuit breaker: tasks failed to start."
                in watch.rollout_reasons[rev3_dep]), dict(watch.rollout_reasons)
        assert (f"ECS deployment circuit breaker: rolling back to deploymentId {rev2_dep}."
                in watch.rollout_reasons[rollback_dep["id"]]), dict(watch.rollout_reasons)
        assert any("failed container health checks" in m for m in msgs), msgs
        # Tasks still stopping at maximumPercent are not a stuck deployment.
        assert not any("is unable to replace tasks" in m for m in msgs), msgs
        # The rev3 tasks ran and were stopped for failing their health checks.
        rev3_tasks = [t for t in service_tasks(f, "web") if t["taskDefinitionArn"] == rev3]
        assert len(rev3_tasks) >= 3, rev3_tasks
        assert all(t["lastStatus"] == "STOPPED" for t in rev3_tasks), rev3_tasks
        assert any(t["stoppedReason"] == "Task failed container health checks" for t in rev3_tasks), rev3_tasks
        wait_stable_cli(f, "web")
        svc = describe_service(f.client, f.cluster, "web")
        assert svc["runningCount"] == 6 and svc["desiredCount"] == 6, svc
        # containerd agrees: six containers run across the hosts, each labelled
        # with one of the service's live tasks.
        live_arns = {t["taskArn"] for t in live(service_tasks(f, "web"))}

        def containerd_tasks():
            found = {}
            for h in f.hosts:
                for cid, (_, status) in h.ctr_tasks().items():
                    labels = h.containerd.container_info(h.namespace, cid).get("Labels") or {}
                    found[labels.get("com.amazonaws.ecs.task-arn")] = status
            return found
        wait_for(lambda: containerd_tasks() == {arn: "RUNNING" for arn in live_arns}, timeout=30,
                 what="containerd to run exactly the service's six tasks")
        # Still spread over every zone after the rollback (placement counts the
        # tasks being replaced too, so the split need not be 2/2/2 again).
        per_az = collections.Counter(az_of[t["containerInstanceArn"]] for t in live(service_tasks(f, "web")))
        assert len(per_az) == 3, per_az
    finally:
        delete_services(f, "web")


@pytest.mark.fleet(coordinator_args=SETTLE_ARGS)
def test_daemon_service_and_draining_a_host(private_fleet):
    f = private_fleet
    td_web = f.register_taskdef([f.container(command=SLEEPER)], family="fleet-drain-web")
    td_daemon = f.register_taskdef([f.container(command=SLEEPER)], family="fleet-daemon")
    td_solo = f.register_taskdef([f.container(command=SLEEPER)], family="fleet-solo")

    f.client.create_service(cluster=f.cluster, serviceName="web", taskDefinition=td_web, desiredCount=6,
                            deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 200})
    out = f.coordinator.aws("ecs", "create-service", "--cluster", f.cluster, "--service-name", "agentd",
                            "--task-definition", td_daemon, "--scheduling-strategy", "DAEMON")["service"]
    assert out["schedulingStrategy"] == "DAEMON", out
    try:
        wait_stable_cli(f, "web", "agentd")

        def daemon_per_host(expect_hosts: int):
            tasks = [t for t in live(service_tasks(f, "agentd"))
                     if t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING"]
            per = collections.Counter(f.host_of(t).index for t in tasks)
            return len(per) == expect_hosts and all(n == 1 for n in per.values()) and per

        per = wait_for(lambda: daemon_per_host(3), timeout=60, interval=0.3, what="one daemon task per host")
        assert set(per) == {0, 1, 2}, per
        assert describe_service(f.client, f.cluster, "agentd")["desiredCount"] == 3
        # A killed daemon container is replaced on its own host.
        victim = next(t for t in live(service_tasks(f, "agentd")) if f.host_of(t) is f.hosts[0])
        cids = containerd_ids_for_task(f.hosts[0], victim["taskArn"])
        assert len(cids) == 1, cids
        f.hosts[0].containerd.ctr("task", "kill", "--signal", "SIGKILL", cids[0], namespace=f.hosts[0].namespace)
        f.wait_task(victim["taskArn"], "STOPPED", timeout=60)
        per = wait_for(lambda: daemon_per_host(3), timeout=60, interval=0.3, what="the daemon task replaced")
        assert set(per) == {0, 1, 2}, per
        assert victim["taskArn"] not in {t["taskArn"] for t in live(service_tasks(f, "agentd"))}

        # A host joining later gets its daemon task (and nothing else moves there).
        late = f.add_host()
        per = wait_for(lambda: daemon_per_host(4), timeout=90, interval=0.3, what="a daemon task on the new host")
        assert set(per) == {0, 1, 2, late.index}, per
        wait_stable_cli(f, "agentd")
        svc = describe_service(f.client, f.cluster, "agentd")
        assert svc["desiredCount"] == 4 and svc["runningCount"] == 4, svc

        # A standalone task on the host about to drain.
        drained = f.hosts[1]
        solo, failures = f.run_and_wait(td_solo, placementConstraints=[
            {"type": "memberOf", "expression": f"attribute:ecs.availability-zone == az-{drained.index}"}])
        assert failures == [] and len(solo) == 1, failures
        assert f.host_of(solo[0]) is drained
        web_before = live(service_tasks(f, "web"))
        on_drained = {t["taskArn"] for t in web_before if f.host_of(t) is drained}
        assert len(on_drained) == 2, [(t["taskArn"], f.host_of(t).index) for t in web_before]
        daemon_on_drained = [t["taskArn"] for t in live(service_tasks(f, "agentd")) if f.host_of(t) is drained]
        assert len(daemon_on_drained) == 1, daemon_on_drained

        watch = ServiceWatch(f, "web", set(), min_healthy=3, max_total=12).begin()
        try:
            out = f.coordinator.aws("ecs", "update-container-instances-state", "--cluster", f.cluster,
                                    "--container-instances", drained.instance_arn, "--status", "DRAINING")
            assert out["failures"] == [], out
            assert out["containerInstances"][0]["status"] == "DRAINING", out

            def web_moved():
                tasks = live(service_tasks(f, "web"))
                ok = [t for t in tasks if is_healthy(t, set())]
                return (len(tasks) == 6 and len(ok) == 6 and not any(f.host_of(t) is drained for t in tasks)
                        and tasks)
            web_after = wait_for(web_moved, timeout=120, interval=0.5, what="web tasks to leave the draining host")
            f.wait_task(daemon_on_drained[0], "STOPPED", timeout=60)
            wait_stable_cli(f, "web", "agentd")

            # Nothing is placed on the draining host again: the daemon stays at 3
            # (the poller keeps watching the web service meanwhile).
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                daemon = live(service_tasks(f, "agentd"))
                assert not any(f.host_of(t) is drained for t in daemon), daemon
                time.sleep(0.5)
        finally:
            watch.finish()
        watch.check(min_samples=10)

        for arn in on_drained:
            t = f.describe_one(arn)
            assert t["lastStatus"] == "STOPPED" and t["stopCode"] == "ServiceSchedulerInitiated", t
        # Spread by zone sends both replacements to the empty zone of the late host.
        moved = [t for t in web_after if t["taskArn"] not in {u["taskArn"] for u in web_before}]
        assert len(moved) == 2 and all(f.host_of(t) is late for t in moved), moved
        assert {f.host_of(t).index for t in web_after} <= {0, 2, late.index}
        # containerd on the drained host runs the standalone task only.
        solo_cids = containerd_ids_for_task(drained, solo[0]["taskArn"])
        assert len(solo_cids) == 1, solo_cids
        wait_for(lambda: set(drained.ctr_tasks()) == set(solo_cids), timeout=30,
                 what="the drained host's containerd to hold only the standalone task")
        t = f.describe_one(daemon_on_drained[0])
        assert t["stopCode"] == "ServiceSchedulerInitiated", t
        per = daemon_per_host(3)
        assert per and set(per) == {0, 2, late.index}, per
        svc = describe_service(f.client, f.cluster, "agentd")
        assert svc["desiredCount"] == 3 and svc["runningCount"] == 3, svc
        solo_now = f.describe_one(solo[0]["taskArn"])
        assert solo_now["lastStatus"] == "RUNNING" and solo_now["desiredStatus"] == "RUNNING", solo_now
        ci = drained.container_instance()
        assert ci["status"] == "DRAINING" and ci["runningTasksCount"] == 1, ci
        # RunTask cannot place on it either.
        out = f.run_task(td_solo, placementConstraints=[
            {"type": "memberOf", "expression": f"attribute:ecs.availability-zone == az-{drained.index}"}])
        assert out["tasks"] == [] and out["failures"], out
        f.stop_and_wait([solo[0]["taskArn"]])

        # Back to ACTIVE: the daemon puts its task there again; the REPLICA
        # service does not move tasks back (ECS does not rebalance).
        f.coordinator.aws("ecs", "update-container-instances-state", "--cluster", f.cluster,
                          "--container-instances", drained.instance_arn, "--status", "ACTIVE")
        per = wait_for(lambda: daemon_per_host(4), timeout=60, interval=0.3, what="the daemon back on the host")
        assert set(per) == {0, 1, 2, late.index}, per
        wait_stable_cli(f, "web", "agentd")
        assert not any(f.host_of(t) is drained for t in live(service_tasks(f, "web")))
    finally:
        delete_services(f, "web", "agentd")


@pytest.mark.fleet(coordinator_args=SETTLE_ARGS, agent_timeout_secs=25)
def test_service_replaces_the_tasks_of_a_lost_host(private_fleet):
    """An agent killed with -9 stops polling: once the coordinator counts it
    disconnected, the service replaces its tasks on the other hosts (within the
    deployment limits) while the host's containers keep running; when the agent
    comes back, it stops the containers the coordinator no longer wants."""
    f = private_fleet
    td = f.register_taskdef([f.container(command=SLEEPER)], family="fleet-lost")
    f.client.create_service(cluster=f.cluster, serviceName="web", taskDefinition=td, desiredCount=6,
                            deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 200})
    try:
        wait_stable_cli(f, "web")
        lost = f.hosts[2]
        before = live(service_tasks(f, "web"))
        on_lost = {t["taskArn"] for t in before if f.host_of(t) is lost}
        assert len(on_lost) == 2, [(t["taskArn"], f.host_of(t).index) for t in before]
        lost_cids = set(lost.ctr_tasks())
        assert len(lost_cids) == 2, lost_cids

        watch = ServiceWatch(f, "web", set(), min_healthy=3, max_total=12).begin()
        try:
            lost.kill9_agent()
            lost.wait_agent_connected(False, timeout=60)

            def replaced():
                wanted = [t for t in live(service_tasks(f, "web")) if t["desiredStatus"] == "RUNNING"]
                return (len(wanted) == 6 and all(t["lastStatus"] == "RUNNING" for t in wanted)
                        and not any(f.host_of(t) is lost for t in wanted) and wanted)
            wanted = wait_for(replaced, timeout=60, interval=0.5, what="the lost host's tasks to be replaced")
            # Spread by zone puts one replacement in each zone still reachable.
            fresh = [t for t in wanted if t["taskArn"] not in {u["taskArn"] for u in before}]
            assert sorted(f.host_of(t).index for t in fresh) == [0, 1], fresh
            # While its agent is away, the host's containers keep running.
            assert set(lost.ctr_tasks()) == lost_cids
            for arn in on_lost:
                assert f.describe_one(arn)["desiredStatus"] == "STOPPED"

            lost.restart_agent()
            lost.wait_agent_connected(True, timeout=60)
            wait_for(lambda: not lost.ctr_tasks(), timeout=60, what="the returning agent to stop the old containers")
            for arn in on_lost:
                t, _ = f.wait_task(arn, "STOPPED", timeout=30)
                assert t["stopCode"] == "ServiceSchedulerInitiated", t
            wait_stable_cli(f, "web")
        finally:
            watch.finish()
        watch.check(min_samples=10)
        svc = describe_service(f.client, f.cluster, "web")
        assert svc["runningCount"] == 6 and svc["pendingCount"] == 0, svc
        assert len(live(service_tasks(f, "web"))) == 6
    finally:
        delete_services(f, "web")


@pytest.mark.fleet(coordinator_args=SETTLE_ARGS)
def test_revision_that_crashes_on_start_trips_the_breaker(private_fleet):
    """A revision whose container exits right after starting (no health check):
    its tasks stop before running for the settle period, so they count as
    failed; the circuit breaker fails the deployment and rolls back, and with
    minimumHealthyPercent 100 the old tasks keep running all along."""
    f = private_fleet
    good = f.register_taskdef([f.container(command=SLEEPER)], family="fleet-crash")
    bad = f.register_taskdef([f.container(command=["sh", "-c", "exit 3"])], family="fleet-crash")
    f.client.create_service(cluster=f.cluster, serviceName="web", taskDefinition=good, desiredCount=6,
                            deploymentConfiguration={
                                "minimumHealthyPercent": 100, "maximumPercent": 200,
                                "deploymentCircuitBreaker": {"enable": True, "rollback": True}})
    try:
        wait_stable_cli(f, "web")
        wait_for(lambda: describe_service(f.client, f.cluster, "web")["deployments"][0]["rolloutState"]
                 == "COMPLETED", timeout=60, what="first rollout COMPLETED")
        good_dep = describe_service(f.client, f.cluster, "web")["deployments"][0]["id"]

        watch = ServiceWatch(f, "web", set(), min_healthy=6, max_total=12).begin()
        try:
            # The failing deployment can leave DescribeServices within a second:
            # its id comes from UpdateService's answer.
            out = f.coordinator.aws("ecs", "update-service", "--cluster", f.cluster, "--service", "web",
                                    "--task-definition", bad)["service"]
            bad_dep = out["deployments"][0]["id"]
            assert out["deployments"][0]["taskDefinition"] == bad, out["deployments"]

            def rolled_back():
                svc = describe_service(f.client, f.cluster, "web")
                deps = svc["deployments"]
                if svc["taskDefinition"] != good or len(deps) != 1 or deps[0]["rolloutState"] != "COMPLETED":
                    return False
                tasks = live(service_tasks(f, "web"))
                return len(tasks) == 6 and all(t["taskDefinitionArn"] == good for t in tasks) and svc
            svc = wait_for(rolled_back, timeout=120, interval=0.5, what="the rollback to complete")
            wait_stable_cli(f, "web")
        finally:
            watch.finish()
        watch.check(min_samples=10)
        # The crashing deployment may be FAILED and retired between two polls;
        # the events and the rollback deployment's reason say what happened.
        msgs = [e["message"] for e in svc["events"]]
        assert (f"ECS deployment circuit breaker: rolling back to deploymentId {good_dep}."
                in watch.rollout_reasons[svc["deployments"][0]["id"]]), dict(watch.rollout_reasons)
        assert f"(service web) (deployment {bad_dep}) deployment failed: tasks failed to start." in msgs, msgs
        assert f"(service web) rolling back to deployment {good_dep}." in msgs, msgs
        crashed = [t for t in service_tasks(f, "web") if t["taskDefinitionArn"] == bad]
        # The breaker trips at max(ceil(6/2), 3) = 3 failed tasks; it does not
        # relaunch the crashing revision forever.
        assert 3 <= len(crashed) <= 12, len(crashed)
        assert all(t["lastStatus"] == "STOPPED" for t in crashed), crashed
        exited = [t for t in crashed if t["stopCode"] == "EssentialContainerExited"]
        assert len(exited) >= 3, crashed
        assert all(t["containers"][0].get("exitCode") == 3 for t in exited), exited
    finally:
        delete_services(f, "web")
