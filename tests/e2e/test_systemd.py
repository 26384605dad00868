"""The systemd units and the on-prem install script.

- `systemd-analyze verify` accepts both units with no diagnostics (checked on
  copies whose ExecStart points at the built binaries, since verify requires the
  executable to exist, and proven able to fail on a deliberately broken copy);
- `systemd-analyze security --offline` rates the coordinator's sandbox;
- the properties operators rely on are present (Type=notify, KillMode=process
  for the agent, restart policies, environment files);
- `install-agent.sh` parses its arguments, and installs + registers an agent
  against a real coordinator into a scratch root.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
INSTALL = UNITS / "install-agent.sh"
BIN_DIR = Path(os.environ.get("BERTH_BIN_DIR", REPO / "target" / "debug")).resolve()
UNIT_BINARIES = {
    "berth-coordinator.service": "berth-coordinator",
    "berth-agent.service": "berth-agent",
}

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def parse_unit(path):
    """Parse a unit file into {section: {key: [values...]}} (keys repeat)."""
    sections = {}
    current = None
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path}: key outside a section: {raw}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def copy_units(tmp_path, transform=None):
    """Copy both units into tmp_path with ExecStart pointing at built binaries."""
    out = []
    for unit, binary in UNIT_BINARIES.items():
        exe = BIN_DIR / binary
        assert exe.is_file() and os.access(exe, os.X_OK), (
            f"{exe} missing: build first (cargo build --workspace) or set BERTH_BIN_DIR"
        )
        text = (UNITS / unit).read_text()
        assert f"ExecStart=/usr/local/bin/{binary}" in text
        text = text.replace(f"/usr/local/bin/{binary}", str(exe))
        if transform:
            text = transform(unit, text)
        dst = tmp_path / unit
        dst.write_text(text)
        out.append(dst)
    return out


def run_verify(paths, cwd):
    return subprocess.run(
        ["systemd-analyze", "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_units_verify_clean(tmp_path):
    paths = copy_units(tmp_path)
    res = run_verify(paths, tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    mentions = [
        line
        for line in out.splitlines()
        if "berth" in line or str(tmp_path) in line
    ]
    assert mentions == [], "systemd-analyze verify complained:\n" + "\n".join(mentions)


def test_verify_detects_a_broken_unit(tmp_path):
    """Control: the check above can fail (a bad KillMode and an unknown key)."""

    def breakit(unit, text):
        if unit == "berth-agent.service":
            text = text.replace("KillMode=process", "KillMode=bogus\nNoSuchKey=1")
        return text

    paths = copy_units(tmp_path, breakit)
    res = run_verify(paths, tmp_path)
    out = res.stdout + res.stderr
    assert "berth-agent.service" in out and "NoSuchKey" in out, out


def test_coordinator_sandbox_exposure(tmp_path):
    (path, _) = copy_units(tmp_path)
    res = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    m = re.search(r"Overall exposure level for berth-coordinator\.service: ([0-9.]+) (\w+)", out)
    assert m, out
    assert float(m.group(1)) <= 2.0, out
    assert m.group(2) == "OK", out


def test_unit_properties():
    coord = parse_unit(UNITS / "berth-coordinator.service")
    agent = parse_unit(UNITS / "berth-agent.service")
    for name, unit in (("coordinator", coord), ("agent", agent)):
        svc = unit["Service"]
        assert svc["Type"] == ["notify"], name
        assert svc["EnvironmentFile"] == [f"-/etc/berth/{name}.env"], name
        assert "RestartSec" in svc, name
        assert unit["Install"]["WantedBy"] == ["multi-user.target"], name
    cs = coord["Service"]
    assert cs["ExecStart"] == ["/usr/local/bin/berth-coordinator"]
    assert cs["Restart"] == ["always"]
    assert cs["StateDirectory"] == ["berth-coordinator"]
    assert "BERTH_DATA_DIR=/var/lib/berth-coordinator" in cs["Environment"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
    }.items():
        assert cs[key] == [value], key

    ag = agent["Service"]
    assert ag["ExecStart"] == ["/usr/local/bin/berth-agent run"]
    assert ag["KillMode"] == ["process"], "restarting the agent must not kill containers"
    assert ag["Restart"] == ["on-failure"]
    assert "containerd.service" in agent["Unit"]["After"][0].split()
    assert "containerd.service" in agent["Unit"]["Wants"][0].split()
    # A private mount namespace would hide the netns bind mounts the agent
    # makes from containerd and the host: none of these may be set.
    for key in (
        "ProtectSystem",
        "PrivateTmp",
        "ProtectHome",
        "PrivateMounts",
        "PrivateDevices",
        "RestrictNamespaces",
        "PrivateNetwork",
        "ReadOnlyPaths",
        "InaccessiblePaths",
    ):
        assert key not in ag, f"agent unit must not set {key}"


def test_install_script_help_and_syntax():
    assert subprocess.run(["bash", "-n", str(INSTALL)]).returncode == 0
    res = subprocess.run([str(INSTALL), "--help"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for flag in ("--coordinator", "--activation-id", "--activation-code", "--cluster", "--insecure-registry"):
        assert flag in res.stdout
    res = subprocess.run(
        [str(INSTALL), "--coordinator", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0
    assert "--activation-id is required" in res.stderr
    res = subprocess.run(
        [str(INSTALL), "--coordinator", "127.0.0.1:1", "--activation-id", "a", "--activation-code", "b"],
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0
    assert "http:// or https://" in res.stderr


def test_install_script_registers_against_real_coordinator(tmp_path):
    import harness  # the e2e harness (tests/e2e/harness.py)

    root = tmp_path / "root"
    root.mkdir()
    coord = harness.Coordinator(tmp_path)
    try:
        ecs = coord.ecs()
        ecs.create_cluster(clusterName="onprem")
        act_id, act_code = coord.activation(limit=1)

        def install(dest):
            return subprocess.run(
                [
                    str(INSTALL),
                    "--root", str(dest),
                    "--binary", str(BIN_DIR / "berth-agent"),
                    "--coordinator", coord.endpoint,
                    "--activation-id", act_id,
                    "--activation-code", act_code,
                    "--cluster", "onprem",
                    "--insecure-registry", "127.0.0.1:5000",
                    "--attribute", "rack=r1",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )

        res = install(root)
        assert res.returncode == 0, res.stdout + res.stderr
        assert (root / "usr/local/bin/berth-agent").stat().st_mode & 0o111
        assert (root / "etc/systemd/system/berth-agent.service").read_text() == (
            UNITS / "berth-agent.service"
        ).read_text()
        env_file = root / "etc/berth/agent.env"
        env = env_file.read_text()
        assert "BERTH_DATA_DIR=/var/lib/berth-agent" in env
        assert "BERTH_CONTAINERD_SOCKET=/run/containerd/containerd.sock" in env
        assert env_file.stat().st_mode & 0o777 == 0o600
        dropin = (root / "etc/systemd/system/berth-agent.service.d/10-install.conf").read_text()
        assert "ExecStart=/usr/local/bin/berth-agent run --insecure-registry 127.0.0.1:5000" in dropin
        state = root / "var/lib/berth-agent"
        assert any(state.iterdir()), "register wrote nothing to the data dir"

        arns = ecs.list_container_instances(cluster="onprem")["containerInstanceArns"]
        assert len(arns) == 1, arns
        ci = ecs.describe_container_instances(cluster="onprem", containerInstances=arns)[
            "containerInstances"
        ][0]
        assert {"name": "rack", "value": "r1"} in ci["attributes"], ci["attributes"]

        # The activation allowed one registration: a second install is refused.
        root2 = tmp_path / "root2"
        root2.mkdir()
        again = install(root2)
        assert again.returncode != 0, again.stdout + again.stderr
        assert len(ecs.list_container_instances(cluster="onprem")["containerInstanceArns"]) == 1
    finally:
        coord.close()
