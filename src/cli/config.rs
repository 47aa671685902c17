//! The config file: YAML whose keys are the long flag names of `server` or `agent`.
//!
//! As k3s does, each key becomes the flag it names and is placed before the command-line flags,
//! so clap checks both the same way and a flag given on the command line wins. Unknown keys and
//! bad values are reported with the file and the key.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches};
use serde_yaml_ng::Value;

use super::{Cli, DEFAULT_CONFIG};

/// What can go wrong before a command runs. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bad command line.
    #[error("{0}")]
    Flag(String),
    /// A config file that cannot be read or is not a YAML mapping.
    #[error("config {path}: {problem}")]
    File { path: PathBuf, problem: String },
    /// A bad key or value in the config file.
    #[error("config {path}: key `{key}`: {problem}")]
    Key {
        path: PathBuf,
        key: String,
        problem: String,
    },
    /// Not an error: help or version text to print.
    #[error("{0}")]
    Display(String),
}

/// The first line of a clap error, without its `error: ` prefix.
fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

fn clap_error(e: clap::Error) -> ConfigError {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            ConfigError::Display(e.render().to_string())
        }
        _ => ConfigError::Flag(one_line(&e)),
    }
}

/// The config file named on the command line, or the default one if it exists.
fn config_path(args: &[String]) -> Option<(PathBuf, bool)> {
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        if a == "--config" || a == "-c" {
            return iter.next().map(|p| (PathBuf::from(p), true));
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some((PathBuf::from(p), true));
        }
    }
    let default = Path::new(DEFAULT_CONFIG);
    default.exists().then(|| (default.to_path_buf(), false))
}

/// Parses the command line, merged with the config file for `server` and `agent`.
pub fn parse(argv: &[String]) -> Result<Cli, ConfigError> {
    let sub = argv.get(1).map(String::as_str);
    let extra = match sub {
        Some(name @ ("server" | "agent")) => match config_path(&argv[2..]) {
            Some((path, explicit)) => file_args(name, &path, explicit)?,
            None => Vec::new(),
        },
        _ => Vec::new(),
    };
    let mut full: Vec<String> = argv.iter().take(2).cloned().collect();
    full.extend(extra);
    full.extend(argv.iter().skip(2).cloned());
    let matches = Cli::command()
        .try_get_matches_from(full)
        .map_err(clap_error)?;
    Cli::from_arg_matches(&matches).map_err(clap_error)
}

/// The flags a config file stands for.
fn file_args(sub: &str, path: &Path, explicit: bool) -> Result<Vec<String>, ConfigError> {
    let file_err = |problem: String| ConfigError::File {
        path: path.to_path_buf(),
        problem,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_err(format!("cannot read: {e}"))),
    };
    let value: Value =
        serde_yaml_ng::from_str(&text).map_err(|e| file_err(format!("not valid YAML: {e}")))?;
    let map = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(m) => m,
        _ => {
            return Err(file_err(
                "expected a mapping of flag names to values".into(),
            ))
        }
    };
    let cmd = Cli::command();
    let subcmd = cmd
        .find_subcommand(sub)
        .ok_or_else(|| file_err(format!("unknown command {sub}")))?;
    let mut out = Vec::new();
    for (k, v) in map {
        let key = match k {
            Value::String(s) => s,
            other => return Err(file_err(format!("key {other:?} is not a string"))),
        };
        let key_err = |problem: String| ConfigError::Key {
            path: path.to_path_buf(),
            key: key.clone(),
            problem,
        };
        let arg = subcmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
            .ok_or_else(|| key_err(format!("not a flag of `k1s {sub}`")))?;
        let takes_value = arg.get_action().takes_values();
        let items = match v {
            Value::Sequence(seq) => seq,
            other => vec![other],
        };
        for item in items {
            let text = match item {
                Value::Bool(b) if !takes_value => {
                    if b {
                        out.push(format!("--{key}"));
                    }
                    continue;
                }
                _ if !takes_value => return Err(key_err("expected true or false".into())),
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(key_err("expected a value or a list of values".into())),
            };
            out.push(format!("--{key}={text}"));
        }
    }
    // Check the file's flags alone so a bad value is blamed on its key.
    let mut alone = vec!["k1s".to_string(), sub.to_string()];
    alone.extend(out.iter().cloned());
    if let Err(e) = Cli::command().try_get_matches_from(alone) {
        use clap::error::ErrorKind;
        if e.kind() != ErrorKind::MissingRequiredArgument {
            let key = e
                .get(clap::error::ContextKind::InvalidArg)
                .map(|a| a.to_string())
                .and_then(|a| {
                    a.trim_start_matches("--")
                        .split([' ', '='])
                        .next()
                        .map(str::to_string)
                })
                .unwrap_or_default();
            return Err(ConfigError::Key {
                path: path.to_path_buf(),
                key,
                problem: one_line(&e),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn with_config(yaml: &str, args: &[&str]) -> Result<Cli, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let mut a = argv(args);
        a.push(format!("--config={}", path.display()));
        parse(&a)
    }

    #[test]
    fn config_keys_become_flags_and_the_command_line_wins() {
        let cli = with_config(
            "https-listen-port: 7443\ndisable-kubelet: true\ndisable: [traefik, servicelb]\ndata-dir: /tmp/x\n",
            &["k1s", "server", "--https-listen-port", "8443"],
        )
        .expect("parses");
        let Command::Server(s) = cli.command else {
            panic!("not server")
        };
        assert_eq!(s.https_listen_port, 8443);
        assert!(s.disable_kubelet);
        assert_eq!(s.disable, vec!["traefik", "servicelb"]);
        assert_eq!(s.common.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = with_config("no-such-flag: 1\n", &["k1s", "server"])
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("key `no-such-flag`: not a flag of `k1s server`"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn bad_value_is_blamed_on_its_key() {
        let err = with_config("https-listen-port: lots\n", &["k1s", "server"])
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("key `https-listen-port`"), "{err}");
        assert!(err.contains("lots"), "{err}");
        let err = with_config("disable-kubelet: maybe\n", &["k1s", "server"])
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("expected true or false"), "{err}");
    }

    #[test]
    fn bad_flag_is_one_line() {
        let err = parse(&argv(&["k1s", "server", "--nope"]))
            .expect_err("must fail")
            .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--nope"), "{err}");
    }

    #[test]
    fn missing_explicit_config_fails() {
        let err = parse(&argv(&[
            "k1s",
            "server",
            "--config",
            "/nonexistent/k1s.yaml",
        ]))
        .expect_err("must fail")
        .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
