//! Test fixtures for the containerd runtime tests: a private containerd
//! (own root, state and socket under a temp dir), a private
//! `docker-registry` on a free loopback port, and a minimal busybox image
//! built from the host's static `/bin/busybox` and pushed over the registry
//! HTTP API. Every process started here is stopped by its recorded PID in
//! `Drop`; mounts left under the temp dir are unmounted.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// True when the tests can do their job (root). Otherwise prints a visible
/// skip notice naming the test.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root (containerd, runc, overlayfs)");
    println!("SKIPPED {test}: needs root (containerd, runc, overlayfs)");
    false
}

fn stop_child(child: &mut Child, name: &str) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    eprintln!("{name} (pid {pid}) ignored SIGTERM; sending SIGKILL");
    let _ = child.kill();
    let _ = child.wait();
}

/// A containerd of our own. Dropping it removes its containers, stops the
/// shims it started (by the PIDs in their bundle dirs), stops containerd by
/// PID, and unmounts whatever is left under its root.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    child: Option<Child>,
}

/// Make this test process the reaper of orphans it causes: shims
/// daemonize away from containerd, and without a subreaper their exits
/// become zombies of PID 1 (which in a container may never reap them).
fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Children of this process that are shims (`containerd-shim*`): pid,
/// whether it is already a zombie, and its command line (empty for zombies).
fn shim_children() -> Vec<(i32, bool, String)> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().unwrap_or("");
        let ppid = rest.next().unwrap_or("");
        if ppid == me && comm.starts_with("containerd-shim") {
            let cmdline = std::fs::read(p.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            out.push((pid, state == "Z", cmdline));
        }
    }
    out
}

/// Reap shim children that have exited, first waiting up to `timeout` for
/// the live shims of the containerd at `socket` to exit (they do once their
/// task is deleted). Shims of other tests' containerds are left alone.
fn reap_shims(socket: &Path, timeout: Duration) {
    let socket = socket.to_string_lossy().into_owned();
    let deadline = Instant::now() + timeout;
    loop {
        let shims = shim_children();
        for (pid, zombie, _) in &shims {
            if *zombie {
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(*pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
        }
        let ours_alive = shims
            .iter()
            .any(|(_, zombie, cmd)| !zombie && cmd.contains(&socket));
        if !ours_alive || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Containerd {
    pub fn start() -> Result<Self> {
        become_subreaper();
        let dir = tempfile::Builder::new().prefix("berth-ctd-").tempdir()?;
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let socket = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"#,
                root = root.display(),
                state = state.display(),
                sock = socket.display()
            ),
        )?;
        let mut me = Containerd {
            dir,
            socket,
            child: None,
        };
        me.spawn()?;
        Ok(me)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn containerd")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("containerd exited early ({status}): {}", self.log());
                }
            }
            if Instant::now() > deadline {
                bail!("containerd socket did not appear: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stop containerd (by PID) and start it again on the same root, state
    /// and socket; running shims and their containers are left alone, as
    /// when a host's containerd is upgraded or crashes.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "containerd");
        }
        self.spawn()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn ctr(&self, ns: &str, args: &[&str]) -> Option<String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(ns)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Remove every task and container in every namespace (shims exit when
    /// their task is deleted).
    fn remove_all_containers(&self) {
        let namespaces = self
            .ctr("default", &["namespaces", "ls", "-q"])
            .unwrap_or_default();
        for ns in namespaces.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let tasks = self.ctr(ns, &["tasks", "ls", "-q"]).unwrap_or_default();
            for t in tasks.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = self.ctr(ns, &["tasks", "rm", "-f", t]);
            }
            let cs = self
                .ctr(ns, &["containers", "ls", "-q"])
                .unwrap_or_default();
            for c in cs.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = self.ctr(ns, &["containers", "rm", c]);
            }
        }
    }

    /// PIDs recorded in shim bundle dirs (`init.pid`, `shim.pid`).
    fn recorded_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        let tasks = self.state_dir().join("io.containerd.runtime.v2.task");
        let Ok(namespaces) = std::fs::read_dir(tasks) else {
            return pids;
        };
        for ns in namespaces.flatten() {
            let Ok(bundles) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for b in bundles.flatten() {
                for f in ["init.pid", "shim.pid"] {
                    if let Ok(s) = std::fs::read_to_string(b.path().join(f)) {
                        if let Ok(pid) = s.trim().parse::<i32>() {
                            pids.push(pid);
                        }
                    }
                }
            }
        }
        pids
    }

    fn unmount_leftovers(&self) {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let base = self.dir.path().to_string_lossy().into_owned();
        let mut points: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|p| p.starts_with(&base))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(Path::new(&p), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.remove_all_containers();
        }
        for pid in self.recorded_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "containerd");
        }
        reap_shims(&self.socket, Duration::from_secs(5));
        self.unmount_leftovers();
    }
}

/// A local `docker-registry` serving plain HTTP on 127.0.0.1:<free port>.
pub struct Registry {
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`
    pub addr: String,
    child: Option<Child>,
}

pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Registry {
    pub fn start() -> Result<Self> {
        Self::start_inner(None)
    }

    /// A registry that demands HTTP basic auth; `htpasswd_line` is
    /// `user:<bcrypt hash>`.
    pub fn start_with_auth(htpasswd_line: &str) -> Result<Self> {
        Self::start_inner(Some(htpasswd_line))
    }

    fn start_inner(htpasswd_line: Option<&str>) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("berth-reg-").tempdir()?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("registry.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some(line) = htpasswd_line {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{line}\n"))?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, yaml)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn docker-registry")?;
        let mut me = Registry {
            dir,
            addr,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&me.addr).is_ok() {
                break;
            }
            if let Some(c) = me.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("registry exited early ({status})");
                }
            }
            if Instant::now() > deadline {
                bail!("registry did not listen on {}", me.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(me)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "docker-registry");
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What a pushed test image is made of.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// `127.0.0.1:<port>/<repo>:<tag>`
    pub reference: String,
    pub manifest_digest: String,
    /// Diff id of the busybox layer (= its chain id, as the bottom layer).
    pub diff_id: String,
    pub layer_digest: String,
}

/// Applets linked to busybox in the test image.
const APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "true", "false", "httpd", "cat", "ls", "pwd", "env", "id", "wget",
    "trap", "kill", "ps", "touch", "wc", "grep", "mkdir",
];

/// The single image layer: `/bin/busybox` + applet symlinks + minimal
/// `/etc/passwd`, `/etc/group`, and an empty `/tmp`. Returns (uncompressed tar, gzip).
pub fn busybox_layer() -> Result<(Vec<u8>, Vec<u8>)> {
    let busybox = std::fs::read("/bin/busybox").context("read host /bin/busybox")?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = |path: &str, mode: u32| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, std::io::empty())?;
        Ok(())
    };
    for (d, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("srv", 0o755),
    ] {
        dir(d, mode)?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "bin/busybox", busybox.as_slice())?;
    for applet in APPLETS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    let files: [(&str, &str); 2] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nweb:x:1000:1001:web:/srv:/bin/sh\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\nwww:x:1001:web\nstaff:x:50:\n"),
    ];
    for (path, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, body.as_bytes())?;
    }
    let raw = tar.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw)?;
    Ok((raw, gz.finish()?))
}

/// A request with basic auth when credentials are given.
fn authed(rb: reqwest::RequestBuilder, auth: &Option<(String, String)>) -> reqwest::RequestBuilder {
    match auth {
        Some((u, p)) => rb.basic_auth(u, Some(p)),
        None => rb,
    }
}

/// A second layer: `/data/blob` with `size` pseudo-random (incompressible)
/// bytes, and `/etc/motd`. Returns (uncompressed tar, gzip).
pub fn data_layer(size: usize) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut blob = Vec::with_capacity(size);
    while blob.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        blob.extend_from_slice(&state.to_le_bytes());
    }
    blob.truncate(size);
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "data", std::io::empty())?;
    for (path, body) in [
        ("data/blob", blob.as_slice()),
        ("etc/motd", b"second layer\n".as_slice()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, body)?;
    }
    let raw = tar.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw)?;
    Ok((raw, gz.finish()?))
}

async fn push_blob(
    http: &reqwest::Client,
    auth: &Option<(String, String)>,
    registry: &str,
    repo: &str,
    data: &[u8],
) -> Result<String> {
    let digest = sha256(data);
    let head = authed(
        http.head(format!("http://{registry}/v2/{repo}/blobs/{digest}")),
        auth,
    )
    .send()
    .await?;
    if head.status().is_success() {
        return Ok(digest);
    }
    let start = authed(
        http.post(format!("http://{registry}/v2/{repo}/blobs/uploads/")),
        auth,
    )
    .send()
    .await?;
    if start.status() != reqwest::StatusCode::ACCEPTED {
        bail!("start upload: {}", start.status());
    }
    let location = start
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("upload location")?
        .to_string();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{registry}{location}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let put = authed(http.put(format!("{url}{sep}digest={digest}")), auth)
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await?;
    if put.status() != reqwest::StatusCode::CREATED {
        bail!(
            "finish upload: {} {}",
            put.status(),
            put.text().await.unwrap_or_default()
        );
    }
    Ok(digest)
}

async fn put_manifest(
    http: &reqwest::Client,
    auth: &Option<(String, String)>,
    registry: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Result<()> {
    let put = authed(
        http.put(format!("http://{registry}/v2/{repo}/manifests/{reference}")),
        auth,
    )
    .header("content-type", media_type)
    .body(body.to_vec())
    .send()
    .await?;
    if put.status() != reqwest::StatusCode::CREATED {
        bail!(
            "push manifest: {} {}",
            put.status(),
            put.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Options for [`push_busybox`].
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// Leave `mediaType` out of the manifest JSON (as umoci/skopeo may).
    pub omit_media_type: bool,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// Extra bytes in the config (a label) so two tags get different digests.
    pub label: Option<String>,
    /// Push an OCI index (an arm64 entry first, then linux/amd64) and point
    /// the tag at the index.
    pub as_index: bool,
    /// Basic-auth credentials for the registry.
    pub auth: Option<(String, String)>,
    /// Add a second layer ([`data_layer`]) of this many random bytes.
    pub data_layer_bytes: Option<usize>,
    /// Declare the busybox layer this many bytes smaller than it is (a
    /// lying manifest).
    pub understate_layer_by: usize,
}

const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Build the busybox test image and push it as `repo:tag` to `registry`.
pub async fn push_busybox(
    registry: &str,
    repo: &str,
    tag: &str,
    opts: &ImageOptions,
) -> Result<PushedImage> {
    let (raw, gz) = busybox_layer()?;
    let diff_id = sha256(&raw);
    let http = reqwest::Client::builder().no_proxy().build()?;
    let auth = &opts.auth;
    let layer_digest = push_blob(&http, auth, registry, repo, &gz).await?;
    let mut diff_ids = vec![diff_id.clone()];
    let mut layers = vec![serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": layer_digest,
        "size": gz.len() - opts.understate_layer_by,
    })];
    if let Some(size) = opts.data_layer_bytes {
        let (raw2, gz2) = data_layer(size)?;
        let digest2 = push_blob(&http, auth, registry, repo, &gz2).await?;
        diff_ids.push(sha256(&raw2));
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest2,
            "size": gz2.len(),
        }));
    }
    let mut env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    env.extend(opts.env.iter().cloned());
    let mut container_config = serde_json::json!({"Cmd": ["sh"], "Env": env});
    if let Some(wd) = &opts.working_dir {
        container_config["WorkingDir"] = serde_json::json!(wd);
    }
    if let Some(label) = &opts.label {
        container_config["Labels"] = serde_json::json!({"test": label});
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "berth test image"}],
    }))?;
    let config_digest = push_blob(&http, auth, registry, repo, &config).await?;
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers,
    });
    if opts.omit_media_type {
        if let Some(obj) = manifest.as_object_mut() {
            obj.remove("mediaType");
        }
    }
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = sha256(&manifest_bytes);
    let reference = format!("{registry}/{repo}:{tag}");
    if !opts.as_index {
        put_manifest(
            &http,
            auth,
            registry,
            repo,
            tag,
            MT_MANIFEST,
            &manifest_bytes,
        )
        .await?;
        return Ok(PushedImage {
            reference,
            manifest_digest,
            diff_id,
            layer_digest,
        });
    }
    put_manifest(
        &http,
        auth,
        registry,
        repo,
        &manifest_digest,
        MT_MANIFEST,
        &manifest_bytes,
    )
    .await?;
    // The arm64 entry is a real manifest whose config says Cmd
    // ["wrong-platform"]: a test can tell which entry a pull chose.
    let arm_config = serde_json::to_vec(&serde_json::json!({
        "architecture": "arm64",
        "os": "linux",
        "config": {"Cmd": ["wrong-platform"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))?;
    let arm_config_digest = push_blob(&http, auth, registry, repo, &arm_config).await?;
    let arm_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": arm_config_digest,
            "size": arm_config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": gz.len(),
        }],
    }))?;
    let arm_digest = sha256(&arm_manifest);
    put_manifest(
        &http,
        auth,
        registry,
        repo,
        &arm_digest,
        MT_MANIFEST,
        &arm_manifest,
    )
    .await?;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": MT_MANIFEST,
                "digest": arm_digest,
                "size": arm_manifest.len(),
                "platform": {"architecture": "arm64", "os": "linux"},
            },
            {
                "mediaType": MT_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_bytes.len(),
                "platform": {"architecture": "amd64", "os": "linux"},
            },
        ],
    }))?;
    put_manifest(
        &http,
        auth,
        registry,
        repo,
        tag,
        "application/vnd.oci.image.index.v1+json",
        &index,
    )
    .await?;
    Ok(PushedImage {
        reference,
        manifest_digest: sha256(&index),
        diff_id,
        layer_digest,
    })
}
