"""ECS services end to end on one host: real coordinator, agent, containerd and
registry; boto3 and the AWS CLI (`aws ecs wait services-stable`) as clients.

A service keeps its tasks running (a killed container is replaced), rolls a
forced new deployment within minimumHealthyPercent/maximumPercent, and is
deleted through DRAINING to INACTIVE. The coordinator runs with a 1 s settle
period (ECS's is 40 s) so the test does not wait for it."""

from __future__ import annotations

import signal

import pytest

import harness
from harness import wait_for

SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]


@pytest.fixture(scope="module")
def svc_host(tmp_path_factory):
    h = harness.Host(tmp_path_factory.mktemp("svc"), extra_args=["--service-settle-secs", "1"])
    yield h
    h.close()


@pytest.fixture
def svc_cluster(svc_host):
    c = svc_host.cluster()
    yield c
    svc_host.clusters.remove(c)
    c.close()


def describe_service(cluster, name: str) -> dict:
    out = cluster.ecs.describe_services(cluster=cluster.name, services=[name])
    assert out["failures"] == [], out
    return out["services"][0]


def service_tasks(cluster, name: str) -> list[dict]:
    arns = cluster.ecs.list_tasks(cluster=cluster.name, serviceName=name)["taskArns"]
    return cluster.describe(arns) if arns else []


def wait_stable_cli(cluster, name: str) -> None:
    """`aws ecs wait services-stable`: returns 0 once the service is stable."""
    r = cluster.coordinator.aws_raw("ecs", "wait", "services-stable", "--cluster", cluster.name,
                                    "--services", name, timeout=300)
    assert r.returncode == 0, r.stderr


def test_service_replaces_deploys_and_deletes(svc_cluster):
    c = svc_cluster
    td = c.register_td([c.container(command=SLEEPER)], family="svc-web")
    out = c.ecs.create_service(cluster=c.name, serviceName="web", taskDefinition=td, desiredCount=2,
                               deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 200})
    svc = out["service"]
    assert svc["status"] == "ACTIVE"
    assert svc["deployments"][0]["rolloutState"] == "IN_PROGRESS"
    wait_stable_cli(c, "web")
    svc = describe_service(c, "web")
    assert svc["runningCount"] == 2 and len(svc["deployments"]) == 1, svc
    # The waiter looks at counts only; the rollout completes once the tasks
    # have been RUNNING for the settle period.
    wait_for(lambda: describe_service(c, "web")["deployments"][0]["rolloutState"] == "COMPLETED",
             timeout=30, what="rollout COMPLETED")
    svc = describe_service(c, "web")
    assert svc["events"][0]["message"] == "(service web) has reached a steady state.", svc["events"]
    first = service_tasks(c, "web")
    assert len(first) == 2 and all(t["lastStatus"] == "RUNNING" for t in first)

    # Kill one task's container: the agent reports it STOPPED, the service replaces it.
    victim = first[0]["taskArn"]
    cid = c.containerd_ids_for_task(victim)[0]
    c.containerd.ctr("task", "kill", "--signal", "SIGKILL", cid, namespace=c.namespace)
    c.wait_task(victim, "STOPPED", timeout=30)
    wait_for(lambda: len([t for t in service_tasks(c, "web") if t["lastStatus"] == "RUNNING"]) == 2
             and victim not in [t["taskArn"] for t in service_tasks(c, "web")],
             timeout=60, what="replacement task RUNNING")
    wait_stable_cli(c, "web")
    msgs = [e["message"] for e in describe_service(c, "web")["events"]]
    assert any(m.startswith("(service web) has started 1 tasks: (task ") for m in msgs), msgs

    # A forced new deployment replaces every task, never dropping below 1
    # RUNNING (50% of 2) nor exceeding 4 active (200% of 2).
    c.ecs.update_service(cluster=c.name, service="web", forceNewDeployment=True)

    def progressed():
        svc = describe_service(c, "web")
        active = svc["runningCount"] + svc["pendingCount"]
        running = [t for t in service_tasks(c, "web") if t["lastStatus"] == "RUNNING"]
        assert active <= 4, svc
        assert len(running) >= 1, svc
        return (len(svc["deployments"]) == 1 and svc["deployments"][0]["rolloutState"] == "COMPLETED"
                and svc["runningCount"] == 2)

    wait_for(progressed, timeout=120, interval=0.2, what="forced deployment to complete")
    now = service_tasks(c, "web")
    assert not ({t["taskArn"] for t in now} & {t["taskArn"] for t in first}), "every task replaced"
    wait_stable_cli(c, "web")

    # Delete: refused while scaled up, then forced to DRAINING and INACTIVE.
    with pytest.raises(c.ecs.exceptions.InvalidParameterException):
        c.ecs.delete_service(cluster=c.name, service="web")
    out = c.ecs.delete_service(cluster=c.name, service="web", force=True)
    assert out["service"]["status"] == "DRAINING"
    r = c.coordinator.aws_raw("ecs", "wait", "services-inactive", "--cluster", c.name, "--services", "web",
                              timeout=300)
    assert r.returncode == 0, r.stderr
    assert service_tasks(c, "web") == []
    wait_for(lambda: not c.ctr_tasks(), timeout=30, what="containerd tasks gone")
    # The stable waiter fails on an INACTIVE service instead of waiting forever.
    bad = c.coordinator.aws_raw("ecs", "wait", "services-stable", "--cluster", c.name, "--services", "web",
                                timeout=120)
    assert bad.returncode != 0
