//! What PodSecurity enforces where: the levels and versions a namespace's labels ask for, the
//! cluster-wide defaults for namespaces that say nothing, and the exemptions, both read from
//! upstream's `PodSecurityConfiguration` (`pod-security.admission.config.k8s.io/v1`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::apiserver::validation::Errors;

pub const PREFIX: &str = "pod-security.kubernetes.io/";

/// A Pod Security Standard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    /// A level by name; unknown names are errors, read as the strictest level as upstream does.
    pub fn parse(s: &str) -> Result<Level, Level> {
        match s {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err(Level::Restricted),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// A policy version: `latest` or `v1.N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Latest,
    V1(u32),
}

impl Version {
    /// A version by name; malformed names are errors, read as `latest` as upstream does.
    pub fn parse(s: &str) -> Result<Version, Version> {
        if s == "latest" {
            return Ok(Version::Latest);
        }
        let minor = s.strip_prefix("v1.").ok_or(Version::Latest)?;
        let canonical = !minor.is_empty()
            && minor.bytes().all(|b| b.is_ascii_digit())
            && (minor == "0" || !minor.starts_with('0'));
        match minor.parse() {
            Ok(n) if canonical => Ok(Version::V1(n)),
            _ => Err(Version::Latest),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Latest => f.write_str("latest"),
            Version::V1(n) => write!(f, "v1.{n}"),
        }
    }
}

/// A level at a version, shown as `restricted:latest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelVersion {
    pub level: Level,
    pub version: Version,
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level.name(), self.version)
    }
}

impl Default for LevelVersion {
    fn default() -> Self {
        LevelVersion {
            level: Level::Privileged,
            version: Version::Latest,
        }
    }
}

/// The three modes of a namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub enforce: LevelVersion,
    pub audit: LevelVersion,
    pub warn: LevelVersion,
}

pub const MODES: [&str; 3] = ["enforce", "audit", "warn"];

impl Policy {
    pub fn mode(&self, mode: &str) -> &LevelVersion {
        match mode {
            "enforce" => &self.enforce,
            "audit" => &self.audit,
            _ => &self.warn,
        }
    }

    fn mode_mut(&mut self, mode: &str) -> &mut LevelVersion {
        match mode {
            "enforce" => &mut self.enforce,
            "audit" => &mut self.audit,
            _ => &mut self.warn,
        }
    }

    /// The policy a namespace's labels ask for, `defaults` filling what they leave out, with
    /// the field errors of malformed labels (which still yield a policy, the strict reading).
    pub fn from_labels(labels: &Value, defaults: &Policy) -> (Policy, Errors) {
        let mut policy = *defaults;
        let mut errs = Errors::default();
        for mode in MODES {
            let lv = policy.mode_mut(mode);
            let key = format!("{PREFIX}{mode}");
            if let Some(s) = labels[&key].as_str() {
                lv.level = Level::parse(s).unwrap_or_else(|strict| {
                    errs.invalid(
                        &format!("metadata.labels[{key}]"),
                        &Value::from(s),
                        "must be one of privileged, baseline, restricted",
                    );
                    strict
                });
            }
            let key = format!("{PREFIX}{mode}-version");
            if let Some(s) = labels[&key].as_str() {
                lv.version = Version::parse(s).unwrap_or_else(|latest| {
                    errs.invalid(
                        &format!("metadata.labels[{key}]"),
                        &Value::from(s),
                        "must be \"latest\" or \"v1.x\"",
                    );
                    latest
                });
            }
        }
        (policy, errs)
    }
}

/// The plugin's configuration: defaults and exemptions.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub defaults: Policy,
    pub exempt_usernames: Vec<String>,
    pub exempt_namespaces: Vec<String>,
    pub exempt_runtime_classes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    defaults: BTreeMap<String, String>,
    #[serde(default)]
    exemptions: Exemptions,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Exemptions {
    #[serde(default)]
    usernames: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    runtime_classes: Vec<String>,
}

impl Config {
    /// Reads a `PodSecurityConfiguration`; the error says what is wrong with it.
    pub fn parse(v: &Value) -> Result<Config, String> {
        let file: File = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        if file.kind != "PodSecurityConfiguration"
            || !file
                .api_version
                .starts_with("pod-security.admission.config.k8s.io/")
        {
            return Err(format!(
                "expected kind PodSecurityConfiguration of pod-security.admission.config.k8s.io/v1, got {:?} of {:?}",
                file.kind, file.api_version
            ));
        }
        let mut defaults = Policy::default();
        for (key, value) in &file.defaults {
            let (mode, is_version) = match key.strip_suffix("-version") {
                Some(m) => (m, true),
                None => (key.as_str(), false),
            };
            if !MODES.contains(&mode) {
                return Err(format!("defaults.{key}: unknown key"));
            }
            let lv = defaults.mode_mut(mode);
            if is_version {
                lv.version = Version::parse(value).map_err(|_| {
                    format!("defaults.{key}: {value:?}: must be \"latest\" or \"v1.x\"")
                })?;
            } else {
                lv.level = Level::parse(value).map_err(|_| {
                    format!("defaults.{key}: {value:?}: must be one of privileged, baseline, restricted")
                })?;
            }
        }
        Ok(Config {
            defaults,
            exempt_usernames: file.exemptions.usernames,
            exempt_namespaces: file.exemptions.namespaces,
            exempt_runtime_classes: file.exemptions.runtime_classes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_fill_in_over_defaults_and_bad_values_read_strictly() {
        let defaults = Policy {
            warn: LevelVersion {
                level: Level::Baseline,
                version: Version::V1(30),
            },
            ..Default::default()
        };
        let labels = json!({
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "v1.35",
        });
        let (p, errs) = Policy::from_labels(&labels, &defaults);
        assert!(errs.0.is_empty());
        assert_eq!(p.enforce.to_string(), "restricted:v1.35");
        assert_eq!(p.warn.to_string(), "baseline:v1.30");
        assert_eq!(p.audit.to_string(), "privileged:latest");
        let bad = json!({"pod-security.kubernetes.io/enforce": "strict",
            "pod-security.kubernetes.io/warn-version": "v1.035"});
        let (p, errs) = Policy::from_labels(&bad, &Policy::default());
        assert_eq!(p.enforce.level, Level::Restricted);
        let shown: Vec<String> = errs.0.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            [
                "metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted",
                "metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: \"v1.035\": must be \"latest\" or \"v1.x\"",
            ]
        );
    }

    #[test]
    fn the_configuration_file_sets_defaults_and_exemptions() {
        let c = Config::parse(&json!({
            "apiVersion": "pod-security.admission.config.k8s.io/v1",
            "kind": "PodSecurityConfiguration",
            "defaults": {"enforce": "baseline", "enforce-version": "latest", "warn": "restricted"},
            "exemptions": {"usernames": ["ci"], "namespaces": ["kube-system"], "runtimeClasses": ["kata"]},
        }))
        .expect("parse");
        assert_eq!(c.defaults.enforce.level, Level::Baseline);
        assert_eq!(c.defaults.warn.level, Level::Restricted);
        assert_eq!(c.exempt_namespaces, ["kube-system"]);
        assert_eq!(c.exempt_runtime_classes, ["kata"]);
        let err = Config::parse(&json!({
            "apiVersion": "pod-security.admission.config.k8s.io/v1",
            "kind": "PodSecurityConfiguration",
            "defaults": {"enforce": "strict"},
        }))
        .expect_err("bad level");
        assert!(err.contains("defaults.enforce"), "{err}");
    }
}
