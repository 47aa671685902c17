//! Two servers on one etcd run one set of controllers and one scheduler: the first to start
//! holds the `kube-controller-manager` and `kube-scheduler` Leases, and when it dies (SIGKILL,
//! so nothing is released) the other takes both over once the Leases expire and goes on
//! reconciling. The `kubernetes` Service's endpoints list both servers, then the survivor.

mod common;

use std::time::Duration;

use common::server::{ok, text, within, Server};

fn holder(s: &Server, lease: &str) -> String {
    let o = s.kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        lease,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The addresses in the `kubernetes` EndpointSlice, as `IP IP`.
fn api_servers(s: &Server) -> String {
    let o = s.kubectl(&[
        "get",
        "endpointslice",
        "-n",
        "default",
        "kubernetes",
        "-o",
        "jsonpath={.endpoints[*].addresses[0]}",
    ]);
    text(&o).trim().to_string()
}

#[test]
fn the_standby_server_takes_over_when_the_leader_dies() {
    let etcd = k1s::testing::etcd::EtcdServer::start().expect("start etcd");
    let a = Server::start_with(&[
        "--datastore-endpoint",
        etcd.url(),
        "--disable-kubelet",
        "--advertise-address",
        "127.0.0.1",
    ]);
    within(30, "a leader", || {
        !holder(&a, "kube-controller-manager").is_empty()
    });
    let first = (
        holder(&a, "kube-controller-manager"),
        holder(&a, "kube-scheduler"),
    );
    let b = Server::start_with(&[
        "--datastore-endpoint",
        etcd.url(),
        "--disable-kubelet",
        "--simulated-nodes",
        "1",
        "--advertise-address",
        "127.0.0.2",
    ]);
    within(30, "both servers in the kubernetes endpoints", || {
        api_servers(&b) == "127.0.0.1 127.0.0.2"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        (
            holder(&b, "kube-controller-manager"),
            holder(&b, "kube-scheduler")
        ),
        first,
        "the standby must not take a held lease"
    );

    a.kill();
    within(45, "a new leader", || {
        let now = holder(&b, "kube-controller-manager");
        !now.is_empty() && now != first.0 && holder(&b, "kube-scheduler") != first.1
    });
    within(
        45,
        "the dead server leaving the kubernetes endpoints",
        || api_servers(&b) == "127.0.0.2",
    );
    // The new leader's controllers and scheduler do the work.
    ok(
        &b,
        &[
            "create",
            "deployment",
            "after",
            "--image=busybox:1.36",
            "--replicas=2",
        ],
    );
    within(45, "pods running", || {
        let o = b.kubectl(&[
            "get",
            "pods",
            "-l",
            "app=after",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name",
        ]);
        text(&o).lines().count() == 2
    });
}
