//! The container runtime for real: k1s supervises Debian's containerd with its generated
//! configuration, imports its own pause image and an offline busybox image (both an OCI layout
//! and a `docker save` archive), runs a pod sandbox and a busybox httpd in it through CRI v1,
//! serves a request to the pod's IP on the node's bridge, and keeps the pod running when
//! containerd is killed with SIGKILL and restarted by the supervisor.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use k1s::kubelet::containerd::{config, Containerd, Layout, Options};
use k1s::kubelet::cri::{api, grpc::Cri, Runtime};
use k1s::kubelet::images;

mod common;
use common::node::busybox_image;

const READY: Duration = Duration::from_secs(30);

/// A bridge and subnet of this test's own (several test runs on one machine must not meet).
fn network() -> (String, String) {
    let n = std::process::id() % 200 + 20;
    (format!("k1st{n}"), format!("10.213.{n}.0/24"))
}

/// The same image as `docker save` writes it: manifest.json, the config, one layer directory.
fn docker_archive(tag: &str, layout: &[u8]) -> Vec<u8> {
    let mut blobs = std::collections::HashMap::new();
    let mut ar = tar::Archive::new(layout);
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let p = e.path().expect("path").to_string_lossy().into_owned();
        let mut d = Vec::new();
        e.read_to_end(&mut d).expect("read");
        blobs.insert(p, d);
    }
    let index: serde_json::Value = serde_json::from_slice(&blobs["index.json"]).expect("index");
    let blob = |digest: &str| blobs[&format!("blobs/sha256/{}", &digest[7..])].clone();
    let manifest: serde_json::Value = serde_json::from_slice(&blob(
        index["manifests"][0]["digest"].as_str().expect("digest"),
    ))
    .expect("manifest");
    let config = blob(manifest["config"]["digest"].as_str().expect("config"));
    let layer = blob(manifest["layers"][0]["digest"].as_str().expect("layer"));
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data).expect("append");
    };
    add("abc123/layer.tar", &layer);
    add("cfg.json", &config);
    let m = serde_json::json!([{"Config": "cfg.json", "RepoTags": [tag], "Layers": ["abc123/layer.tar"]}]);
    add("manifest.json", m.to_string().as_bytes());
    b.into_inner().expect("tar")
}

fn get(ip: &str, port: u16, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().expect("addr"),
        Duration::from_secs(3),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

async fn get_eventually(ip: &str, path: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        match get(ip, 8080, path) {
            Ok(body) if body.contains("200 OK") => return body,
            Ok(body) => last = body,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no answer from the pod at {ip}:8080{path}: {last}");
}

fn sandbox_config(uid: &str, logs: &Path) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "web".into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web".into(),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(api::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_on_supervised_containerd_and_outlive_its_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let (bridge, subnet) = network();
    std::fs::create_dir_all(layout.cni_conf_dir()).expect("cni dir");
    std::fs::write(
        layout.cni_conf_dir().join("10-k1s.conflist"),
        config::cni_conflist(&bridge, &subnet, &layout.cni_ipam_dir()),
    )
    .expect("conflist");
    let mut containerd =
        Containerd::start(layout.clone(), &Options::default(), Path::new("containerd"))
            .expect("start containerd");
    let channel = containerd.ready(READY).await.expect("containerd ready");
    let cri = Cri::new(channel.clone());
    let version = cri.version().await.expect("version");
    assert_eq!(version.runtime_name, "containerd");

    // Images: k1s's own pause image, busybox as an OCI layout and as a docker archive.
    images::ensure_pause(&channel, config::PAUSE_IMAGE, dir.path())
        .await
        .expect("pause image");
    let img_dir = images::images_dir(dir.path());
    std::fs::create_dir_all(&img_dir).expect("images dir");
    let layout_tar = busybox_image("docker.io/library/busybox:latest");
    std::fs::write(img_dir.join("busybox.tar"), &layout_tar).expect("write");
    std::fs::write(
        img_dir.join("saved.tar"),
        docker_archive("savedbox:1", &layout_tar),
    )
    .expect("write");
    std::fs::write(img_dir.join("broken.tar"), b"not a tarball").expect("write");
    let mut names = images::import_dir(&channel, &img_dir).await;
    names.sort();
    assert_eq!(
        names,
        [
            "docker.io/library/busybox:latest",
            "docker.io/library/savedbox:1"
        ],
        "both tarballs imported, the broken one skipped"
    );
    for image in [
        config::PAUSE_IMAGE,
        "docker.io/library/busybox:latest",
        "docker.io/library/savedbox:1",
    ] {
        // The CRI plugin learns of imported images from containerd's events, a moment later.
        let mut seen = false;
        for _ in 0..50 {
            if cri
                .image_status(image)
                .await
                .expect("image status")
                .is_some()
            {
                seen = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(seen, "CRI sees {image}");
    }
    // Importing again is harmless.
    images::import::import_file(&channel, &img_dir.join("busybox.tar"))
        .await
        .expect("import again");

    // A pod: the sandbox (k1s's pause) and a busybox httpd, on the bridge.
    let logs = dir.path().join("pods").join("uid-1");
    std::fs::create_dir_all(&logs).expect("log dir");
    let sandbox = sandbox_config("uid-1", &logs);
    let sandbox_id = cri
        .run_pod_sandbox(sandbox.clone(), "")
        .await
        .expect("sandbox");
    let status = cri.pod_sandbox_status(&sandbox_id).await.expect("status");
    let ip = status.network.expect("network").ip;
    assert!(ip.starts_with("10.213."), "pod IP {ip} from {subnet}");
    let container = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "httpd".into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: "docker.io/library/savedbox:1".into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into()],
        args: vec!["echo hello-from-pod > /www/index.html; exec httpd -f -p 8080 -h /www".into()],
        log_path: "httpd/0.log".into(),
        linux: Some(api::LinuxContainerConfig::default()),
        ..Default::default()
    };
    let cid = cri
        .create_container(&sandbox_id, container, sandbox.clone())
        .await
        .expect("create container");
    cri.start_container(&cid).await.expect("start container");
    let body = get_eventually(&ip, "/index.html").await;
    assert!(body.contains("hello-from-pod"), "{body}");
    let before = cri.container_status(&cid).await.expect("container status");
    assert_eq!(before.state, api::ContainerState::ContainerRunning as i32);
    let exec = cri
        .exec_sync(&cid, vec!["cat".into(), "/www/index.html".into()], 10)
        .await
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "hello-from-pod\n");

    // containerd dies; the supervisor restarts it; the pod never noticed.
    let pid = containerd.pid().expect("containerd pid");
    // SAFETY: kill(2) on the containerd this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    for _ in 0..100 {
        if containerd.starts() >= 2 && containerd.pid().is_some_and(|p| p != pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(containerd.starts(), 2, "restarted once");
    let channel = containerd.ready(READY).await.expect("ready again");
    let cri = Cri::new(channel);
    let after = cri.container_status(&cid).await.expect("container status");
    assert_eq!(after.state, api::ContainerState::ContainerRunning as i32);
    assert_eq!(after.started_at, before.started_at, "not restarted");
    let body = get_eventually(&ip, "/index.html").await;
    assert!(body.contains("hello-from-pod"), "{body}");
    let sandboxes = cri.list_pod_sandboxes(None).await.expect("list sandboxes");
    assert_eq!(sandboxes.len(), 1, "the pod is still the only one");

    // Clean up what the test started: the pod, containerd, the bridge.
    cri.stop_container(&cid, 2).await.expect("stop container");
    cri.remove_container(&cid).await.expect("remove container");
    cri.stop_pod_sandbox(&sandbox_id)
        .await
        .expect("stop sandbox");
    cri.remove_pod_sandbox(&sandbox_id)
        .await
        .expect("remove sandbox");
    containerd.stop(Duration::from_secs(10));
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &bridge])
        .status();
}
