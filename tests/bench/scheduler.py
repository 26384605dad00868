#!/usr/bin/env python3
"""Scheduler at fleet scale (issue #4): simulated agents against one coordinator.

Run from the repository root:

    python3 tests/bench/scheduler.py [--hosts 5000] [--tasks 50000] [--clients 8]
                                     [--per-call 10] [--services 10]
                                     [--service-tasks 5000] [--no-build] [--json OUT]

It builds release binaries (`cargo build --release -p berth-coordinator
--bins`), starts `berth-coordinator` on 127.0.0.1 with a fresh data dir, and
runs `berth-simagents`, which (over the real agent channel and the signed ECS
and SSM APIs) registers HOSTS simulated container instances (4096 CPU /
16384 MiB, `ecs.availability-zone=az-<i%3>`, `bench.tier` gold except every
10th bronze), holds one long-poll per instance, registers a task definition
(host network, 128 CPU / 512 MiB), places TASKS tasks with RunTask (count
PER_CALL, CLIENTS concurrent clients, binpack on memory, memberOf
`attribute:bench.tier == gold`) while it creates SERVICES REPLICA services
of SERVICE_TASKS tasks each with the same placement rules (by default
50,000 + 10 x 5,000 = 100,000 tasks), and plays every agent (RUNNING reports
after 5 ms). It prints placements/s over all of them (first request to the
last task's createdAt), RunTask p50/p99, desired-state-to-agent p50/p99
(task createdAt → poll answer carrying it, RunTask and service tasks
together), errors, and the coordinator's peak RSS (VmHWM from
/proc/PID/status). Every process it starts is stopped by its PID; the temp
dir is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=5000)
    ap.add_argument("--tasks", type=int, default=50000)
    ap.add_argument("--services", type=int, default=10)
    ap.add_argument("--service-tasks", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-call", type=int, default=10)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()

    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not args.no_build:
        subprocess.run(
            ["cargo", "build", "--release", "-p", "berth-coordinator", "--bins"],
            cwd=REPO,
            check=True,
        )
    coord_bin = target / "release" / "berth-coordinator"
    sim_bin = target / "release" / "berth-simagents"

    with tempfile.TemporaryDirectory(prefix="berth-schedbench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        log = open(Path(tmp) / "coordinator.log", "w")
        env = dict(os.environ, BERTH_LOG=os.environ.get("BERTH_LOG", "warn"))
        coord = subprocess.Popen(
            [str(coord_bin), "--listen", "127.0.0.1:0", "--data-dir", str(data),
             "--agent-timeout-secs", "300"],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env,
        )
        try:
            line = coord.stdout.readline() if coord.stdout else ""
            if not line.startswith("listening on "):
                raise RuntimeError(f"coordinator did not start: {line!r}")
            addr = line.split()[-1]
            started = time.time()
            sim = subprocess.run(
                [str(sim_bin), "--coordinator", f"http://{addr}",
                 "--hosts", str(args.hosts), "--cluster", "bench",
                 "--credentials", str(data / "credentials"),
                 "--tasks", str(args.tasks), "--clients", str(args.clients),
                 "--per-call", str(args.per_call),
                 "--services", str(args.services),
                 "--service-tasks", str(args.service_tasks)],
                stdout=subprocess.PIPE, text=True, env=dict(env, BERTH_LOG="info"),
            )
            hwm = vm_hwm_kib(coord.pid)
            if sim.returncode != 0:
                raise RuntimeError(f"berth-simagents failed ({sim.returncode})")
            result = json.loads(sim.stdout.strip().splitlines()[-1])
            result["coordinator_peak_rss_mib"] = round(hwm / 1024, 1)
            result["wall_secs"] = round(time.time() - started, 1)
            result["loadavg_at_end"] = os.getloadavg()
        finally:
            coord.send_signal(signal.SIGTERM)
            try:
                coord.wait(timeout=30)
            except subprocess.TimeoutExpired:
                coord.kill()
                coord.wait()
            log.close()
            errs = (Path(tmp) / "coordinator.log").read_text().splitlines()
            for e in errs[-20:]:
                print("coordinator:", e, file=sys.stderr)

    print(json.dumps(result, indent=2))
    targets = [
        ("placements/s >= 5000", result["placements_per_sec"] >= 5000),
        ("RunTask p99 < 50 ms", (result["runtask_ms"]["p99"] or 1e9) < 50),
        ("desired state to agent p99 < 200 ms",
         (result["all_to_agent_from_created_ms"]["p99"] or 1e9) < 200),
        ("coordinator RSS < 2 GiB", result["coordinator_peak_rss_mib"] < 2048),
    ]
    for name, ok in targets:
        print(f"{'MET    ' if ok else 'NOT MET'} {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
