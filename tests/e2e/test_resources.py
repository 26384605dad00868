"""Resource accounting and placement end to end (issue #2, item 2): what an
instance registers, what running tasks consume, the RESOURCE:* failures RunTask
gives, and that concurrent RunTasks never overcommit an instance."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import harness
from harness import wait_for

LONG = ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]


def resources(items: list[dict]) -> dict:
    """ECS resource list -> {name: int or set}."""
    out = {}
    for r in items:
        if r["type"] == "INTEGER":
            out[r["name"]] = r["integerValue"]
        elif r["type"] == "STRINGSET":
            out[r["name"]] = set(r.get("stringSetValue", []))
    return out


def host_memory_mib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def distinct_free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(harness.free_port())
    return sorted(ports)


def stop_all(cluster, arns: list[str]) -> None:
    for arn in arns:
        cluster.ecs.stop_task(cluster=cluster.name, task=arn, reason="test done")
    for arn in arns:
        cluster.wait_task(arn, "STOPPED", timeout=60)


def test_registered_and_remaining_resources(cluster):
    ci = cluster.container_instance()
    assert ci["status"] == "ACTIVE" and ci["agentConnected"] is True
    reg = resources(ci["registeredResources"])
    assert reg["CPU"] == os.cpu_count() * 1024, reg
    assert 0 < reg["MEMORY"] <= host_memory_mib(), reg
    assert isinstance(reg["PORTS"], set) and "PORTS_UDP" in reg, reg
    rem = resources(ci["remainingResources"])
    assert rem["CPU"] == reg["CPU"] and rem["MEMORY"] == reg["MEMORY"], (reg, rem)
    assert ci["runningTasksCount"] == 0 and ci["pendingTasksCount"] == 0

    (port,) = distinct_free_ports(1)
    assert str(port) not in reg["PORTS"]
    td = cluster.register_td([cluster.container(command=LONG, cpu=256, memory=64,
                                                 portMappings=[{"containerPort": port, "hostPort": port}])])
    arn = cluster.run_task(td)
    cluster.wait_task(arn, "RUNNING", timeout=60)

    ci = cluster.container_instance()
    rem = resources(ci["remainingResources"])
    assert rem["CPU"] == reg["CPU"] - 256, rem
    assert rem["MEMORY"] == reg["MEMORY"] - 64, rem
    assert str(port) in rem["PORTS"], rem  # ECS lists ports in use under remaining PORTS
    assert reg["PORTS"] <= rem["PORTS"], (reg, rem)
    assert ci["runningTasksCount"] == 1

    stop_all(cluster, [arn])
    rem = wait_for(lambda: (r := resources(cluster.container_instance()["remainingResources"]))["MEMORY"] == reg["MEMORY"] and r,
                   timeout=15, what="resources to be released")
    assert rem["CPU"] == reg["CPU"] and str(port) not in rem["PORTS"], rem


def test_run_task_reports_resource_failures(cluster):
    reg = resources(cluster.container_instance()["registeredResources"])
    instance = cluster.agent.arn

    too_much_memory = cluster.register_td([cluster.container(command=["true"], memory=reg["MEMORY"] + 1)])
    out = cluster.ecs.run_task(cluster=cluster.name, taskDefinition=too_much_memory)
    assert out["tasks"] == [], out
    assert {"arn": instance, "reason": "RESOURCE:MEMORY"} in [
        {"arn": f.get("arn"), "reason": f.get("reason")} for f in out["failures"]], out["failures"]

    too_much_cpu = cluster.register_td([cluster.container(command=["true"], cpu=reg["CPU"] + 1024, memory=32)])
    out = cluster.ecs.run_task(cluster=cluster.name, taskDefinition=too_much_cpu)
    assert out["tasks"] == [], out
    assert [f["reason"] for f in out["failures"]] == ["RESOURCE:CPU"], out["failures"]

    (port,) = distinct_free_ports(1)
    with_port = cluster.register_td([cluster.container(command=LONG, memory=32,
                                                       portMappings=[{"containerPort": port, "hostPort": port}])])
    first = cluster.run_task(with_port)
    cluster.wait_task(first, "RUNNING", timeout=60)
    out = cluster.ecs.run_task(cluster=cluster.name, taskDefinition=with_port)
    assert out["tasks"] == [], out
    assert [f["reason"] for f in out["failures"]] == ["RESOURCE:PORTS"], out["failures"]
    # Nothing was placed for the failures.
    running = cluster.ecs.list_tasks(cluster=cluster.name, desiredStatus="RUNNING")["taskArns"]
    assert running == [first], running
    stop_all(cluster, [first])


def test_concurrent_run_tasks_never_overcommit(cluster):
    reg = resources(cluster.container_instance()["registeredResources"])
    per_task = reg["MEMORY"] // 8
    fits = reg["MEMORY"] // per_task  # 8
    ports = distinct_free_ports(10)
    # One task definition per host port; request each twice (20 RunTasks).
    tds = [cluster.register_td([cluster.container(command=LONG, memory=per_task, cpu=0,
                                                  portMappings=[{"containerPort": p, "hostPort": p}])])
           for p in ports]
    port_of_td = {td: p for td, p in zip(tds, ports)}

    samples: list[dict] = []
    stop_sampling = threading.Event()

    def sample():
        client = cluster.coordinator.ecs()
        while not stop_sampling.is_set():
            ci = client.describe_container_instances(cluster=cluster.name, containerInstances=[cluster.agent.arn])
            samples.append(resources(ci["containerInstances"][0]["remainingResources"]))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    barrier = threading.Barrier(20)

    def run(i: int) -> dict:
        client = cluster.coordinator.ecs()
        barrier.wait(timeout=30)
        return client.run_task(cluster=cluster.name, taskDefinition=tds[i % len(tds)])

    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(run, range(20)))
        placed = [t for r in results for t in r["tasks"]]
        failures = [f for r in results for f in r["failures"]]
        arns = [t["taskArn"] for t in placed]

        assert len(placed) + len(failures) == 20, results
        assert len(placed) <= fits, f"{len(placed)} tasks of {per_task} MiB placed on {reg['MEMORY']} MiB"
        # Every port is asked for twice and memory fits 8 of 10 ports: a correct
        # scheduler places exactly `fits` tasks, refusing the rest for memory or ports.
        assert len(placed) == fits, (len(placed), failures)
        assert {f["reason"] for f in failures} <= {"RESOURCE:MEMORY", "RESOURCE:PORTS"}, failures
        placed_ports = [port_of_td[t["taskDefinitionArn"]] for t in placed]
        assert len(set(placed_ports)) == len(placed_ports), f"host port placed twice: {sorted(placed_ports)}"

        for arn in arns:
            cluster.wait_task(arn, "RUNNING", timeout=90)
        time.sleep(0.5)
    finally:
        stop_sampling.set()
        sampler.join(timeout=10)

    assert samples, "sampler saw nothing"
    for s in samples:
        assert s["MEMORY"] >= 0 and s["CPU"] >= 0, s

    ci = cluster.container_instance()
    rem = resources(ci["remainingResources"])
    assert ci["runningTasksCount"] == fits
    assert rem["MEMORY"] == reg["MEMORY"] - fits * per_task, rem
    assert {str(p) for p in placed_ports} <= rem["PORTS"], rem

    tasks = cluster.describe(arns)
    bound = []
    for t in tasks:
        assert t["lastStatus"] == "RUNNING", t
        bindings = [b for c in t["containers"] for b in c.get("networkBindings", [])]
        assert [b["hostPort"] for b in bindings] == [port_of_td[t["taskDefinitionArn"]]], t
        bound.extend(b["hostPort"] for b in bindings)
    assert len(bound) == len(set(bound)), f"two RUNNING tasks share a host port: {sorted(bound)}"

    stop_all(cluster, arns)
    rem = wait_for(lambda: (r := resources(cluster.container_instance()["remainingResources"]))["MEMORY"] == reg["MEMORY"] and r,
                   timeout=20, what="resources to be released")
    assert not ({str(p) for p in ports} & rem["PORTS"]), rem


def test_instance_attributes(host):
    cluster = host.cluster(attributes={"stack": "blue", "zone-tag": "a1"})
    try:
        ci = cluster.container_instance()
        attrs = {a["name"]: a.get("value") for a in ci["attributes"]}
        assert attrs.get("ecs.os-type") == "linux", attrs
        assert attrs.get("ecs.cpu-architecture") == "x86_64", attrs
        assert "ecs.capability.external" in attrs, attrs
        assert attrs.get("stack") == "blue" and attrs.get("zone-tag") == "a1", attrs
        assert ci["ec2InstanceId"].startswith("mi-"), ci
    finally:
        host.clusters.remove(cluster)
        cluster.close()
