"""Cluster query language errors as the real AWS CLI and boto3 see them.

A coordinator alone (no agent needed): a malformed `--filter` or `memberOf`
expression is answered with `InvalidParameterException` whose message names
the 1-based character position, what was expected and what was found, and a
well-formed filter selects registered instances by attribute and date.
"""

from __future__ import annotations

import datetime
import json
import urllib.request

import botocore.exceptions
import pytest

MESSAGE = ("Invalid expression at position 16: expected an operator after "
           "'attribute:tier', found 'gold'")


def register_instance(coordinator, cluster: str, attributes: dict[str, str]) -> str:
    """Registers a container instance over the agent channel (what
    `berth-agent register` sends); returns its ARN."""
    act_id, code = coordinator.activation(limit=1)
    body = {
        "activationId": act_id, "activationCode": code, "cluster": cluster, "hostname": "h",
        "resources": [{"name": "CPU", "type": "INTEGER", "integerValue": 1024},
                      {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}],
        "attributes": [{"name": k, "value": v} for k, v in attributes.items()],
        "agentVersion": "test",
    }
    req = urllib.request.Request(coordinator.endpoint + "/agent/v1/register", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["containerInstanceArn"]


def test_cli_and_boto3_show_the_position(coordinator):
    coordinator.aws("ecs", "create-cluster", "--cluster-name", "cq")
    coordinator.aws("ecs", "register-task-definition", "--family", "cq",
                    "--container-definitions", '[{"name": "c", "image": "busybox", "memory": 8}]')

    r = coordinator.aws_raw("ecs", "list-container-instances", "--cluster", "cq",
                            "--filter", "attribute:tier gold")
    assert r.returncode != 0
    assert "(InvalidParameterException)" in r.stderr, r.stderr
    assert MESSAGE in r.stderr, r.stderr

    r = coordinator.aws_raw("ecs", "run-task", "--cluster", "cq", "--task-definition", "cq",
                            "--placement-constraints",
                            json.dumps([{"type": "memberOf",
                                         "expression": "attribute:tier in [gold silver]"}]))
    assert r.returncode != 0
    assert "(InvalidParameterException)" in r.stderr, r.stderr
    assert ("Invalid expression at position 25: expected ',' or ']' after 'gold', found 'silver'"
            in r.stderr), r.stderr

    ecs = coordinator.ecs()
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.create_service(cluster="cq", serviceName="s", taskDefinition="cq", desiredCount=0,
                           placementConstraints=[{"type": "memberOf",
                                                  "expression": "registeredAt < yesterday"}])
    err = e.value.response["Error"]
    assert err["Code"] == "InvalidParameterException", err
    assert err["Message"].startswith("Invalid expression at position 16: expected a date"), err

    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.list_container_instances(cluster="cq", filter="x" * 2001)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    assert e.value.response["Error"]["Message"] == (
        "Invalid expression: it is 2001 characters long; the maximum is 2000.")


def test_cli_filter_selects_instances(coordinator):
    coordinator.aws("ecs", "create-cluster", "--cluster-name", "cf")
    ecs = coordinator.ecs()
    arns = [register_instance(coordinator, "cf", {"tier": tier}) for tier in ("gold", "silver")]
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    cases = [
        ("attribute:tier == gold", [arns[0]]),
        ("attribute:tier in [gold, silver] and registeredAt == " + today, sorted(arns)),
        ("not attribute:tier =~ g.*", [arns[1]]),
        ("registeredAt < 2018-06-18", []),
    ]
    for expr, want in cases:
        out = coordinator.aws("ecs", "list-container-instances", "--cluster", "cf", "--filter", expr)
        assert sorted(out["containerInstanceArns"]) == want, expr
    assert ecs.list_container_instances(cluster="cf", filter="attribute:tier exists")[
        "containerInstanceArns"]
