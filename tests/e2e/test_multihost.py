"""Several simulated hosts end to end (issue #3): each host a network namespace on
a test underlay with its own real containerd and berth-agent, one coordinator,
boto3 as the client (see multihost.py). Covers the `host` and `none` network
modes across hosts, host-port placement, a host joining later, an agent
`kill -9` on one host, a coordinator `kill -9` in the infra namespace, and that
a fleet's teardown (also after a failed setup) leaves nothing behind.

The tests that kill nothing share one module-scoped 3-host fleet and stop their
tasks before returning, so each sees every host port free."""

from __future__ import annotations

import os
import secrets

import pytest

import harness
import multihost
from harness import wait_for


def httpd_container(fleet, port: int, token: str, **kw) -> dict:
    """busybox httpd on `port` serving `token`, as a host-mode container. sh stays
    PID 1 and exits 0 on SIGTERM (a PID-1 httpd would ignore it until stopTimeout)."""
    return fleet.container(
        command=["sh", "-c", f"echo {token} > /tmp/index.html; trap 'kill $!; exit 0' TERM; "
                             f"httpd -f -p {port} -h /tmp & wait"],
        portMappings=[{"containerPort": port, "hostPort": port, "protocol": "tcp"}],
        **kw,
    )


def wait_http(client: multihost.SimHost, url: str, expect: str, timeout: float = 30) -> str:
    """GET `url` from `client`'s namespace until it answers `expect`."""
    def get():
        r = client.wget(url, timeout=5)
        return r.stdout.strip() == expect and r.stdout
    return wait_for(get, timeout=timeout, interval=0.2, what=f"{url} from host {client.index} to answer {expect!r}")


def listening_tcp_ports(host: multihost.SimHost) -> set[int]:
    """TCP ports in LISTEN state in `host`'s namespace (/proc/net/tcp and tcp6)."""
    r = host.exec(["cat", "/proc/net/tcp", "/proc/net/tcp6"])
    assert r.returncode == 0, r.stderr
    ports = set()
    for line in r.stdout.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and ":" in fields[1]:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def assert_host_empty(host: multihost.SimHost, timeout: float = 20) -> None:
    try:
        wait_for(lambda: not host.ctr_containers() and not host.ctr_tasks(), timeout=timeout,
                 what=f"host {host.index}'s containerd namespace to be empty")
    except harness.HarnessError:
        pytest.fail(f"host {host.index} containerd still holds {host.ctr_containers()} / {host.ctr_tasks()}")


def test_fleet_comes_up(fleet):
    arns = [h.instance_arn for h in fleet.hosts]
    assert len(set(arns)) == 3, arns
    assert set(fleet.client.list_container_instances(cluster=fleet.cluster)["containerInstanceArns"]) == set(arns)
    # The AWS CLI reaches the coordinator in the infra namespace too.
    listed = fleet.coordinator.aws("ecs", "list-container-instances", "--cluster", fleet.cluster)
    assert set(listed["containerInstanceArns"]) == set(arns), listed
    assert fleet.coordinator.endpoint == f"http://{fleet.gateway}:{fleet.coordinator.addr.rsplit(':', 1)[1]}"
    out = fleet.client.describe_container_instances(cluster=fleet.cluster, containerInstances=arns)
    assert out["failures"] == []
    by_arn = {ci["containerInstanceArn"]: ci for ci in out["containerInstances"]}
    for h in fleet.hosts:
        ci = by_arn[h.instance_arn]
        assert ci["status"] == "ACTIVE", ci
        assert ci["agentConnected"] is True, ci
        attrs = {a["name"]: a.get("value") for a in ci["attributes"]}
        assert attrs["ecs.availability-zone"] == f"az-{h.index}", attrs
        assert attrs["berth.underlay-ip"] == h.ip, attrs
    # Each host is its own namespace: only lo and eth0 with its underlay address,
    # and it reaches the coordinator, the registry and the other hosts.
    for h in fleet.hosts:
        r = h.exec(["ip", "-br", "-4", "addr"])
        assert r.returncode == 0, r.stderr
        addrs = {line.split()[0].split("@")[0]: line.split()[2:] for line in r.stdout.splitlines()}
        assert addrs == {"lo": ["127.0.0.1/8"], "eth0": [f"{h.ip}/24"]}, r.stdout
        r = h.wget(f"http://{fleet.registry.addr}/v2/")
        assert r.returncode == 0, r.stderr


def test_host_mode_server_reachable_from_another_host(fleet):
    token = f"hello-{secrets.token_hex(4)}"
    td = fleet.register_taskdef([httpd_container(fleet, 8080, token)], network_mode="host")
    tasks, failures = fleet.run_and_wait(td)
    assert failures == [] and len(tasks) == 1
    task = tasks[0]
    try:
        server = fleet.host_of(task)
        others = [h for h in fleet.hosts if h is not server]
        wait_http(others[0], f"http://{server.ip}:8080/", token)
        r = others[1].wget(f"http://{server.ip}:8080/")
        assert r.returncode == 0 and r.stdout.strip() == token, (r.returncode, r.stdout, r.stderr)
        # The server lives in its host's namespace only: the other hosts' port 8080
        # is closed, and nothing listens on 8080 in the test's own namespace.
        for other in others:
            r = others[0].wget(f"http://{other.ip}:8080/", timeout=3)
            assert r.returncode != 0, f"host {other.index} answered on 8080: {r.stdout!r}"
            assert 8080 not in listening_tcp_ports(other)
        assert 8080 in listening_tcp_ports(server)
    finally:
        stopped = fleet.stop_and_wait([task["taskArn"]])[0]
    assert stopped["containers"][0]["exitCode"] == 0, stopped
    assert_host_empty(server)


def test_host_port_conflict_places_one_per_host(fleet):
    td = fleet.register_taskdef([httpd_container(fleet, 8081, "conflict")], network_mode="host")
    out = fleet.run_task(td, count=4)
    arns = [t["taskArn"] for t in out["tasks"]]
    try:
        assert len(arns) == 3, out
        # As ECS does, the unplaced task's failures name each instance that refused it.
        all_instances = {h.instance_arn for h in fleet.hosts}
        assert {f["reason"] for f in out["failures"]} == {"RESOURCE:PORTS"}, out["failures"]
        assert {f["arn"] for f in out["failures"]} == all_instances, out["failures"]
        tasks = [fleet.wait_task(a, "RUNNING")[0] for a in arns]
        hosts = [fleet.host_of(t) for t in tasks]
        assert len({h.index for h in hosts}) == 3, [h.index for h in hosts]
        # Each host's server answers; a fifth task, run alone, is refused too.
        for h in hosts:
            wait_http(fleet.hosts[(h.index + 1) % 3], f"http://{h.ip}:8081/", "conflict")
        again = fleet.run_task(td)
        assert again["tasks"] == [], again
        assert {f["reason"] for f in again["failures"]} == {"RESOURCE:PORTS"}, again
        assert {f["arn"] for f in again["failures"]} == all_instances, again
    finally:
        fleet.stop_and_wait(arns)
    # The port is free again on every host once the tasks stopped.
    td2 = fleet.register_taskdef([fleet.container(command=["true"],
                                                  portMappings=[{"containerPort": 8081, "hostPort": 8081}])])
    tasks, failures = fleet.run_and_wait(td2, count=3, status="STOPPED")
    assert failures == [], failures
    assert len({fleet.host_of(t).index for t in tasks}) == 3
    assert all(t["containers"][0]["exitCode"] == 0 for t in tasks), tasks


def test_none_mode_sees_only_loopback(fleet):
    td = fleet.register_taskdef([fleet.container(command=["cat", "/proc/net/dev"])], network_mode="none")
    tasks, failures = fleet.run_and_wait(td, count=2, status="STOPPED")
    assert failures == [] and len(tasks) == 2
    for task in tasks:
        assert task["containers"][0]["exitCode"] == 0, task
        host = fleet.host_of(task)
        lines = host.log_path(task["taskArn"]).read_text().splitlines()
        names = [line.split(":", 1)[0].strip() for line in lines[2:]]
        assert names == ["lo"], lines
        assert_host_empty(host)


@pytest.mark.fleet(hosts=1)
def test_host_joining_later_gets_tasks(private_fleet):
    fleet = private_fleet
    first = fleet.hosts[0]
    td = fleet.register_taskdef([httpd_container(fleet, 8082, "late")], network_mode="host")
    tasks, failures = fleet.run_and_wait(td)
    assert failures == [] and fleet.host_of(tasks[0]) is first
    out = fleet.run_task(td)
    assert out["tasks"] == [], out
    assert [(f["arn"], f["reason"]) for f in out["failures"]] == [(first.instance_arn, "RESOURCE:PORTS")], out

    joined = fleet.add_host()
    assert joined.index == 1 and joined.ip.endswith(".11")
    ci = joined.container_instance()
    assert ci["status"] == "ACTIVE" and ci["agentConnected"], ci
    more, failures = fleet.run_and_wait(td)
    assert failures == [], failures
    assert fleet.host_of(more[0]) is joined
    wait_http(first, f"http://{joined.ip}:8082/", "late")
    wait_http(joined, f"http://{first.ip}:8082/", "late")


@pytest.mark.fleet(hosts=2, agent_timeout_secs=25)
def test_agent_kill9_on_one_host(private_fleet):
    """A host's agent dies with kill -9: its host-mode task keeps serving, the agent
    comes back to the same containers, and the other host is unaffected."""
    fleet = private_fleet
    td = fleet.register_taskdef([httpd_container(fleet, 8083, "survivor", stopTimeout=2)], network_mode="host")
    tasks, failures = fleet.run_and_wait(td, count=2)
    assert failures == []
    victim = fleet.host_of(tasks[0])
    other = fleet.host_of(tasks[1])
    assert victim is not other
    before = victim.ctr_tasks()

    victim.kill9_agent()
    victim.wait_agent_connected(False, timeout=60)
    assert other.container_instance()["agentConnected"] is True
    wait_http(other, f"http://{victim.ip}:8083/", "survivor")
    # Placement skips the disconnected instance: a new task goes to the other host.
    td2 = fleet.register_taskdef([fleet.container(command=["true"])], network_mode="none")
    placed, failures = fleet.run_and_wait(td2, status="STOPPED")
    assert failures == [] and fleet.host_of(placed[0]) is other, (placed, failures)
    victim.restart_agent()
    victim.wait_agent_connected(True)
    assert victim.ctr_tasks() == before
    assert fleet.describe_one(tasks[0]["taskArn"])["lastStatus"] == "RUNNING"
    wait_http(victim, f"http://{other.ip}:8083/", "survivor")

    stopped = fleet.stop_and_wait([t["taskArn"] for t in tasks])
    assert all(t["stopCode"] == "UserInitiated" for t in stopped), stopped
    assert_host_empty(victim)
    assert_host_empty(other)


@pytest.mark.fleet(hosts=2)
def test_fleet_close_leaves_nothing(private_fleet):
    fleet = private_fleet
    td = fleet.register_taskdef([httpd_container(fleet, 8084, "bye")], network_mode="host")
    tasks, _ = fleet.run_and_wait(td, count=2)
    pids = [fleet.coordinator.proc.pid, fleet.registry.proc.pid]
    for h in fleet.hosts:
        pids += [h.agent.pid, h.containerd.proc.pid, *h.containerd.shim_pids()]
    created = fleet.created()
    lock = fleet._lock.path
    assert set(created["netns"]) <= multihost.netns_names()
    assert set(created["root_links"]) <= multihost.root_links()

    fleet.close()  # tasks still running: close stops them first

    assert not [p for p in pids if harness.pid_alive(p)]
    assert not set(created["netns"]) & multihost.netns_names()
    assert not any(os.path.exists(harness.netns_path(n)) for n in created["netns"])
    assert not set(created["root_links"]) & multihost.root_links()
    assert not lock.exists()
    assert not harness.mounts_under(fleet.dir)
    fleet.close()  # idempotent


def test_fleet_setup_failure_leaves_nothing(tmp_path):
    """A fleet whose first host's agent cannot start (a bad flag) tears down what it made:
    coordinator, registry, containerd, namespaces and links."""
    with pytest.raises(harness.HarnessError, match="exited at once"):
        multihost.Fleet(tmp_path, hosts=2, agent_args=["--no-such-flag"])
    [fleet_dir] = tmp_path.glob("fleet-*")
    fleet_id = fleet_dir.name.removeprefix("fleet-")
    log = (fleet_dir / "fleet.log").read_text()
    assert f"netns add bh-{fleet_id}-0" in log, log
    assert not [n for n in multihost.netns_names() if fleet_id in n]
    assert not [l for l in multihost.root_links() if fleet_id in l]
    assert not harness.mounts_under(tmp_path)
    assert not [p for p in harness.all_pids() if any(str(fleet_dir) in a for a in harness.proc_cmdline(p))]


@pytest.mark.fleet(hosts=2)
def test_coordinator_kill9_restart_in_infra_namespace(private_fleet):
    """The coordinator restarts on the same underlay address inside the infra
    namespace; every host's agent reconnects and placement goes on."""
    fleet = private_fleet
    td = fleet.register_taskdef([httpd_container(fleet, 8085, "steady")], network_mode="host")
    tasks, failures = fleet.run_and_wait(td)
    assert failures == []
    server = fleet.host_of(tasks[0])
    addr = fleet.coordinator.addr

    fleet.coordinator.kill9()
    fleet.coordinator.start()
    assert fleet.coordinator.addr == addr
    for h in fleet.hosts:
        h.wait_agent_connected(timeout=60)
    assert fleet.describe_one(tasks[0]["taskArn"])["lastStatus"] == "RUNNING"
    client = next(h for h in fleet.hosts if h is not server)
    wait_http(client, f"http://{server.ip}:8085/", "steady")

    more, failures = fleet.run_and_wait(td)
    assert failures == [] and fleet.host_of(more[0]) is client, (more, failures)
    stopped = fleet.stop_and_wait([tasks[0]["taskArn"], more[0]["taskArn"]])
    assert [t["containers"][0]["exitCode"] for t in stopped] == [0, 0], stopped
