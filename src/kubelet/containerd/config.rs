//! The configuration k1s writes for the containerd it supervises, as k3s does: everything under
//! the data dir (root, state, sockets, CNI config and IPAM state), the CRI plugin on with CNI from
//! Debian's `/usr/lib/cni`, the pause image k1s imports itself, and `restrict_oom_score_adj` when
//! this process lacks CAP_SYS_RESOURCE (a negative `oom_score_adj`, which containerd gives the
//! pause container, then fails in runc).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The name of the pause image k1s builds and imports; never pulled from a registry.
pub const PAUSE_IMAGE: &str = "k1s.local/pause:1";

/// Where a supervised containerd keeps its files, all under one directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `DATA_DIR/agent/containerd`.
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        Layout {
            dir: data_dir.join("agent").join("containerd"),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    /// The CNI configuration directory containerd's CRI plugin reads.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni").join("net.d")
    }
    /// host-local's allocation state.
    pub fn cni_ipam_dir(&self) -> PathBuf {
        self.dir.join("cni").join("ipam")
    }
}

/// What the generated configuration depends on besides the layout.
#[derive(Debug, Clone)]
pub struct Options {
    pub cni_bin_dir: PathBuf,
    /// Whether to ask containerd never to lower a process's `oom_score_adj`.
    pub restrict_oom_score_adj: bool,
    /// OCI runtimes besides runc found on this machine, by handler name, each run by the runc
    /// shim (as k3s configures crun).
    pub runtimes: Vec<(String, PathBuf)>,
    /// The handler pods without a RuntimeClass get (`--default-runtime`).
    pub default_runtime: String,
    /// Whether containers' huge page limits are applied: only where runc finds the hugetlb
    /// controller (containerd's default leaves them out, and runc fails a container whose
    /// limits name a controller that is not there).
    pub hugetlb: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            restrict_oom_score_adj: !has_cap_sys_resource(),
            runtimes: find_runtimes(),
            default_runtime: "runc".into(),
            hugetlb: crate::kubelet::cgroups::fs::Layout::detect()
                .is_some_and(|l| l.offers_hugetlb()),
        }
    }
}

/// OCI runtimes other than runc that the runc shim can drive, as k3s looks for them.
pub const OTHER_RUNTIMES: [&str; 2] = ["crun", "youki"];

/// The [`OTHER_RUNTIMES`] in PATH that can run containers here: none on a hybrid cgroup
/// machine whose v2 hierarchy offers controllers, which they refuse.
pub fn find_runtimes() -> Vec<(String, PathBuf)> {
    let Some(paths) = std::env::var_os("PATH") else {
        return Vec::new();
    };
    let hybrid = crate::kubelet::cgroups::fs::Layout::detect()
        .map(|l| l.hybrid_v2_controllers())
        .unwrap_or_default();
    if !hybrid.is_empty() {
        tracing::info!(
            v2_controllers = %hybrid,
            "crun and youki are not offered: they refuse hybrid cgroups whose v2 hierarchy has controllers"
        );
        return Vec::new();
    }
    OTHER_RUNTIMES
        .iter()
        .filter_map(|name| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .map(|p| (name.to_string(), p))
        })
        .collect()
}

impl Options {
    /// Every handler this configuration offers.
    pub fn handlers(&self) -> Vec<String> {
        std::iter::once("runc".to_string())
            .chain(self.runtimes.iter().map(|(n, _)| n.clone()))
            .collect()
    }
}

/// Whether this process holds CAP_SYS_RESOURCE (bit 24 of CapEff in /proc/self/status);
/// without it, lowering an `oom_score_adj` fails with EACCES.
pub fn has_cap_sys_resource() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    cap_eff_has(&status, 24)
}

fn cap_eff_has(status: &str, bit: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// A TOML basic string.
fn quoted(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// containerd 1.6+'s configuration (`version = 2`).
pub fn render(layout: &Layout, opts: &Options) -> String {
    let q = |p: PathBuf| quoted(&p);
    format!(
        r#"# Written by k1s on every start; edits are overwritten.
version = 2
root = {root}
state = {state}
oom_score = 0

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    restrict_oom_score_adj = {restrict}
    disable_hugetlb_controller = {no_hugetlb}
    sandbox_image = "{pause}"
    netns_mounts_under_state_dir = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = {cni_bin}
      conf_dir = {cni_conf}
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "{default_runtime}"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = {runc_root}
{others}"#,
        root = q(layout.root()),
        state = q(layout.state()),
        socket = q(layout.socket()),
        ttrpc = q(layout.dir.join("containerd.sock.ttrpc")),
        restrict = opts.restrict_oom_score_adj,
        no_hugetlb = !opts.hugetlb,
        pause = PAUSE_IMAGE,
        cni_bin = quoted(&opts.cni_bin_dir),
        cni_conf = q(layout.cni_conf_dir()),
        runc_root = q(layout.state().join("runc")),
        default_runtime = opts.default_runtime,
        others = others(layout, opts),
    )
}

/// The other runtimes' sections, each with a state directory of its own.
fn others(layout: &Layout, opts: &Options) -> String {
    let mut out = String::new();
    for (name, binary) in &opts.runtimes {
        let section = format!(r#"plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}"#);
        let _ = write!(
            out,
            r#"      [{section}]
        runtime_type = "io.containerd.runc.v2"
        [{section}.options]
          BinaryName = {binary}
          SystemdCgroup = false
          Root = {root}
"#,
            binary = quoted(binary),
            root = quoted(&layout.state().join(name)),
        );
    }
    out
}

/// The pod network: a bridge with host-local addresses from the node's pod CIDR and port
/// mappings, as k3s's default (flannel aside) sets up. Outbound NAT is one chain per node
/// ([`crate::kubelet::masquerade`]), not the bridge's per-pod `ipMasq`; containerd brings up
/// each pod's loopback itself.
pub fn cni_conflist(bridge: &str, pod_cidr: &str, ipam_dir: &Path) -> String {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k1s",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": [[{ "subnet": pod_cidr }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    });
    serde_json::to_string_pretty(&conf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "apiserver")]
    #[test]
    fn the_server_makes_a_runtime_class_for_every_other_runtime() {
        assert_eq!(OTHER_RUNTIMES, crate::apiserver::registry::RUNTIME_CLASSES);
    }

    #[test]
    fn cap_sys_resource_is_read_from_cap_eff() {
        let with = "Name:\tk1s\nCapEff:\t000001ffffffffff\n";
        let without = "Name:\tk1s\nCapEff:\t00000000a80425fb\n";
        assert!(cap_eff_has(with, 24));
        assert!(!cap_eff_has(without, 24));
        assert!(!cap_eff_has("Name:\tk1s\n", 24));
    }

    #[test]
    fn the_config_keeps_everything_under_the_data_dir() {
        let layout = Layout::new(Path::new("/var/lib/k1s"));
        let text = render(
            &layout,
            &Options {
                cni_bin_dir: "/usr/lib/cni".into(),
                restrict_oom_score_adj: true,
                runtimes: vec![("crun".into(), "/usr/bin/crun".into())],
                default_runtime: "crun".into(),
                hugetlb: true,
            },
        );
        assert!(text.contains("disable_hugetlb_controller = false"));
        assert!(text.contains(r#"default_runtime_name = "crun""#));
        assert!(text.contains(r#"BinaryName = "/usr/bin/crun""#));
        assert!(text.contains(r#"Root = "/var/lib/k1s/agent/containerd/state/crun""#));
        assert!(text.contains(r#"root = "/var/lib/k1s/agent/containerd/root""#));
        assert!(text.contains(r#"address = "/var/lib/k1s/agent/containerd/containerd.sock""#));
        assert!(text.contains("restrict_oom_score_adj = true"));
        assert!(text.contains(r#"sandbox_image = "k1s.local/pause:1""#));
        assert!(text.contains(r#"conf_dir = "/var/lib/k1s/agent/containerd/cni/net.d""#));
        assert_eq!(quoted(Path::new("/a\"b")), r#""/a\"b""#);
    }

    #[test]
    fn the_conflist_is_bridge_host_local_and_portmap() {
        let text = cni_conflist("k1s0", "10.42.0.0/24", Path::new("/d/ipam"));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let types: Vec<&str> = v["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .filter_map(|p| p["type"].as_str())
            .collect();
        assert_eq!(types, ["bridge", "portmap"]);
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.0.0/24"
        );
    }
}
