#!/usr/bin/env python3
"""Build a single-layer busybox image from the host's static /bin/busybox and push
it to a registry with the Registry HTTP API v2, using only the standard library.

The layer holds /bin/busybox plus one symlink per applet (from `busybox --list`),
/etc/passwd and /etc/group (root, nobody), /tmp, /root and /www/index.html.
Every tar entry has a fixed mtime/owner and gzip carries mtime 0, so the same
inputs always give the same digests.

Usage:
    mkimage.py --registry 127.0.0.1:5000 --name busybox:latest \
        [--entrypoint '["sh","-c"]'] [--cmd '["echo hi"]'] [--busybox /bin/busybox]

Importable: `build_image(...)` returns an `Image`; `push_image(registry, name, image)`
pushes it and returns the manifest digest.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FIXED_MTIME = 1_600_000_000  # any constant: it only has to be stable

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\n"
INDEX_HTML = "hello from berth\n"


class MkImageError(Exception):
    """Building or pushing the image failed."""


@dataclass
class Image:
    layer: bytes  # gzip-compressed tar
    diff_id: str  # sha256 of the uncompressed tar
    config: bytes  # image config JSON
    manifest: bytes  # docker v2 schema 2 manifest JSON

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def layer_digest(self) -> str:
        return sha256_digest(self.layer)

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def busybox_applets(busybox: str) -> list[str]:
    out = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout
    names = sorted({line.strip() for line in out.splitlines() if line.strip()})
    # `[` and `[[` are valid file names; anything with a slash is not an applet.
    return [n for n in names if "/" not in n and n != "busybox"]


def _tar_info(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = linkname
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build_layer(busybox: str = "/bin/busybox") -> bytes:
    """The uncompressed layer tar."""
    with open(busybox, "rb") as f:
        binary = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = [
            ("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("proc", 0o755),
            ("root", 0o700), ("sbin", 0o755), ("sys", 0o755), ("tmp", 0o1777),
            ("usr", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755), ("var", 0o755),
            ("www", 0o755),
        ]
        for name, mode in dirs:
            tar.addfile(_tar_info(name, tarfile.DIRTYPE, mode))
        tar.addfile(_tar_info("bin/busybox", tarfile.REGTYPE, 0o755, len(binary)), io.BytesIO(binary))
        for applet in busybox_applets(busybox):
            tar.addfile(_tar_info(f"bin/{applet}", tarfile.SYMTYPE, 0o777, linkname="busybox"))
        for name, text, mode in [
            ("etc/passwd", PASSWD, 0o644),
            ("etc/group", GROUP, 0o644),
            ("www/index.html", INDEX_HTML, 0o644),
        ]:
            data = text.encode()
            tar.addfile(_tar_info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    return buf.getvalue()


def build_image(
    busybox: str = "/bin/busybox",
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
) -> Image:
    raw = build_layer(busybox)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=6) as g:
        g.write(raw)
    layer = gz.getvalue()
    diff_id = sha256_digest(raw)
    container_config: dict = {
        "Env": env if env is not None else [DEFAULT_PATH],
        "Cmd": cmd if cmd is not None else ["sh"],
    }
    if entrypoint is not None:
        container_config["Entrypoint"] = entrypoint
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2020-09-13T12:26:40Z",
            "config": container_config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "2020-09-13T12:26:40Z", "created_by": "berth tests/tools/mkimage.py"}],
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": len(config), "digest": sha256_digest(config)},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "size": len(layer), "digest": sha256_digest(layer)}],
        },
        sort_keys=True,
        indent=2,
    ).encode()
    return Image(layer=layer, diff_id=diff_id, config=config, manifest=manifest)


def _request(method: str, url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 30):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        body = e.read()[:500].decode(errors="replace")
        raise MkImageError(f"{method} {url}: HTTP {e.code}: {body}") from e


def _blob_exists(base: str, repo: str, digest: str) -> bool:
    req = urllib.request.Request(f"{base}/v2/{repo}/blobs/{digest}", method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        raise MkImageError(f"HEAD blob {digest}: HTTP {e.code}") from e


def _push_blob(base: str, repo: str, data: bytes) -> str:
    digest = sha256_digest(data)
    if _blob_exists(base, repo, digest):
        return digest
    with _request("POST", f"{base}/v2/{repo}/blobs/uploads/", data=b"", headers={"Content-Length": "0"}) as resp:
        if resp.status != 202:
            raise MkImageError(f"start upload: HTTP {resp.status}")
        location = resp.headers.get("Location")
    if not location:
        raise MkImageError("registry gave no upload Location")
    location = urllib.parse.urljoin(base + "/", location)
    sep = "&" if "?" in location else "?"
    url = f"{location}{sep}digest={urllib.parse.quote(digest)}"
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
    with _request("PUT", url, data=data, headers=headers) as resp:
        if resp.status != 201:
            raise MkImageError(f"finish upload {digest}: HTTP {resp.status}")
    return digest


def push_image(registry: str, name: str, image: Image) -> str:
    """Push `image` as `name` (`repo[:tag]`) to `registry` (`host:port`, plain HTTP).
    Returns the manifest digest."""
    repo, _, tag = name.partition(":")
    tag = tag or "latest"
    base = f"http://{registry}"
    _push_blob(base, repo, image.layer)
    _push_blob(base, repo, image.config)
    headers = {"Content-Type": MANIFEST_MEDIA_TYPE}
    with _request("PUT", f"{base}/v2/{repo}/manifests/{tag}", data=image.manifest, headers=headers) as resp:
        if resp.status != 201:
            raise MkImageError(f"put manifest: HTTP {resp.status}")
        returned = resp.headers.get("Docker-Content-Digest")
    if returned and returned != image.manifest_digest:
        raise MkImageError(f"registry stored manifest as {returned}, expected {image.manifest_digest}")
    return image.manifest_digest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--registry", required=True, help="host:port of a plain-HTTP registry")
    p.add_argument("--name", default="busybox:latest", help="repository[:tag]")
    p.add_argument("--busybox", default="/bin/busybox", help="static busybox binary")
    p.add_argument("--entrypoint", help="JSON list, e.g. '[\"sh\",\"-c\"]'")
    p.add_argument("--cmd", help="JSON list, e.g. '[\"sh\"]'")
    args = p.parse_args(argv)
    try:
        entrypoint = json.loads(args.entrypoint) if args.entrypoint else None
        cmd = json.loads(args.cmd) if args.cmd else None
        for label, value in (("--entrypoint", entrypoint), ("--cmd", cmd)):
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise MkImageError(f"{label} must be a JSON list of strings")
        image = build_image(args.busybox, entrypoint=entrypoint, cmd=cmd)
        digest = push_image(args.registry, args.name, image)
    except (MkImageError, OSError, json.JSONDecodeError, subprocess.CalledProcessError) as e:
        print(f"mkimage: {e}", file=sys.stderr)
        return 1
    print(f"{args.registry}/{args.name}@{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
