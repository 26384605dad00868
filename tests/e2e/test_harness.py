"""Checks of the harness itself, against real containerd and a real registry (no
Berth binaries needed): the busybox image is deterministic, pullable and runnable
by containerd, and teardown leaves no process, mount or directory behind."""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid

import harness
import mkimage


def test_mkimage_is_deterministic():
    a = mkimage.build_image()
    b = mkimage.build_image()
    assert a.manifest_digest == b.manifest_digest
    assert a.layer_digest == b.layer_digest
    config = json.loads(a.config)
    assert config["rootfs"]["diff_ids"] == [a.diff_id]
    assert config["config"]["Cmd"] == ["sh"]
    variant = mkimage.build_image(entrypoint=["sh", "-c"], cmd=["echo hi"])
    assert variant.manifest_digest != a.manifest_digest
    assert variant.layer_digest == a.layer_digest


def test_registry_serves_pushed_manifest(registry):
    ref = registry.push_busybox("tools/busybox:v1")
    assert ref == f"{registry.addr}/tools/busybox:v1"
    req = urllib.request.Request(
        f"http://{registry.addr}/v2/tools/busybox/manifests/v1",
        headers={"Accept": mkimage.MANIFEST_MEDIA_TYPE},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        manifest = json.loads(resp.read())
        digest = resp.headers["Docker-Content-Digest"]
    assert digest == mkimage.build_image().manifest_digest
    assert manifest["layers"][0]["mediaType"] == mkimage.LAYER_MEDIA_TYPE


def test_mkimage_cli_pushes(registry):
    r = subprocess.run(
        ["python3", str(harness.REPO / "tests/tools/mkimage.py"), "--registry", registry.addr,
         "--name", "cli:latest", "--cmd", '["echo","hi"]'],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(f"{registry.addr}/cli:latest@sha256:")


def test_containerd_runs_image_and_teardown_leaves_nothing(tmp_path):
    containerd = harness.Containerd(tmp_path / "h")
    registry = harness.Registry(tmp_path / "h")
    ns = f"harness-{uuid.uuid4().hex[:6]}"
    try:
        image = registry.push_busybox()
        containerd.ctr("images", "pull", "--plain-http", image, namespace=ns)
        out = containerd.ctr("run", "--rm", image, "once", "sh", "-c",
                             "cat /www/index.html; id -u; ls /bin/sleep /bin/httpd", namespace=ns).stdout
        assert "hello from berth" in out
        assert out.splitlines()[1] == "0"
        # A long-running container left behind must be cleaned up by teardown.
        containerd.ctr("run", "-d", image, "left", "sleep", "1000", namespace=ns)
        tasks = containerd.tasks(ns)
        assert tasks["left"][1] == "RUNNING"
        container_pid = tasks["left"][0]
        shims = containerd.shim_pids()
        assert shims, "expected a shim with our -address"
        assert harness.mounts_under(containerd.dir), "expected the container's rootfs mount"
    finally:
        containerd.stop()
        registry.stop()
    assert not harness.pid_alive(container_pid)
    assert not any(harness.pid_alive(p) for p in shims)
    assert harness.mounts_under(tmp_path / "h") == []
    assert not containerd.dir.exists()
    assert not containerd.sock_dir.exists()
    assert not registry.dir.exists()
    assert not (harness.RUNC_STATE_DIR / ns).exists()
