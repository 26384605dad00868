"""Multi-host end-to-end harness: N simulated hosts, each a network namespace the
test creates, with its own containerd and its own berth-agent, on one test
underlay; one coordinator and one registry; boto3 / the AWS CLI as clients.

Topology of one `Fleet` (K in 1..250 is chosen per fleet, see below):

    root netns (the test process)           infra netns  bi-<id>
      bu<id>  10.250.K.1/24  ----veth---->  up0 --+
                                                  br0 (bridge) 10.250.K.254/24
                                                  |   coordinator 10.250.K.254:<port>
                                                  |   docker-registry 10.250.K.254:5000
                                                  +-- h<i> ----veth----> host netns bh-<id>-<i>
                                                                          eth0 10.250.K.(10+i)/24, lo
                                                                          containerd, berth-agent,
                                                                          host-mode containers

- The coordinator and registry run inside the infra netns, the containerd and
  agent of host i inside bh-<id>-<i> (`nsenter --net=...`, a network-namespace
  switch only: files and unix sockets stay reachable from everywhere).
- The test process reaches the underlay through the `bu<id>` veth and its
  connected /24 only: no other route is added and forwarding is not enabled in
  the root netns. All traffic stays on loopback or inside namespaces the fleet
  created.
- K: a fleet takes an exclusive `flock` on /run/berth-e2e/underlay-K.lock for the
  first K that is free (and whose 10.250.K.0/24 no root-netns address or route
  overlaps), held for the fleet's life, so pytest-xdist workers never collide.
- What the hosts share, because only the network namespace differs: the
  filesystem (/run/netns, /var/lib/cni, lock files: per-host state must live
  under the agent's data dir or other per-host paths), the mount of /sys (so
  /sys/class/net in a host shows the root namespace's links: use netlink or
  /proc/net, which follow the caller's namespace), cgroups and PIDs.
- The underlay is one plain L2 segment with MTU 1500 (veths and a bridge with
  no filtering in the infra namespace); an overlay on it must fit (VXLAN: 1450).
- Teardown (`close()`, also when setup fails half-way): running tasks are stopped
  through the API, then agents, containerds (with their shims, mounts and runc
  state), registry and coordinator are stopped by recorded PID; then the root
  veth and every namespace the fleet made are deleted, mounts left under the
  fleet's dir unmounted (reported on stderr), and the lock released.
  `close()` is idempotent and collects every error before raising.

API (for tests; bridge/awsvpc tests build on it):
- `Fleet(tmpdir, hosts=3, cluster=None, coordinator_args=(), agent_args=(),
  agent_timeout_secs=None)`: `coordinator_args` are extra `berth-coordinator`
  flags (e.g. `--awsvpc-cidr`), `agent_args` extra `berth-agent run` flags given
  to every host; `agent_timeout_secs` how soon a silent agent shows
  `agentConnected: false` (keep it above the agent's 20 s long-poll).
- `fleet.ecs()` a new boto3 ECS client; `fleet.client` a shared one;
  `fleet.coordinator` (harness.Coordinator: `aws()`, `kill9()`, `restart()`),
  `fleet.registry`, `fleet.image` (pushed busybox ref), `fleet.cluster`,
  `fleet.subnet` ("10.250.K.0/24"), `fleet.gateway` ("10.250.K.254").
- `fleet.hosts[i]` (`SimHost`): `.ip`, `.netns` (name), `.netns_path`,
  `.instance_arn`, `.containerd` (harness.Containerd), `.agent` (harness.Agent),
  `.namespace` (containerd namespace), `.exec(argv, timeout=30)` →
  CompletedProcess run in the host's netns, `.wget(url)`, `.kill9_agent()`,
  `.restart_agent()`, `.log_path(task_arn, container)`, `.ctr_containers()`,
  `.ctr_tasks()`, `.container_instance()`, `.wait_agent_connected()`.
- `fleet.add_host(attributes=None)` a host joining later (next index, next IP).
- `fleet.container(name="main", command=None, **kw)` a container definition on
  `fleet.image`; `fleet.register_taskdef(containers, network_mode="host",
  family=None, **kw)` → task definition ARN.
- `fleet.run_task(td, count=1, **kw)` → raw RunTask answer;
  `fleet.run_and_wait(td, count=1, status="RUNNING", timeout=90, **kw)` →
  (described tasks, failures); `fleet.describe(arns)`, `fleet.describe_one(arn)`,
  `fleet.wait_task(arn, status, timeout, seen)`, `fleet.stop_and_wait(arns)`.
- `fleet.host_of(task)` maps a described task (or a task ARN) to its `SimHost`.
- `fleet.created()` lists the namespaces and links the fleet made (for leak checks).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import harness
from harness import HarnessError, wait_for

LOCK_DIR = Path("/run/berth-e2e")
UNDERLAY_PREFIX = "10.250"
REGISTRY_PORT = 5000  # the infra netns is private to the fleet, so any port is free there
HOST_OFFSET = 10  # host i has 10.250.K.(10+i)


def ip(*args: str, netns: str | None = None, check: bool = True, log: Path | None = None) -> subprocess.CompletedProcess:
    """Run iproute2 (in `netns` when given); record the command in `log`."""
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)} -> {r.returncode} {r.stderr.strip()}\n")
    if check and r.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def netns_names() -> set[str]:
    r = ip("-j", "netns", "list", check=False)
    if r.returncode != 0 or not r.stdout.strip():
        return set()
    return {n["name"] for n in json.loads(r.stdout)}


def root_links() -> set[str]:
    return {l["ifname"] for l in json.loads(ip("-j", "link", "show").stdout)}


def _root_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root netns has an address in or a (non-default) route to."""
    nets = []
    for link in json.loads(ip("-j", "-4", "addr", "show").stdout):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for table in ("main", "local"):
        for route in json.loads(ip("-j", "-4", "route", "show", "table", table).stdout):
            dst = route.get("dst", "default")
            if dst != "default":
                nets.append(ipaddress.ip_network(dst, strict=False))
    return nets


class UnderlayLock:
    """An exclusive flock on /run/berth-e2e/underlay-K.lock for the first free K."""

    def __init__(self):
        used = _root_networks()
        for k in range(1, 251):
            subnet = ipaddress.ip_network(f"{UNDERLAY_PREFIX}.{k}.0/24")
            if any(subnet.overlaps(n) for n in used):
                continue  # another fleet's veth, or a leftover of a crashed run: not ours
            path = LOCK_DIR / f"underlay-{k}.lock"
            for attempt in range(5):  # another fleet may rmdir an empty LOCK_DIR meanwhile
                LOCK_DIR.mkdir(parents=True, exist_ok=True)
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                    break
                except FileNotFoundError:
                    if attempt == 4:
                        raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise
            # The holder before us may have unlinked the file after we opened it:
            # then our lock is on an orphan inode and someone may lock the new file.
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.k, self.path, self.fd = k, path, fd
            self.subnet = subnet
            return
        raise HarnessError("no free underlay subnet 10.250.1-250.0/24 (are 250 fleets running?)")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()  # while still holding the lock; see the inode check above
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None
        try:
            LOCK_DIR.rmdir()  # only succeeds when no other fleet holds a lock
        except OSError:
            pass


class SimHost:
    """One simulated host: a network namespace on the underlay with its own
    containerd and berth-agent. Built by `Fleet.add_host`."""

    def __init__(self, fleet: "Fleet", index: int, attributes: dict[str, str] | None):
        self.fleet = fleet
        self.index = index
        self.ip = f"{fleet.prefix}.{HOST_OFFSET + index}"
        self.netns = f"bh-{fleet.id}-{index}"
        self.netns_path = harness.netns_path(self.netns)
        self.bridge_port = f"h{index}"
        self.dir = fleet.dir / f"host-{index}"
        self.dir.mkdir(parents=True)
        self.namespace = fleet.namespace
        self.containerd: harness.Containerd | None = None
        self.agent: harness.Agent | None = None
        self.attributes = {"ecs.availability-zone": f"az-{index}", "berth.underlay-ip": self.ip}
        self.attributes.update(attributes or {})

    def _setup(self) -> None:
        f = self.fleet
        f._ip("netns", "add", self.netns)
        f._created_netns.append(self.netns)  # only once made: the name could be taken
        f._ip("link", "set", "lo", "up", netns=self.netns)
        f._ip("link", "add", self.bridge_port, "type", "veth", "peer", "name", "eth0", "netns", self.netns,
              netns=f.infra)
        f._ip("link", "set", self.bridge_port, "master", "br0", "up", netns=f.infra)
        f._ip("addr", "add", f"{self.ip}/24", "dev", "eth0", netns=self.netns)
        f._ip("link", "set", "eth0", "up", netns=self.netns)
        self.containerd = harness.Containerd(self.dir, netns=self.netns)
        self.agent = harness.Agent(self.dir, f.coordinator, self.containerd, f.registry, f.cluster,
                                   namespace=self.namespace, attributes=self.attributes,
                                   extra_run_args=f.agent_args, netns=self.netns)
        self.wait_agent_connected()

    @property
    def instance_arn(self) -> str:
        if self.agent is None:
            raise HarnessError(f"host {self.index} has no agent")
        return self.agent.arn

    def exec(self, argv: Iterable[str], timeout: float = 30) -> subprocess.CompletedProcess:
        """Run `argv` in this host's network namespace (not in a container)."""
        return subprocess.run(harness.in_netns(self.netns, argv), capture_output=True, text=True, timeout=timeout)

    def wget(self, url: str, timeout: float = 10) -> subprocess.CompletedProcess:
        """`busybox wget -q -O- url` from this host's namespace, killed after `timeout`
        (a returncode of -9). Debian's static busybox 1.35 wget segfaults with `-T`."""
        try:
            return self.exec(["/bin/busybox", "wget", "-q", "-O-", url], timeout=timeout)
        except subprocess.TimeoutExpired as e:
            text = [x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr)]
            return subprocess.CompletedProcess(e.cmd, -9, *text)

    def container_instance(self) -> dict:
        out = self.fleet.client.describe_container_instances(cluster=self.fleet.cluster,
                                                             containerInstances=[self.instance_arn])
        if not out.get("containerInstances"):
            raise HarnessError(f"instance {self.instance_arn} not found: {out.get('failures')}")
        return out["containerInstances"][0]

    def wait_agent_connected(self, connected: bool = True, timeout: float = 30) -> dict:
        return wait_for(lambda: (ci := self.container_instance())["agentConnected"] == connected and ci,
                        timeout=timeout, what=f"host {self.index} agentConnected == {connected}")

    def kill9_agent(self) -> None:
        self.agent.kill9()

    def restart_agent(self) -> None:
        """Start the agent again (after `kill9_agent`, or stop it first if running)."""
        self.agent.restart()

    def log_path(self, task_arn: str, container: str = "main", stream: str = "stdout") -> Path:
        return self.agent.log_path(task_arn, container, stream)

    def ctr_containers(self) -> list[str]:
        return self.containerd.containers(self.namespace)

    def ctr_tasks(self) -> dict[str, tuple[int, str]]:
        return self.containerd.tasks(self.namespace)

    def close(self) -> list[str]:
        errors = []
        for part in (self.agent, self.containerd):
            if part is None:
                continue
            try:
                part.close()
            except Exception as e:  # noqa: BLE001 - keep tearing down
                errors.append(f"host {self.index} {type(part).__name__}: {e!r}")
        return errors


class Fleet:
    """A coordinator, a registry and N simulated hosts on a private underlay (see the
    module docstring for the topology and the API)."""

    def __init__(self, tmpdir: Path, hosts: int = 3, cluster: str | None = None,
                 coordinator_args: Iterable[str] = (), agent_args: Iterable[str] = (),
                 agent_timeout_secs: int | None = None):
        harness.require_root_and_binaries("ip", "nsenter", "containerd", "docker-registry",
                                          "berth-coordinator", "berth-agent")
        self.id = secrets.token_hex(3)
        self.dir = Path(tmpdir) / f"fleet-{self.id}"
        self.dir.mkdir(parents=True)
        self.log = self.dir / "fleet.log"
        self.cluster = cluster or f"fleet-{self.id}"
        self.namespace = f"berth-{self.id}"
        self.coordinator_args = list(coordinator_args)
        self.agent_args = list(agent_args)
        self.infra = f"bi-{self.id}"
        self.root_veth = f"bu{self.id}"
        self.hosts: list[SimHost] = []
        self.coordinator: harness.Coordinator | None = None
        self.registry: harness.Registry | None = None
        self.client = None
        self._lock: UnderlayLock | None = None
        self._created_netns: list[str] = []
        self._created_root_links: list[str] = []
        self._next_index = 0
        self._closed = False
        harness.ACTIVE.append(self)
        try:
            self._lock = UnderlayLock()
            self.k = self._lock.k
            self.prefix = f"{UNDERLAY_PREFIX}.{self.k}"
            self.subnet = str(self._lock.subnet)
            self.gateway = f"{self.prefix}.254"
            self.root_ip = f"{self.prefix}.1"
            with open(self.log, "a") as f:
                f.write(f"fleet {self.id}: underlay {self.subnet} (lock {self._lock.path}), cluster {self.cluster}\n")
            self._setup_underlay()
            self.coordinator = harness.Coordinator(self.dir, listen=f"{self.gateway}:0", netns=self.infra,
                                                   extra_args=self.coordinator_args,
                                                   agent_timeout_secs=agent_timeout_secs)
            self.registry = harness.Registry(self.dir, host=self.gateway, port=REGISTRY_PORT, netns=self.infra)
            self.image = self.registry.push_busybox()
            self.client = self.ecs()
            self.client.create_cluster(clusterName=self.cluster)
            for _ in range(hosts):
                self.add_host()
        except BaseException:
            try:
                self.close()
            except Exception as e:  # noqa: BLE001 - the setup error matters more
                print(f"fleet {self.id}: teardown after failed setup: {e}", file=sys.stderr)
            raise

    # ------------------------------------------------------------ network

    def _ip(self, *args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return ip(*args, netns=netns, check=check, log=self.log)

    def _setup_underlay(self) -> None:
        self._ip("netns", "add", self.infra)
        self._created_netns.append(self.infra)  # only once made: the name could be taken
        self._ip("link", "set", "lo", "up", netns=self.infra)
        # STP off and no forward delay: a new port forwards at once. A fixed MAC:
        # otherwise the bridge takes its lowest port's, which changes as hosts join
        # and leaves peers' neighbour entries for the gateway stale.
        self._ip("link", "add", "br0", "address", f"02:be:{self.k:02x}:00:00:fe", "type", "bridge",
                 "stp_state", "0", "forward_delay", "0", netns=self.infra)
        self._ip("addr", "add", f"{self.gateway}/24", "dev", "br0", netns=self.infra)
        self._ip("link", "set", "br0", "up", netns=self.infra)
        self._ip("link", "add", self.root_veth, "type", "veth", "peer", "name", "up0", "netns", self.infra)
        self._created_root_links.append(self.root_veth)
        self._ip("link", "set", "up0", "master", "br0", "up", netns=self.infra)
        self._ip("addr", "add", f"{self.root_ip}/24", "dev", self.root_veth)
        self._ip("link", "set", self.root_veth, "up")

    def created(self) -> dict[str, list[str]]:
        """The namespaces and root-netns links this fleet made (whether still present or not)."""
        return {"netns": list(self._created_netns), "root_links": list(self._created_root_links)}

    # ------------------------------------------------------------ hosts

    def add_host(self, attributes: dict[str, str] | None = None) -> SimHost:
        """A new simulated host (next index and IP) whose agent registers to the
        cluster; returns once its agent is connected."""
        index = self._next_index
        if HOST_OFFSET + index > 253:
            raise HarnessError("the underlay /24 has no address left for another host")
        self._next_index += 1
        host = SimHost(self, index, attributes)
        self.hosts.append(host)  # before setup, so close() cleans up a half-made host
        host._setup()
        return host

    def host_of(self, task: dict | str) -> SimHost:
        """The host a task (a described task, or a task ARN) was placed on."""
        if isinstance(task, str):
            task = self.describe_one(task)
        arn = task.get("containerInstanceArn")
        for h in self.hosts:
            if h.agent is not None and h.agent.arn == arn:
                return h
        raise HarnessError(f"task {task.get('taskArn')} is on {arn!r}, not on any host of fleet {self.id}")

    # ------------------------------------------------------------ ECS helpers

    def ecs(self, **config):
        return self.coordinator.ecs(**config)

    def container(self, name: str = "main", command: list[str] | None = None, **kw) -> dict:
        c: dict[str, Any] = {"name": name, "image": self.image, "essential": True, "memory": 32}
        if command is not None:
            c["command"] = command
        c.update(kw)
        return c

    def register_taskdef(self, containers: list[dict], network_mode: str | None = "host", family: str | None = None,
                         **kw) -> str:
        args: dict[str, Any] = {"family": family or f"f-{secrets.token_hex(4)}", "containerDefinitions": containers}
        if network_mode is not None:
            args["networkMode"] = network_mode
        args.update(kw)
        return self.client.register_task_definition(**args)["taskDefinition"]["taskDefinitionArn"]

    def run_task(self, td: str, count: int = 1, **kw) -> dict:
        return self.client.run_task(cluster=self.cluster, taskDefinition=td, count=count, **kw)

    def run_and_wait(self, td: str, count: int = 1, status: str = "RUNNING", timeout: float = 90,
                     **kw) -> tuple[list[dict], list[dict]]:
        """RunTask, then wait for every placed task to reach `status`. Returns
        (the described tasks, RunTask's failures)."""
        out = self.run_task(td, count=count, **kw)
        tasks = [self.wait_task(t["taskArn"], status, timeout=timeout)[0] for t in out.get("tasks", [])]
        return tasks, out.get("failures", [])

    def describe(self, arns: list[str]) -> list[dict]:
        out = self.client.describe_tasks(cluster=self.cluster, tasks=arns)
        if out.get("failures"):
            raise HarnessError(f"DescribeTasks failures: {out['failures']}")
        return out["tasks"]

    def describe_one(self, arn: str) -> dict:
        return self.describe([arn])[0]

    def wait_task(self, arn: str, status: str = "RUNNING", timeout: float = 90, seen: list[str] | None = None,
                  interval: float = 0.2) -> tuple[dict, list[str]]:
        return harness.wait_task_status(lambda: self.describe_one(arn), status, timeout, seen, interval)

    def stop_and_wait(self, arns: list[str], reason: str = "test", timeout: float = 60) -> list[dict]:
        for arn in arns:
            self.client.stop_task(cluster=self.cluster, task=arn, reason=reason)
        return [self.wait_task(arn, "STOPPED", timeout=timeout)[0] for arn in arns]

    # ------------------------------------------------------------ teardown

    def _stop_running_tasks(self) -> None:
        if self.client is None or self.coordinator is None or not self.coordinator.running():
            return
        if not any(h.agent is not None and h.agent.running() for h in self.hosts):
            return
        arns = self.client.list_tasks(cluster=self.cluster, desiredStatus="RUNNING").get("taskArns", [])
        for arn in arns:
            self.client.stop_task(cluster=self.cluster, task=arn, reason="fleet teardown")
        # Only a running agent reports its tasks stopped; containerd teardown kills the rest.
        live = {h.agent.arn for h in self.hosts if h.agent is not None and h.agent.running()}
        arns = [t["taskArn"] for t in (self.describe(arns) if arns else []) if t.get("containerInstanceArn") in live]
        if arns:
            try:
                wait_for(lambda: all(t["lastStatus"] == "STOPPED" for t in self.describe(arns)),
                         timeout=60, what="teardown tasks to stop")
            except HarnessError as e:
                print(f"fleet {self.id} teardown: {e}", file=sys.stderr)

    def close(self) -> None:
        """Stop everything the fleet started and delete everything it created."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        try:
            self._stop_running_tasks()
        except Exception as e:  # noqa: BLE001 - keep tearing down
            errors.append(f"stopping tasks: {e!r}")
        for h in reversed(self.hosts):
            if h.agent is not None:
                try:
                    h.agent.close()
                except Exception as e:  # noqa: BLE001
                    errors.append(f"host {h.index} agent: {e!r}")
        for h in reversed(self.hosts):
            errors += h.close()
        for part in (self.registry, self.coordinator):
            if part is None:
                continue
            try:
                part.close()
            except Exception as e:  # noqa: BLE001
                errors.append(f"{type(part).__name__}: {e!r}")
        # Mounts left under the fleet's dir (e.g. a task's netns bind mount in an agent
        # data dir, kept when the agent died before its task stopped) would keep
        # their namespace alive and make the tmp dir unremovable.
        leftovers = harness.unmount_all_under(self.dir)
        if leftovers:
            print(f"fleet {self.id} teardown: had to unmount {leftovers}", file=sys.stderr)
        existing_links = root_links()
        for link in self._created_root_links:
            if link in existing_links:
                r = self._ip("link", "del", link, check=False)
                if r.returncode != 0:
                    errors.append(f"ip link del {link}: {r.stderr.strip()}")
        existing_netns = netns_names()
        for ns in reversed(self._created_netns):
            if ns not in existing_netns:
                continue
            pids = self._ip("netns", "pids", ns, check=False).stdout.split()
            if pids:
                # Processes left in our namespace are a teardown bug; they keep the
                # namespace alive after its name is gone. Reported, not killed.
                errors.append(f"processes still in netns {ns}: "
                              + "; ".join(f"{p} {harness.proc_cmdline(int(p))}" for p in pids))
            r = self._ip("netns", "del", ns, check=False)
            if r.returncode != 0:
                errors.append(f"ip netns del {ns}: {r.stderr.strip()}")
        if self._lock is not None:
            self._lock.release()
        if self in harness.ACTIVE:
            harness.ACTIVE.remove(self)
        if errors:
            raise HarnessError(f"fleet {self.id} teardown errors: {errors}")

    def log_files(self) -> list[Path]:
        return [self.log]
