"""Capacity providers end to end on one host: the real AWS CLI and boto3
against the coordinator, a real agent, containerd and registry.

The agent's container instance joins a provider's group with
`aws ecs put-attributes` (`berth.capacity-group`); a second provider names a
group no instance is in. RunTask with a `capacityProviderStrategy`, with the
cluster's default strategy, and a service with a strategy place real
containers on the grouped instance and record `capacityProviderName`; the
empty provider places nothing (ATTRIBUTE); launch type plus strategy is
refused with ECS's words; a provider is refused deletion while a cluster
uses it and goes INACTIVE after.

On three simulated hosts (multihost.Fleet: own netns, containerd and agent
each), two providers' groups split RunTask's base/weight and a service's
tasks (scaled 4 -> 2) onto the right hosts. More split cases (existing
tasks, switching strategies, restart) are in coordinator/tests/capacity.rs
with simulated instances."""

from __future__ import annotations

import uuid

from harness import wait_for

SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"]
ASG = "arn:aws:autoscaling:us-east-1:000000000000:autoScalingGroup:6f1d2c3b-0000-4000-8000-000000000001:autoScalingGroupName/"


def test_capacity_providers_place_real_tasks(cluster):
    c = cluster
    coord = c.coordinator
    suffix = uuid.uuid4().hex[:6]
    rack, empty = f"rack-{suffix}", f"empty-{suffix}"
    group = f"group-{suffix}"

    # Providers through the CLI (names and groups are account-wide).
    made = coord.aws("ecs", "create-capacity-provider", "--name", rack,
                     "--auto-scaling-group-provider", f"autoScalingGroupArn={ASG}{group}",
                     "--tags", "key=purpose,value=e2e")
    cp = made["capacityProvider"]
    assert cp["status"] == "ACTIVE" and cp["name"] == rack, cp
    assert cp["autoScalingGroupProvider"]["autoScalingGroupArn"] == f"{ASG}{group}"
    coord.aws("ecs", "create-capacity-provider", "--name", empty,
              "--auto-scaling-group-provider", f"autoScalingGroupArn=nobody-{suffix}")
    # Reserved names are refused as ECS refuses them.
    bad = coord.aws_raw("ecs", "create-capacity-provider", "--name", "FARGATE_SPOT",
                        "--auto-scaling-group-provider", "autoScalingGroupArn=x")
    assert bad.returncode != 0 and "InvalidParameterException" in bad.stderr, bad.stderr

    described = coord.aws("ecs", "describe-capacity-providers", "--capacity-providers", rack, "--include", "TAGS")
    assert described["capacityProviders"][0]["tags"] == [{"key": "purpose", "value": "e2e"}]

    # The real agent's instance joins the group.
    instance = c.container_instance()["containerInstanceArn"]
    coord.aws("ecs", "put-attributes", "--cluster", c.name, "--attributes",
              f"name=berth.capacity-group,value={group},targetId={instance}")

    coord.aws("ecs", "put-cluster-capacity-providers", "--cluster", c.name,
              "--capacity-providers", rack, empty,
              "--default-capacity-provider-strategy", f"capacityProvider={rack},weight=1")
    cl = coord.aws("ecs", "describe-clusters", "--clusters", c.name)["clusters"][0]
    assert cl["capacityProviders"] == [rack, empty]
    assert cl["defaultCapacityProviderStrategy"] == [{"capacityProvider": rack, "weight": 1, "base": 0}]

    td = c.register_td([c.container(command=SLEEPER)])

    # Launch type and strategy together: ECS's refusal, through the CLI.
    both = coord.aws_raw("ecs", "run-task", "--cluster", c.name, "--task-definition", td,
                         "--launch-type", "EXTERNAL",
                         "--capacity-provider-strategy", f"capacityProvider={rack},weight=1")
    assert both.returncode != 0
    assert "Specifying both a launch type and capacity provider strategy is not supported" in both.stderr, both.stderr

    # An explicit strategy (base 1 on the rack, the rest by weight): two real tasks.
    out = c.ecs.run_task(cluster=c.name, taskDefinition=td, count=2, capacityProviderStrategy=[
        {"capacityProvider": rack, "base": 1, "weight": 1},
        {"capacityProvider": empty, "weight": 0},
    ])
    assert out["failures"] == [], out["failures"]
    arns = [t["taskArn"] for t in out["tasks"]]
    assert len(arns) == 2
    for arn in arns:
        task, _ = c.wait_task(arn, "RUNNING", timeout=60)
        assert task["capacityProviderName"] == rack, task
        assert task["containerInstanceArn"] == instance

    # Neither launch type nor strategy: the cluster default, via the CLI.
    run = coord.aws("ecs", "run-task", "--cluster", c.name, "--task-definition", td)
    default_arn = run["tasks"][0]["taskArn"]
    task, _ = c.wait_task(default_arn, "RUNNING", timeout=60)
    assert task["capacityProviderName"] == rack
    arns.append(default_arn)

    # A provider whose group holds no instance places nothing.
    none = c.ecs.run_task(cluster=c.name, taskDefinition=td,
                          capacityProviderStrategy=[{"capacityProvider": empty, "weight": 1}])
    assert none["tasks"] == []
    assert {f["reason"] for f in none["failures"]} == {"ATTRIBUTE"}, none["failures"]

    # A service with a strategy: its task runs on the rack.
    svc = c.ecs.create_service(cluster=c.name, serviceName="cap-web", taskDefinition=td, desiredCount=1,
                               capacityProviderStrategy=[{"capacityProvider": rack, "weight": 1}])["service"]
    assert "launchType" not in svc and svc["capacityProviderStrategy"][0]["capacityProvider"] == rack, svc
    r = coord.aws_raw("ecs", "wait", "services-stable", "--cluster", c.name, "--services", "cap-web", timeout=300)
    assert r.returncode == 0, r.stderr
    svc_arns = c.ecs.list_tasks(cluster=c.name, serviceName="cap-web")["taskArns"]
    assert [t["capacityProviderName"] for t in c.describe(svc_arns)] == [rack]

    # In use: the provider can be neither deleted nor removed from the cluster.
    refused = coord.aws_raw("ecs", "delete-capacity-provider", "--capacity-provider", rack)
    assert refused.returncode != 0 and "ClientException" in refused.stderr, refused.stderr
    busy = coord.aws_raw("ecs", "put-cluster-capacity-providers", "--cluster", c.name,
                         "--capacity-providers", empty, "--default-capacity-provider-strategy", "[]")
    assert busy.returncode != 0 and "ResourceInUseException" in busy.stderr, busy.stderr

    # Tear down: service, tasks, association, providers.
    c.ecs.delete_service(cluster=c.name, service="cap-web", force=True)
    r = coord.aws_raw("ecs", "wait", "services-inactive", "--cluster", c.name, "--services", "cap-web", timeout=300)
    assert r.returncode == 0, r.stderr
    for arn in arns:
        c.ecs.stop_task(cluster=c.name, task=arn)
    for arn in arns:
        c.wait_task(arn, "STOPPED", timeout=60)
    coord.aws("ecs", "put-cluster-capacity-providers", "--cluster", c.name,
              "--capacity-providers", "[]", "--default-capacity-provider-strategy", "[]")
    for name in (rack, empty):
        gone = coord.aws("ecs", "delete-capacity-provider", "--capacity-provider", name)
        assert gone["capacityProvider"]["status"] == "INACTIVE", gone
        assert gone["capacityProvider"]["updateStatus"] == "DELETE_COMPLETE"
    left = coord.aws("ecs", "describe-capacity-providers")["capacityProviders"]
    assert not {p["name"] for p in left} & {rack, empty}
    wait_for(lambda: not c.ctr_tasks(), timeout=30, what="containerd tasks gone")


def test_split_across_providers_on_three_real_hosts(private_fleet):
    """Three simulated hosts (own netns, containerd, agent): hosts 0 and 1 in
    one provider's group, host 2 in another's. RunTask's base/weight split and
    a service's split (scaled out and in) land real containers on the right
    hosts."""
    f = private_fleet
    coord = f.coordinator
    suffix = uuid.uuid4().hex[:6]
    pa, pb = f"fa-{suffix}", f"fb-{suffix}"
    ga, gb = f"ga-{suffix}", f"gb-{suffix}"
    group_of_host = {0: ga, 1: ga, 2: gb}
    for i, g in group_of_host.items():
        coord.aws("ecs", "put-attributes", "--cluster", f.cluster, "--attributes",
                  f"name=berth.capacity-group,value={g},targetId={f.hosts[i].instance_arn}")
    coord.aws("ecs", "create-capacity-provider", "--name", pa,
              "--auto-scaling-group-provider", f"autoScalingGroupArn={ASG}{ga}")
    coord.aws("ecs", "create-capacity-provider", "--name", pb,
              "--auto-scaling-group-provider", f"autoScalingGroupArn={gb}")
    coord.aws("ecs", "put-cluster-capacity-providers", "--cluster", f.cluster,
              "--capacity-providers", pa, pb, "--default-capacity-provider-strategy", "[]")
    provider_group = {pa: ga, pb: gb}

    def check(tasks: list[dict]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in tasks:
            p = t["capacityProviderName"]
            host = f.hosts.index(f.host_of(t))
            assert group_of_host[host] == provider_group[p], (p, host, t["taskArn"])
            counts[p] = counts.get(p, 0) + 1
        return counts

    td = f.register_taskdef([f.container(command=SLEEPER)])
    # Base 1 on A, then 1:2: six tasks are 3 on A (hosts 0-1) and 3 on B (host 2).
    tasks, failures = f.run_and_wait(td, count=6, capacityProviderStrategy=[
        {"capacityProvider": pa, "base": 1, "weight": 1},
        {"capacityProvider": pb, "weight": 2},
    ])
    assert failures == [], failures
    assert check(tasks) == {pa: 3, pb: 3}
    f.stop_and_wait([t["taskArn"] for t in tasks])

    # A service 1:1 through the CLI, scaled 4 -> 2.
    coord.aws("ecs", "create-service", "--cluster", f.cluster, "--service-name", "split",
              "--task-definition", td, "--desired-count", "4",
              "--capacity-provider-strategy", f"capacityProvider={pa},weight=1",
              f"capacityProvider={pb},weight=1")

    def running() -> list[dict]:
        arns = f.client.list_tasks(cluster=f.cluster, serviceName="split")["taskArns"]
        return [t for t in f.describe(arns) if t["lastStatus"] == "RUNNING"] if arns else []

    for desired in (4, 2):
        if desired != 4:
            coord.aws("ecs", "update-service", "--cluster", f.cluster, "--service", "split",
                      "--desired-count", str(desired))
        r = coord.aws_raw("ecs", "wait", "services-stable", "--cluster", f.cluster, "--services", "split",
                          timeout=300)
        assert r.returncode == 0, r.stderr
        tasks = wait_for(lambda: len(ts := running()) == desired and ts, timeout=60,
                         what=f"{desired} service tasks RUNNING")
        assert check(tasks) == {pa: desired // 2, pb: desired // 2}
    coord.aws("ecs", "delete-service", "--cluster", f.cluster, "--service", "split", "--force")
    r = coord.aws_raw("ecs", "wait", "services-inactive", "--cluster", f.cluster, "--services", "split",
                      timeout=300)
    assert r.returncode == 0, r.stderr
