"""Invalid requests against a running coordinator (no agent needed).

Each row of `ROWS` is one request sent raw over HTTP (so it can be malformed,
mistyped, unsigned, badly signed, oversized...), signed with botocore's own
SigV4 signer when a signature is wanted. For every row the coordinator must
answer an HTTP 4xx with exactly the `__type` real ECS (or SSM) answers, a JSON
body with a message, stay up, and leave the state unchanged: ListClusters,
DescribeClusters, ListTaskDefinitions, ListTaskDefinitionFamilies, ListTasks,
ListContainerInstances and DescribeActivations are compared with a snapshot
taken before the rows ran.

`FAILURE_ROWS` are requests ECS answers with HTTP 200 and a `failures` list
(reason MISSING) rather than an error.

Expected types come from the ECS/SSM API references, botocore's models and the
messages AWS is known to answer with (quoted next to the rows). Rows marked
"inferred" are ones where AWS documents no exact answer; the expectation follows
the service's pattern for the same kind of error.
"""

from __future__ import annotations

import datetime
import http.client
import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import harness

ECS_PREFIX = "AmazonEC2ContainerServiceV20141113."
SSM_PREFIX = "AmazonSSM."
REGION = harness.REGION

EMPTY_CLUSTER = "bi-empty"  # exists, has no container instances
FAMILY = "bi-fam"  # registered once (revision 1)
ONE_MIB = 1024 * 1024


def container(**kw: Any) -> dict:
    c = {"name": "app", "image": "busybox:latest", "memory": 32, "essential": True}
    c.update(kw)
    return c


def taskdef(**kw: Any) -> dict:
    d = {"family": "bi-new", "containerDefinitions": [container()]}
    d.update(kw)
    return d


@dataclass
class Row:
    id: str
    action: str  # ECS or SSM action name (without the target prefix)
    body: Any  # dict/list/str -> JSON-encoded; bytes -> sent as is
    expect: str  # the exact __type
    service: str = "ecs"  # "ecs" or "ssm"
    auth: str = "signed"  # see send()
    target: str | None = None  # override the X-Amz-Target header (None: derived)
    status: int | None = None  # exact status when AWS documents it; else any 4xx
    headers: dict = field(default_factory=dict)


ROWS: list[Row] = [
    # ---- authentication and protocol
    Row("unsigned", "ListClusters", {}, "MissingAuthenticationTokenException", auth="none"),
    Row("wrong-secret", "ListClusters", {}, "InvalidSignatureException", auth="wrong-secret"),
    Row("unknown-access-key", "ListClusters", {}, "UnrecognizedClientException", auth="unknown-key"),
    # AWS: "Signature expired: <date> is now earlier than <now - 5 min>".
    Row("expired-x-amz-date", "ListClusters", {}, "InvalidSignatureException", auth="expired"),
    # AWS: "Signature not yet current: <date> is still later than <now + 5 min>".
    Row("future-x-amz-date", "ListClusters", {}, "InvalidSignatureException", auth="future"),
    Row("authorization-without-signature", "ListClusters", {}, "IncompleteSignatureException",
        auth="incomplete"),
    # Signed for one body, sent with another: the write must not happen.
    Row("body-tampered-after-signing", "CreateCluster", {"clusterName": "bi-tampered"},
        "InvalidSignatureException", auth="tampered"),
    Row("host-header-changed-after-signing", "CreateCluster", {"clusterName": "bi-host"},
        "InvalidSignatureException", auth="host-changed"),
    Row("missing-x-amz-target", "ListClusters", {}, "UnknownOperationException", target=""),
    Row("unknown-action", "FrobnicateClusters", {}, "UnknownOperationException"),
    Row("wrong-api-version-prefix", "ListClusters", {}, "UnknownOperationException",
        target="AmazonEC2ContainerServiceV20991231.ListClusters"),
    Row("ssm-unknown-action", "FrobnicateActivations", {}, "UnknownOperationException", service="ssm"),
    Row("oversized-body", "CreateCluster",
        {"clusterName": "bi-big", "tags": [{"key": "k", "value": "v" * 200}],
         "settings": [{"name": "containerInsights", "value": "x" * (ONE_MIB + 16)}]},
        "RequestEntityTooLargeException", status=413),
    # ---- serialization (AWS JSON 1.1: SerializationException, e.g.
    # "NUMBER_VALUE can not be converted to a String", "Start of list found where not expected")
    Row("malformed-json", "CreateCluster", b'{"clusterName": "bi-x"', "SerializationException"),
    Row("json-array-body", "CreateCluster", [{"clusterName": "bi-x"}], "SerializationException"),
    Row("json-string-body", "CreateCluster", "bi-x", "SerializationException"),
    Row("invalid-utf8", "CreateCluster", b'{"clusterName": "bi-\xff\xfe"}', "SerializationException"),
    Row("deeply-nested-json", "CreateCluster",
        ('{"clusterName": "bi-deep", "tags": ' + "[" * 20000 + "]" * 20000 + "}").encode(),
        "SerializationException"),
    Row("cluster-name-number", "CreateCluster", {"clusterName": 5}, "SerializationException"),
    Row("tags-object-not-list", "CreateCluster", {"clusterName": "bi-x", "tags": {"key": "a"}},
        "SerializationException"),
    Row("family-number", "RegisterTaskDefinition", taskdef(family=123), "SerializationException"),
    Row("container-definitions-object", "RegisterTaskDefinition",
        taskdef(containerDefinitions=container()), "SerializationException"),
    Row("container-memory-string", "RegisterTaskDefinition",
        taskdef(containerDefinitions=[container(memory="32")]), "SerializationException"),
    Row("container-essential-string", "RegisterTaskDefinition",
        taskdef(containerDefinitions=[container(essential="yes")]), "SerializationException"),
    Row("run-task-count-string", "RunTask",
        {"cluster": EMPTY_CLUSTER, "taskDefinition": FAMILY, "count": "1"}, "SerializationException"),
    Row("list-task-definitions-max-results-string", "ListTaskDefinitions", {"maxResults": "ten"},
        "SerializationException"),
    # ---- CreateCluster validation ("Up to 255 letters, numbers, hyphens, and underscores")
    Row("cluster-name-with-spaces", "CreateCluster", {"clusterName": "has spaces"},
        "InvalidParameterException"),
    Row("cluster-name-256-chars", "CreateCluster", {"clusterName": "c" * 256}, "InvalidParameterException"),
    Row("cluster-name-with-slash", "CreateCluster", {"clusterName": "a/b"}, "InvalidParameterException"),
    Row("cluster-tag-aws-prefix", "CreateCluster",
        {"clusterName": "bi-tags", "tags": [{"key": "aws:owner", "value": "me"}]}, "InvalidParameterException"),
    Row("cluster-51-tags", "CreateCluster",
        {"clusterName": "bi-tags", "tags": [{"key": f"k{i}", "value": "v"} for i in range(51)]},
        "InvalidParameterException"),
    Row("cluster-tag-key-129-chars", "CreateCluster",
        {"clusterName": "bi-tags", "tags": [{"key": "k" * 129, "value": "v"}]}, "InvalidParameterException"),
    Row("cluster-duplicate-tag-keys", "CreateCluster",
        {"clusterName": "bi-tags", "tags": [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}]},
        "InvalidParameterException"),
    # ---- RegisterTaskDefinition validation (ECS answers ClientException, e.g.
    # "Container.image should not be null or empty.", "Container list cannot be empty.",
    # "Invalid setting for container 'x'. At least one of 'memory' or 'memoryReservation' must be specified.")
    Row("taskdef-missing-family", "RegisterTaskDefinition", {"containerDefinitions": [container()]},
        "ClientException"),
    Row("taskdef-missing-container-definitions", "RegisterTaskDefinition", {"family": "bi-new"},
        "ClientException"),
    Row("taskdef-empty-container-definitions", "RegisterTaskDefinition", taskdef(containerDefinitions=[]),
        "ClientException"),
    Row("taskdef-family-with-slash", "RegisterTaskDefinition", taskdef(family="a/b"), "ClientException"),
    Row("taskdef-family-256-chars", "RegisterTaskDefinition", taskdef(family="f" * 256), "ClientException"),
    Row("taskdef-family-empty", "RegisterTaskDefinition", taskdef(family=""), "ClientException"),
    Row("container-missing-image", "RegisterTaskDefinition",
        taskdef(containerDefinitions=[{"name": "app", "memory": 32}]), "ClientException"),
    Row("container-missing-name", "RegisterTaskDefinition",
        taskdef(containerDefinitions=[{"image": "busybox", "memory": 32}]), "ClientException"),
    Row("duplicate-container-names", "RegisterTaskDefinition",
        taskdef(containerDefinitions=[container(), container()]), "ClientException"),
    Row("container-memory-0", "RegisterTaskDefinition",
        taskdef(containerDefinitions=[container(memory=0)]), "ClientException"),
    Row("container-memory-negative", "RegisterTaskDefinition",
        taskdef(containerDefinitions=[container(memory=-1)]), "ClientException"),
    Row("memory-reservation-above-memory", "RegisterTaskDefinition",
        taskdef(containerDefinitions=[container(memory=32, memoryReservation=64)]), "ClientException"),
    Row("no-memory-anywhere", "RegisterTaskDefinition",
        taskdef(containerDefinitions=[{"name": "app", "image": "busybox"}]), "ClientException"),
    Row("task-cpu-not-a-number", "RegisterTaskDefinition", taskdef(cpu="abc"), "ClientException"),
    Row("task-memory-not-a-number", "RegisterTaskDefinition", taskdef(memory="lots"), "ClientException"),
    Row("container-port-70000", "RegisterTaskDefinition",
        taskdef(containerDefinitions=[container(portMappings=[{"containerPort": 70000}])]), "ClientException"),
    Row("host-port-70000", "RegisterTaskDefinition",
        taskdef(networkMode="host",
                containerDefinitions=[container(portMappings=[{"containerPort": 80, "hostPort": 70000}])]),
        "ClientException"),
    Row("container-stop-timeout-negative", "RegisterTaskDefinition",
        taskdef(containerDefinitions=[container(stopTimeout=-1)]), "ClientException"),
    Row("network-mode-unknown", "RegisterTaskDefinition", taskdef(networkMode="bogus"), "ClientException"),
    Row("depends-on-unknown-container", "RegisterTaskDefinition",
        taskdef(containerDefinitions=[container(dependsOn=[{"containerName": "ghost", "condition": "START"}])]),
        "ClientException"),
    # ---- task definition references
    # AWS: "ClientException: Unable to describe task definition."
    Row("describe-unknown-family", "DescribeTaskDefinition", {"taskDefinition": "bi-no-such-family"},
        "ClientException"),
    Row("describe-unknown-revision", "DescribeTaskDefinition", {"taskDefinition": f"{FAMILY}:99"},
        "ClientException"),
    Row("deregister-without-revision", "DeregisterTaskDefinition", {"taskDefinition": FAMILY},
        "ClientException"),
    Row("deregister-unknown-revision", "DeregisterTaskDefinition", {"taskDefinition": f"{FAMILY}:99"},
        "ClientException"),
    # ---- RunTask
    Row("run-task-unknown-cluster", "RunTask", {"cluster": "bi-no-such-cluster", "taskDefinition": FAMILY},
        "ClusterNotFoundException"),
    # "TaskDefinition not found." (inferred type: ClientException, as for DescribeTaskDefinition)
    Row("run-task-unknown-family", "RunTask", {"cluster": EMPTY_CLUSTER, "taskDefinition": "bi-no-such-family"},
        "ClientException"),
    Row("run-task-unknown-revision", "RunTask", {"cluster": EMPTY_CLUSTER, "taskDefinition": f"{FAMILY}:99"},
        "ClientException"),
    Row("run-task-count-0", "RunTask", {"cluster": EMPTY_CLUSTER, "taskDefinition": FAMILY, "count": 0},
        "InvalidParameterException"),
    Row("run-task-count-11", "RunTask", {"cluster": EMPTY_CLUSTER, "taskDefinition": FAMILY, "count": 11},
        "InvalidParameterException"),
    # AWS: "InvalidParameterException: No Container Instances were found in your cluster."
    Row("run-task-no-instances", "RunTask", {"cluster": EMPTY_CLUSTER, "taskDefinition": FAMILY},
        "InvalidParameterException"),
    # ---- StopTask / DescribeTasks / ListTasks
    # AWS: "InvalidParameterException: The referenced task was not found."
    Row("stop-unknown-task", "StopTask", {"cluster": EMPTY_CLUSTER, "task": "0123456789abcdef0123456789abcdef"},
        "InvalidParameterException"),
    Row("stop-task-unknown-cluster", "StopTask",
        {"cluster": "bi-no-such-cluster", "task": "0123456789abcdef0123456789abcdef"}, "ClusterNotFoundException"),
    Row("describe-tasks-unknown-cluster", "DescribeTasks",
        {"cluster": "bi-no-such-cluster", "tasks": ["0123456789abcdef0123456789abcdef"]},
        "ClusterNotFoundException"),
    Row("describe-tasks-101-ids", "DescribeTasks",
        {"cluster": EMPTY_CLUSTER, "tasks": [uuid.uuid4().hex for _ in range(101)]}, "InvalidParameterException"),
    Row("list-tasks-unknown-cluster", "ListTasks", {"cluster": "bi-no-such-cluster"}, "ClusterNotFoundException"),
    Row("list-tasks-max-results-0", "ListTasks", {"cluster": EMPTY_CLUSTER, "maxResults": 0},
        "InvalidParameterException"),
    Row("list-tasks-max-results-101", "ListTasks", {"cluster": EMPTY_CLUSTER, "maxResults": 101},
        "InvalidParameterException"),
    Row("list-clusters-max-results-101", "ListClusters", {"maxResults": 101}, "InvalidParameterException"),
    Row("list-task-definitions-max-results-0", "ListTaskDefinitions", {"maxResults": 0},
        "InvalidParameterException"),
    # ---- clusters and container instances
    Row("delete-unknown-cluster", "DeleteCluster", {"cluster": "bi-no-such-cluster"}, "ClusterNotFoundException"),
    Row("list-container-instances-unknown-cluster", "ListContainerInstances", {"cluster": "bi-no-such-cluster"},
        "ClusterNotFoundException"),
    Row("describe-container-instances-unknown-cluster", "DescribeContainerInstances",
        {"cluster": "bi-no-such-cluster", "containerInstances": ["0123456789abcdef0123456789abcdef"]},
        "ClusterNotFoundException"),
    # ---- SSM activations (SSM validates its model: "1 validation error detected: Value null at
    # 'iamRole' failed to satisfy constraint: Member must not be null")
    Row("ssm-create-activation-without-iam-role", "CreateActivation", {"RegistrationLimit": 1},
        "ValidationException", service="ssm"),
    Row("ssm-create-activation-limit-0", "CreateActivation", {"IamRole": "berth", "RegistrationLimit": 0},
        "ValidationException", service="ssm"),
    # inferred: a past expiry is not a model constraint but a service check, and
    # InvalidParameters is CreateActivation's only modeled client error.
    Row("ssm-create-activation-past-expiry", "CreateActivation",
        {"IamRole": "berth", "RegistrationLimit": 1, "ExpirationDate": 946684800},
        "InvalidParameters", service="ssm"),
    Row("ssm-delete-unknown-activation", "DeleteActivation", {"ActivationId": str(uuid.uuid4())},
        "InvalidActivationId", service="ssm"),
]


# ----------------------------------------------------------------- plumbing


@dataclass
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def sign(url: str, service: str, headers: dict, body: bytes, access_key: str, secret: str,
         region: str = REGION) -> dict:
    req = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(access_key, secret), service, region).add_auth(req)
    return dict(req.headers.items())


def send(coord: harness.Coordinator, row: Row) -> Response:
    url = coord.endpoint + "/"
    host = urlsplit(url).netloc
    body = encode(row.body)
    prefix = ECS_PREFIX if row.service == "ecs" else SSM_PREFIX
    target = prefix + row.action if row.target is None else row.target
    headers = {"Content-Type": "application/x-amz-json-1.1", "Host": host}
    if target:
        headers["X-Amz-Target"] = target
    headers.update(row.headers)
    ak, sk = coord.access_key, coord.secret_key
    signing_name = "ecs" if row.service == "ecs" else "ssm"
    now = botocore.auth.get_current_datetime

    if row.auth == "signed":
        headers = sign(url, signing_name, headers, body, ak, sk)
    elif row.auth == "none":
        pass
    elif row.auth == "wrong-secret":
        headers = sign(url, signing_name, headers, body, ak, sk + "x")
    elif row.auth == "unknown-key":
        headers = sign(url, signing_name, headers, body, "AKIA" + uuid.uuid4().hex[:16].upper(), sk)
    elif row.auth in ("expired", "future"):
        delta = datetime.timedelta(minutes=-20 if row.auth == "expired" else 20)
        with mock.patch("botocore.auth.get_current_datetime", lambda: now() + delta):
            headers = sign(url, signing_name, headers, body, ak, sk)
    elif row.auth == "incomplete":
        headers = sign(url, signing_name, headers, body, ak, sk)
        auth = headers["Authorization"]
        headers["Authorization"] = auth.split(", Signature=")[0]
    elif row.auth == "tampered":
        headers = sign(url, signing_name, headers, body, ak, sk)
        body = body.replace(b"bi-tampered", b"bi-evil-twin")
    elif row.auth == "host-changed":
        headers = sign(url, signing_name, headers, body, ak, sk)
        headers["Host"] = "example.invalid"
    else:
        raise AssertionError(f"unknown auth mode {row.auth}")

    conn = http.client.HTTPConnection(host, timeout=30)
    try:
        conn.putrequest("POST", "/", skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        try:
            conn.send(body)
        except (BrokenPipeError, ConnectionResetError):
            # A server may answer 413 and close before reading the whole body.
            pass
        resp = conn.getresponse()
        return Response(resp.status, resp.read())
    finally:
        conn.close()


def paginate(client, op: str, key: str, **kw) -> list:
    out: list = []
    for page in client.get_paginator(op).paginate(**kw):
        out.extend(page.get(key, []))
    return out


def snapshot(coord: harness.Coordinator) -> dict:
    ecs = coord.ecs()
    ssm = coord.ssm()
    clusters = sorted(paginate(ecs, "list_clusters", "clusterArns"))
    described = ecs.describe_clusters(clusters=clusters, include=["TAGS", "SETTINGS"])["clusters"] if clusters else []
    snap: dict[str, Any] = {
        "clusters": clusters,
        "describe_clusters": sorted(described, key=lambda c: c["clusterArn"]),
        "task_definitions": {
            status: sorted(paginate(ecs, "list_task_definitions", "taskDefinitionArns", status=status))
            for status in ("ACTIVE", "INACTIVE")
        },
        "families": sorted(paginate(ecs, "list_task_definition_families", "families", status="ALL")),
        "tasks": {},
        "container_instances": {},
        "activations": sorted(
            (a["ActivationId"], a.get("RegistrationsCount"), a.get("RegistrationLimit"))
            for a in paginate(ssm, "describe_activations", "ActivationList")
        ),
    }
    for arn in clusters:
        snap["tasks"][arn] = {
            status: sorted(paginate(ecs, "list_tasks", "taskArns", cluster=arn, desiredStatus=status))
            for status in ("RUNNING", "STOPPED")
        }
        snap["container_instances"][arn] = sorted(
            paginate(ecs, "list_container_instances", "containerInstanceArns", cluster=arn)
        )
    return snap


@pytest.fixture(scope="module")
def coord(tmp_path_factory):
    c = harness.Coordinator(tmp_path_factory.mktemp("bad-input"))
    try:
        ecs = c.ecs()
        ecs.create_cluster(clusterName=EMPTY_CLUSTER)
        ecs.register_task_definition(family=FAMILY, containerDefinitions=[container()])
        c.activation(limit=2)
        c.baseline = snapshot(c)
        yield c
    finally:
        c.close()


def test_table_is_large_and_ids_unique():
    assert len(ROWS) >= 45
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids)), "duplicate row ids"


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_request(coord, row: Row):
    resp = send(coord, row)
    assert coord.running(), f"coordinator died on {row.id}"
    detail = f"{row.id}: HTTP {resp.status} {resp.body[:500]!r}"
    if row.status is not None:
        assert resp.status == row.status, detail
    assert 400 <= resp.status < 500, detail
    try:
        payload = resp.json()
    except ValueError:
        pytest.fail(f"{detail}: body is not JSON")
    assert isinstance(payload, dict), detail
    assert payload.get("__type") == row.expect, detail
    message = payload.get("message", payload.get("Message"))
    assert isinstance(message, str) and message, f"{detail}: no message"
    assert snapshot(coord) == coord.baseline, f"state changed after {row.id}"


FAILURE_ROWS = [
    ("describe-unknown-cluster", "DescribeClusters", {"clusters": ["bi-no-such-cluster"]}, "clusters",
     "arn:aws:ecs:{region}:{account}:cluster/bi-no-such-cluster"),
    ("describe-unknown-task", "DescribeTasks",
     {"cluster": EMPTY_CLUSTER, "tasks": ["0123456789abcdef0123456789abcdef"]}, "tasks",
     "arn:aws:ecs:{region}:{account}:task/" + EMPTY_CLUSTER + "/0123456789abcdef0123456789abcdef"),
    ("describe-unknown-container-instance", "DescribeContainerInstances",
     {"cluster": EMPTY_CLUSTER, "containerInstances": ["0123456789abcdef0123456789abcdef"]}, "containerInstances",
     "arn:aws:ecs:{region}:{account}:container-instance/" + EMPTY_CLUSTER + "/0123456789abcdef0123456789abcdef"),
]


@pytest.mark.parametrize("row", FAILURE_ROWS, ids=[r[0] for r in FAILURE_ROWS])
def test_missing_resources_are_failures_not_errors(coord, row):
    rid, action, body, key, arn_template = row
    resp = send(coord, Row(rid, action, body, expect=""))
    detail = f"{rid}: HTTP {resp.status} {resp.body[:500]!r}"
    assert resp.status == 200, detail
    payload = resp.json()
    assert payload.get(key) == [], detail
    account = coord.ecs().describe_clusters(clusters=[EMPTY_CLUSTER])["clusters"][0]["clusterArn"].split(":")[4]
    expected_arn = arn_template.format(region=REGION, account=account)
    assert payload.get("failures") == [{"arn": expected_arn, "reason": "MISSING"}], detail
    assert snapshot(coord) == coord.baseline, f"state changed after {rid}"


def test_valid_request_still_works_after_bad_ones(coord):
    """Control: the raw sender produces requests the coordinator accepts."""
    resp = send(coord, Row("control", "ListClusters", {}, expect=""))
    assert resp.status == 200, resp.body
    assert sorted(resp.json()["clusterArns"]) == coord.baseline["clusters"]
