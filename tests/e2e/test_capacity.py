"""Capacity providers end to end on one host: the real AWS CLI and boto3
against the coordinator, a real agent, containerd and registry.

The agent's container instance joins a provider's group with
`aws ecs put-attributes` (`berth.capacity-group`); a second provider names a
group no instance is in. RunTask with a `capacityProviderStrategy`, with the
cluster's default strategy, and a service with a strategy place real
containers on the grouped instance and record `capacityProviderName`; the
empty provider places nothing (ATTRIBUTE); launch type plus strategy is
refused with ECS's words; a provider is refused deletion while a cluster
uses it and goes INACTIVE after. The split across several providers is
checked with simulated instances in coordinator/tests/capacity.rs (this
harness has one real agent per cluster)."""

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
