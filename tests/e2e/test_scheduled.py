"""Scheduled tasks end to end: an EventBridge rule made with the real AWS CLI
(`aws events put-rule --schedule-expression 'rate(1 minute)'`, `put-targets`
with an ECS cluster target) runs its task on a real agent and containerd on
time, and firing stays exactly once per slot across `kill -9` of the
coordinator:

- slot 1 (one minute after put-rule): the task is created within a few
  seconds of the slot and its container really runs (exit code 0);
- kill -9 right after slot 1 and restart at once: slot 1 is not fired again;
- kill -9 again and stay down across slot 2, restart after it: the missed
  slot fires once at start (the catch-up), and not again after a further
  check.

Then the rule is taken apart with the CLI (disable, remove-targets,
delete-rule; delete-rule refuses while targets exist). Wall time: about two
and a half minutes, most of it waiting for slots."""

from __future__ import annotations

import json
import math
import time

import harness
from harness import wait_for

RULE = "every-minute"
STARTED_BY = f"events-rule/{RULE}"
# How far after its slot a firing may be seen: the coordinator checks every
# second; the rest is slack for a loaded test machine.
ON_TIME = 4.0


def rule_tasks(cluster) -> list[dict]:
    """Every task the rule started (running or stopped), oldest first."""
    arns: list[str] = []
    for desired in ("RUNNING", "STOPPED"):
        arns += cluster.ecs.list_tasks(cluster=cluster.name, startedBy=STARTED_BY,
                                       desiredStatus=desired)["taskArns"]
    tasks = cluster.describe(arns) if arns else []
    return sorted(tasks, key=lambda t: t["createdAt"].timestamp())


def created(task: dict) -> float:
    return task["createdAt"].timestamp()


def sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


def wait_ran(cluster, arn: str) -> None:
    """The task's container really ran to completion on the agent."""
    task, seen = cluster.wait_task(arn, "STOPPED", timeout=60)
    container = task["containers"][0]
    assert container.get("exitCode") == 0, (task, seen)
    assert task["stopCode"] == "EssentialContainerExited", task


def test_rule_fires_on_time_and_once_per_slot_across_kill9(private_cluster):
    c = private_cluster
    coord = c.coordinator
    td = c.register_td([c.container(command=["sh", "-c", "echo scheduled run"])], family="sched-job")
    cluster_arn = c.ecs.describe_clusters(clusters=[c.name])["clusters"][0]["clusterArn"]

    before = time.time()
    put = coord.aws("events", "put-rule", "--name", RULE, "--schedule-expression", "rate(1 minute)",
                    "--description", "berth e2e")
    after = time.time()
    assert put["RuleArn"] == f"arn:aws:events:{harness.REGION}:000000000000:rule/{RULE}"
    targets = [{
        "Id": "job",
        "Arn": cluster_arn,
        "RoleArn": "arn:aws:iam::000000000000:role/ecsEventsRole",
        "EcsParameters": {"TaskDefinitionArn": td, "TaskCount": 1, "LaunchType": "EXTERNAL"},
    }]
    out = coord.aws("events", "put-targets", "--rule", RULE, "--targets", json.dumps(targets))
    assert out == {"FailedEntryCount": 0, "FailedEntries": []}
    described = coord.aws("events", "describe-rule", "--name", RULE)
    assert described["State"] == "ENABLED"
    assert described["ScheduleExpression"] == "rate(1 minute)"
    listed = coord.aws("events", "list-targets-by-rule", "--rule", RULE)["Targets"]
    assert [t["Id"] for t in listed] == ["job"]
    assert listed[0]["EcsParameters"]["TaskDefinitionArn"] == td
    # boto3 speaks to the same endpoint.
    events = coord.client("events")
    assert events.describe_rule(Name=RULE)["Arn"] == put["RuleArn"]
    assert events.list_rule_names_by_target(TargetArn=cluster_arn)["RuleNames"] == [RULE]

    # The schedule counts from put-rule, in whole seconds of the coordinator's clock.
    earliest_slot1 = math.floor(before) + 60
    latest_slot1 = math.floor(after) + 60
    assert rule_tasks(c) == []

    # Slot 1: on time.
    first = wait_for(lambda: rule_tasks(c), timeout=latest_slot1 + ON_TIME + 5 - time.time(),
                     interval=0.25, what="the first scheduled task")
    assert len(first) == 1, first
    t1 = first[0]
    assert earliest_slot1 <= created(t1) <= latest_slot1 + ON_TIME, (created(t1), earliest_slot1, latest_slot1)
    assert t1["startedBy"] == STARTED_BY
    assert t1["group"] == "family:sched-job"
    assert t1["launchType"] == "EXTERNAL"
    wait_ran(c, t1["taskArn"])

    # kill -9 right after the firing, restart at once: slot 1 stays fired once.
    coord.kill9()
    coord.start()
    time.sleep(3)
    assert [t["taskArn"] for t in rule_tasks(c)] == [t1["taskArn"]]

    # Down across slot 2: kill -9, wait past the slot, restart.
    slot2_latest = latest_slot1 + 60
    coord.kill9()
    sleep_until(slot2_latest + 3)
    restarted = time.time()
    coord.start()
    c.wait_agent_connected(timeout=60)
    def two_tasks():
        tasks = rule_tasks(c)
        return tasks if len(tasks) >= 2 else None

    caught_up = wait_for(two_tasks, timeout=20, interval=0.25, what="the missed slot's catch-up firing")
    assert len(caught_up) == 2, caught_up
    t2 = caught_up[1]
    assert restarted <= created(t2) <= restarted + 10, (created(t2), restarted)
    wait_ran(c, t2["taskArn"])
    # No more firings for that slot (nor for slot 1) while slot 3 is still ahead.
    time.sleep(3)
    assert time.time() < earliest_slot1 + 120, "slot 3 came before the check ended"
    assert [t["taskArn"] for t in rule_tasks(c)] == [t1["taskArn"], t2["taskArn"]]

    # Taking it apart with the CLI.
    coord.aws("events", "disable-rule", "--name", RULE)
    assert coord.aws("events", "describe-rule", "--name", RULE)["State"] == "DISABLED"
    refused = coord.aws_raw("events", "delete-rule", "--name", RULE)
    assert refused.returncode != 0
    assert "ValidationException" in refused.stderr and "since it has targets" in refused.stderr, refused.stderr
    removed = coord.aws("events", "remove-targets", "--rule", RULE, "--ids", "job")
    assert removed["FailedEntryCount"] == 0
    coord.aws("events", "delete-rule", "--name", RULE)
    missing = coord.aws_raw("events", "describe-rule", "--name", RULE)
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr, missing.stderr
    assert coord.aws("events", "list-rules")["Rules"] == []
