"""End-to-end harness: real containerd, a real local registry, the real Berth
coordinator and agent binaries, and the real AWS CLI / boto3 as clients.

Every process the harness starts is recorded by PID and stopped by that PID;
everything lives under the test's tmp dir, plus a short socket dir under
/run/berth-test/ (unix socket paths must stay under 107 bytes) that is removed on
teardown. Nothing here uses fixed ports or fixed paths, so pytest-xdist workers
can run side by side.

Objects:
- `Containerd(tmpdir)`   own root/state/sockets; teardown removes every task,
                         container, shim, mount and dir it made.
- `Registry(tmpdir)`     `docker-registry serve` on 127.0.0.1:<free port>.
- `Coordinator(tmpdir)`  berth-coordinator; start/stop/kill9/restart, boto3 `ecs()`,
                         AWS CLI `aws()`, SSM `activation()`.
- `Agent(...)`           berth-agent register + run; kill9/restart.
- `Host(tmpdir)`         containerd + registry (with busybox pushed) + coordinator.
- `Cluster(host, name)`  one agent on a host registered to cluster `name`, with
                         task-definition / run / wait helpers.

`Containerd`, `Registry`, `Coordinator` and `Agent` take an optional `netns` (a
name under /run/netns or an absolute path): the process then starts under
`nsenter --net=<netns>`, a network-namespace switch only (same mount namespace,
so files and unix sockets stay reachable; nsenter execs, so the recorded PID is
the process itself). `Registry(host=, port=)` and `Coordinator(listen=)` choose
the listen address. multihost.py builds simulated hosts on these.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import boto3
import botocore.config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "tools"))
import mkimage  # noqa: E402

BIN_DIR = Path(os.environ.get("BERTH_BIN_DIR", REPO / "target" / "debug"))
REGION = "us-east-1"
SOCKET_ROOT = Path("/run/berth-test")
NETNS_DIR = Path("/run/netns")
SHIM_SOCKET_DIR = Path("/run/containerd/s")
RUNC_STATE_DIR = Path("/run/containerd/runc")

# Every live harness object, so a failing test can print their logs (see conftest).
ACTIVE: list[Any] = []


class HarnessError(Exception):
    """The harness could not set up or observe something."""


# ---------------------------------------------------------------- utilities


def require_root_and_binaries(*names: str) -> None:
    """Fail (never skip) with a clear message when the suite cannot run."""
    if os.geteuid() != 0:
        raise HarnessError("the end-to-end suite must run as root (containerd, mounts)")
    missing = []
    for name in names:
        if "/" in name:
            path = Path(name)
        elif (BIN_DIR / name).exists():
            path = BIN_DIR / name
        else:
            found = shutil.which(name)
            path = Path(found) if found else BIN_DIR / name
        if not path.exists():
            missing.append(str(path))
    if missing:
        raise HarnessError(
            "missing binaries: " + ", ".join(missing)
            + " (build with `cargo build -p berth-coordinator -p berth-agent`, or set BERTH_BIN_DIR)"
        )


def netns_path(netns: str) -> str:
    """A network namespace's bind-mount path: `netns` itself if absolute, else /run/netns/<netns>."""
    return netns if netns.startswith("/") else str(NETNS_DIR / netns)


def in_netns(netns: str | None, argv: Iterable[str]) -> list[str]:
    """`argv`, prefixed with `nsenter --net=<netns> --` when `netns` is set."""
    argv = list(argv)
    if netns is None:
        return argv
    return ["nsenter", f"--net={netns_path(netns)}", "--", *argv]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise HarnessError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def tail(path: Path, lines: int = 150) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return "\n".join(data[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop a process we started, by its PID: `sig`, then SIGKILL after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def kill_pid(pid: int, timeout: float = 5.0) -> None:
    """TERM then KILL a PID that is not our child (e.g. a re-parented shim)."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below `prefix` in our mount namespace, deepest first."""
    prefix_s = str(prefix).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount_point = fields[4].encode().decode("unicode_escape")
            if mount_point == prefix_s or mount_point.startswith(prefix_s + "/"):
                found.append(mount_point)
    return sorted(set(found), key=lambda m: m.count("/"), reverse=True)


def unmount_all_under(prefix: Path) -> list[str]:
    leftovers = mounts_under(prefix)
    for mount_point in leftovers:
        r = subprocess.run(["umount", mount_point], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", mount_point], capture_output=True)
    return leftovers


class LogPump:
    """Drain a pipe into a file line by line, remembering the lines seen."""

    def __init__(self, stream, path: Path):
        self.path = path
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        with open(self.path, "a", buffering=1) as out:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace")
                out.write(line)
                with self.cond:
                    self.lines.append(line.rstrip("\n"))
                    self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, predicate: Callable[[str], bool], timeout: float, proc: subprocess.Popen) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                while seen < len(self.lines):
                    line = self.lines[seen]
                    seen += 1
                    if predicate(line):
                        return line
                if proc.poll() is not None and not self._thread.is_alive():
                    raise HarnessError(f"process {proc.pid} exited with {proc.returncode} before the expected line")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise HarnessError(f"timed out after {timeout}s waiting for output from pid {proc.pid}")
                self.cond.wait(min(remaining, 0.2))


# ---------------------------------------------------------------- containerd


class Containerd:
    """A private containerd: own root, state, gRPC/ttrpc sockets, opt dir; CRI off.
    With `netns`, the daemon (hence its shims and host-network containers) runs in
    that network namespace; its sockets are files, reachable from anywhere."""

    def __init__(self, tmpdir: Path, netns: str | None = None):
        require_root_and_binaries("containerd", "ctr", "runc", "containerd-shim-runc-v2")
        self.netns = netns
        self.dir = Path(tmpdir) / "containerd"
        self.root = self.dir / "root"
        self.state = self.dir / "state"
        self.opt = self.dir / "opt"
        for d in (self.root, self.state, self.opt):
            d.mkdir(parents=True, exist_ok=True)
        self.sock_dir = SOCKET_ROOT / uuid.uuid4().hex[:10]
        for attempt in range(5):  # another worker may rmdir an empty SOCKET_ROOT meanwhile
            try:
                self.sock_dir.mkdir(parents=True)
                break
            except FileNotFoundError:
                if attempt == 4:
                    raise
        self.socket = self.sock_dir / "c.sock"
        self.config = self.dir / "config.toml"
        self.log = self.dir / "containerd.log"
        self.proc: subprocess.Popen | None = None
        self._write_config()
        ACTIVE.append(self)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    def _write_config(self) -> None:
        self.config.write_text(
            f"""version = 2
root = "{self.root}"
state = "{self.state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.sock_dir / 'c.sock.ttrpc'}"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{self.opt}"
"""
        )

    def start(self) -> None:
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            in_netns(self.netns, ["containerd", "--config", str(self.config)]),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        log.close()
        try:
            wait_for(self._ready, timeout=30, interval=0.1, what=f"containerd socket {self.socket}")
        except HarnessError as e:
            raise HarnessError(f"{e}\n--- containerd log ---\n{tail(self.log)}") from e

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Stop only the daemon (as a package upgrade does: shims and containers keep
        running), then start it again on the same root, state and sockets."""
        stop_process(self.proc, timeout=10, sig=sig)
        self.start()

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(f"containerd exited with {self.proc.returncode}")
        if not self.socket.exists():
            return False
        return self.ctr("version", check=False).returncode == 0

    def ctr(self, *args: str, namespace: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = ["ctr", "--address", str(self.socket)]
        if namespace:
            cmd += ["--namespace", namespace]
        cmd += list(args)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise HarnessError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def namespaces(self) -> list[str]:
        out = self.ctr("namespaces", "ls", "-q").stdout
        return [n for n in out.split() if n]

    def containers(self, namespace: str) -> list[str]:
        out = self.ctr("containers", "ls", "-q", namespace=namespace).stdout
        return [c for c in out.split() if c]

    def container_info(self, namespace: str, cid: str) -> dict:
        return json.loads(self.ctr("containers", "info", cid, namespace=namespace).stdout)

    def tasks(self, namespace: str) -> dict[str, tuple[int, str]]:
        """containerd tasks: id -> (pid, status)."""
        out = self.ctr("tasks", "ls", namespace=namespace).stdout.splitlines()
        tasks = {}
        for line in out[1:]:
            parts = line.split()
            if len(parts) >= 3:
                tasks[parts[0]] = (int(parts[1]), parts[2])
        return tasks

    def shim_pids(self) -> list[int]:
        """Shims this containerd spawned, found by `-address <our socket>` in their cmdline."""
        ours = []
        for pid in all_pids():
            argv = proc_cmdline(pid)
            if not argv or "containerd-shim" not in Path(argv[0]).name:
                continue
            if "-address" in argv:
                i = argv.index("-address")
                if i + 1 < len(argv) and argv[i + 1] == str(self.socket):
                    ours.append(pid)
        return ours

    def _graceful_cleanup(self) -> None:
        """Kill and delete every task and container in every namespace via the API,
        so shims exit and unmount rootfs on their own."""
        for ns in self.namespaces():
            for tid in self.tasks(ns):
                self.ctr("tasks", "kill", "-a", "-s", "SIGKILL", tid, namespace=ns, check=False)
            for tid in self.tasks(ns):
                wait_for(lambda: self.tasks(ns).get(tid, (0, "STOPPED"))[1] == "STOPPED",
                         timeout=10, what=f"task {tid} to stop")
                self.ctr("tasks", "delete", "-f", tid, namespace=ns, check=False)
            for cid in self.containers(ns):
                self.ctr("containers", "delete", cid, namespace=ns, check=False)

    def stop(self) -> None:
        if self in ACTIVE:
            ACTIVE.remove(self)
        errors: list[str] = []
        used_namespaces: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            try:
                used_namespaces = self.namespaces()
                self._graceful_cleanup()
            except Exception as e:  # noqa: BLE001 - keep cleaning
                errors.append(f"graceful cleanup: {e}")
        stop_process(self.proc, timeout=10)
        # Shims survive containerd; kill any left, with their containers' runc state.
        for pid in self.shim_pids():
            argv = proc_cmdline(pid)
            kill_pid(pid)
            self._remove_shim_socket(argv)
        # The runc shim keeps per-namespace state dirs under /run/containerd/runc;
        # remove the (now empty) ones of the namespaces the harness made up.
        for ns in used_namespaces:
            if ns not in ("default", "berth"):
                try:
                    (RUNC_STATE_DIR / ns).rmdir()
                except OSError:
                    pass
        leftovers = unmount_all_under(self.dir)
        if leftovers:
            errors.append(f"had to unmount {leftovers}")
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        try:
            SOCKET_ROOT.rmdir()  # only succeeds when no other containerd uses it
        except OSError:
            pass
        if errors:
            print(f"containerd teardown: {'; '.join(errors)}", file=sys.stderr)

    def _remove_shim_socket(self, argv: list[str]) -> None:
        # containerd 1.6 puts shim sockets at /run/containerd/s/sha256(address/ns/id).
        try:
            ns = argv[argv.index("-namespace") + 1]
            cid = argv[argv.index("-id") + 1]
        except (ValueError, IndexError):
            return
        digest = hashlib.sha256(os.path.join(str(self.socket), ns, cid).encode()).hexdigest()
        for suffix in ("", ".1"):
            try:
                (SHIM_SOCKET_DIR / (digest + suffix)).unlink()
            except FileNotFoundError:
                pass

    close = stop

    def log_files(self) -> list[Path]:
        return [self.log]


# ---------------------------------------------------------------- registry


class Registry:
    """`docker-registry serve` on 127.0.0.1:<free port> with filesystem storage, or on
    `host`:`port` inside network namespace `netns` (the port must then be free there)."""

    def __init__(self, tmpdir: Path, host: str = "127.0.0.1", port: int | None = None, netns: str | None = None):
        require_root_and_binaries("docker-registry")
        self.netns = netns
        self.dir = Path(tmpdir) / "registry"
        self.storage = self.dir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "registry.log"
        self.proc: subprocess.Popen | None = None
        ACTIVE.append(self)
        last: Exception | None = None
        for _ in range(5 if port is None else 1):  # another process may grab the port between probe and bind
            self.port = port if port is not None else free_port()
            self.addr = f"{host}:{self.port}"
            try:
                self._start()
                return
            except HarnessError as e:
                last = e
                stop_process(self.proc)
        message = f"registry did not start: {last}\n{tail(self.log)}"
        self.stop()
        raise HarnessError(message)

    def _start(self) -> None:
        config = self.dir / "config.yml"
        config.write_text(
            f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {self.storage}
  delete:
    enabled: true
http:
  addr: {self.addr}
"""
        )
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            in_netns(self.netns, ["docker-registry", "serve", str(config)]),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        log.close()
        wait_for(self._ready, timeout=20, what=f"registry on {self.addr}")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(f"registry exited with {self.proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{self.addr}/v2/", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def push_busybox(self, name: str = "busybox:latest", **kwargs) -> str:
        """Build and push the busybox image; returns `host:port/name`."""
        image = mkimage.build_image(**kwargs)
        mkimage.push_image(self.addr, name, image)
        return f"{self.addr}/{name}"

    def stop(self) -> None:
        if self in ACTIVE:
            ACTIVE.remove(self)
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    close = stop

    def log_files(self) -> list[Path]:
        return [self.log]


# ---------------------------------------------------------------- coordinator


class Coordinator:
    """berth-coordinator with a data dir that survives stop/kill9/restart."""

    def __init__(self, tmpdir: Path, account_id: str | None = None, agent_timeout_secs: int | None = None,
                 extra_args: Iterable[str] = (), write_credentials: bool = True, listen: str | None = None,
                 netns: str | None = None):
        require_root_and_binaries("berth-coordinator")
        self.listen = listen or "127.0.0.1:0"
        self.netns = netns
        self.binary = BIN_DIR / "berth-coordinator"
        self.dir = Path(tmpdir) / f"coordinator-{uuid.uuid4().hex[:6]}"
        self.data_dir = self.dir / "data"
        self.data_dir.mkdir(parents=True)
        self.credentials_file = self.data_dir / "credentials"
        self.account_id = account_id
        self.agent_timeout_secs = agent_timeout_secs
        self.extra_args = list(extra_args)
        self.stdout_log = self.dir / "coordinator.stdout.log"
        self.stderr_log = self.dir / "coordinator.stderr.log"
        self.proc: subprocess.Popen | None = None
        self.addr: str | None = None
        if write_credentials:
            self.credentials_file.write_text(
                "[default]\n"
                f"aws_access_key_id = AKIA{secrets.token_hex(8).upper()}\n"
                f"aws_secret_access_key = {secrets.token_urlsafe(30)}\n"
            )
            self.credentials_file.chmod(0o600)
        ACTIVE.append(self)
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    @property
    def endpoint(self) -> str:
        if self.addr is None:
            raise HarnessError("coordinator has not started")
        return f"http://{self.addr}"

    def start(self, listen: str | None = None) -> None:
        """Start; by default on the previous address (so agents find it again), or on
        the constructor's `listen` (127.0.0.1:0 unless given)."""
        listen = listen or self.addr or self.listen
        cmd = [str(self.binary), "--listen", listen, "--data-dir", str(self.data_dir)]
        if self.account_id:
            cmd += ["--account-id", str(self.account_id)]
        if self.agent_timeout_secs is not None:
            cmd += ["--agent-timeout-secs", str(self.agent_timeout_secs)]
        cmd += self.extra_args
        err = open(self.stderr_log, "ab")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), RUST_BACKTRACE="1")
        self.proc = subprocess.Popen(in_netns(self.netns, cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env)
        err.close()
        self._pump = LogPump(self.proc.stdout, self.stdout_log)
        try:
            line = self._pump.wait_line(lambda l: l.startswith("listening on "), timeout=30, proc=self.proc)
        except HarnessError as e:
            stop_process(self.proc)
            raise HarnessError(f"coordinator did not start: {e}\n--- stderr ---\n{tail(self.stderr_log)}") from e
        self.addr = line.split("listening on ", 1)[1].strip()
        self._load_credentials()

    def _load_credentials(self) -> None:
        cp = configparser.ConfigParser()
        wait_for(lambda: self.credentials_file.exists(), timeout=5, what="coordinator credentials file")
        cp.read(self.credentials_file)
        self.access_key = cp["default"]["aws_access_key_id"].strip()
        self.secret_key = cp["default"]["aws_secret_access_key"].strip()

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self in ACTIVE:
            ACTIVE.remove(self)
        self.stop()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # clients

    def client(self, service: str, **config):
        cfg = botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"},
                                     connect_timeout=5, read_timeout=60, **config)
        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key, config=cfg,
        )

    def ecs(self, **config):
        return self.client("ecs", **config)

    def ssm(self):
        return self.client("ssm")

    def aws_env(self) -> dict:
        env = dict(os.environ)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            env.pop(k, None)
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(self.credentials_file), AWS_CONFIG_FILE="/dev/null",
                   AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION=REGION, AWS_PAGER="")
        return env

    def aws_raw(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the AWS CLI against this coordinator; returns the CompletedProcess."""
        cmd = ["aws", *args, "--endpoint-url", self.endpoint, "--region", REGION, "--output", "json"]
        return subprocess.run(cmd, capture_output=True, text=True, env=self.aws_env(), timeout=timeout)

    def aws(self, *args: str, timeout: float = 120) -> Any:
        """Run the AWS CLI; fail on a non-zero exit; return the parsed JSON output."""
        r = self.aws_raw(*args, timeout=timeout)
        if r.returncode != 0:
            raise HarnessError(f"aws {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
        return json.loads(r.stdout) if r.stdout.strip() else {}

    def activation(self, limit: int = 5) -> tuple[str, str]:
        out = self.ssm().create_activation(IamRole="berth", RegistrationLimit=limit)
        return out["ActivationId"], out["ActivationCode"]

    def log_files(self) -> list[Path]:
        return [self.stdout_log, self.stderr_log]


# ---------------------------------------------------------------- agent


class Agent:
    """berth-agent registered to `cluster` and running against `containerd`; with
    `netns`, both `register` and `run` run in that network namespace."""

    def __init__(self, tmpdir: Path, coordinator: Coordinator, containerd: Containerd, registry: Registry,
                 cluster: str, namespace: str = "berth", attributes: dict[str, str] | None = None,
                 extra_run_args: Iterable[str] = (), netns: str | None = None):
        require_root_and_binaries("berth-agent")
        self.netns = netns
        self.binary = BIN_DIR / "berth-agent"
        self.coordinator = coordinator
        self.containerd = containerd
        self.registry = registry
        self.cluster = cluster
        self.namespace = namespace
        self.dir = Path(tmpdir) / f"agent-{cluster}-{uuid.uuid4().hex[:6]}"
        self.data_dir = self.dir / "data"
        self.data_dir.mkdir(parents=True)
        self.stderr_log = self.dir / "agent.stderr.log"
        self.stdout_log = self.dir / "agent.stdout.log"
        self.extra_run_args = list(extra_run_args)
        self.proc: subprocess.Popen | None = None
        ACTIVE.append(self)
        try:
            self.arn = self.register(attributes or {})
            self.start()
        except BaseException:
            self.close()
            raise

    def _env(self) -> dict:
        return dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), RUST_BACKTRACE="1")

    def register(self, attributes: dict[str, str]) -> str:
        act_id, code = self.coordinator.activation(limit=1)
        cmd = [str(self.binary), "register", "--coordinator", self.coordinator.endpoint,
               "--activation-id", act_id, "--activation-code", code,
               "--cluster", self.cluster, "--data-dir", str(self.data_dir)]
        for k, v in attributes.items():
            cmd += ["--attribute", f"{k}={v}"]
        cmd = in_netns(self.netns, cmd)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=self._env())
        with open(self.stderr_log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{r.stderr}")
        if r.returncode != 0:
            raise HarnessError(f"berth-agent register failed ({r.returncode}): {r.stderr.strip()}\n{r.stdout}")
        arns = [l.strip() for l in r.stdout.splitlines() if l.strip().startswith("arn:")]
        if not arns:
            raise HarnessError(f"berth-agent register printed no ARN: {r.stdout!r}")
        return arns[-1]

    def start(self) -> None:
        cmd = [str(self.binary), "run", "--data-dir", str(self.data_dir),
               "--containerd-socket", str(self.containerd.socket),
               "--insecure-registry", self.registry.addr,
               "--namespace", self.namespace, *self.extra_run_args]
        if self.netns is None:
            # In the machine's own namespace: no bridges, veths or NAT rules
            # there (task networking is tested on simulated hosts, multihost.py).
            cmd.append("--no-cni")
        cmd = in_netns(self.netns, cmd)
        err = open(self.stderr_log, "ab")
        out = open(self.stdout_log, "ab")
        err.write(f"$ {' '.join(cmd)}\n".encode())
        err.flush()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self._env())
        err.close()
        out.close()
        time.sleep(0.2)
        if self.proc.poll() is not None:
            raise HarnessError(f"berth-agent run exited at once ({self.proc.returncode}):\n{tail(self.stderr_log)}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.running():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self in ACTIVE:
            ACTIVE.remove(self)
        self.stop()

    def log_path(self, task_arn: str, container: str, stream: str = "stdout") -> Path:
        """Where the agent writes a container's output."""
        task_id = task_arn.rsplit("/", 1)[-1]
        return self.data_dir / "logs" / task_id / f"{container}.{stream}.log"

    def log_files(self) -> list[Path]:
        return [self.stderr_log]


# ---------------------------------------------------------------- host / cluster


class Host:
    """One simulated host with its control plane: containerd, a registry holding
    `busybox:latest`, and a coordinator."""

    def __init__(self, tmpdir: Path, **coordinator_kwargs):
        self.tmpdir = Path(tmpdir)
        self.containerd = self.registry = self.coordinator = None
        try:
            self.containerd = Containerd(self.tmpdir)
            self.registry = Registry(self.tmpdir)
            self.image = self.registry.push_busybox()
            self.coordinator = Coordinator(self.tmpdir, **coordinator_kwargs)
        except BaseException:
            self.close()
            raise
        self.clusters: list[Cluster] = []

    def cluster(self, name: str | None = None, namespace: str | None = None, **agent_kwargs) -> "Cluster":
        """A fresh cluster with one agent (own containerd namespace) on this host."""
        c = Cluster(self, name or f"c-{uuid.uuid4().hex[:8]}", namespace=namespace, **agent_kwargs)
        self.clusters.append(c)
        return c

    def close(self) -> None:
        errors = []
        for c in reversed(getattr(self, "clusters", [])):
            try:
                c.close()
            except Exception as e:  # noqa: BLE001 - keep tearing down
                errors.append(e)
        for part in (self.coordinator, self.registry, self.containerd):
            if part is None:
                continue
            try:
                part.close()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        if errors:
            raise HarnessError(f"teardown errors: {errors}")


class Cluster:
    """A named ECS cluster with one registered, running agent, plus helpers."""

    def __init__(self, host: Host, name: str, namespace: str | None = None, **agent_kwargs):
        self.host = host
        self.name = name
        self.namespace = namespace or f"berth-{uuid.uuid4().hex[:6]}"
        self.coordinator = host.coordinator
        self.containerd = host.containerd
        self.registry = host.registry
        self.image = host.image
        self.ecs = self.coordinator.ecs()
        self.ecs.create_cluster(clusterName=name)
        self.agent = Agent(host.tmpdir, self.coordinator, self.containerd, self.registry, name,
                           namespace=self.namespace, **agent_kwargs)
        try:
            self.wait_agent_connected()
        except BaseException:
            self.agent.close()
            raise

    def close(self) -> None:
        """Stop tasks still running, then the agent."""
        try:
            if self.agent.running() and self.coordinator.running():
                arns = self.ecs.list_tasks(cluster=self.name, desiredStatus="RUNNING").get("taskArns", [])
                for arn in arns:
                    self.ecs.stop_task(cluster=self.name, task=arn, reason="test teardown")
                if arns:
                    try:
                        wait_for(lambda: all(t["lastStatus"] == "STOPPED" for t in self.describe(arns)),
                                 timeout=60, what="teardown tasks to stop")
                    except HarnessError as e:
                        print(f"cluster {self.name} teardown: {e}", file=sys.stderr)
        finally:
            self.agent.close()

    # container instances

    def container_instance(self) -> dict:
        out = self.ecs.describe_container_instances(cluster=self.name, containerInstances=[self.agent.arn])
        if not out.get("containerInstances"):
            raise HarnessError(f"instance {self.agent.arn} not found: {out.get('failures')}")
        return out["containerInstances"][0]

    def wait_agent_connected(self, connected: bool = True, timeout: float = 30) -> dict:
        return wait_for(lambda: (ci := self.container_instance())["agentConnected"] == connected and ci,
                        timeout=timeout, what=f"agentConnected == {connected}")

    # task definitions and tasks

    def container(self, name: str = "main", command: list[str] | None = None, **kw) -> dict:
        c = {"name": name, "image": self.image, "essential": True, "memory": 32}
        if command is not None:
            c["command"] = command
        c.update(kw)
        return c

    def register_td(self, containers: list[dict], family: str | None = None, network_mode: str | None = "host",
                    **kw) -> str:
        args = {"family": family or f"f-{uuid.uuid4().hex[:8]}", "containerDefinitions": containers}
        if network_mode is not None:
            args["networkMode"] = network_mode
        args.update(kw)
        return self.ecs.register_task_definition(**args)["taskDefinition"]["taskDefinitionArn"]

    def run_task(self, td: str, **kw) -> str:
        out = self.ecs.run_task(cluster=self.name, taskDefinition=td, **kw)
        if out.get("failures") or not out.get("tasks"):
            raise HarnessError(f"RunTask failed: {out.get('failures')}")
        return out["tasks"][0]["taskArn"]

    def describe(self, arns: list[str]) -> list[dict]:
        out = self.ecs.describe_tasks(cluster=self.name, tasks=arns)
        if out.get("failures"):
            raise HarnessError(f"DescribeTasks failures: {out['failures']}")
        return out["tasks"]

    def describe_one(self, arn: str) -> dict:
        return self.describe([arn])[0]

    def wait_task(self, arn: str, status: str = "RUNNING", timeout: float = 60, seen: list[str] | None = None,
                  interval: float = 0.1) -> tuple[dict, list[str]]:
        """Poll DescribeTasks until lastStatus == `status` (or a later status, which
        fails). Returns the task and every distinct lastStatus seen, in order."""
        return wait_task_status(lambda: self.describe_one(arn), status, timeout, seen, interval)

    def ctr_containers(self) -> list[str]:
        return self.containerd.containers(self.namespace)

    def ctr_tasks(self) -> dict[str, tuple[int, str]]:
        return self.containerd.tasks(self.namespace)

    def containerd_ids_for_task(self, task_arn: str) -> list[str]:
        """containerd containers labelled with `task_arn`."""
        ids = []
        for cid in self.ctr_containers():
            labels = self.containerd.container_info(self.namespace, cid).get("Labels") or {}
            if labels.get("com.amazonaws.ecs.task-arn") == task_arn:
                ids.append(cid)
        return ids


ORDER = ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"]


def wait_task_status(describe: Callable[[], dict], status: str, timeout: float, seen: list[str] | None,
                     interval: float) -> tuple[dict, list[str]]:
    seen = seen if seen is not None else []
    target = ORDER.index(status)
    deadline = time.monotonic() + timeout
    task: dict = {}
    while True:
        task = describe()
        last = task["lastStatus"]
        if not seen or seen[-1] != last:
            seen.append(last)
        if last == status:
            return task, seen
        if last in ORDER and ORDER.index(last) > target:
            raise HarnessError(f"task {task['taskArn']} went past {status}: seen {seen}; task: {json.dumps(task, default=str)}")
        if time.monotonic() >= deadline:
            raise HarnessError(f"task {task['taskArn']} not {status} after {timeout}s: seen {seen}; "
                               f"task: {json.dumps(task, default=str)}")
        time.sleep(interval)


def assert_forward_only(seen: list[str]) -> None:
    """Every status in `seen` is a known ECS status and none moves backwards."""
    idx = [ORDER.index(s) for s in seen]  # ValueError on an unknown status
    assert idx == sorted(idx), f"task status moved backwards: {seen}"
