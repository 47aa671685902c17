//! Importing image tarballs into containerd, as `ctr images import` does, for air-gapped sites:
//! an OCI image layout (`index.json`, `blobs/sha256/...`) or a `docker save` archive
//! (`manifest.json`; turned into a Docker schema 2 manifest here). The tarball is read twice
//! and never held whole in memory: once for its small files (indexes, manifests, configs) and
//! the digests of docker-archive layers, once to stream the blobs into containerd's content
//! store. Blobs are written under a lease and labelled so containerd's garbage collector keeps
//! what an image references; the image records go into the `k8s.io` namespace, where the CRI
//! plugin finds them (it unpacks them on first use).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use containerd_client::services::v1::{
    content_client::ContentClient, images_client::ImagesClient, leases_client::LeasesClient,
    AbortRequest, CreateImageRequest, Image, Info, InfoRequest, UpdateImageRequest, UpdateRequest,
    WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor;
use serde_json::Value;
use tonic::transport::Channel;

use super::oci::{self, MEDIA_INDEX, MEDIA_MANIFEST};
use super::ImageError;

/// The containerd namespace the CRI plugin uses.
pub const NAMESPACE: &str = "k8s.io";
/// Files up to this size are kept from the first pass (indexes, manifests, configs).
const SMALL: u64 = 1 << 20;
const CHUNK: usize = 1 << 20;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_INDEX: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A blob to put into the content store: from the tarball (`path`) or made here (`data`).
struct Blob {
    digest: String,
    size: i64,
    path: Option<String>,
    data: Option<Vec<u8>>,
    labels: HashMap<String, String>,
}

/// What the first pass learned.
struct Scan {
    small: HashMap<String, Vec<u8>>,
    sizes: HashMap<String, u64>,
    /// sha256 of every file outside `blobs/` (docker-archive layers are named by path).
    digests: HashMap<String, String>,
    gzip: HashMap<String, bool>,
}

/// What to write: blobs by digest, then the images.
#[derive(Default)]
struct Plan {
    blobs: BTreeMap<String, Blob>,
    images: Vec<(String, Descriptor)>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> ImageError {
    move |source| ImageError::Io { context, source }
}

fn clean(path: &str) -> String {
    path.trim_start_matches("./").to_string()
}

fn scan(file: &Path) -> Result<Scan, ImageError> {
    let ctx = || format!("reading {}", file.display());
    let f = std::fs::File::open(file).map_err(io(ctx()))?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    let mut scan = Scan {
        small: HashMap::new(),
        sizes: HashMap::new(),
        digests: HashMap::new(),
        gzip: HashMap::new(),
    };
    for e in ar.entries().map_err(io(ctx()))? {
        let mut e = e.map_err(io(ctx()))?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = clean(&e.path().map_err(io(ctx()))?.to_string_lossy());
        let size = e.size();
        scan.sizes.insert(path.clone(), size);
        let in_blobs = path.starts_with("blobs/");
        if size <= SMALL {
            let mut data = Vec::with_capacity(size as usize);
            e.read_to_end(&mut data).map_err(io(ctx()))?;
            if !in_blobs {
                scan.digests.insert(path.clone(), oci::digest(&data));
                scan.gzip
                    .insert(path.clone(), data.starts_with(&[0x1f, 0x8b]));
            }
            scan.small.insert(path, data);
        } else if !in_blobs {
            let mut ctx_sha = ring::digest::Context::new(&ring::digest::SHA256);
            let mut buf = vec![0u8; CHUNK];
            let mut first = true;
            loop {
                let n = e.read(&mut buf).map_err(io(ctx()))?;
                if n == 0 {
                    break;
                }
                if first {
                    scan.gzip
                        .insert(path.clone(), buf[..n].starts_with(&[0x1f, 0x8b]));
                    first = false;
                }
                ctx_sha.update(&buf[..n]);
            }
            let hex: String = ctx_sha
                .finish()
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            scan.digests.insert(path, format!("sha256:{hex}"));
        }
    }
    Ok(scan)
}

fn blob_path(digest: &str) -> Result<String, ImageError> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| ImageError::Invalid(format!("bad digest {digest:?}")))?;
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) || alg.contains('/') {
        return Err(ImageError::Invalid(format!("bad digest {digest:?}")));
    }
    Ok(format!("blobs/{alg}/{hex}"))
}

fn descriptor(v: &Value) -> Result<Descriptor, ImageError> {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let d = Descriptor {
        media_type: s("mediaType"),
        digest: s("digest"),
        size: v.get("size").and_then(Value::as_i64).unwrap_or(-1),
        annotations: HashMap::new(),
    };
    if d.digest.is_empty() || d.size < 0 {
        return Err(ImageError::Invalid(format!("bad descriptor {v}")));
    }
    Ok(d)
}

/// `busybox:latest` -> `docker.io/library/busybox:latest`, as containerd names Docker Hub images.
pub fn normalize(name: &str) -> String {
    let (repo, tail) = match name.find(['@']) {
        Some(i) => (&name[..i], &name[i..]),
        None => match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => (&name[..i], &name[i..]),
            _ => (name, ":latest"),
        },
    };
    let first = repo.split('/').next().unwrap_or_default();
    let has_domain =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let repo = if has_domain {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    format!("{repo}{tail}")
}

impl Plan {
    fn add_from_tar(&mut self, scan: &Scan, d: &Descriptor) -> Result<bool, ImageError> {
        let path = blob_path(&d.digest)?;
        if !scan.sizes.contains_key(&path) {
            return Ok(false);
        }
        self.blobs.entry(d.digest.clone()).or_insert(Blob {
            digest: d.digest.clone(),
            size: d.size,
            path: Some(path),
            data: None,
            labels: HashMap::new(),
        });
        Ok(true)
    }

    /// Walks an index or manifest in the layout, adding it and what it references.
    fn walk(&mut self, scan: &Scan, d: &Descriptor, depth: u8) -> Result<bool, ImageError> {
        if depth > 4 || !self.add_from_tar(scan, d)? {
            return Ok(false);
        }
        let path = blob_path(&d.digest)?;
        let Some(raw) = scan.small.get(&path) else {
            return Ok(true);
        };
        let mut labels = HashMap::new();
        match d.media_type.as_str() {
            MEDIA_INDEX | DOCKER_INDEX => {
                let v: Value = serde_json::from_slice(raw).map_err(ImageError::Json)?;
                let mut i = 0;
                for m in v["manifests"].as_array().into_iter().flatten() {
                    let child = descriptor(m)?;
                    // A multi-platform index often carries only this machine's platform.
                    if self.walk(scan, &child, depth + 1)? {
                        labels.insert(format!("containerd.io/gc.ref.content.m.{i}"), child.digest);
                        i += 1;
                    }
                }
            }
            MEDIA_MANIFEST | DOCKER_MANIFEST => {
                let v: Value = serde_json::from_slice(raw).map_err(ImageError::Json)?;
                let config = descriptor(&v["config"])?;
                if !self.add_from_tar(scan, &config)? {
                    return Err(ImageError::Invalid(format!(
                        "config {} is missing",
                        config.digest
                    )));
                }
                labels.insert("containerd.io/gc.ref.content.config".into(), config.digest);
                for (i, l) in v["layers"].as_array().into_iter().flatten().enumerate() {
                    let layer = descriptor(l)?;
                    if !self.add_from_tar(scan, &layer)? {
                        return Err(ImageError::Invalid(format!(
                            "layer {} is missing",
                            layer.digest
                        )));
                    }
                    labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), layer.digest);
                }
            }
            _ => {}
        }
        if let Some(b) = self.blobs.get_mut(&d.digest) {
            b.labels.extend(labels);
        }
        Ok(true)
    }

    fn oci_layout(scan: &Scan, index: &[u8]) -> Result<Plan, ImageError> {
        let mut plan = Plan::default();
        let v: Value = serde_json::from_slice(index).map_err(ImageError::Json)?;
        for m in v["manifests"].as_array().into_iter().flatten() {
            let d = descriptor(m)?;
            if !plan.walk(scan, &d, 0)? {
                return Err(ImageError::Invalid(format!("blob {} is missing", d.digest)));
            }
            let ann = |k: &str| m["annotations"][k].as_str().map(str::to_string);
            let name = ann("io.containerd.image.name").or_else(|| {
                ann("org.opencontainers.image.ref.name").filter(|n| n.contains(['/', ':']))
            });
            if let Some(name) = name {
                plan.images.push((normalize(&name), d));
            }
        }
        Ok(plan)
    }

    fn docker_archive(scan: &Scan, manifest: &[u8]) -> Result<Plan, ImageError> {
        let mut plan = Plan::default();
        let v: Value = serde_json::from_slice(manifest).map_err(ImageError::Json)?;
        for item in v.as_array().into_iter().flatten() {
            let file = |p: &str| -> Result<(String, u64), ImageError> {
                let p = clean(p);
                let digest = scan.digests.get(&p).cloned();
                let size = scan.sizes.get(&p).copied();
                digest
                    .zip(size)
                    .ok_or_else(|| ImageError::Invalid(format!("{p} is missing")))
            };
            let config_path = clean(item["Config"].as_str().unwrap_or_default());
            let (config_digest, config_size) = file(&config_path)?;
            let mut layers = Vec::new();
            for l in item["Layers"].as_array().into_iter().flatten() {
                let p = clean(l.as_str().unwrap_or_default());
                let (digest, size) = file(&p)?;
                let media = if scan.gzip.get(&p).copied().unwrap_or(false) {
                    DOCKER_LAYER_GZIP
                } else {
                    DOCKER_LAYER
                };
                layers.push((p, digest, size, media));
            }
            let mut labels = HashMap::new();
            labels.insert(
                "containerd.io/gc.ref.content.config".into(),
                config_digest.clone(),
            );
            let mut blob = |path: String, digest: &str, size: u64| {
                plan.blobs.entry(digest.to_string()).or_insert(Blob {
                    digest: digest.to_string(),
                    size: size as i64,
                    path: Some(path),
                    data: None,
                    labels: HashMap::new(),
                });
            };
            blob(config_path, &config_digest, config_size);
            let mut layer_json = Vec::new();
            for (i, (p, digest, size, media)) in layers.into_iter().enumerate() {
                labels.insert(
                    format!("containerd.io/gc.ref.content.l.{i}"),
                    digest.clone(),
                );
                layer_json
                    .push(serde_json::json!({"mediaType": media, "digest": digest, "size": size}));
                blob(p, &digest, size);
            }
            let m = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest, "size": config_size},
                "layers": layer_json,
            }))
            .map_err(ImageError::Json)?;
            let d = Descriptor {
                media_type: DOCKER_MANIFEST.into(),
                digest: oci::digest(&m),
                size: m.len() as i64,
                annotations: HashMap::new(),
            };
            plan.blobs.insert(
                d.digest.clone(),
                Blob {
                    digest: d.digest.clone(),
                    size: d.size,
                    path: None,
                    data: Some(m),
                    labels,
                },
            );
            for tag in item["RepoTags"].as_array().into_iter().flatten() {
                if let Some(t) = tag.as_str() {
                    plan.images.push((normalize(t), d.clone()));
                }
            }
        }
        Ok(plan)
    }
}

fn namespaced<T>(msg: T, lease: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let md = req.metadata_mut();
    md.insert(
        "containerd-namespace",
        tonic::metadata::MetadataValue::from_static(NAMESPACE),
    );
    if let Some(l) = lease.and_then(|l| l.parse().ok()) {
        md.insert("containerd-lease", l);
    }
    req
}

fn grpc(context: impl Into<String>) -> impl FnOnce(tonic::Status) -> ImageError {
    let context = context.into();
    move |s| ImageError::Containerd {
        context,
        message: s.message().to_string(),
    }
}

/// Imports the images of one tarball; returns their names.
pub async fn import_file(channel: &Channel, file: &Path) -> Result<Vec<String>, ImageError> {
    let path = file.to_path_buf();
    let scan = tokio::task::spawn_blocking(move || scan(&path))
        .await
        .map_err(|e| ImageError::Invalid(format!("reading the tarball: {e}")))??;
    let plan = if let Some(index) = scan.small.get("index.json") {
        Plan::oci_layout(&scan, index)?
    } else if let Some(manifest) = scan.small.get("manifest.json") {
        Plan::docker_archive(&scan, manifest)?
    } else {
        return Err(ImageError::Invalid(format!(
            "{} is neither an OCI image layout (index.json) nor a docker archive (manifest.json)",
            file.display()
        )));
    };
    if plan.images.is_empty() {
        return Err(ImageError::Invalid(format!(
            "{} names no image",
            file.display()
        )));
    }
    let lease = format!("k1s-import-{}", std::process::id()) + &nanos();
    let mut leases = LeasesClient::new(channel.clone());
    let mut labels = HashMap::new();
    labels.insert("containerd.io/gc.expire".to_string(), expire_in_an_hour());
    leases
        .create(namespaced(
            containerd_client::services::v1::CreateRequest {
                id: lease.clone(),
                labels,
            },
            None,
        ))
        .await
        .map_err(grpc("creating a lease"))?;
    let result = write_plan(channel, file, &scan, plan, &lease).await;
    let _ = leases
        .delete(namespaced(
            containerd_client::services::v1::DeleteRequest {
                id: lease,
                sync: false,
            },
            None,
        ))
        .await;
    result
}

fn nanos() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("-{}", d.as_nanos())
}

fn expire_in_an_hour() -> String {
    rfc3339(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
}

/// RFC 3339 in UTC (containerd parses `time.RFC3339`); the kubelet builds without a date crate.
fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn write_plan(
    channel: &Channel,
    file: &Path,
    scan: &Scan,
    plan: Plan,
    lease: &str,
) -> Result<Vec<String>, ImageError> {
    let mut content = ContentClient::new(channel.clone());
    // Blobs already in the store only get their labels; the rest are written.
    let mut missing: HashMap<String, Blob> = HashMap::new();
    for (digest, blob) in plan.blobs {
        let known = content
            .info(namespaced(
                InfoRequest {
                    digest: digest.clone(),
                },
                Some(lease),
            ))
            .await;
        match known {
            Ok(_) => {
                if !blob.labels.is_empty() {
                    let info = Info {
                        digest: digest.clone(),
                        labels: blob.labels.clone(),
                        ..Default::default()
                    };
                    content
                        .update(namespaced(
                            UpdateRequest {
                                info: Some(info),
                                update_mask: None,
                            },
                            Some(lease),
                        ))
                        .await
                        .map_err(grpc(format!("labelling {digest}")))?;
                }
            }
            Err(s) if s.code() == tonic::Code::NotFound => {
                missing.insert(digest, blob);
            }
            Err(s) => return Err(grpc(format!("looking up {digest}"))(s)),
        }
    }
    // Small and generated blobs from memory; large ones streamed from a second pass.
    let mut large: HashMap<String, Blob> = HashMap::new();
    for (digest, blob) in missing {
        let data = match (&blob.data, &blob.path) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(p)) => scan.small.get(p).cloned(),
            _ => None,
        };
        match data {
            Some(data) => {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let _ = tx.send(data).await;
                drop(tx);
                write_blob(&mut content, lease, &blob, rx).await?;
            }
            None => {
                if let Some(p) = blob.path.clone() {
                    large.insert(p, blob);
                } else {
                    return Err(ImageError::Invalid(format!("blob {digest} has no data")));
                }
            }
        }
    }
    if !large.is_empty() {
        stream_large(channel, file, lease, large).await?;
    }
    let mut images = ImagesClient::new(channel.clone());
    let mut names = Vec::new();
    for (name, target) in plan.images {
        let image = Image {
            name: name.clone(),
            target: Some(target),
            ..Default::default()
        };
        let created = images
            .create(namespaced(
                CreateImageRequest {
                    image: Some(image.clone()),
                    source_date_epoch: None,
                },
                None,
            ))
            .await;
        match created {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                images
                    .update(namespaced(
                        UpdateImageRequest {
                            image: Some(image),
                            update_mask: None,
                            source_date_epoch: None,
                        },
                        None,
                    ))
                    .await
                    .map_err(grpc(format!("updating image {name}")))?;
            }
            Err(s) => return Err(grpc(format!("creating image {name}"))(s)),
        }
        names.push(name);
    }
    Ok(names)
}

/// Reads the tarball again on a blocking thread, feeding each large blob to a writer.
async fn stream_large(
    channel: &Channel,
    file: &Path,
    lease: &str,
    mut large: HashMap<String, Blob>,
) -> Result<(), ImageError> {
    let (blobs_tx, mut blobs_rx) =
        tokio::sync::mpsc::channel::<(String, tokio::sync::mpsc::Receiver<Vec<u8>>)>(1);
    let wanted: Vec<String> = large.keys().cloned().collect();
    let path = file.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
        let ctx = || format!("reading {}", path.display());
        let f = std::fs::File::open(&path).map_err(io(ctx()))?;
        let mut ar = tar::Archive::new(std::io::BufReader::new(f));
        for e in ar.entries().map_err(io(ctx()))? {
            let mut e = e.map_err(io(ctx()))?;
            let p = clean(&e.path().map_err(io(ctx()))?.to_string_lossy());
            if !wanted.contains(&p) {
                continue;
            }
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            if blobs_tx.blocking_send((p, rx)).is_err() {
                return Ok(());
            }
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = e.read(&mut buf).map_err(io(ctx()))?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                if tx.blocking_send(buf).is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    });
    let mut content = ContentClient::new(channel.clone());
    while let Some((p, rx)) = blobs_rx.recv().await {
        if let Some(blob) = large.remove(&p) {
            write_blob(&mut content, lease, &blob, rx).await?;
        }
    }
    reader
        .await
        .map_err(|e| ImageError::Invalid(format!("reading the tarball: {e}")))??;
    if let Some(p) = large.keys().next() {
        return Err(ImageError::Invalid(format!(
            "{p} vanished from the tarball"
        )));
    }
    Ok(())
}

/// Writes one blob through content's Write stream, committing it with its digest and labels.
async fn write_blob(
    content: &mut ContentClient<Channel>,
    lease: &str,
    blob: &Blob,
    mut chunks: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<(), ImageError> {
    let wref = format!("k1s-import-{}", blob.digest);
    // A write with this ref left over from an interrupted import would refuse offset 0.
    let _ = content
        .abort(namespaced(
            AbortRequest {
                r#ref: wref.clone(),
            },
            Some(lease),
        ))
        .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(2);
    let digest = blob.digest.clone();
    let size = blob.size;
    let labels = blob.labels.clone();
    let feeder = tokio::spawn(async move {
        let mut offset = 0i64;
        while let Some(data) = chunks.recv().await {
            let n = data.len() as i64;
            let req = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: wref.clone(),
                total: size,
                expected: digest.clone(),
                offset,
                data,
                labels: HashMap::new(),
            };
            offset += n;
            if tx.send(req).await.is_err() {
                return offset;
            }
        }
        let _ = tx
            .send(WriteContentRequest {
                action: WriteAction::Commit as i32,
                r#ref: wref,
                total: size,
                expected: digest,
                offset,
                data: Vec::new(),
                labels,
            })
            .await;
        offset
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let result = async {
        let mut responses = content
            .write(namespaced(stream, Some(lease)))
            .await?
            .into_inner();
        while responses.message().await?.is_some() {}
        Ok::<(), tonic::Status>(())
    }
    .await;
    let written = feeder.await.unwrap_or(-1);
    match result {
        Ok(()) => {}
        Err(s) if s.code() == tonic::Code::AlreadyExists => {}
        Err(s) => return Err(grpc(format!("writing blob {}", blob.digest))(s)),
    }
    if written != blob.size {
        return Err(ImageError::Invalid(format!(
            "blob {} is {written} bytes, its descriptor says {}",
            blob.digest, blob.size
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_are_normalized_as_containerd_does() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(normalize("me/app:v2"), "docker.io/me/app:v2");
        assert_eq!(
            normalize("registry.local:5000/app"),
            "registry.local:5000/app:latest"
        );
        assert_eq!(normalize("k1s.local/pause:1"), "k1s.local/pause:1");
        assert_eq!(normalize("localhost/x@sha256:ab"), "localhost/x@sha256:ab");
    }

    #[test]
    fn rfc3339_from_system_time() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_126_400);
        assert_eq!(rfc3339(t), "2026-12-01T12:00:00Z");
    }

    #[test]
    fn digests_must_name_a_blob_inside_the_layout() {
        assert!(blob_path("sha256:../../etc").is_err());
        assert!(blob_path("nodigest").is_err());
        assert_eq!(blob_path("sha256:ab12").expect("ok"), "blobs/sha256/ab12");
    }
}
