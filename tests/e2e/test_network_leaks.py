"""Task networking leaves nothing behind and hands out awsvpc addresses once
(issue #3, acceptance 3 and 4), on a private fleet of three simulated hosts
(multihost.py) with real containerd and the agents' CNI chains.

- `test_no_network_leaks_after_200_cycles_and_agent_kill9`: after a warm-up
  (so the per-host shared devices and chains exist), a snapshot per host of
  links, IPv4 addresses and routes, the agent's task namespaces and their nsfs
  mounts, iptables (nat, filter) and the nft ruleset, the agent's CNI state
  files (leases, task records), and the VXLAN neighbour/FDB entries; then 200
  bridge/awsvpc/none/host tasks in waves, some exiting by themselves, some
  stopped through StopTask, with one agent killed (-9) in the middle while it
  has tasks starting and running, some of them stopped while it is down, and
  another host's agent killed while it tears stopped tasks down; every
  task must reach STOPPED with its expected exit and stop code, and each host's
  snapshot must come back to its baseline.
- `test_awsvpc_addresses_unique_across_100_tasks_and_reused_only_after_release`.
- `test_restarted_agent_keeps_running_task_networks`: a kill -9 + restart (then a graceful one)
  neither re-creates nor duplicates the networks of running bridge/awsvpc
  tasks, and an awsvpc client on another host never misses a fetch.
- `test_reused_awsvpc_address_is_reachable_at_once`: a task holding an address
  a previous task had is reached at once by a task that spoke to the previous
  one (the MAC follows the address, so ARP caches stay right).

Traffic only goes to addresses inside the namespaces the fleet created."""

from __future__ import annotations

import collections
import ipaddress
import os
import re
import secrets
import time
from pathlib import Path

import pytest

import harness
import multihost
from harness import HarnessError, wait_for

AWSVPC_CIDR = ipaddress.ip_network("10.199.0.0/16")
NETCFG = {"awsvpcConfiguration": {"subnets": ["subnet-berth"], "assignPublicIp": "DISABLED"}}
# sh as PID 1 ignores SIGTERM without a handler: trap it so StopTask ends the task at once with 0.
LONG = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]


@pytest.fixture(scope="module")
def lfleet(tmp_path_factory):
    f = multihost.Fleet(tmp_path_factory.mktemp("leakfleet"), hosts=3)
    yield f
    f.close()


# ------------------------------------------------------------------ helpers


def on_host(h: multihost.SimHost) -> list[dict]:
    return [{"type": "memberOf", "expression": f"attribute:ecs.availability-zone == az-{h.index}"}]


def task_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def task_netns(h: multihost.SimHost, arn: str) -> Path:
    return h.agent.data_dir / "netns" / task_id(arn)


def eni(task: dict) -> dict[str, str]:
    atts = [a for a in task.get("attachments", []) if a["type"] == "ElasticNetworkInterface"]
    assert len(atts) == 1, task.get("attachments")
    return {d["name"]: d["value"] for d in atts[0]["details"]}


def describe_many(fleet: multihost.Fleet, arns: list[str]) -> list[dict]:
    out = []
    for i in range(0, len(arns), 100):
        out += fleet.describe(arns[i:i + 100])
    return out


def wait_all(fleet: multihost.Fleet, arns: list[str], status: str, timeout: float) -> dict[str, dict]:
    """Polls until every task in `arns` is at `status` (or past it, which fails)."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = {t["taskArn"]: t for t in describe_many(fleet, arns)}
        target = harness.ORDER.index(status)
        past = [t for t in tasks.values() if harness.ORDER.index(t["lastStatus"]) > target]
        if past:
            raise HarnessError(f"{len(past)} tasks went past {status}: "
                               f"{[(t['taskArn'], t['lastStatus'], t.get('stoppedReason')) for t in past[:5]]}")
        pending = [t for t in tasks.values() if t["lastStatus"] != status]
        if not pending:
            return tasks
        if time.monotonic() >= deadline:
            raise HarnessError(f"{len(pending)}/{len(arns)} tasks not {status} after {timeout}s: "
                               f"{[(t['taskArn'], t['lastStatus'], t.get('stoppedReason')) for t in pending[:5]]}")
        time.sleep(0.3)


def run_one(fleet: multihost.Fleet, td: str, h: multihost.SimHost, **kw) -> str:
    out = fleet.run_task(td, placementConstraints=on_host(h), **kw)
    assert not out.get("failures") and len(out["tasks"]) == 1, out
    return out["tasks"][0]["taskArn"]


# ------------------------------------------------------------------ snapshot


def _lines(r) -> list[str]:
    assert r.returncode == 0, (r.args, r.stderr)
    return [line.rstrip() for line in r.stdout.splitlines() if line.strip()]


def _iptables(h: multihost.SimHost, table: str) -> list[str]:
    out = []
    for line in _lines(h.exec(["iptables-save", "-t", table])):
        if line.startswith("#"):
            continue
        out.append(re.sub(r"\[\d+:\d+\]", "[]", line))
    return out


def snapshot(h: multihost.SimHost) -> dict[str, collections.Counter]:
    """Everything task networking may create on host `h`, normalised (no
    counters, no states that the kernel changes on its own) as multisets."""
    links = [re.split(r"[:@]", line.split(":", 1)[1].strip(), 1)[0] + " " +
             (m.group(0) if (m := re.search(r"master \S+", line)) else "")
             for line in _lines(h.exec(["ip", "-o", "link", "show"]))]
    addrs = [" ".join(line.split()[1:4]) for line in _lines(h.exec(["ip", "-o", "-4", "addr", "show"]))]
    # (`linkdown` follows the bridge's carrier, which the kernel drops a moment after its last port goes.)
    routes = [line.replace(" linkdown", "")
              for line in _lines(h.exec(["ip", "-o", "-4", "route", "show", "table", "all"]))]
    netns_dir = h.agent.data_dir / "netns"
    netns = sorted(os.listdir(netns_dir)) if netns_dir.exists() else []
    agent_dir = str(h.agent.dir)
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            point = fields[4].encode().decode("unicode_escape")
            if point.startswith(agent_dir + "/") and fstype == "nsfs":
                mounts.append(point)
    nft = [re.sub(r"counter packets \d+ bytes \d+", "counter", line.strip())
           for line in _lines(h.exec(["nft", "list", "ruleset"]))]
    cni_dir = h.agent.data_dir / "cni"
    cni = sorted(str(p.relative_to(cni_dir)) for p in cni_dir.rglob("*")) if cni_dir.exists() else []
    neigh, fdb = [], []
    if any(l.startswith("bvx0 ") for l in links):
        # Only what the agent programs: the (permanent) neighbour entries and
        # the VXLAN device's own FDB (`self`), not entries the bvpc0 bridge
        # learns on its port and ages out by itself.
        neigh = [" ".join(line.split()[:3]) for line in _lines(h.exec(["ip", "neigh", "show", "dev", "bvx0"]))]
        fdb = [line for line in _lines(h.exec(["bridge", "fdb", "show", "dev", "bvx0"]))
               if not ("master" in line and "permanent" not in line)]
    return {k: collections.Counter(v) for k, v in {
        "links": links, "addrs": addrs, "routes": routes, "netns": netns, "nsfs_mounts": mounts,
        "iptables_nat": _iptables(h, "nat"), "iptables_filter": _iptables(h, "filter"), "nft": nft,
        "cni_files": cni, "bvx0_neigh": neigh, "bvx0_fdb": fdb}.items()}


def snapshot_diff(base: dict, now: dict) -> list[str]:
    out = []
    for key in base:
        extra = now[key] - base[key]
        missing = base[key] - now[key]
        for line in sorted(extra.elements()):
            out.append(f"  {key} + {line}")
        for line in sorted(missing.elements()):
            out.append(f"  {key} - {line}")
    return out


def fleet_diff(fleet: multihost.Fleet, baseline: dict[int, dict]) -> str:
    parts = []
    for h in fleet.hosts:
        d = snapshot_diff(baseline[h.index], snapshot(h))
        if d:
            parts.append(f"host {h.index} ({h.netns}):\n" + "\n".join(d[:60])
                         + (f"\n  ... {len(d) - 60} more" if len(d) > 60 else ""))
    return "\n".join(parts)


def settle(fleet: multihost.Fleet, baseline: dict[int, dict], timeout: float) -> str:
    """Polls until every host's snapshot equals its baseline; returns the
    remaining diff ("" when settled) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        diff = fleet_diff(fleet, baseline)
        if not diff or time.monotonic() >= deadline:
            return diff
        time.sleep(1)


# ------------------------------------------------------------------ 1. leaks


class Plan:
    """The 200 tasks: what each one is and what it must end with."""

    def __init__(self, fleet: multihost.Fleet):
        self.fleet = fleet
        self.tds: dict[str, str] = {}
        self.expect: dict[str, dict] = {}  # arn -> {kind, host, stop, exit, lenient}
        self.next_static = 31000

    def td(self, kind: str, exit_code: int | None) -> str:
        """A task definition for `kind` (bridge/awsvpc/none/host); `exit_code`
        None = runs until stopped, else exits by itself after ~1 s."""
        f = self.fleet
        cmd = LONG if exit_code is None else ["sh", "-c", f"sleep 1; exit {exit_code}"]
        if kind == "bridge":
            # A fresh static port for every bridge task: placement never refuses one.
            self.next_static += 1
            c = f.container(command=cmd, memory=16, stopTimeout=5, portMappings=[
                {"containerPort": 80, "hostPort": 0, "protocol": "tcp"},
                {"containerPort": 81, "hostPort": self.next_static, "protocol": "tcp"},
                {"containerPort": 82, "hostPort": 0, "protocol": "udp"}])
            return f.register_taskdef([c], network_mode="bridge")
        key = f"{kind}/{exit_code}"
        if key not in self.tds:
            c = f.container(command=cmd, memory=16, stopTimeout=5)
            self.tds[key] = f.register_taskdef([c], network_mode=kind)
        return self.tds[key]

    def launch(self, kind: str, exit_code: int | None, h: multihost.SimHost, lenient: bool = False) -> str:
        kw = {"networkConfiguration": NETCFG} if kind == "awsvpc" else {}
        arn = run_one(self.fleet, self.td(kind, exit_code), h, **kw)
        self.expect[arn] = {"kind": kind, "host": h.index, "exit": exit_code, "lenient": lenient}
        return arn


# One wave: (kind, exit code or None = stopped with StopTask). 20 tasks.
WAVE = [("bridge", 0), ("awsvpc", 0), ("none", 0), ("bridge", None), ("awsvpc", None),
        ("bridge", 3), ("awsvpc", 3), ("none", None), ("host", 0), ("bridge", None),
        ("awsvpc", 0), ("bridge", 0), ("none", 2), ("awsvpc", None), ("bridge", 0),
        ("host", None), ("awsvpc", 0), ("bridge", None), ("none", 0), ("awsvpc", None)]
WAVES = 10
KILL_WAVE = 5
VICTIM = 1
# A second kill -9, of another host's agent, while it tears stopped tasks down.
TEARDOWN_KILL_WAVE = 7
TEARDOWN_VICTIM = 2
EXTRA_STARTING = [("bridge", None), ("awsvpc", None), ("none", None)]


def check_final(plan: Plan, tasks: dict[str, dict]) -> list[str]:
    problems = []
    for arn, exp in plan.expect.items():
        t = tasks[arn]
        c = t["containers"][0]
        got = (t["lastStatus"], t.get("stopCode"), c.get("exitCode"))
        if exp["exit"] is not None:
            want = [("STOPPED", "EssentialContainerExited", exp["exit"])]
        elif exp["lenient"]:
            # Stopped while its agent was dead: it may never have started (no exit
            # code), or been killed before sh installed its trap (137).
            want = [("STOPPED", "UserInitiated", x) for x in (0, 137, None)]
        else:
            want = [("STOPPED", "UserInitiated", 0)]
        if got not in want:
            problems.append(f"{exp['kind']} task {task_id(arn)} on host {exp['host']}: {got}, want one of {want}; "
                            f"reason {t.get('stoppedReason')!r} / {c.get('reason')!r}")
    return problems


def test_no_network_leaks_after_200_cycles_and_agent_kill9(lfleet):
    fleet = lfleet
    t0 = time.monotonic()
    plan = Plan(fleet)
    # Warm-up: the shared per-host devices, chains and rules exist from here on.
    warm = [plan.launch(kind, 0, h) for h in fleet.hosts for kind in ("bridge", "awsvpc")]
    wait_all(fleet, warm, "STOPPED", timeout=90)
    plan.expect.clear()

    def drained() -> bool:
        return all(not (h.agent.data_dir / "cni" / "tasks").exists()
                   or not any((h.agent.data_dir / "cni" / "tasks").iterdir()) for h in fleet.hosts) and \
            all(not (h.agent.data_dir / "netns").exists() or not any((h.agent.data_dir / "netns").iterdir())
                for h in fleet.hosts)
    wait_for(drained, timeout=60, what="warm-up task networks removed")
    baseline = {h.index: snapshot(h) for h in fleet.hosts}
    for h in fleet.hosts:
        names = {line.split()[0] for line in baseline[h.index]["links"]}
        assert {"berth0", "bvpc0", "bvx0"} <= names, (h.index, names)
    # Settled means stable: a second look must agree (nothing still being removed).
    time.sleep(2)
    again = fleet_diff(fleet, baseline)
    assert not again, f"baseline not stable after warm-up:\n{again}"
    print(f"warm-up and baseline: {time.monotonic() - t0:.1f}s")

    victim = fleet.hosts[VICTIM]
    stopped_while_down: list[str] = []
    for w in range(WAVES):
        tw = time.monotonic()
        wave = WAVE if w != KILL_WAVE else WAVE[:len(WAVE) - len(EXTRA_STARTING)]
        arns = [plan.launch(kind, code, fleet.hosts[i % 3]) for i, (kind, code) in enumerate(wave)]
        long = [a for a in arns if plan.expect[a]["exit"] is None]
        wait_all(fleet, long, "RUNNING", timeout=90)
        if w == 0:
            # The snapshot sees running tasks' networks (else its equality proves nothing).
            # (Polled: the overlay entries for remote tasks follow a moment after RUNNING.)
            def sees_tasks():
                live = [line for h in fleet.hosts for line in snapshot_diff(baseline[h.index], snapshot(h))]
                return all(any(line.startswith(f"  {key} + ") for line in live)
                           for key in ("links", "netns", "nsfs_mounts", "iptables_nat", "nft", "cni_files",
                                       "bvx0_neigh", "bvx0_fdb"))
            wait_for(sees_tasks, timeout=15, interval=0.5, what="the snapshot to show the running tasks' networks")
        if w == KILL_WAVE:
            # Tasks still starting on the victim when its agent dies: killed as soon
            # as it logs starting the last of them.
            log_size = victim.agent.stderr_log.stat().st_size
            starting = [plan.launch(kind, code, victim, lenient=True) for kind, code in EXTRA_STARTING]
            arns += starting

            def started_last() -> bool:
                return any(b"starting task" in line and task_id(starting[-1]).encode() in line
                           for line in victim.agent.stderr_log.read_bytes()[log_size:].splitlines())
            wait_for(started_last, timeout=30, interval=0.02, what="victim agent starting the last extra task")
            victim.kill9_agent()
            killed_states = [t["lastStatus"] for t in describe_many(fleet, starting)]
            on_victim = [a for a in long if plan.expect[a]["host"] == VICTIM]
            # Half the victim's running tasks and one starting task are stopped while it is down.
            stopped_while_down = on_victim[::2] + starting[:1]
            for a in stopped_while_down:
                plan.expect[a]["lenient"] = True
                fleet.client.stop_task(cluster=fleet.cluster, task=a, reason="stopped while agent down")
            time.sleep(2)
            victim.restart_agent()
            victim.wait_agent_connected()
            long = [a for a in long + starting if a not in stopped_while_down]
            # The restarted agent starts (or has re-adopted) the others.
            wait_all(fleet, long, "RUNNING", timeout=90)
            adopted = victim.agent.stderr_log.read_bytes()[log_size:].count(b"re-adopted running container")
            print(f"kill -9 with extra tasks {killed_states}; restarted agent re-adopted {adopted} containers")
            assert adopted >= 1
        if w == TEARDOWN_KILL_WAVE:
            tv = fleet.hosts[TEARDOWN_VICTIM]
            log_size = tv.agent.stderr_log.stat().st_size
        for a in long:
            fleet.client.stop_task(cluster=fleet.cluster, task=a, reason="cycle")
        if w == TEARDOWN_KILL_WAVE:
            # Killed as soon as it has deleted the containers of one of its tasks:
            # the network teardown of that task (and maybe others) is under way.
            wait_for(lambda: b"task containers deleted" in tv.agent.stderr_log.read_bytes()[log_size:],
                     timeout=30, interval=0.02, what=f"host {TEARDOWN_VICTIM} deleting a task's containers")
            tv.kill9_agent()
            left = sorted(os.listdir(tv.agent.data_dir / "netns"))
            time.sleep(1)
            tv.restart_agent()
            tv.wait_agent_connected()
            print(f"host {TEARDOWN_VICTIM} agent killed during teardown with {len(left)} task namespaces left")
        wait_all(fleet, arns, "STOPPED", timeout=90)
        print(f"wave {w}: {len(arns)} tasks in {time.monotonic() - tw:.1f}s"
              + (f" (agent of host {VICTIM} killed, {len(stopped_while_down)} stopped while down)"
                 if w == KILL_WAVE else "")
              + (f" (agent of host {TEARDOWN_VICTIM} killed during teardown)" if w == TEARDOWN_KILL_WAVE else ""))

    assert len(plan.expect) == 200, len(plan.expect)
    final = {t["taskArn"]: t for t in describe_many(fleet, list(plan.expect))}
    assert len(final) == 200
    problems = check_final(plan, final)
    assert not problems, "\n".join(problems)
    kinds = collections.Counter(e["kind"] for e in plan.expect.values())
    print(f"200 tasks by mode: {dict(kinds)}; cycles took {time.monotonic() - t0:.1f}s")

    diff = settle(fleet, baseline, timeout=60)
    assert not diff, f"leftovers after 200 cycles (+ present now, - missing from baseline):\n{diff}"
    print(f"settled: total {time.monotonic() - t0:.1f}s")


# ------------------------------------------------------------------ 2. awsvpc addresses


def test_awsvpc_addresses_unique_across_100_tasks_and_reused_only_after_release(lfleet):
    fleet = lfleet
    t0 = time.monotonic()
    td = fleet.register_taskdef([fleet.container(command=LONG, memory=8, stopTimeout=5)], network_mode="awsvpc")
    # The first task (lowest address) takes 4 s to stop: the window in which its
    # address must not be handed out again.
    slow_td = fleet.register_taskdef([fleet.container(
        command=["sh", "-c", "trap 'sleep 4; exit 0' TERM; sleep 3600 & wait"], memory=8, stopTimeout=15)],
        network_mode="awsvpc")
    out = fleet.run_task(slow_td, count=1, networkConfiguration=NETCFG)
    assert not out.get("failures"), out["failures"]
    arns: list[str] = [out["tasks"][0]["taskArn"]]
    for n in [9] + [10] * 9:
        out = fleet.run_task(td, count=n, networkConfiguration=NETCFG)
        assert not out.get("failures"), out["failures"]
        arns += [t["taskArn"] for t in out["tasks"]]
    assert len(arns) == 100
    tasks = wait_all(fleet, arns, "RUNNING", timeout=120)
    t_running = time.monotonic() - t0
    ips = {}
    for arn, t in tasks.items():
        ip = eni(t)["privateIPv4Address"]
        assert ipaddress.ip_address(ip) in AWSVPC_CIDR, (arn, ip)
        assert t["containers"][0]["networkInterfaces"][0]["privateIpv4Address"] == ip
        ips[arn] = ip
    assert len(set(ips.values())) == 100, collections.Counter(ips.values()).most_common(3)
    by_host = collections.Counter(fleet.host_of(t).index for t in tasks.values())
    # Each container's eth0 in its task namespace carries exactly its address.
    for arn, t in tasks.items():
        h = fleet.host_of(t)
        r = h.exec(["nsenter", f"--net={task_netns(h, arn)}", "ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        assert r.returncode == 0, r.stderr
        got = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", r.stdout)
        assert got == [ips[arn]], (arn, r.stdout)
    print(f"100 awsvpc tasks RUNNING in {t_running:.1f}s (per host {dict(by_host)}), checked in "
          f"{time.monotonic() - t0:.1f}s")

    # Not handed out again before its task is STOPPED ...
    victim = arns[0]
    victim_ip = ips[victim]
    assert victim_ip == min(ips.values(), key=ipaddress.ip_address), victim_ip
    fleet.client.stop_task(cluster=fleet.cluster, task=victim, reason="release test")
    out = fleet.run_task(td, count=1, networkConfiguration=NETCFG)
    victim_state = fleet.describe_one(victim)["lastStatus"]
    assert victim_state != "STOPPED", "the victim stopped too fast for this check"
    early = out["tasks"][0]["taskArn"]
    early_ip = eni(fleet.wait_task(early, "RUNNING")[0])["privateIPv4Address"]
    assert early_ip != victim_ip, (early_ip, victim_state)
    assert early_ip not in ips.values()
    fleet.wait_task(victim, "STOPPED", timeout=60)
    # ... and the lowest free address once it is.
    out = fleet.run_task(td, count=1, networkConfiguration=NETCFG)
    late = out["tasks"][0]["taskArn"]
    late_ip = eni(fleet.wait_task(late, "RUNNING")[0])["privateIPv4Address"]
    used = {ipaddress.ip_address(v) for a, v in ips.items() if a != victim} | {ipaddress.ip_address(early_ip)}
    lowest_free = next(ip for ip in AWSVPC_CIDR.hosts() if int(ip) >= int(AWSVPC_CIDR[2]) and ip not in used)
    assert late_ip == victim_ip == str(lowest_free), (late_ip, victim_ip, lowest_free)

    rest = [a for a in arns if a != victim] + [early, late]
    tstop = time.monotonic()
    for a in rest:
        fleet.client.stop_task(cluster=fleet.cluster, task=a, reason="end")
    stopped = wait_all(fleet, rest, "STOPPED", timeout=120)
    assert all(t.get("stopCode") == "UserInitiated" for t in stopped.values())
    print(f"101 stopped in {time.monotonic() - tstop:.1f}s; total {time.monotonic() - t0:.1f}s")


# ------------------------------------------------------------------ 3. restart keeps networks


def httpd(fleet, ports: list[int], token: str, mappings: list[dict]) -> dict:
    """busybox httpd on each of `ports` serving `token`; exits 0 on SIGTERM."""
    servers = " ".join(f"httpd -f -p {p} -h /tmp &" for p in ports)
    return fleet.container(
        command=["sh", "-c", f"echo {token} > /tmp/index.html; trap 'exit 0' TERM; {servers} wait"],
        portMappings=mappings, memory=16, stopTimeout=5)


def wait_http(client: multihost.SimHost, url: str, expect: str, timeout: float = 30) -> None:
    def get():
        r = client.wget(url, timeout=5)
        return r.stdout.strip() == expect
    wait_for(get, timeout=timeout, interval=0.2, what=f"{url} from host {client.index} to answer {expect!r}")


def net_identity(h: multihost.SimHost, arn: str) -> dict:
    """What must not change for a running task's network: the namespace (its
    nsfs inode), eth0 inside (index, MAC, addresses), the record."""
    ns = task_netns(h, arn)
    r = h.exec(["nsenter", f"--net={ns}", "ip", "-o", "addr", "show", "dev", "eth0"])
    assert r.returncode == 0, r.stderr
    link = h.exec(["nsenter", f"--net={ns}", "ip", "-o", "link", "show", "dev", "eth0"])
    record = h.agent.data_dir / "cni" / "tasks" / f"{task_id(arn)}.json"
    return {"netns_inode": os.stat(ns).st_ino, "eth0_addr": sorted(" ".join(l.split()[1:4]) for l in r.stdout.splitlines()),
            "eth0_link": link.stdout.split(">")[0], "mac": re.search(r"link/ether (\S+)", link.stdout).group(1),
            "record": record.read_text()}


def test_restarted_agent_keeps_running_task_networks(lfleet):
    fleet = lfleet
    h0, h1 = fleet.hosts[:2]
    token = f"keep-{secrets.token_hex(3)}"
    bridge_td = fleet.register_taskdef([httpd(fleet, [8080, 8081], token, [
        {"containerPort": 8080, "hostPort": 0, "protocol": "tcp"},
        {"containerPort": 8081, "hostPort": 8099, "protocol": "tcp"}])], network_mode="bridge")
    vpc_td = fleet.register_taskdef([httpd(fleet, [80], token, [])], network_mode="awsvpc")
    b = fleet.describe_one(run_one(fleet, bridge_td, h0))
    v = fleet.describe_one(run_one(fleet, vpc_td, h0, networkConfiguration=NETCFG))
    b = fleet.wait_task(b["taskArn"], "RUNNING")[0]
    v = fleet.wait_task(v["taskArn"], "RUNNING")[0]
    ports = sorted(x["hostPort"] for x in b["containers"][0]["networkBindings"])
    vip = eni(v)["privateIPv4Address"]
    for port in ports:
        wait_http(h1, f"http://{h0.ip}:{port}/", token)
    # An awsvpc client task on another host fetches from the awsvpc server by its
    # address twice a second for the whole test, logging each attempt.
    client_td = fleet.register_taskdef([fleet.container(command=[
        "sh", "-c", "trap 'exit 0' TERM; n=0; while true; do n=$((n+1)); "
                    f"if timeout 2 wget -q -O- http://{vip}/ >/dev/null; then echo ok $n; else echo fail $n; fi; "
                    "sleep 0.3; done"], memory=16)], network_mode="awsvpc")
    client = fleet.wait_task(run_one(fleet, client_td, h1, networkConfiguration=NETCFG), "RUNNING")[0]
    client_log = h1.log_path(client["taskArn"])

    def fetches() -> tuple[int, list[str]]:
        text = client_log.read_text() if client_log.exists() else ""
        return text.count("ok "), [l for l in text.splitlines() if l.startswith("fail")]
    wait_for(lambda: fetches()[0] >= 3, timeout=30, what="awsvpc client on host 1 fetching from host 0's task")
    # h0's overlay now holds the client's entries: part of the snapshot, to be kept.
    wait_for(lambda: eni(client)["privateIPv4Address"] in h0.exec(["ip", "neigh", "show", "dev", "bvx0"]).stdout,
             timeout=30, what="client's neighbour entry on host 0")
    before = {a: net_identity(h0, a) for a in (b["taskArn"], v["taskArn"])}
    snap = snapshot(h0)
    for kill in (True, False):
        log_size = h0.agent.stderr_log.stat().st_size
        if kill:
            h0.kill9_agent()
        h0.restart_agent()
        h0.wait_agent_connected()
        # The restarted agent re-adopted both tasks' containers ...
        wait_for(lambda: h0.agent.stderr_log.read_bytes()[log_size:].count(b"re-adopted running container") >= 2,
                 timeout=30, what="agent re-adopted both containers")
        time.sleep(3)  # time to do anything wrong (re-setup, gc) after adoption
        new_log = h0.agent.stderr_log.read_bytes()[log_size:].decode(errors="replace")
        assert "task network ready" not in new_log, new_log[-3000:]
        # ... kept their networks exactly (same namespace, veth, address, record) ...
        after = {a: net_identity(h0, a) for a in before}
        assert after == before
        diff = snapshot_diff(snap, snapshot(h0))
        assert not diff, "\n".join(diff)
        # ... and they still answer, from another host and by awsvpc address.
        for t in fleet.describe([b["taskArn"], v["taskArn"]]):
            assert t["lastStatus"] == "RUNNING", t
        for port in ports:
            wait_http(h1, f"http://{h0.ip}:{port}/", token, timeout=10)
        ok = fetches()[0]
        wait_for(lambda: fetches()[0] >= ok + 3, timeout=15, what="awsvpc client still fetching after the restart")
    # Not one fetch failed across both restarts: the data path never went away.
    ok, failed = fetches()
    assert not failed, (ok, failed)
    stopped = fleet.stop_and_wait([b["taskArn"], v["taskArn"], client["taskArn"]])
    assert [t["containers"][0].get("exitCode") for t in stopped] == [0, 0, 0]


# ------------------------------------------------------------------ 4. address reuse, MAC change


def test_reused_awsvpc_address_is_reachable_at_once(lfleet):
    """A server task talks to a client at address A; that client stops and a new
    client on another host gets A again (lowest free). The new client must reach
    the server within a few seconds, as the first one did. (Regression: when the
    MAC came from the task id, the server kept the old MAC in its ARP cache and
    its replies went nowhere for 30-70 s, as bvx0 never floods; the coordinator
    now derives the MAC from the address.)"""
    fleet = lfleet
    h0, h1, h2 = fleet.hosts
    token = f"reuse-{secrets.token_hex(3)}"
    server = fleet.wait_task(run_one(fleet, fleet.register_taskdef([httpd(fleet, [80], token, [])],
                                                                   network_mode="awsvpc"),
                                     h0, networkConfiguration=NETCFG), "RUNNING")[0]
    vip = eni(server)["privateIPv4Address"]
    # Each client gives up after 10 s of attempts (2 s each).
    client_td = fleet.register_taskdef([fleet.container(command=[
        "sh", "-c", f"for n in 1 2 3 4 5; do timeout 2 wget -q -O- http://{vip}/ && exit 0; done; exit 1"],
        memory=16)], network_mode="awsvpc")
    results = []
    try:
        for h in (h2, h1):
            c = fleet.wait_task(run_one(fleet, client_td, h, networkConfiguration=NETCFG), "STOPPED", timeout=60)[0]
            results.append((h.index, eni(c)["privateIPv4Address"], eni(c)["macAddress"],
                            c["containers"][0].get("exitCode")))
    finally:
        fleet.stop_and_wait([server["taskArn"]])
    # The second client did get the first one's address back (else this proves nothing) ...
    assert results[0][1] == results[1][1], results
    # ... and both reached the server.
    assert [r[3] for r in results] == [0, 0], results
