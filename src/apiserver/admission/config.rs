//! The admission plugins' configuration file (`--admission-control-config-file`), in upstream's
//! `AdmissionConfiguration` format (`apiserver.config.k8s.io/v1`): one entry per plugin, its
//! configuration inline or in a file named by `path` (relative to this file). PodSecurity's
//! `PodSecurityConfiguration` is read; other plugins here take no configuration, so their entries
//! are logged and ignored. A bare `PodSecurityConfiguration` file is accepted too.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::pod_security;

/// Why the admission configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionConfigError {
    #[error("reading the admission configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the admission configuration {path} is not valid YAML or JSON: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("the admission configuration {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// What the configurable plugins are told.
#[derive(Clone, Debug, Default)]
pub struct AdmissionConfig {
    pub pod_security: pod_security::Config,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Plugin {
    name: String,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    configuration: Option<Value>,
}

fn read(path: &Path) -> Result<Value, AdmissionConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| AdmissionConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_yaml_ng::from_str(&text).map_err(|e| AdmissionConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl AdmissionConfig {
    /// Reads the file and the plugin files it names.
    pub fn load(path: &Path) -> Result<AdmissionConfig, AdmissionConfigError> {
        let invalid = |message: String| AdmissionConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let v = read(path)?;
        let mut cfg = AdmissionConfig::default();
        match v["kind"].as_str() {
            Some("PodSecurityConfiguration") => {
                cfg.pod_security = pod_security::Config::parse(&v).map_err(invalid)?;
                return Ok(cfg);
            }
            Some("AdmissionConfiguration") => {}
            other => {
                return Err(invalid(format!(
                    "expected kind AdmissionConfiguration, got {other:?}"
                )))
            }
        }
        let plugins: Vec<Plugin> = serde_json::from_value(v["plugins"].clone())
            .or_else(|_| {
                if v["plugins"].is_null() {
                    Ok(Vec::new())
                } else {
                    Err(())
                }
            })
            .map_err(|_| {
                invalid("plugins: expected a list of {name, path, configuration}".into())
            })?;
        for p in plugins {
            let body = match (p.configuration, p.path) {
                (Some(c), _) => c,
                (None, Some(file)) => {
                    let file = path.parent().map(|d| d.join(&file)).unwrap_or(file);
                    read(&file)?
                }
                (None, None) => continue,
            };
            match p.name.as_str() {
                "PodSecurity" => {
                    cfg.pod_security = pod_security::Config::parse(&body)
                        .map_err(|m| invalid(format!("plugin PodSecurity: {m}")))?;
                }
                other => {
                    tracing::warn!(
                        plugin = other,
                        "admission configuration for a plugin that takes none here: ignored"
                    )
                }
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_configuration_comes_inline_or_from_a_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let inline = dir.path().join("admission.yaml");
        std::fs::write(
            &inline,
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  configuration:\n    apiVersion: pod-security.admission.config.k8s.io/v1\n    kind: PodSecurityConfiguration\n    defaults:\n      enforce: baseline\n    exemptions:\n      namespaces: [kube-system]\n",
        )
        .expect("write");
        let c = AdmissionConfig::load(&inline).expect("load");
        assert_eq!(c.pod_security.exempt_namespaces, ["kube-system"]);
        std::fs::write(
            dir.path().join("psa.yaml"),
            "apiVersion: pod-security.admission.config.k8s.io/v1\nkind: PodSecurityConfiguration\ndefaults:\n  warn: restricted\n",
        )
        .expect("write");
        let by_path = dir.path().join("by-path.yaml");
        std::fs::write(
            &by_path,
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  path: psa.yaml\n",
        )
        .expect("write");
        let c = AdmissionConfig::load(&by_path).expect("load");
        assert_eq!(
            c.pod_security.defaults.warn.level,
            pod_security::Level::Restricted
        );
        std::fs::write(&inline, "kind: Policy\n").expect("write");
        let err = AdmissionConfig::load(&inline).expect_err("wrong kind");
        assert!(err.to_string().contains("AdmissionConfiguration"), "{err}");
    }
}
