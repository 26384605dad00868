"""kill -9 the coordinator while clients stream writes; nothing acknowledged is lost.

Client threads stream RegisterTaskDefinition (two threads on one shared family,
one on its own family), CreateCluster, and RunTask (on a cluster whose instance
is a real agent with its own containerd). Every request carries a unique marker
(a container environment variable, the cluster name, the task's `startedBy`),
and the client never retries, so each marker is written by at most one request.

Three times, at a different moment each time, the coordinator is killed with
SIGKILL (by its PID) mid-stream and restarted on the same data dir. After each
restart, over everything sent so far:
- every acknowledged write is present exactly once, with the result the client
  was given (revision number, task ARN);
- every request the server rejected with an error left nothing behind;
- every request without an answer (the kill cut it off) exists once or not at all;
- revisions are contiguous per family (1..N) and nothing unknown appears.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import boto3
import botocore.config
import botocore.exceptions
import pytest

import harness

KILL_OFFSETS = (0.2, 1.1, 2.5)  # seconds after every kind of write was first acknowledged
RUNTASK_PAUSE = 0.25  # keep the number of real containers modest
SHARED_FAMILY = "dur-shared"
SOLO_FAMILY = "dur-solo"
CLUSTER_PREFIX = "dur-c-"
MARKER_ENV = "BERTH_DURABILITY_MARKER"


@dataclass
class Call:
    kind: str  # "taskdef" | "cluster" | "runtask"
    marker: str
    outcome: str = "pending"  # "acked" | "rejected" | "unanswered"
    result: Any = None  # revision / cluster ARN / task ARN (None: RunTask placed nothing)
    family: str | None = None
    error: str | None = None


@dataclass
class Ledger:
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def of(self, kind: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.kind == kind]


def raw_client(coord: harness.Coordinator):
    """An ECS client that never retries: one request per call, so one write per marker."""
    cfg = botocore.config.Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=2,
        read_timeout=15,
    )
    return boto3.session.Session().client(
        "ecs", endpoint_url=coord.endpoint, region_name=harness.REGION,
        aws_access_key_id=coord.access_key, aws_secret_access_key=coord.secret_key, config=cfg,
    )


def perform(ledger: Ledger, call: Call, fn: Callable[[], Any]) -> None:
    ledger.add(call)
    try:
        call.result = fn()
        call.outcome = "acked"
    except botocore.exceptions.ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        call.error = f"{e.response.get('Error', {}).get('Code')} (HTTP {status}): {e}"
        # An explicit 4xx means the write did not happen; a 5xx promises nothing.
        call.outcome = "rejected" if 400 <= status < 500 else "unanswered"
    except (botocore.exceptions.BotoCoreError, ConnectionError, OSError) as e:
        call.error = repr(e)
        call.outcome = "unanswered"


def taskdef_args(cluster: harness.Cluster, family: str, marker: str) -> dict:
    return {
        "family": family,
        "networkMode": "host",
        "containerDefinitions": [
            cluster.container("main", command=["sleep", "600"], memory=16,
                              environment=[{"name": MARKER_ENV, "value": marker}]),
        ],
    }


class Streamer:
    """The client threads of one round."""

    def __init__(self, coord: harness.Coordinator, cluster: harness.Cluster, ledger: Ledger,
                 run_td: str, round_no: int):
        self.coord, self.cluster, self.ledger = coord, cluster, ledger
        self.run_td = run_td
        self.round_no = round_no
        self.stop = threading.Event()
        # Clients are built up front (building one takes a while) and the
        # kill is timed from the first acknowledged write of every kind.
        self.clients = [raw_client(coord) for _ in range(5)]
        self.first_ack = {kind: threading.Event() for kind in ("taskdef", "cluster", "runtask")}
        self.threads = [
            threading.Thread(target=self._taskdefs, args=(self.clients[0], SHARED_FAMILY, "a"), daemon=True),
            threading.Thread(target=self._taskdefs, args=(self.clients[1], SHARED_FAMILY, "b"), daemon=True),
            threading.Thread(target=self._taskdefs, args=(self.clients[2], SOLO_FAMILY, "s"), daemon=True),
            threading.Thread(target=self._clusters, args=(self.clients[3],), daemon=True),
            threading.Thread(target=self._runtasks, args=(self.clients[4],), daemon=True),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def wait_first_acks(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for kind, event in self.first_ack.items():
            if not event.wait(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"no acknowledged {kind} within {timeout}s ({summary(self.ledger)})")

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a client thread hung"

    def _marker(self, tag: str, n: int) -> str:
        return f"r{self.round_no}-{tag}-{n}-{uuid.uuid4().hex[:6]}"

    def _after(self, call: Call) -> None:
        if call.outcome == "acked":
            self.first_ack[call.kind].set()
        self._pause_if_down(call)

    def _pause_if_down(self, call: Call) -> None:
        # After the kill, do not spin: the coordinator is gone until the round ends.
        if call.outcome == "unanswered":
            self.stop.wait(0.05)

    def _taskdefs(self, ecs, family: str, tag: str) -> None:
        n = 0
        while not self.stop.is_set():
            marker = self._marker(tag, n)
            call = Call("taskdef", marker, family=family)
            perform(self.ledger, call, lambda: ecs.register_task_definition(
                **taskdef_args(self.cluster, family, marker))["taskDefinition"]["revision"])
            self._after(call)
            n += 1

    def _clusters(self, ecs) -> None:
        n = 0
        while not self.stop.is_set():
            name = CLUSTER_PREFIX + self._marker("c", n)
            call = Call("cluster", name)
            perform(self.ledger, call, lambda: ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"])
            self._after(call)
            n += 1

    def _runtasks(self, ecs) -> None:
        n = 0
        while not self.stop.is_set():
            marker = self._marker("t", n)
            call = Call("runtask", marker)

            def run():
                out = ecs.run_task(cluster=self.cluster.name, taskDefinition=self.run_td, startedBy=marker)
                tasks = out.get("tasks") or []
                assert len(tasks) <= 1
                return tasks[0]["taskArn"] if tasks else None

            perform(self.ledger, call, run)
            self._after(call)
            n += 1
            self.stop.wait(RUNTASK_PAUSE)


# ------------------------------------------------------------------ checks


def paginate(ecs, op: str, key: str, **kw) -> list:
    out: list = []
    for page in ecs.get_paginator(op).paginate(**kw):
        out.extend(page.get(key, []))
    return out


def check_taskdefs(ecs, ledger: Ledger) -> list[str]:
    problems = []
    calls = {c.marker: c for c in ledger.of("taskdef")}
    for family in (SHARED_FAMILY, SOLO_FAMILY):
        arns = paginate(ecs, "list_task_definitions", "taskDefinitionArns", familyPrefix=family, status="ACTIVE")
        arns = [a for a in arns if a.rsplit("/", 1)[1].rsplit(":", 1)[0] == family]
        revisions = sorted(int(a.rsplit(":", 1)[1]) for a in arns)
        if revisions != list(range(1, len(revisions) + 1)):
            problems.append(f"{family}: revisions not contiguous 1..N: {revisions}")
        if len(set(revisions)) != len(revisions):
            problems.append(f"{family}: duplicate revisions listed: {revisions}")
        seen: dict[str, int] = {}
        for rev in sorted(set(revisions)):
            td = ecs.describe_task_definition(taskDefinition=f"{family}:{rev}")["taskDefinition"]
            env = {e["name"]: e["value"] for e in td["containerDefinitions"][0].get("environment", [])}
            marker = env.get(MARKER_ENV)
            if marker not in calls:
                problems.append(f"{family}:{rev} carries an unknown marker {marker!r}")
                continue
            if marker in seen:
                problems.append(f"marker {marker} stored twice: {family}:{seen[marker]} and {family}:{rev}")
            seen[marker] = rev
            if calls[marker].family != family:
                problems.append(f"marker {marker} sent to {calls[marker].family} but stored in {family}")
        for marker, call in calls.items():
            if call.family != family:
                continue
            if call.outcome == "acked":
                if marker not in seen:
                    problems.append(f"acknowledged {family} revision {call.result} ({marker}) is lost")
                elif seen[marker] != call.result:
                    problems.append(f"acknowledged {marker} as {family}:{call.result} but stored as "
                                    f"{family}:{seen[marker]}")
            elif call.outcome == "rejected" and marker in seen:
                problems.append(f"rejected register {marker} ({call.error}) was stored as {family}:{seen[marker]}")
    return problems


def check_clusters(ecs, ledger: Ledger) -> list[str]:
    problems = []
    arns = paginate(ecs, "list_clusters", "clusterArns")
    names = [a.rsplit("/", 1)[1] for a in arns]
    if len(names) != len(set(names)):
        problems.append(f"duplicate clusters listed: {sorted(n for n in names if names.count(n) > 1)}")
    present = set(names)
    calls = {c.marker: c for c in ledger.of("cluster")}
    for name in present:
        if name.startswith(CLUSTER_PREFIX) and name not in calls:
            problems.append(f"unknown cluster {name}")
    for name, call in calls.items():
        if call.outcome == "acked":
            if name not in present:
                problems.append(f"acknowledged cluster {name} is lost")
            elif call.result not in arns:
                problems.append(f"acknowledged cluster ARN {call.result} not listed")
        elif call.outcome == "rejected" and name in present:
            problems.append(f"rejected CreateCluster {name} ({call.error}) exists")
    if present & {n for n, c in calls.items() if c.outcome == "acked"}:
        described = ecs.describe_clusters(clusters=[n for n, c in calls.items() if c.outcome == "acked"][:100])
        for failure in described.get("failures", []):
            problems.append(f"acknowledged cluster not describable: {failure}")
    return problems


def check_tasks(ecs, cluster: str, ledger: Ledger) -> list[str]:
    problems = []
    arns = set()
    for status in ("RUNNING", "STOPPED"):
        arns.update(paginate(ecs, "list_tasks", "taskArns", cluster=cluster, desiredStatus=status))
    arns = sorted(arns)
    by_marker: dict[str, list[str]] = {}
    for i in range(0, len(arns), 100):
        out = ecs.describe_tasks(cluster=cluster, tasks=arns[i:i + 100])
        if out.get("failures"):
            problems.append(f"listed tasks not describable: {out['failures']}")
        for t in out["tasks"]:
            by_marker.setdefault(t.get("startedBy", ""), []).append(t["taskArn"])
    calls = {c.marker: c for c in ledger.of("runtask")}
    for marker, task_arns in by_marker.items():
        if marker not in calls:
            problems.append(f"task(s) {task_arns} with unknown startedBy {marker!r}")
        elif len(task_arns) > 1:
            problems.append(f"RunTask {marker} produced {len(task_arns)} tasks: {task_arns}")
    acked_arns = [c.result for c in calls.values() if c.outcome == "acked" and c.result]
    for marker, call in calls.items():
        found = by_marker.get(marker, [])
        if call.outcome == "acked" and call.result:
            if found != [call.result]:
                problems.append(f"acknowledged task {call.result} ({marker}) not found exactly once: {found}")
        elif call.outcome == "acked" and not call.result and found:
            problems.append(f"RunTask {marker} answered no task but {found} exist")
        elif call.outcome == "rejected" and found:
            problems.append(f"rejected RunTask {marker} ({call.error}) created {found}")
    for i in range(0, len(acked_arns), 100):
        out = ecs.describe_tasks(cluster=cluster, tasks=acked_arns[i:i + 100])
        for failure in out.get("failures", []):
            problems.append(f"acknowledged task not describable: {failure}")
    return problems


def summary(ledger: Ledger) -> str:
    counts: dict[tuple[str, str], int] = {}
    for c in ledger.calls:
        counts[(c.kind, c.outcome)] = counts.get((c.kind, c.outcome), 0) + 1
    return ", ".join(f"{k}/{o}={n}" for (k, o), n in sorted(counts.items()))


@pytest.mark.timeout(600)
def test_kill9_mid_stream_loses_nothing_acknowledged(private_host):
    host = private_host
    coord = host.coordinator
    cluster = host.cluster()
    run_td = cluster.register_td([cluster.container("main", command=["sleep", "600"], memory=16)],
                                 family="dur-run")
    ledger = Ledger()
    for round_no, offset in enumerate(KILL_OFFSETS):
        cluster.wait_agent_connected(timeout=60)
        streamer = Streamer(coord, cluster, ledger, run_td, round_no)
        streamer.start()
        streamer.wait_first_acks(timeout=30)
        time.sleep(offset)
        pid = coord.proc.pid
        coord.kill9()
        assert not harness.pid_alive(pid)
        time.sleep(0.5)  # let in-flight calls fail against the dead coordinator
        streamer.finish()
        coord.start()

        print(f"kill #{round_no + 1} at +{offset}s: {summary(ledger)}")
        ecs = coord.ecs()
        problems = check_taskdefs(ecs, ledger) + check_clusters(ecs, ledger) + check_tasks(ecs, cluster.name, ledger)
        assert not problems, (f"after kill #{round_no + 1} at {offset}s ({summary(ledger)}):\n"
                              + "\n".join(problems[:50]))

        # Each round must have exercised every kind of write, or it proves nothing.
        this_round = [c for c in ledger.calls if c.marker.startswith(f"r{round_no}-")
                      or c.marker.startswith(f"{CLUSTER_PREFIX}r{round_no}-")]
        for kind in ("taskdef", "cluster", "runtask"):
            acked = [c for c in this_round if c.kind == kind and c.outcome == "acked"]
            assert acked, f"round {round_no}: no acknowledged {kind} before the kill ({summary(ledger)})"
        placed = [c for c in this_round if c.kind == "runtask" and c.outcome == "acked" and c.result]
        assert placed, f"round {round_no}: RunTask placed no task ({summary(ledger)})"
