"""Task networking end to end (issue #3) on three simulated hosts (multihost.py),
real containerd and the agent's CNI chains: `bridge` (berth-bridge + Debian's
portmap) with dynamic and static host ports, reachable from another host and
from the task's own host; `awsvpc` across hosts over the VXLAN overlay with ENI
attachments; `none`; and that nothing of a stopped task's network remains.

Traffic only goes to addresses inside the namespaces the fleet created."""

from __future__ import annotations

import json
import re
import secrets


import multihost
from harness import wait_for

DYNAMIC = range(49153, 65536)


def httpd(fleet, port: int, token: str, host_port: int | None = 0, **kw) -> dict:
    """busybox httpd on `port` serving `token`; sh stays PID 1 and exits 0 on SIGTERM."""
    mappings = [] if host_port is None else [{"containerPort": port, "hostPort": host_port, "protocol": "tcp"}]
    return fleet.container(
        command=["sh", "-c", f"echo {token} > /tmp/index.html; trap 'kill $!; exit 0' TERM; "
                             f"httpd -f -p {port} -h /tmp & wait"],
        portMappings=mappings, **kw)


def on_host(h: multihost.SimHost) -> list[dict]:
    return [{"type": "memberOf", "expression": f"attribute:ecs.availability-zone == az-{h.index}"}]


def wait_http(client: multihost.SimHost, url: str, expect: str, timeout: float = 30) -> str:
    def get():
        r = client.wget(url, timeout=5)
        return r.stdout.strip() == expect and r.stdout
    return wait_for(get, timeout=timeout, interval=0.2, what=f"{url} from host {client.index} to answer {expect!r}")


def task_netns(h: multihost.SimHost, task_arn: str):
    return h.agent.data_dir / "netns" / task_arn.rsplit("/", 1)[-1]


def eni(task: dict) -> dict[str, str]:
    atts = [a for a in task.get("attachments", []) if a["type"] == "ElasticNetworkInterface"]
    assert len(atts) == 1, task.get("attachments")
    return {d["name"]: d["value"] for d in atts[0]["details"]}


def links(h: multihost.SimHost) -> set[str]:
    r = h.exec(["ip", "-o", "link", "show"])
    assert r.returncode == 0, r.stderr
    return {line.split(":")[1].strip().split("@")[0] for line in r.stdout.splitlines()}


def test_bridge_dynamic_ports_reachable_from_other_host_and_own_host(fleet):
    h0, h1 = fleet.hosts[0], fleet.hosts[1]
    token = f"bridge-{secrets.token_hex(3)}"
    td = fleet.register_taskdef([httpd(fleet, 8080, token)], network_mode="bridge")
    tasks, failures = fleet.run_and_wait(td, count=2, placementConstraints=on_host(h0))
    assert failures == []
    ports = []
    for t in tasks:
        assert fleet.host_of(t) is h0
        b = t["containers"][0]["networkBindings"]
        assert len(b) == 1, b
        assert b[0]["containerPort"] == 8080 and b[0]["protocol"] == "tcp", b
        assert b[0]["hostPort"] in DYNAMIC, b
        ports.append(b[0]["hostPort"])
    assert ports[0] != ports[1], ports
    for port in ports:
        # From another host, through the underlay.
        wait_http(h1, f"http://{h0.ip}:{port}/", token)
        # From the task's own host, at its address and at localhost (portmap's
        # OUTPUT DNAT; route_localnet on berth0).
        wait_http(h0, f"http://{h0.ip}:{port}/", token)
        wait_http(h0, f"http://127.0.0.1:{port}/", token)
    # From another bridge task on the same host, through the host port: the
    # packet leaves berth0 and comes back to it (hairpin + masquerade).
    client = fleet.register_taskdef(
        [fleet.container(command=["sh", "-c", f"wget -q -O- http://{h0.ip}:{ports[0]}/"])], network_mode="bridge")
    done, failures = fleet.run_and_wait(client, status="STOPPED", placementConstraints=on_host(h0))
    assert failures == []
    assert done[0]["containers"][0].get("exitCode") == 0, done[0]
    assert token in h0.log_path(done[0]["taskArn"]).read_text()
    # The task has its own namespace: eth0 on berth0's subnet, not the host's address.
    ns = task_netns(h0, tasks[0]["taskArn"])
    r = h0.exec(["nsenter", f"--net={ns}", "ip", "-4", "-o", "addr"])
    assert r.returncode == 0, r.stderr
    assert re.search(r"eth0\s+inet 172\.31\.", r.stdout), r.stdout
    assert h0.ip not in r.stdout
    stopped = fleet.stop_and_wait([t["taskArn"] for t in tasks])
    assert all(t["lastStatus"] == "STOPPED" for t in stopped)
    # The dynamic ports are free again and the namespaces are gone.
    wait_for(lambda: not task_netns(h0, tasks[0]["taskArn"]).exists(), timeout=30, what="task netns removed")
    for port in ports:
        r = h1.wget(f"http://{h0.ip}:{port}/", timeout=5)
        assert r.stdout.strip() != token


def test_bridge_static_port_conflicts_are_refused_at_placement(fleet):
    token = f"static-{secrets.token_hex(3)}"
    td = fleet.register_taskdef([httpd(fleet, 80, token, host_port=8090)], network_mode="bridge")
    out = fleet.run_task(td, count=4)
    placed = [t["taskArn"] for t in out["tasks"]]
    assert len(placed) == 3, out
    # ECS names each instance that could not take the fourth task.
    assert out["failures"] and {f["reason"] for f in out["failures"]} == {"RESOURCE:PORTS"}, out["failures"]
    tasks = [fleet.wait_task(a, "RUNNING")[0] for a in placed]
    hosts = {fleet.host_of(t).index for t in tasks}
    assert hosts == {0, 1, 2}
    for t in tasks:
        assert t["containers"][0]["networkBindings"][0]["hostPort"] == 8090
        h = fleet.host_of(t)
        other = fleet.hosts[(h.index + 1) % 3]
        wait_http(other, f"http://{h.ip}:8090/", token)
    fleet.stop_and_wait(placed)


def test_awsvpc_tasks_reach_each_other_across_hosts(fleet):
    token = f"vpc-{secrets.token_hex(3)}"
    td = fleet.register_taskdef([httpd(fleet, 80, token, host_port=None)], network_mode="awsvpc")
    netcfg = {"awsvpcConfiguration": {"subnets": ["subnet-berth"], "assignPublicIp": "DISABLED"}}
    servers = []
    for h in fleet.hosts:
        tasks, failures = fleet.run_and_wait(td, networkConfiguration=netcfg, placementConstraints=on_host(h))
        assert failures == []
        servers.append(tasks[0])
    ips = []
    for t in servers:
        d = eni(t)
        assert d["subnetId"] == "subnet-berth"
        assert d["networkInterfaceId"].startswith("eni-")
        assert re.fullmatch(r"02(:[0-9a-f]{2}){5}", d["macAddress"]), d
        ip = d["privateIPv4Address"]
        assert ip.startswith("10.199."), d
        assert t["containers"][0]["networkInterfaces"][0]["privateIpv4Address"] == ip
        # The container's eth0 carries exactly that address and MAC.
        h = fleet.host_of(t)
        r = h.exec(["nsenter", f"--net={task_netns(h, t['taskArn'])}", "ip", "-o", "link", "show", "eth0"])
        assert d["macAddress"] in r.stdout, r.stdout
        ips.append(ip)
    assert len(set(ips)) == 3

    # A client task on each host fetches from the server on the next host, by
    # its awsvpc address, from inside a container.
    for i, h in enumerate(fleet.hosts):
        target = ips[(i + 1) % 3]
        client = fleet.register_taskdef(
            [fleet.container(command=["sh", "-c", f"for n in 1 2 3 4 5 6 7 8 9 10; do "
                                                  f"wget -q -O- http://{target}/ && exit 0; sleep 1; done; exit 1"])],
            network_mode="awsvpc")
        tasks, failures = fleet.run_and_wait(client, status="STOPPED", networkConfiguration=netcfg,
                                             placementConstraints=on_host(h))
        assert failures == []
        t = tasks[0]
        assert fleet.host_of(t) is h
        assert t["containers"][0].get("exitCode") == 0, (t, h.log_path(t["taskArn"]).read_text())
        assert token in h.log_path(t["taskArn"]).read_text()

    # Stopping a server withdraws it from the overlay on every other host.
    victim = servers[1]
    fleet.stop_and_wait([victim["taskArn"]])
    h2 = fleet.hosts[2]

    def withdrawn():
        r = h2.exec(["ip", "neigh", "show", "dev", "bvx0"])
        return r.returncode == 0 and eni(victim)["privateIPv4Address"] not in r.stdout
    wait_for(withdrawn, timeout=30, what="stopped task's neighbour entry removed on another host")
    fleet.stop_and_wait([servers[0]["taskArn"], servers[2]["taskArn"]])


def test_none_mode_task_has_only_loopback(fleet):
    td = fleet.register_taskdef(
        [fleet.container(name="a", command=["sh", "-c", "cat /proc/net/dev; sleep 1"]),
         fleet.container(name="b", essential=False, command=["sh", "-c", "cat /proc/net/dev"])],
        network_mode="none")
    tasks, failures = fleet.run_and_wait(td, status="STOPPED")
    assert failures == []
    t = tasks[0]
    h = fleet.host_of(t)
    for c in ("a", "b"):
        out = h.log_path(t["taskArn"], c).read_text()
        ifaces = [line.split(":")[0].strip() for line in out.splitlines() if ":" in line and "|" not in line]
        assert ifaces == ["lo"], out
    assert {c["name"]: c.get("exitCode") for c in t["containers"]} == {"a": 0, "b": 0}


def test_operator_conflist_chains_upstream_plugins(tmp_path):
    """An operator's bridge.conflist (--cni-conf-dir) replaces the built-in chain:
    berth-bridge, then Debian's portmap and bandwidth. The task runs on the
    operator's bridge and subnet, its host veth gets bandwidth's tbf qdisc, its
    port answers, and stopping it removes the veth with its qdisc."""
    conf = tmp_path / "cni-conf"
    conf.mkdir()
    (conf / "bridge.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "ops-bridge", "plugins": [
            {"type": "berth-bridge", "bridge": "ops0", "subnet": "172.30.0.0/24",
             "dataDir": str(tmp_path / "cni-data")},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "bandwidth", "ingressRate": 8000000, "ingressBurst": 1000000},
        ]}))
    fleet = multihost.Fleet(tmp_path, hosts=1, agent_args=["--cni-conf-dir", str(conf)])
    try:
        h = fleet.hosts[0]
        token = f"ops-{secrets.token_hex(3)}"
        td = fleet.register_taskdef([httpd(fleet, 8080, token)], network_mode="bridge")
        tasks, failures = fleet.run_and_wait(td)
        assert failures == []
        port = tasks[0]["containers"][0]["networkBindings"][0]["hostPort"]
        wait_http(h, f"http://{h.ip}:{port}/", token)
        r = h.exec(["ip", "-4", "-o", "addr", "show", "ops0"])
        assert "172.30.0.1/24" in r.stdout, r.stdout
        qdiscs = h.exec(["tc", "qdisc", "show"]).stdout
        shaped = [line for line in qdiscs.splitlines() if line.startswith("qdisc tbf") and "veth" in line]
        assert len(shaped) == 1 and "rate 8Mbit" in shaped[0], qdiscs
        veth = shaped[0].split(" dev ")[1].split()[0]
        fleet.stop_and_wait([tasks[0]["taskArn"]])
        wait_for(lambda: veth not in links(h), timeout=30, what=f"{veth} removed")
        assert "tbf" not in h.exec(["tc", "qdisc", "show"]).stdout
    finally:
        fleet.close()
