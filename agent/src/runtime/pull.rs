//! Image pull without containerd's transfer service (containerd 1.6 has none):
//! resolve the reference against the registry with `oci-client`, stream
//! missing blobs into the content store under a lease, unpack layers into
//! `overlayfs` snapshots named by chain id through the diff service, label
//! the config so GC keeps the unpacked chain, and record the image.
//!
//! The pure half (reference normalization, manifest and config parsing,
//! platform choice, chain ids, lease expiry timestamps, error wording) is
//! at the top and table-tested; the gRPC half is `impl ContainerdRuntime`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, CreateRequest as CreateLeaseRequest,
    DeleteRequest as DeleteLeaseRequest, GetImageRequest, Image, InfoRequest, ReadContentRequest,
    UpdateImageRequest, UpdateRequest as UpdateContentRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types::{Descriptor, Mount};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tonic::Code;

use super::containerd::{CachedImage, ContainerdRuntime, SNAPSHOTTER};
use super::{ImageConfig, RuntimeError};

/// Manifest media types we ask the registry for.
const ACCEPT: &[&str] = &[
    MT_OCI_MANIFEST,
    MT_OCI_INDEX,
    MT_DOCKER_MANIFEST,
    MT_DOCKER_LIST,
];
const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MT_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Largest image config accepted (they are a few KiB in practice); the
/// manifest's claim is checked before anything is allocated for it.
const MAX_CONFIG_BYTES: i64 = 16 << 20;
/// Layers downloaded at the same time during one pull.
const PARALLEL_LAYER_DOWNLOADS: usize = 3;
/// Size of each `Content.Write` message when streaming a layer.
const WRITE_CHUNK: usize = 1 << 20;
/// A crashed pull's lease (and everything only it holds) expires after this.
const LEASE_TTL: Duration = Duration::from_secs(3600);

pub const LABEL_GC_EXPIRE: &str = "containerd.io/gc.expire";
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
pub const LABEL_GC_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.overlayfs";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PullError {
    #[error("invalid image reference {reference:?}: {cause}")]
    Reference { reference: String, cause: String },
    #[error("pull image manifest for {image}: {cause}")]
    Manifest { image: String, cause: String },
    #[error("pull image config for {image}: {cause}")]
    Config { image: String, cause: String },
    #[error("pull image layer {digest} for {image}: {cause}")]
    Layer {
        image: String,
        digest: String,
        cause: String,
    },
    #[error("unpack image {image}: {cause}")]
    Unpack { image: String, cause: String },
    #[error("store image {image} in containerd: {cause}")]
    Store { image: String, cause: String },
}

impl From<PullError> for RuntimeError {
    fn from(e: PullError) -> Self {
        RuntimeError::Pull(e.to_string())
    }
}

/// Parse an image reference with Docker's defaults (`busybox` →
/// `docker.io/library/busybox:latest`).
pub fn parse_reference(image: &str) -> Result<Reference, PullError> {
    image
        .parse::<Reference>()
        .map_err(|e| PullError::Reference {
            reference: image.to_string(),
            cause: e.to_string(),
        })
}

/// The name containerd's image record gets (`docker.io/library/busybox:latest`).
pub fn image_name(image: &str) -> Result<String, PullError> {
    parse_reference(image).map(|r| r.whole())
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Desc {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Debug, Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: i64,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
    #[serde(default)]
    manifests: Option<Vec<Desc>>,
}

/// A manifest or index, with its media type settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Index {
        media_type: String,
        manifests: Vec<Desc>,
    },
    Image {
        media_type: String,
        config: Desc,
        layers: Vec<Desc>,
    },
}

impl Manifest {
    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Index { media_type, .. } | Manifest::Image { media_type, .. } => media_type,
        }
    }
}

/// Parse manifest JSON; infer `mediaType` when it is missing (umoci/skopeo
/// omit it): `manifests` means an OCI index, `config` an OCI manifest.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid manifest JSON: {e}"))?;
    if raw.schema_version != 2 {
        return Err(format!(
            "unsupported manifest schemaVersion {}",
            raw.schema_version
        ));
    }
    let is_index = match raw.media_type.as_deref() {
        Some(MT_OCI_INDEX) | Some(MT_DOCKER_LIST) => true,
        Some(MT_OCI_MANIFEST) | Some(MT_DOCKER_MANIFEST) => false,
        Some(other) => return Err(format!("unsupported manifest media type {other}")),
        None => raw.manifests.is_some(),
    };
    if is_index {
        let media_type = raw.media_type.unwrap_or_else(|| MT_OCI_INDEX.to_string());
        return Ok(Manifest::Index {
            media_type,
            manifests: raw.manifests.unwrap_or_default(),
        });
    }
    let mut config = raw
        .config
        .ok_or_else(|| "manifest has no config descriptor".to_string())?;
    if config.media_type.is_empty() {
        config.media_type = MT_OCI_CONFIG.to_string();
    }
    let layers = raw
        .layers
        .into_iter()
        .map(|mut l| {
            if l.media_type.is_empty() {
                l.media_type = MT_OCI_LAYER_GZIP.to_string();
            }
            l
        })
        .collect();
    Ok(Manifest::Image {
        media_type: raw
            .media_type
            .unwrap_or_else(|| MT_OCI_MANIFEST.to_string()),
        config,
        layers,
    })
}

/// Pick linux/amd64 from an index; an index with a single entry and no
/// platform information is taken as is. Returns the entry's position too.
pub fn select_platform(manifests: &[Desc]) -> Option<(usize, &Desc)> {
    manifests
        .iter()
        .enumerate()
        .find(|(_, d)| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .or_else(|| match manifests {
            [only] if only.platform.is_none() => Some((0, only)),
            _ => None,
        })
}

#[derive(Debug, Default, Deserialize)]
struct RawImageConfig {
    #[serde(default)]
    config: Option<RawContainerConfig>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Debug, Default, Deserialize)]
struct RawContainerConfig {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// An image config reduced to what a container needs, plus its layer diff ids.
pub fn parse_image_config(
    bytes: &[u8],
    digest: &str,
) -> Result<(ImageConfig, Vec<String>), String> {
    let raw: RawImageConfig =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid image config JSON: {e}"))?;
    let c = raw.config.unwrap_or_default();
    let diff_ids = raw.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    Ok((
        ImageConfig {
            digest: digest.to_string(),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.filter(|s| !s.is_empty()),
            user: c.user.filter(|s| !s.is_empty()),
        },
        diff_ids,
    ))
}

/// Chain ids: chain(0) = diff(0); chain(n) = sha256(chain(n-1) + " " + diff(n)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(prev) => {
                let h = Sha256::digest(format!("{prev} {diff}").as_bytes());
                format!("sha256:{}", hex::encode(h))
            }
        };
        out.push(next);
    }
    out
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// RFC 3339 UTC timestamp (`2026-11-22T03:04:05Z`) for `secs` since the epoch.
pub fn rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The registry's own words for a failure (`manifest unknown`), else the
/// error with its source chain (TLS and connection errors hide there).
pub fn registry_cause(e: &oci_client::errors::OciDistributionError) -> String {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::RegistryError { envelope, .. } if !envelope.errors.is_empty() => envelope
            .errors
            .iter()
            .map(|err| {
                if err.message.is_empty() {
                    format!("{:?}", err.code).to_lowercase()
                } else {
                    err.message.clone()
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => error_chain(other),
    }
}

/// `err: source: source...`, skipping sources whose text is already included.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Everything known about an image after resolving it.
struct Resolved {
    name: String,
    reference: Reference,
    /// What the tag points at (index or manifest).
    top: Desc,
    top_bytes: Bytes,
    /// Set when `top` is an index: the chosen manifest's position in it.
    index_entry: Option<usize>,
    manifest: Desc,
    manifest_bytes: Bytes,
    config: Desc,
    layers: Vec<Desc>,
}

impl ContainerdRuntime {
    fn registry_auth(&self, reference: &Reference) -> RegistryAuth {
        let host = reference.registry();
        match self
            .registries
            .auth
            .get(host)
            .or_else(|| self.registries.auth.get(reference.resolve_registry()))
        {
            Some((user, pass)) => RegistryAuth::Basic(user.clone(), pass.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Fetch a manifest (or index) by reference; the digest is verified by
    /// oci-client against the registry's header or the reference's digest.
    async fn fetch_manifest(
        &self,
        name: &str,
        reference: &Reference,
        auth: &RegistryAuth,
    ) -> Result<(Bytes, String), PullError> {
        self.oci
            .pull_manifest_raw(reference, auth, ACCEPT)
            .await
            .map_err(|e| PullError::Manifest {
                image: name.to_string(),
                cause: registry_cause(&e),
            })
    }

    async fn resolve(&self, image: &str) -> Result<Resolved, PullError> {
        let reference = parse_reference(image)?;
        let name = reference.whole();
        let auth = self.registry_auth(&reference);
        let manifest_err = |cause: String| PullError::Manifest {
            image: name.clone(),
            cause,
        };
        let (top_bytes, top_digest) = self.fetch_manifest(&name, &reference, &auth).await?;
        let top_parsed = parse_manifest(&top_bytes).map_err(manifest_err)?;
        let top = Desc {
            media_type: top_parsed.media_type().to_string(),
            digest: top_digest,
            size: top_bytes.len() as i64,
            platform: None,
        };
        let (index_entry, manifest, manifest_bytes, parsed) = match top_parsed {
            Manifest::Image { .. } => (None, top.clone(), top_bytes.clone(), top_parsed),
            Manifest::Index { manifests, .. } => {
                let (pos, entry) = select_platform(&manifests).ok_or_else(|| {
                    manifest_err("no linux/amd64 manifest in the image index".to_string())
                })?;
                let by_digest = reference.clone_with_digest(entry.digest.clone());
                let (bytes, digest) = self.fetch_manifest(&name, &by_digest, &auth).await?;
                let parsed = parse_manifest(&bytes).map_err(manifest_err)?;
                if matches!(parsed, Manifest::Index { .. }) {
                    return Err(manifest_err("nested image index".to_string()));
                }
                let desc = Desc {
                    media_type: parsed.media_type().to_string(),
                    digest,
                    size: bytes.len() as i64,
                    platform: None,
                };
                (Some(pos), desc, bytes, parsed)
            }
        };
        let (config, layers) = match parsed {
            Manifest::Image { config, layers, .. } => (config, layers),
            Manifest::Index { .. } => return Err(manifest_err("nested image index".to_string())),
        };
        Ok(Resolved {
            name,
            reference,
            top,
            top_bytes,
            index_entry,
            manifest,
            manifest_bytes,
            config,
            layers,
        })
    }

    /// Pull `image`: resolve the tag every time (so a moved tag is noticed),
    /// then do only the work that is missing. If the registry cannot resolve
    /// the reference but the image is already here, the local image is used.
    pub(super) async fn pull_image(&self, image: &str) -> Result<ImageConfig, PullError> {
        let started = Instant::now();
        let r = match self.resolve(image).await {
            Ok(r) => r,
            // As ECS's default pull behaviour: if the registry cannot be
            // asked, an image already on this host is used, so a registry
            // outage does not stop tasks from (re)starting.
            Err(e @ PullError::Manifest { .. }) => {
                let name = image_name(image)?;
                return match self.local_image(&name).await {
                    Ok(Some(local)) => {
                        tracing::warn!(image = %name, error = %e, "pull failed; using the image already on this host");
                        Ok(local.config)
                    }
                    _ => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let store_err = |cause: String| PullError::Store {
            image: r.name.clone(),
            cause,
        };

        if let Some(cached) = self.cached_image(&r.name) {
            if cached.target_digest == r.top.digest
                && self
                    .snapshot_exists(&cached.top_chain)
                    .await
                    .map_err(store_err)?
            {
                tracing::debug!(image = %r.name, ms = started.elapsed().as_millis() as u64, "pull: up to date (cached)");
                return Ok(cached.config);
            }
        }

        // The config: from the content store if present, else the registry.
        let config_bytes = match self.read_content(&r.config.digest).await {
            Ok(b) => Some(b),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(store_err(status_text(&s))),
        };
        let config_bytes = match config_bytes {
            Some(b) => b,
            None => {
                if !(0..=MAX_CONFIG_BYTES).contains(&r.config.size) {
                    return Err(PullError::Config {
                        image: r.name.clone(),
                        cause: format!(
                            "config size {} is outside 0..={MAX_CONFIG_BYTES} bytes",
                            r.config.size
                        ),
                    });
                }
                let config_err = |cause: String| PullError::Config {
                    image: r.name.clone(),
                    cause,
                };
                let limit = usize::try_from(r.config.size).unwrap_or(0);
                let mut buf = Vec::with_capacity(limit);
                let mut stream = self
                    .oci
                    .pull_blob_stream(&r.reference, r.config.digest.as_str())
                    .await
                    .map_err(|e| config_err(registry_cause(&e)))?
                    .stream;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| config_err(format!("download failed: {e}")))?;
                    if buf.len() + chunk.len() > limit {
                        return Err(config_err(format!(
                            "registry sent more than the {limit} bytes the manifest declares"
                        )));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Bytes::from(buf)
            }
        };
        if sha256_digest(&config_bytes) != r.config.digest {
            return Err(PullError::Config {
                image: r.name.clone(),
                cause: format!("config digest mismatch (expected {})", r.config.digest),
            });
        }
        let (config, diff_ids) =
            parse_image_config(&config_bytes, &r.top.digest).map_err(|cause| {
                PullError::Config {
                    image: r.name.clone(),
                    cause,
                }
            })?;
        if diff_ids.len() != r.layers.len() {
            return Err(PullError::Config {
                image: r.name.clone(),
                cause: format!(
                    "config lists {} diff ids for {} layers",
                    diff_ids.len(),
                    r.layers.len()
                ),
            });
        }
        let chains = chain_ids(&diff_ids);
        let top_chain = chains.last().cloned().unwrap_or_default();

        // Already complete in containerd (e.g. pulled before an agent restart)?
        let record = self.get_image_record(&r.name).await.map_err(store_err)?;
        if record
            .as_ref()
            .and_then(|i| i.target.as_ref())
            .map(|t| t.digest.as_str())
            == Some(r.top.digest.as_str())
            && self.snapshot_exists(&top_chain).await.map_err(store_err)?
        {
            self.remember_image(&r.name, &r.top.digest, &config, &top_chain);
            tracing::debug!(image = %r.name, ms = started.elapsed().as_millis() as u64, "pull: up to date (store)");
            return Ok(config);
        }

        let lease = self.create_lease().await.map_err(store_err)?;
        let result = self
            .pull_into_store(
                &r,
                &lease,
                &config_bytes,
                &diff_ids,
                &chains,
                record.is_some(),
            )
            .await;
        if let Err(e) = self.delete_lease(&lease).await {
            tracing::warn!(lease = %lease, error = %e, "pull: could not delete lease; it expires on its own");
        }
        result?;
        self.remember_image(&r.name, &r.top.digest, &config, &top_chain);
        tracing::debug!(image = %r.name, ms = started.elapsed().as_millis() as u64, "pull: done");
        Ok(config)
    }

    async fn pull_into_store(
        &self,
        r: &Resolved,
        lease: &str,
        config_bytes: &Bytes,
        diff_ids: &[String],
        chains: &[String],
        record_exists: bool,
    ) -> Result<(), PullError> {
        let store_err = |cause: String| PullError::Store {
            image: r.name.clone(),
            cause,
        };
        // Layers: stream the missing ones from the registry into the store,
        // a few at a time (unpacking below needs them all anyway).
        let mut missing = Vec::new();
        for (layer, diff_id) in r.layers.iter().zip(diff_ids) {
            if !self
                .content_exists(&layer.digest)
                .await
                .map_err(store_err)?
            {
                missing.push((layer, diff_id));
            }
        }
        // Owned inputs and boxed futures: a closure here trips the
        // higher-ranked `Send` check of the trait's returned future.
        let mut downloads: Vec<futures::future::BoxFuture<'_, Result<(), PullError>>> = Vec::new();
        for (layer, diff_id) in missing {
            let layer = layer.clone();
            let diff_id = diff_id.clone();
            let image = r.name.clone();
            let reference = r.reference.clone();
            downloads.push(Box::pin(async move {
                let layer_err = |cause: String| PullError::Layer {
                    image: image.clone(),
                    digest: layer.digest.clone(),
                    cause,
                };
                let sized = self
                    .oci
                    .pull_blob_stream(&reference, layer.digest.as_str())
                    .await
                    .map_err(|e| layer_err(registry_cause(&e)))?;
                let labels = HashMap::from([(LABEL_UNCOMPRESSED.to_string(), diff_id)]);
                self.write_content(lease, &layer, labels, sized.stream)
                    .await
                    .map_err(layer_err)
            }));
        }
        futures::stream::iter(downloads)
            .buffer_unordered(PARALLEL_LAYER_DOWNLOADS)
            .try_collect::<Vec<()>>()
            .await?;

        // Config.
        if !self
            .content_exists(&r.config.digest)
            .await
            .map_err(store_err)?
        {
            let data = futures::stream::once({
                let b = config_bytes.clone();
                async move { Ok::<Bytes, std::io::Error>(b) }
            })
            .boxed();
            self.write_content(lease, &r.config, HashMap::new(), data)
                .await
                .map_err(store_err)?;
        }

        // Unpack.
        for (i, (layer, chain)) in r.layers.iter().zip(chains).enumerate() {
            if self.snapshot_exists(chain).await.map_err(store_err)? {
                continue;
            }
            let parent = if i == 0 { "" } else { chains[i - 1].as_str() };
            self.unpack_layer(lease, layer, &diff_ids[i], chain, parent)
                .await
                .map_err(|cause| PullError::Unpack {
                    image: r.name.clone(),
                    cause,
                })?;
        }
        if let Some(top_chain) = chains.last() {
            self.label_content(&r.config.digest, LABEL_GC_SNAPSHOT, top_chain)
                .await
                .map_err(store_err)?;
        }

        // Manifest, labelled so GC keeps config and layers while it lives.
        let mut labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            r.config.digest.clone(),
        )]);
        for (i, l) in r.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        self.ensure_small_blob(lease, &r.manifest, &r.manifest_bytes, labels)
            .await
            .map_err(store_err)?;
        if let Some(pos) = r.index_entry {
            let labels = HashMap::from([(
                format!("containerd.io/gc.ref.content.m.{pos}"),
                r.manifest.digest.clone(),
            )]);
            self.ensure_small_blob(lease, &r.top, &r.top_bytes, labels)
                .await
                .map_err(store_err)?;
        }

        let image = Image {
            name: r.name.clone(),
            labels: HashMap::new(),
            target: Some(Descriptor {
                media_type: r.top.media_type.clone(),
                digest: r.top.digest.clone(),
                size: r.top.size,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        self.put_image_record(image, record_exists)
            .await
            .map_err(store_err)
    }

    async fn ensure_small_blob(
        &self,
        lease: &str,
        desc: &Desc,
        bytes: &Bytes,
        labels: HashMap<String, String>,
    ) -> Result<(), String> {
        if self.content_exists(&desc.digest).await? {
            return Ok(());
        }
        let b = bytes.clone();
        let data = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(b) }).boxed();
        self.write_content(lease, desc, labels, data).await
    }

    async fn put_image_record(&self, image: Image, exists: bool) -> Result<(), String> {
        let mut images = self.images_client();
        if !exists {
            let created = images
                .create(self.req(CreateImageRequest {
                    image: Some(image.clone()),
                    source_date_epoch: None,
                }))
                .await;
            match created {
                Ok(_) => return Ok(()),
                Err(s) if s.code() == Code::AlreadyExists => {}
                Err(s) => return Err(format!("Images.Create: {}", status_text(&s))),
            }
        }
        images
            .update(self.req(UpdateImageRequest {
                image: Some(image),
                update_mask: None,
                source_date_epoch: None,
            }))
            .await
            .map(|_| ())
            .map_err(|s| format!("Images.Update: {}", status_text(&s)))
    }

    pub(super) async fn get_image_record(&self, name: &str) -> Result<Option<Image>, String> {
        match self
            .images_client()
            .get(self.req(GetImageRequest {
                name: name.to_string(),
            }))
            .await
        {
            Ok(resp) => Ok(resp.into_inner().image),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(format!("Images.Get: {}", status_text(&s))),
        }
    }

    async fn create_lease(&self) -> Result<String, String> {
        let id = format!("berth-pull-{}", uuid::Uuid::new_v4().simple());
        let expire = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(LEASE_TTL)
            .as_secs();
        let labels = HashMap::from([(LABEL_GC_EXPIRE.to_string(), rfc3339_utc(expire))]);
        self.leases_client()
            .create(self.req(CreateLeaseRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| format!("Leases.Create: {}", status_text(&s)))?;
        Ok(id)
    }

    async fn delete_lease(&self, id: &str) -> Result<(), String> {
        match self
            .leases_client()
            .delete(self.req(DeleteLeaseRequest {
                id: id.to_string(),
                sync: false,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(format!("Leases.Delete: {}", status_text(&s))),
        }
    }

    async fn content_exists(&self, digest: &str) -> Result<bool, String> {
        match self
            .content_client()
            .info(self.req(InfoRequest {
                digest: digest.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(format!("Content.Info {digest}: {}", status_text(&s))),
        }
    }

    /// Read a whole blob from the content store.
    pub(super) async fn read_content(&self, digest: &str) -> Result<Bytes, tonic::Status> {
        let mut stream = self
            .content_client()
            .read(self.req(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(msg) = stream.message().await? {
            out.extend_from_slice(&msg.data);
        }
        Ok(Bytes::from(out))
    }

    async fn label_content(&self, digest: &str, key: &str, value: &str) -> Result<(), String> {
        let info = containerd_client::services::v1::Info {
            digest: digest.to_string(),
            size: 0,
            created_at: None,
            updated_at: None,
            labels: HashMap::from([(key.to_string(), value.to_string())]),
        };
        self.content_client()
            .update(self.req(UpdateContentRequest {
                info: Some(info),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![format!("labels.{key}")],
                }),
            }))
            .await
            .map(|_| ())
            .map_err(|s| format!("Content.Update {digest}: {}", status_text(&s)))
    }

    pub(super) async fn snapshot_exists(&self, key: &str) -> Result<bool, String> {
        if key.is_empty() {
            return Ok(true);
        }
        match self
            .snapshots_client()
            .stat(self.req(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: key.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(format!("Snapshots.Stat {key}: {}", status_text(&s))),
        }
    }

    /// Stream `data` into the content store as `desc` under `lease`: Write
    /// messages carrying the current offset, then Commit with the expected
    /// digest and labels. AlreadyExists (someone else finished it) is success.
    async fn write_content(
        &self,
        lease: &str,
        desc: &Desc,
        labels: HashMap<String, String>,
        mut data: BoxStream<'static, Result<Bytes, std::io::Error>>,
    ) -> Result<(), String> {
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(2);
        let write_ref = format!("berth-{}-{}", desc.digest, uuid::Uuid::new_v4().simple());
        let expected = desc.digest.clone();
        let total = desc.size;
        let producer = tokio::spawn(async move {
            let msg =
                |action: WriteAction, offset: i64, data: Vec<u8>, labels| WriteContentRequest {
                    action: action as i32,
                    r#ref: write_ref.clone(),
                    total,
                    expected: expected.clone(),
                    offset,
                    data,
                    labels,
                };
            let mut offset: i64 = 0;
            let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
            loop {
                let chunk = data.next().await;
                let flush = match &chunk {
                    Some(Ok(b)) => {
                        if offset + (buf.len() + b.len()) as i64 > total {
                            return Err(format!(
                                "registry sent more than the {total} bytes the manifest declares"
                            ));
                        }
                        buf.extend_from_slice(b);
                        buf.len() >= WRITE_CHUNK
                    }
                    Some(Err(e)) => return Err(format!("download failed: {e}")),
                    None => !buf.is_empty(),
                };
                if flush {
                    let n = buf.len() as i64;
                    let out = std::mem::replace(&mut buf, Vec::with_capacity(WRITE_CHUNK));
                    if tx
                        .send(msg(WriteAction::Write, offset, out, HashMap::new()))
                        .await
                        .is_err()
                    {
                        return Err("containerd closed the write stream".to_string());
                    }
                    offset += n;
                }
                if chunk.is_none() {
                    break;
                }
            }
            if offset != total {
                return Err(format!(
                    "size mismatch: received {offset} bytes, manifest says {total}"
                ));
            }
            tx.send(msg(WriteAction::Commit, offset, Vec::new(), labels))
                .await
                .map_err(|_| "containerd closed the write stream".to_string())
        });

        let rpc = async {
            let mut stream = self
                .content_client()
                .write(self.leased(tokio_stream::wrappers::ReceiverStream::new(rx), lease))
                .await?
                .into_inner();
            let mut committed = false;
            while let Some(resp) = stream.message().await? {
                if resp.action == WriteAction::Commit as i32 {
                    committed = true;
                }
            }
            Ok::<bool, tonic::Status>(committed)
        }
        .await;
        if matches!(&rpc, Err(s) if s.code() == Code::AlreadyExists) {
            producer.abort();
            return Ok(());
        }
        let produced = producer
            .await
            .map_err(|e| format!("write task failed: {e}"))?;
        match (rpc, produced) {
            (Ok(true), _) => Ok(()),
            (_, Err(e)) if !e.starts_with("containerd closed") => Err(e),
            (Err(s), _) => Err(format!(
                "Content.Write {}: {}",
                desc.digest,
                status_text(&s)
            )),
            (Ok(false), _) => Err(format!(
                "Content.Write {}: stream ended without commit",
                desc.digest
            )),
        }
    }

    /// Prepare an active snapshot on `parent`, apply the layer with the diff
    /// service, check the result is `diff_id`, commit it as `chain`.
    async fn unpack_layer(
        &self,
        lease: &str,
        layer: &Desc,
        diff_id: &str,
        chain: &str,
        parent: &str,
    ) -> Result<(), String> {
        let key = format!("berth-extract-{}-{chain}", uuid::Uuid::new_v4().simple());
        let mounts: Vec<Mount> = self
            .snapshots_client()
            .prepare(self.leased(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.clone(),
                    parent: parent.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|s| format!("Snapshots.Prepare {chain}: {}", status_text(&s)))?
            .into_inner()
            .mounts;
        let result = async {
            let applied = self
                .diff_client()
                .apply(self.req(ApplyRequest {
                    diff: Some(Descriptor {
                        media_type: layer.media_type.clone(),
                        digest: layer.digest.clone(),
                        size: layer.size,
                        annotations: HashMap::new(),
                    }),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                }))
                .await
                .map_err(|s| format!("Diff.Apply {}: {}", layer.digest, status_text(&s)))?
                .into_inner()
                .applied
                .map(|d| d.digest)
                .unwrap_or_default();
            if applied != diff_id {
                return Err(format!(
                    "layer {} unpacked to {applied}, config says {diff_id}",
                    layer.digest
                ));
            }
            match self
                .snapshots_client()
                .commit(self.leased(
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.to_string(),
                        name: chain.to_string(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await
            {
                Ok(_) => Ok(true),
                Err(s) if s.code() == Code::AlreadyExists => Ok(false),
                Err(s) => Err(format!("Snapshots.Commit {chain}: {}", status_text(&s))),
            }
        }
        .await;
        // On failure, or when another pull committed the chain first, the
        // active snapshot is ours to remove.
        if !matches!(result, Ok(true)) {
            let _ = self
                .snapshots_client()
                .remove(self.req(RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key,
                }))
                .await;
        }
        result.map(|_| ())
    }

    /// Rebuild what a pull would have remembered from containerd alone
    /// (image record → manifest → config), or None if any part is missing.
    pub(super) async fn image_from_store(&self, name: &str) -> Result<Option<CachedImage>, String> {
        let Some(target) = self.get_image_record(name).await?.and_then(|i| i.target) else {
            return Ok(None);
        };
        let read = |digest: String| async move {
            match self.read_content(&digest).await {
                Ok(b) => Ok(Some(b)),
                Err(s) if s.code() == Code::NotFound => Ok(None),
                Err(s) => Err(format!("Content.Read {digest}: {}", status_text(&s))),
            }
        };
        let Some(top_bytes) = read(target.digest.clone()).await? else {
            return Ok(None);
        };
        let mut parsed = parse_manifest(&top_bytes)?;
        if let Manifest::Index { manifests, .. } = &parsed {
            let Some((_, entry)) = select_platform(manifests) else {
                return Ok(None);
            };
            let Some(bytes) = read(entry.digest.clone()).await? else {
                return Ok(None);
            };
            parsed = parse_manifest(&bytes)?;
        }
        let Manifest::Image { config, .. } = parsed else {
            return Ok(None);
        };
        let Some(config_bytes) = read(config.digest.clone()).await? else {
            return Ok(None);
        };
        let (image_config, diff_ids) = parse_image_config(&config_bytes, &target.digest)?;
        let top_chain = chain_ids(&diff_ids).last().cloned().unwrap_or_default();
        if !self.snapshot_exists(&top_chain).await? {
            return Ok(None);
        }
        Ok(Some(CachedImage {
            target_digest: target.digest,
            config: image_config,
            top_chain,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_normalization_table() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("127.0.0.1:5000/x:tag", "127.0.0.1:5000/x:tag"),
            ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
            ("localhost:5000/a/b:1", "localhost:5000/a/b:1"),
            ("quay.io/org/img:v2", "quay.io/org/img:v2"),
        ];
        for (input, want) in cases {
            assert_eq!(image_name(input).as_deref(), Ok(want), "{input}");
        }
        assert!(matches!(
            image_name("UPPER/Case"),
            Err(PullError::Reference { .. })
        ));
    }

    #[test]
    fn manifest_media_type_inference_table() {
        let cases: Vec<(&str, Result<&str, ()>)> = vec![
            (
                r#"{"schemaVersion":2,"config":{"digest":"sha256:c","size":1},"layers":[{"digest":"sha256:l","size":2}]}"#,
                Ok(MT_OCI_MANIFEST),
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"x","digest":"sha256:c","size":1},"layers":[]}"#,
                Ok(MT_DOCKER_MANIFEST),
            ),
            (
                r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:m","size":3}]}"#,
                Ok(MT_OCI_INDEX),
            ),
            (
                r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#,
                Ok(MT_DOCKER_LIST),
            ),
            (r#"{"schemaVersion":1,"fsLayers":[]}"#, Err(())),
            (r#"{"schemaVersion":2}"#, Err(())),
            (
                r#"{"schemaVersion":2,"mediaType":"text/plain","config":{"digest":"sha256:c","size":1}}"#,
                Err(()),
            ),
            ("not json", Err(())),
        ];
        for (json, want) in cases {
            let got = parse_manifest(json.as_bytes());
            match (got, want) {
                (Ok(m), Ok(mt)) => assert_eq!(m.media_type(), mt, "{json}"),
                (Err(_), Err(())) => {}
                (got, want) => panic!("{json}: got {got:?}, want {want:?}"),
            }
        }
        // Layers without a media type are taken as gzip OCI layers.
        let m = parse_manifest(
            br#"{"schemaVersion":2,"config":{"digest":"sha256:c","size":1},"layers":[{"digest":"sha256:l","size":2}]}"#,
        )
        .expect("parse");
        let Manifest::Image { layers, config, .. } = m else {
            panic!("not an image manifest")
        };
        assert_eq!(layers[0].media_type, MT_OCI_LAYER_GZIP);
        assert_eq!(config.media_type, MT_OCI_CONFIG);
    }

    #[test]
    fn platform_selection_table() {
        let d = |digest: &str, os: Option<(&str, &str)>| Desc {
            media_type: MT_OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: os.map(|(os, arch)| Platform {
                os: os.into(),
                architecture: arch.into(),
            }),
        };
        let cases: Vec<(Vec<Desc>, Option<&str>)> = vec![
            (
                vec![
                    d("a", Some(("linux", "arm64"))),
                    d("b", Some(("linux", "amd64"))),
                ],
                Some("b"),
            ),
            (vec![d("w", Some(("windows", "amd64")))], None),
            (vec![d("only", None)], Some("only")),
            (vec![d("x", None), d("y", None)], None),
            (vec![], None),
        ];
        for (manifests, want) in cases {
            assert_eq!(
                select_platform(&manifests).map(|(_, d)| d.digest.as_str()),
                want
            );
        }
    }

    #[test]
    fn chain_id_table() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        assert!(chain_ids(&[]).is_empty());
        assert_eq!(chain_ids(std::slice::from_ref(&a)), vec![a.clone()]);
        let two = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(two[0], a);
        assert_eq!(two[1], sha256_digest(b"sha256:aaaa sha256:bbbb"));
        let three = chain_ids(&[a.clone(), b.clone(), a.clone()]);
        assert_eq!(
            three[2],
            sha256_digest(format!("{} {}", two[1], a).as_bytes())
        );
    }

    #[test]
    fn image_config_parsing() {
        let json = br#"{"architecture":"amd64","os":"linux",
            "config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["sh"],"Env":["PATH=/bin","A=1"],"WorkingDir":"/srv","User":"nobody"},
            "rootfs":{"type":"layers","diff_ids":["sha256:d1","sha256:d2"]}}"#;
        let (cfg, diffs) = parse_image_config(json, "sha256:m").expect("parse");
        assert_eq!(
            cfg,
            ImageConfig {
                digest: "sha256:m".into(),
                entrypoint: vec!["/bin/sh".into(), "-c".into()],
                cmd: vec!["sh".into()],
                env: vec!["PATH=/bin".into(), "A=1".into()],
                working_dir: Some("/srv".into()),
                user: Some("nobody".into()),
            }
        );
        assert_eq!(
            diffs,
            vec!["sha256:d1".to_string(), "sha256:d2".to_string()]
        );
        let (bare, none) =
            parse_image_config(br#"{"config":{"WorkingDir":"","User":""}}"#, "d").expect("parse");
        assert_eq!(bare.working_dir, None);
        assert_eq!(bare.user, None);
        assert!(none.is_empty());
        assert!(parse_image_config(b"not json", "d").is_err());
    }

    #[test]
    fn rfc3339_table() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(rfc3339_utc(secs), want);
        }
    }

    #[test]
    fn pull_error_wording() {
        let e: RuntimeError = PullError::Manifest {
            image: "127.0.0.1:5000/nope:latest".into(),
            cause: "manifest unknown".into(),
        }
        .into();
        assert_eq!(
            e.to_string(),
            "CannotPullContainerError: pull image manifest for 127.0.0.1:5000/nope:latest: manifest unknown"
        );
    }
}
