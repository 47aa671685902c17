//! For tests of the kubelet on real containerd: offline busybox images, and a guard that
//! removes what a test's containerd started (containers, shims, the pod bridge, the blackhole
//! route) even when the test fails half-way.

use std::path::{Path, PathBuf};
use std::process::Command;

use k1s::kubelet::images::oci;

/// A layer of Debian's static busybox with a link for each of its applets.
pub fn busybox_layer() -> Vec<u8> {
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox-static is installed (packaging/test-deps.sh)");
    let applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    oci::busybox_layer(Path::new("/bin/busybox"), &applets).expect("layer")
}

/// An OCI layout tarball of Debian's static busybox named `name`.
pub fn busybox_image(name: &str) -> Vec<u8> {
    let layer = busybox_layer();
    oci::image_layout(
        name,
        &oci::RunConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        },
        &layer,
    )
    .expect("image")
}

/// A bridge name and a /16 of this test run's own (several runs on one machine must not meet).
pub fn network(salt: u32) -> (String, String) {
    let n = (std::process::id() + salt) % 40 + 210;
    (format!("k1st{n}"), format!("10.{n}.0.0/16"))
}

/// Readies `dir` as a test node's data dir: its guard (which also drops the service range,
/// `service_cidr`, locally), and the busybox image `k1s.local/busybox:1` in
/// `DATA_DIR/agent/images/`.
pub fn node_dir(dir: &Path, bridge: &str, service_cidr: &str) -> Cleanup {
    let mut cleanup = Cleanup {
        data_dir: dir.to_path_buf(),
        bridge: bridge.to_string(),
        blackhole: None,
    };
    cleanup.blackhole(service_cidr);
    let images = dir.join("agent/images");
    std::fs::create_dir_all(&images).expect("images dir");
    std::fs::write(
        images.join("busybox.tar"),
        busybox_image("k1s.local/busybox:1"),
    )
    .expect("image");
    cleanup
}

/// Cleans up after a test's supervised containerd when dropped.
pub struct Cleanup {
    pub data_dir: PathBuf,
    pub bridge: String,
    pub blackhole: Option<String>,
}

impl Cleanup {
    /// The test node's `--cgroup-root` (its own, so test runs and a real node never meet).
    pub fn cgroup_root(&self) -> String {
        format!("/{}", self.bridge)
    }

    /// Drops traffic to `cidr` (the service range) locally, as the tests' safety rule asks.
    pub fn blackhole(&mut self, cidr: &str) {
        let _ = Command::new("ip")
            .args(["route", "replace", "blackhole", cidr])
            .status();
        self.blackhole = Some(cidr.to_string());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Containers still running: each OCI runtime kills and deletes its own.
        k1s::kubelet::containerd::delete_containers(&k1s::kubelet::containerd::Layout::new(
            &self.data_dir,
        ));
        // Shims of this containerd (their command line names its socket).
        let socket = self.data_dir.join("agent/containerd/containerd.sock");
        let socket = socket.to_string_lossy().into_owned();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.filter_map(Result::ok) {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains("containerd-shim") && cmdline.contains(&socket) {
                    // SAFETY: kill(2) on a shim our own containerd started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        use k1s::kubelet::masquerade;
        if let Err(e) = masquerade::remove(&masquerade::System, &self.bridge) {
            eprintln!("removing the test node's NAT rules: {e}");
        }
        // The node's cgroups (its --cgroup-root), now that nothing runs in them.
        let cgroups = k1s::kubelet::cgroups::Options {
            root: self.cgroup_root(),
            pod_max_pids: -1,
        };
        if let Err(e) =
            k1s::kubelet::cgroups::Manager::detect(&cgroups).and_then(|m| m.remove_all())
        {
            eprintln!("removing the test node's cgroups: {e}");
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        if let Some(cidr) = &self.blackhole {
            let _ = Command::new("ip")
                .args(["route", "del", "blackhole", cidr])
                .status();
        }
        // Mounts containerd left (overlay rootfs, netns, shm) under the data dir.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let prefix = self.data_dir.to_string_lossy().into_owned();
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|m| m.starts_with(&prefix))
                .collect();
            points.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in points {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
    }
}
