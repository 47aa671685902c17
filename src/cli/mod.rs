//! The command line: flags and the config file become one typed configuration per command.
//!
//! Flags have config-file equivalents (`--config`, default `/etc/k1s/config.yaml`), keyed like
//! the flags as k3s does; a flag on the command line wins over the file. A bad flag or config
//! key is reported on one line naming it, with exit code 2.

mod config;
pub mod kubelet;
mod logging;
#[cfg(feature = "controllers")]
pub mod token;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::bench::BenchArgs;
use crate::supervisor::{self, Datastore, ServerConfig};

pub use config::ConfigError;
#[cfg(feature = "controllers")]
pub use token::TokenCommand;

/// `k1s token` without the API client built in.
#[cfg(not(feature = "controllers"))]
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token (not built into this binary).
    Create,
    /// List the bootstrap tokens (not built into this binary).
    List,
    /// Delete bootstrap tokens (not built into this binary).
    Delete,
}
pub use logging::LogFormat;

/// The default config file.
pub const DEFAULT_CONFIG: &str = "/etc/k1s/config.yaml";
/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/k1s";

#[derive(Debug, Parser)]
#[command(
    name = "k1s",
    version,
    about = "Kubernetes in one binary",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (and a kubelet, unless disabled).
    #[command(args_override_self = true)]
    Server(Box<ServerArgs>),
    /// Run a kubelet that joins a server.
    #[command(args_override_self = true)]
    Agent(Box<AgentArgs>),
    /// Print the version and the parts this binary was built with.
    Version,
    /// Print the admin kubeconfig.
    Kubeconfig(KubeconfigArgs),
    /// Measure k1s against its anchors.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Manage bootstrap tokens for joining agents.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the node's container images.
    #[command(subcommand)]
    Images(kubelet::ImagesCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Write throughput and latency of the store backends against raw etcd.
    Store(BenchArgs),
    /// Creates, LISTs and watch delivery of the API server on each backend.
    Api(crate::bench::ApiBenchArgs),
    /// The control plane on simulated nodes: scheduling rate, pod start latency, memory.
    Scale(crate::bench::ScaleBenchArgs),
    /// Pods on this machine's containerd: start latency and memory (as root).
    Pods(crate::bench::PodsBenchArgs),
}

/// Flags every long-running command has.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Config file; its keys are the long flag names.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where k1s keeps its state.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Log line format. Filtering follows RUST_LOG (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub kubelet: kubelet::KubeletArgs,
    /// Use etcd at these comma-separated URLs instead of the embedded store.
    #[arg(long, value_name = "URLS")]
    pub datastore_endpoint: Option<String>,
    /// CA bundle that signed etcd's serving certificate.
    #[arg(long, value_name = "FILE")]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, value_name = "FILE")]
    pub datastore_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, value_name = "FILE")]
    pub datastore_keyfile: Option<PathBuf>,
    /// Do not run the kubelet on this server.
    #[arg(long)]
    pub disable_kubelet: bool,
    /// Do not run the scheduler.
    #[arg(long)]
    pub disable_scheduler: bool,
    /// Do not run the controllers.
    #[arg(long)]
    pub disable_controllers: bool,
    /// Add-ons to leave out (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub disable: Vec<String>,
    /// How long a node may go without a heartbeat before the node controller marks it Unknown.
    #[arg(long, default_value = "40s", value_parser = parse_duration, value_name = "DURATION")]
    pub node_monitor_grace_period: Duration,
    /// How long a new node may go without its first heartbeat before it is marked Unknown.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub node_startup_grace_period: Duration,
    /// How often the HorizontalPodAutoscalers are evaluated.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub horizontal_pod_autoscaler_sync_period: Duration,
    /// How often the kubelets of agents are scraped for `metrics.k8s.io` (metrics-server's
    /// `--metric-resolution`).
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub metric_resolution: Duration,
    /// How long an autoscaler without `behavior` waits before scaling down.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// Register this many simulated nodes (no containers; pods bound to them run as KWOK's do).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub simulated_nodes: usize,
    #[command(flatten)]
    pub simulated: SimulatedArgs,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443, value_name = "PORT")]
    pub https_listen_port: u16,
    /// Address the API server listens on.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    pub bind_address: IpAddr,
    /// Address the API server advertises in the `kubernetes` Service's endpoints (default: the
    /// bind address, or this machine's primary address).
    #[arg(long, value_name = "IP")]
    pub advertise_address: Option<IpAddr>,
    /// Extra names or IPs for the API server's certificate (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub tls_san: Vec<String>,
    /// Where to write the admin kubeconfig (default /etc/k1s/k1s.yaml as root, else DATA_DIR/k1s.yaml).
    #[arg(long, value_name = "FILE")]
    pub write_kubeconfig: Option<PathBuf>,
    /// Service ClusterIP range; its first address is the `kubernetes` service's.
    #[arg(long, default_value = "10.43.0.0/16", value_name = "CIDR")]
    pub service_cidr: String,
    /// Pod network range; each node gets a block of it as its pod CIDR.
    #[arg(long, default_value = "10.42.0.0/16", value_name = "CIDR")]
    pub cluster_cidr: String,
    /// Size of each node's block of --cluster-cidr.
    #[arg(long, default_value_t = 24, value_name = "BITS")]
    pub node_cidr_mask_size: u8,
    /// Bearer tokens in upstream's CSV format: token,user,uid[,"group1,group2"].
    #[arg(long, value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// Encrypt resources at rest as this EncryptionConfiguration file says (upstream's format).
    #[arg(long, value_name = "FILE")]
    pub encryption_provider_config: Option<PathBuf>,
    /// Admission plugins' configuration (upstream's AdmissionConfiguration; PodSecurity's
    /// defaults and exemptions).
    #[arg(
        long,
        value_name = "FILE",
        alias = "pod-security-admission-config-file"
    )]
    pub admission_control_config_file: Option<PathBuf>,
    /// Audit policy (upstream's audit.k8s.io/v1 Policy).
    #[arg(long, value_name = "FILE")]
    pub audit_policy_file: Option<PathBuf>,
    /// Where audit events go, as JSON lines (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub audit_log_path: Option<PathBuf>,
    /// Rotate the audit log past this many megabytes (0: never).
    #[arg(long, default_value_t = 100, value_name = "MB")]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs to keep (0: all).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub audit_log_maxbackup: usize,
    /// Days to keep rotated audit logs (0: forever).
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub audit_log_maxage: u64,
    /// How often the store's history is compacted (e.g. 5m, 30s).
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub compaction_interval: Duration,
}

/// How simulated nodes look, for `server --simulated-nodes` and `agent --simulate`.
#[derive(Debug, Args, Clone)]
pub struct SimulatedArgs {
    /// Capacity of each simulated node (comma-separated NAME=QUANTITY; default
    /// cpu=32,memory=256Gi,pods=110,ephemeral-storage=1Ti).
    #[arg(long, value_delimiter = ',', value_parser = parse_key_value, value_name = "NAME=QTY")]
    pub simulated_node_capacity: Vec<(String, String)>,
    /// Extra labels of each simulated node (comma-separated KEY=VALUE).
    #[arg(long, value_delimiter = ',', value_parser = parse_key_value, value_name = "KEY=VALUE")]
    pub simulated_node_labels: Vec<(String, String)>,
    /// What each container of a simulated pod uses, unless its pod's `simulated.k1s.io/cpu-usage`
    /// or `simulated.k1s.io/memory-usage` annotation says otherwise (default cpu=1m,memory=1Mi).
    #[arg(long, value_delimiter = ',', value_parser = parse_key_value, value_name = "NAME=QTY")]
    pub simulated_pod_usage: Vec<(String, String)>,
    /// Simulated node names are this prefix and an index.
    #[arg(long, default_value = "sim-", value_name = "PREFIX")]
    pub simulated_node_prefix: String,
}

impl SimulatedArgs {
    /// The supervisor's view, for `count` nodes.
    pub fn to_config(&self, count: usize) -> supervisor::SimulatedNodes {
        supervisor::SimulatedNodes {
            count,
            capacity: self.simulated_node_capacity.iter().cloned().collect(),
            labels: self.simulated_node_labels.iter().cloned().collect(),
            prefix: self.simulated_node_prefix.clone(),
            usage: self.simulated_pod_usage.iter().cloned().collect(),
        }
    }
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Run this many simulated nodes (KWOK-style, no containers) instead of a kubelet.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub simulate: usize,
    #[command(flatten)]
    pub simulated: SimulatedArgs,
    #[command(flatten)]
    pub kubelet: kubelet::KubeletArgs,
    /// The server to join (https://HOST:6443).
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// The join token.
    #[arg(long, value_name = "TOKEN")]
    pub token: String,
}

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Where the server wrote the admin kubeconfig.
    #[arg(long, value_name = "FILE", default_value = "/etc/k1s/k1s.yaml")]
    pub write_kubeconfig: PathBuf,
}

/// Parses `KEY=VALUE`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Parses `30s`, `5m`, `2h`, `1h30m` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            "ms"
        } else {
            match c {
                'h' => "h",
                'm' => "m",
                's' => "s",
                _ => return Err(format!("unknown unit '{c}' in duration '{s}'")),
            }
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("missing number before '{unit}' in duration '{s}'"))?;
        num.clear();
        any = true;
        total += match unit {
            "h" => Duration::from_secs(n * 3600),
            "m" => Duration::from_secs(n * 60),
            "s" => Duration::from_secs(n),
            _ => Duration::from_millis(n),
        };
    }
    if !num.is_empty() || !any {
        return Err(format!("invalid duration '{s}' (use e.g. 30s, 5m, 1h)"));
    }
    Ok(total)
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let argv: Vec<String> = std::env::args().collect();
    let cli = match config::parse(&argv) {
        Ok(cli) => cli,
        Err(ConfigError::Display(msg)) => {
            print!("{msg}");
            return 0;
        }
        Err(e) => {
            eprintln!("k1s: {e}");
            return 2;
        }
    };
    match cli.command {
        Command::Token(cmd) => token_command(cmd),
        Command::Version => {
            println!("{}", crate::parts::version_line());
            0
        }
        Command::Kubeconfig(args) => match std::fs::read_to_string(&args.write_kubeconfig) {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => {
                eprintln!(
                    "k1s: no admin kubeconfig at {}: {e}; `k1s server` writes it once its API server has started",
                    args.write_kubeconfig.display()
                );
                1
            }
        },
        Command::Images(cmd) => kubelet::images_command(cmd),
        Command::Server(args) => {
            // Flags that parse but make no sense: one line and exit code 2, as bad flags.
            let common = args.common.clone();
            match server_config(*args).and_then(|cfg| cfg.validate().map(|()| cfg)) {
                Ok(cfg) => run_async(&common, supervisor::run_server(cfg)),
                Err(e) => {
                    eprintln!("k1s: {e}");
                    2
                }
            }
        }
        Command::Agent(args) => run_async(&args.common.clone(), supervisor::run_agent(*args)),
        Command::Bench(BenchCommand::Store(args)) => {
            let common = CommonArgs {
                config: None,
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
                log_format: LogFormat::Text,
            };
            run_async(&common, crate::bench::run_store(args))
        }
        Command::Bench(BenchCommand::Api(args)) => {
            let common = CommonArgs {
                config: None,
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
                log_format: LogFormat::Text,
            };
            run_async(&common, crate::bench::run_api(args))
        }
        Command::Bench(BenchCommand::Pods(args)) => {
            let common = CommonArgs {
                config: None,
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
                log_format: LogFormat::Text,
            };
            run_async(&common, crate::bench::run_pods(args))
        }
        Command::Bench(BenchCommand::Scale(args)) => {
            let common = CommonArgs {
                config: None,
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
                log_format: LogFormat::Text,
            };
            run_async(&common, crate::bench::run_scale(args))
        }
    }
}

/// Turns parsed server flags into the supervisor's configuration.
pub fn server_config(args: ServerArgs) -> Result<ServerConfig, supervisor::SupervisorError> {
    let datastore = match args.datastore_endpoint {
        Some(urls) => Datastore::Etcd {
            endpoints: urls
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            ca_file: args.datastore_cafile,
            cert_file: args.datastore_certfile,
            key_file: args.datastore_keyfile,
        },
        None => Datastore::Embedded,
    };
    let kubeconfig = args
        .write_kubeconfig
        .unwrap_or_else(|| supervisor::default_kubeconfig(&args.common.data_dir));
    let node_ip = args
        .advertise_address
        .unwrap_or_else(|| supervisor::default_advertise_address(args.bind_address));
    let kubelet = args
        .kubelet
        .to_config(&args.common.data_dir, node_ip, supervisor::hostname())?;
    Ok(ServerConfig {
        kubelet,
        data_dir: args.common.data_dir,
        datastore,
        disable_kubelet: args.disable_kubelet,
        disable_scheduler: args.disable_scheduler,
        disable_controllers: args.disable_controllers,
        disable_addons: args.disable,
        node_monitor_grace_period: args.node_monitor_grace_period,
        node_startup_grace_period: args.node_startup_grace_period,
        hpa_sync_period: args.horizontal_pod_autoscaler_sync_period,
        metric_resolution: args.metric_resolution,
        hpa_downscale_stabilization: args.horizontal_pod_autoscaler_downscale_stabilization,
        simulated: args.simulated.to_config(args.simulated_nodes),
        https_listen_port: args.https_listen_port,
        bind_address: args.bind_address,
        advertise_address: args.advertise_address,
        compaction_interval: args.compaction_interval,
        tls_sans: args.tls_san,
        kubeconfig,
        service_cidr: args.service_cidr,
        cluster_cidr: args.cluster_cidr,
        node_cidr_mask: args.node_cidr_mask_size,
        token_auth_file: args.token_auth_file,
        encryption_provider_config: args.encryption_provider_config,
        admission_control_config_file: args.admission_control_config_file,
        audit: supervisor::AuditOptions {
            policy_file: args.audit_policy_file,
            log_path: args.audit_log_path,
            max_size_mb: args.audit_log_maxsize,
            max_backups: args.audit_log_maxbackup,
            max_age_days: args.audit_log_maxage,
        },
    })
}

/// Runs `k1s token ...`.
#[cfg(feature = "controllers")]
fn token_command(cmd: TokenCommand) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("k1s: starting the async runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(async move {
        match cmd {
            TokenCommand::Create(a) => token::create(a).await,
            TokenCommand::List(a) => token::list(a).await,
            TokenCommand::Delete(a) => token::delete(a).await,
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("k1s: {e}");
            1
        }
    }
}

#[cfg(not(feature = "controllers"))]
fn token_command(_: TokenCommand) -> i32 {
    eprintln!("k1s: `k1s token` needs the API client, which is built with the controllers; this binary was built without the `controllers` feature");
    1
}

fn run_async<E: std::fmt::Display>(
    common: &CommonArgs,
    fut: impl std::future::Future<Output = Result<(), E>>,
) -> i32 {
    if let Err(e) = logging::init(common.log_format) {
        eprintln!("k1s: {e}");
        return 2;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("k1s: starting the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("k1s: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
    }
}
