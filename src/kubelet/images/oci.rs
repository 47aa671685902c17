//! OCI image layouts written by k1s itself: the pause image it carries, and images built from
//! files on this machine (busybox-static for the tests), as uncompressed, reproducible tarballs
//! (every mtime 0, owner root) that [`super::import`] or `ctr images import` read.

use serde_json::json;

use super::ImageError;

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// One entry of a layer.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir {
        path: String,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// What the image's config says about running it.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
}

/// `sha256:<hex>` of some bytes.
pub fn digest(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in d.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn tar_err(context: &str) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        context: context.to_string(),
        source,
    }
}

/// An uncompressed layer tarball of `entries`, in the order given.
pub fn layer(entries: &[Entry]) -> Result<Vec<u8>, ImageError> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            Entry::Dir { path } => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                b.append_data(&mut h, path, std::io::empty())
                    .map_err(tar_err("writing a layer"))?;
            }
            Entry::File { path, mode, data } => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())
                    .map_err(tar_err("writing a layer"))?;
            }
            Entry::Symlink { path, target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, path, target)
                    .map_err(tar_err("writing a layer"))?;
            }
        }
    }
    b.into_inner().map_err(tar_err("writing a layer"))
}

/// `amd64`, `arm64`, ... for this machine, as OCI names architectures.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// An OCI image layout tarball holding one image named `name` (a full reference such as
/// `docker.io/library/busybox:latest`) with one layer.
pub fn image_layout(name: &str, run: &RunConfig, layer: &[u8]) -> Result<Vec<u8>, ImageError> {
    let (config, manifest) = image_parts(run, layer)?;
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": digest(&manifest),
            "size": manifest.len(),
            "platform": { "architecture": oci_arch(), "os": "linux" },
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))
    .map_err(ImageError::Json)?;

    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, path, data)
            .map_err(tar_err("writing an image layout"))
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for blob in [&config[..], &manifest[..], layer] {
        let d = digest(blob);
        let hex = d.trim_start_matches("sha256:");
        add(&format!("blobs/sha256/{hex}"), blob)?;
    }
    b.into_inner().map_err(tar_err("writing an image layout"))
}

/// The config and the manifest (JSON) of a one-layer image running `run` on `layer`: what a
/// registry serves for it.
pub fn image_parts(run: &RunConfig, layer: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ImageError> {
    let layer_digest = digest(layer);
    let mut config = json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": if run.env.is_empty() {
                vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()]
            } else {
                run.env.clone()
            },
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": "k1s" }],
    });
    if !run.entrypoint.is_empty() {
        config["config"]["Entrypoint"] = json!(run.entrypoint);
    }
    if !run.cmd.is_empty() {
        config["config"]["Cmd"] = json!(run.cmd);
    }
    if !run.working_dir.is_empty() {
        config["config"]["WorkingDir"] = json!(run.working_dir);
    }
    let config = serde_json::to_vec(&config).map_err(ImageError::Json)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": { "mediaType": MEDIA_CONFIG, "digest": digest(&config), "size": config.len() },
        "layers": [{ "mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer.len() }],
    }))
    .map_err(ImageError::Json)?;
    Ok((config, manifest))
}

/// A layer holding a static busybox (`/bin/busybox` and a link per applet) plus the few files
/// a shell expects: how the tests build their images offline.
pub fn busybox_layer(busybox: &std::path::Path, applets: &[String]) -> Result<Vec<u8>, ImageError> {
    let data = std::fs::read(busybox).map_err(|source| ImageError::Io {
        context: format!("reading {}", busybox.display()),
        source,
    })?;
    let mut entries: Vec<Entry> = [
        "bin", "dev", "etc", "proc", "root", "sys", "tmp", "var", "www",
    ]
    .iter()
    .map(|d| Entry::Dir { path: (*d).into() })
    .collect();
    entries.push(Entry::File {
        path: "bin/busybox".into(),
        mode: 0o755,
        data,
    });
    for a in applets.iter().filter(|a| a.as_str() != "busybox") {
        entries.push(Entry::Symlink {
            path: format!("bin/{a}"),
            target: "busybox".into(),
        });
    }
    entries.push(Entry::File {
        path: "etc/passwd".into(),
        mode: 0o644,
        data: b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".to_vec(),
    });
    entries.push(Entry::File {
        path: "etc/group".into(),
        mode: 0o644,
        data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
    });
    layer(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_names_its_blobs_by_digest_and_is_reproducible() {
        let l = layer(&[Entry::File {
            path: "hello".into(),
            mode: 0o644,
            data: b"hi".to_vec(),
        }])
        .expect("layer");
        let run = RunConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        };
        let a = image_layout("example.com/x:1", &run, &l).expect("layout");
        let b = image_layout("example.com/x:1", &run, &l).expect("layout");
        assert_eq!(a, b, "the same input gives the same bytes");
        let mut ar = tar::Archive::new(&a[..]);
        let mut names = Vec::new();
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).expect("read");
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(digest(&data), format!("sha256:{hex}"));
            }
            names.push(path);
        }
        assert_eq!(names.len(), 5, "{names:?}");
        assert!(names.contains(&"index.json".to_string()));
    }
}
