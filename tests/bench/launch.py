#!/usr/bin/env python3
"""Launch-latency benchmark: Berth against `ctr` on the same containerd.

Run as root from the repository root:

    python3 tests/bench/launch.py [--runs 50] [--throughput-calls 100] [--no-build]

It builds release binaries (`cargo build --release`), then, everything under
one temp dir and on loopback: starts its own containerd, a local registry with
the busybox image, the coordinator and one agent (the e2e harness's parts), and
pre-pulls the image for both sides. Then it measures

  (a) ctr:   `ctr --address SOCK -n bench run -d IMAGE ID sleep 1000`, wall time
             until the command returns with the task running; each container is
             removed before the next;
  (b) Berth: RunTask -> DescribeTasks shows RUNNING (polled every 5 ms), plus the
             task's own `startedAt - createdAt`; each task is stopped (and
             STOPPED) before the next;
  (c) RunTask API throughput: N calls from 4 threads, tasks of 6 MiB running
             `true` (so they end at once): calls/s.

It prints p50/p99 for each and the ratio Berth p50 / ctr p50 (target <= 1.5).
Every process it starts is stopped by its PID; the temp dir is removed.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil
    return ordered[int(rank) - 1]


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def report(name: str, values: list[float]) -> dict:
    row = {
        "name": name,
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }
    print(f"{name:44s} n={row['n']:3d}  p50 {fmt_ms(row['p50'])}  p99 {fmt_ms(row['p99'])}  "
          f"mean {fmt_ms(row['mean'])}  min {fmt_ms(row['min'])}  max {fmt_ms(row['max'])}", flush=True)
    return row


def build_release() -> Path:
    print("building release binaries ...", flush=True)
    subprocess.run(["cargo", "build", "--release", "-p", "berth-coordinator", "-p", "berth-agent"],
                   cwd=REPO, check=True)
    return REPO / "target" / "release"


def bench_ctr(containerd, image: str, runs: int) -> list[float]:
    ns = "bench"
    containerd.ctr("images", "pull", "--plain-http", image, namespace=ns, timeout=120)
    times = []
    for i in range(runs + 1):  # the first run warms up the shim/runc path and is dropped
        cid = f"bench-{i}-{uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        containerd.ctr("run", "-d", image, cid, "sleep", "1000", namespace=ns)
        elapsed = time.perf_counter() - t0
        status = containerd.tasks(ns).get(cid, (0, "MISSING"))[1]
        if status != "RUNNING":
            raise RuntimeError(f"ctr run -d returned but task {cid} is {status}")
        if i > 0:
            times.append(elapsed)
        containerd.ctr("tasks", "kill", "-s", "SIGKILL", cid, namespace=ns)
        deadline = time.monotonic() + 10
        while containerd.tasks(ns).get(cid, (0, "STOPPED"))[1] != "STOPPED":
            if time.monotonic() > deadline:
                raise RuntimeError(f"ctr task {cid} did not stop")
            time.sleep(0.01)
        containerd.ctr("tasks", "delete", cid, namespace=ns)
        containerd.ctr("containers", "delete", cid, namespace=ns)
    return times


def parse_ts(value) -> float:
    return value.timestamp()


def wait_status(ecs, cluster: str, arn: str, want: str, interval: float, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        out = ecs.describe_tasks(cluster=cluster, tasks=[arn])
        task = out["tasks"][0]
        if task["lastStatus"] == want:
            return task
        if task["lastStatus"] == "STOPPED":
            raise RuntimeError(f"task {arn} stopped: {task.get('stopCode')} {task.get('stoppedReason')} "
                               f"{[(c['name'], c.get('reason'), c.get('exitCode')) for c in task['containers']]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {arn} not {want} after {timeout}s (last {task['lastStatus']})")
        time.sleep(interval)


def bench_berth(cluster, runs: int) -> tuple[list[float], list[float]]:
    ecs = cluster.coordinator.ecs()
    # `sleep` as PID 1 ignores SIGTERM, so StopTask would wait out ECS's default
    # 30 s stopTimeout before SIGKILL; a 2 s stopTimeout keeps the runs short
    # (the stop is not part of the measured time).
    td = cluster.register_td([cluster.container("main", command=["sleep", "1000"], memory=16, stopTimeout=2)],
                             family="bench-sleep")
    polled, reported = [], []
    for i in range(runs + 1):  # first run pulls/unpacks the image into the agent's namespace: dropped
        t0 = time.perf_counter()
        out = ecs.run_task(cluster=cluster.name, taskDefinition=td)
        if out.get("failures") or not out.get("tasks"):
            raise RuntimeError(f"RunTask failed: {out.get('failures')}")
        arn = out["tasks"][0]["taskArn"]
        task = wait_status(ecs, cluster.name, arn, "RUNNING", interval=0.005, timeout=120)
        elapsed = time.perf_counter() - t0
        if i > 0:
            polled.append(elapsed)
            if task.get("startedAt") and task.get("createdAt"):
                reported.append(parse_ts(task["startedAt"]) - parse_ts(task["createdAt"]))
        ecs.stop_task(cluster=cluster.name, task=arn, reason="benchmark")
        wait_status(ecs, cluster.name, arn, "STOPPED", interval=0.02, timeout=120)
    return polled, reported


def bench_throughput(cluster, calls: int, threads: int = 4) -> tuple[float, list[float]]:
    td = cluster.register_td([cluster.container("main", command=["true"], memory=6)], family="bench-true")
    latencies: list[float] = []
    arns: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    per_thread = [calls // threads + (1 if i < calls % threads else 0) for i in range(threads)]

    def worker(n: int) -> None:
        ecs = cluster.coordinator.ecs()
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                out = ecs.run_task(cluster=cluster.name, taskDefinition=td)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(repr(e))
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                arns.extend(t["taskArn"] for t in out.get("tasks", []))
                errors.extend(str(f) for f in out.get("failures", []))

    workers = [threading.Thread(target=worker, args=(n,)) for n in per_thread]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    if errors:
        print(f"  {len(errors)} RunTask errors/failures, first: {errors[0]}", flush=True)
    # Let the tasks finish so teardown is quick.
    ecs = cluster.coordinator.ecs()
    deadline = time.monotonic() + 300
    pending = list(arns)
    while pending and time.monotonic() < deadline:
        out = ecs.describe_tasks(cluster=cluster.name, tasks=pending[:100])
        done = {t["taskArn"] for t in out["tasks"] if t["lastStatus"] == "STOPPED"}
        pending = [a for a in pending if a not in done]
        if pending:
            time.sleep(0.5)
    if pending:
        print(f"  {len(pending)} throughput tasks still not STOPPED after 300 s", flush=True)
    return len(latencies) / wall, latencies


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--throughput-calls", type=int, default=100)
    ap.add_argument("--no-build", action="store_true", help="use existing binaries (BERTH_BIN_DIR or target/release)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (containerd)", file=sys.stderr)
        return 2

    bin_dir = Path(os.environ.get("BERTH_BIN_DIR", REPO / "target" / "release"))
    if not args.no_build:
        bin_dir = build_release()
    os.environ["BERTH_BIN_DIR"] = str(bin_dir)
    os.environ.setdefault("RUST_LOG", "warn")
    sys.path.insert(0, str(REPO / "tests" / "e2e"))
    import harness  # noqa: E402 - BERTH_BIN_DIR must be set first

    # SIGTERM (e.g. from `timeout`) unwinds through the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="berth-bench-"))
    host = None
    try:
        host = harness.Host(tmp)
        cluster = host.cluster(name="bench", namespace="berth-bench")
        print(f"image {host.image}; binaries {bin_dir}; {os.cpu_count()} cpus", flush=True)

        print("(a) ctr ...", flush=True)
        ctr_times = bench_ctr(host.containerd, host.image, args.runs)
        print("(b) Berth RunTask ...", flush=True)
        berth_polled, berth_reported = bench_berth(cluster, args.runs)
        print("(c) RunTask throughput ...", flush=True)
        calls_per_s, api_lat = bench_throughput(cluster, args.throughput_calls)

        print()
        ctr_row = report("(a) ctr run -d -> running", ctr_times)
        polled_row = report("(b) Berth RunTask -> DescribeTasks RUNNING", berth_polled)
        if berth_reported:
            reported_row = report("(b') Berth startedAt - createdAt", berth_reported)
        api_row = report("(c) RunTask call latency under load", api_lat)
        print(f"(c) RunTask throughput: {calls_per_s:.1f} calls/s "
              f"({api_row['n']} calls, 4 threads)")
        print(f"ratio Berth p50 / ctr p50 (polled):          {polled_row['p50'] / ctr_row['p50']:.2f}  (target <= 1.5)")
        if berth_reported:
            print(f"ratio Berth p50 / ctr p50 (startedAt-createdAt): {reported_row['p50'] / ctr_row['p50']:.2f}")
        return 0
    finally:
        if host is not None:
            host.close()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    sys.exit(main())
