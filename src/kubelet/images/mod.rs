//! Images without a registry: the pause image k1s builds itself ([`pause`]), OCI layouts
//! written from local files ([`oci`]), and tarballs imported into containerd ([`import`]):
//! every `*.tar` in `DATA_DIR/agent/images/` on start, as k3s does for air-gapped sites, and
//! `k1s images import FILE` by hand.

pub mod gc;
pub mod import;
pub mod oci;
pub mod pause;

use std::path::{Path, PathBuf};

use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("image json: {0}")]
    Json(serde_json::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("containerd, {context}: {message}")]
    Containerd { context: String, message: String },
}

/// The directory whose tarballs are imported on start.
pub fn images_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("images")
}

/// Imports k1s's own pause image (named `name`) through a temporary tarball.
pub async fn ensure_pause(channel: &Channel, name: &str, tmp_dir: &Path) -> Result<(), ImageError> {
    let tar = pause::image(name)?;
    let file = tempfile::Builder::new()
        .prefix("pause-")
        .suffix(".tar")
        .tempfile_in(tmp_dir)
        .map_err(|source| ImageError::Io {
            context: format!("creating a file in {}", tmp_dir.display()),
            source,
        })?;
    std::fs::write(file.path(), tar).map_err(|source| ImageError::Io {
        context: format!("writing {}", file.path().display()),
        source,
    })?;
    import::import_file(channel, file.path()).await?;
    Ok(())
}

/// Imports every `*.tar` in `dir` (a missing directory holds none). A tarball that fails is
/// logged and skipped so one bad file does not keep the node from starting.
pub async fn import_dir(channel: &Channel, dir: &Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = read
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar") && p.is_file())
        .collect();
    files.sort();
    let mut names = Vec::new();
    for f in files {
        match import::import_file(channel, &f).await {
            Ok(n) => {
                tracing::info!(file = %f.display(), images = ?n, "imported images");
                names.extend(n);
            }
            Err(e) => tracing::error!(file = %f.display(), "importing images: {e}"),
        }
    }
    names
}
