//! The audit log file: JSON lines, rotated by size as upstream's lumberjack does (the full file
//! is renamed `NAME-TIMESTAMP.EXT`, at most `max_backups` of them kept, none older than
//! `max_age_days`), or stdout for `-`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::AuditError;

/// Where audit lines go.
pub struct LogWriter {
    path: Option<PathBuf>,
    max_bytes: u64,
    max_backups: usize,
    max_age_days: u64,
    state: Mutex<Option<(File, u64)>>,
}

impl LogWriter {
    /// Opens (appending) the log at `path`, or stdout for `-`. Sizes in MB; 0 means no limit.
    pub fn open(
        path: &Path,
        max_size_mb: u64,
        max_backups: usize,
        max_age_days: u64,
    ) -> Result<LogWriter, AuditError> {
        let stdout = path.as_os_str() == "-";
        let mut w = LogWriter {
            path: (!stdout).then(|| path.to_path_buf()),
            max_bytes: max_size_mb * 1024 * 1024,
            max_backups,
            max_age_days,
            state: Mutex::new(None),
        };
        if let Some(p) = &w.path {
            let f = open_append(p)?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            w.state = Mutex::new(Some((f, size)));
        }
        Ok(w)
    }

    /// Writes one line, rotating first if it would pass the size limit.
    pub fn write_line(&self, line: &str) {
        let Some(path) = &self.path else {
            println!("{line}");
            return;
        };
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let len = line.len() as u64 + 1;
        let full = st.as_ref().is_some_and(|(_, size)| {
            self.max_bytes > 0 && size + len > self.max_bytes && *size > 0
        });
        if full {
            *st = None;
            if let Err(e) = self.rotate(path) {
                tracing::warn!(error = %e, "rotating the audit log");
            }
        }
        if st.is_none() {
            match open_append(path) {
                Ok(f) => *st = Some((f, 0)),
                Err(e) => {
                    tracing::warn!(error = %e, "reopening the audit log");
                    return;
                }
            }
        }
        if let Some((f, size)) = st.as_mut() {
            if let Err(e) = writeln!(f, "{line}") {
                tracing::warn!(error = %e, "writing the audit log");
            }
            *size += len;
        }
    }

    fn rotate(&self, path: &Path) -> std::io::Result<()> {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
        let ext = path
            .extension()
            .and_then(|s| s.to_str())
            .map(|e| format!(".{e}"))
            .unwrap_or_default();
        let stamp = time::OffsetDateTime::now_utc();
        let name = format!(
            "{stem}-{:04}-{:02}-{:02}T{:02}-{:02}-{:02}.{:03}{ext}",
            stamp.year(),
            u8::from(stamp.month()),
            stamp.day(),
            stamp.hour(),
            stamp.minute(),
            stamp.second(),
            stamp.millisecond()
        );
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::rename(path, dir.join(&name))?;
        // Old backups: the oldest beyond the count, and any past the age.
        let prefix = format!("{stem}-");
        let mut backups: Vec<(PathBuf, std::time::SystemTime)> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&prefix) && n.ends_with(&ext)
            })
            .filter_map(|e| Some((e.path(), e.metadata().ok()?.modified().ok()?)))
            .collect();
        backups.sort_by_key(|b| std::cmp::Reverse(b.1));
        let now = std::time::SystemTime::now();
        for (i, (p, t)) in backups.iter().enumerate() {
            let too_many = self.max_backups > 0 && i >= self.max_backups;
            let too_old = self.max_age_days > 0
                && now
                    .duration_since(*t)
                    .is_ok_and(|d| d.as_secs() > self.max_age_days * 86_400);
            if too_many || too_old {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AuditError::Open {
            path: path.display().to_string(),
            source,
        })
}
