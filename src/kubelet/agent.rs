//! `k1s agent`: joins a server with a token (the CA pinned by it, a kubelet client certificate
//! per node) and runs either a kubelet on this machine's containerd or `--simulate N`
//! simulated nodes with their kubelet API, until SIGTERM or SIGINT.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cli::AgentArgs;
use crate::supervisor::{default_advertise_address, hostname, Signals, SupervisorError};

/// Runs the agent until a signal (or its kubelet fails).
pub async fn run(args: AgentArgs) -> Result<(), SupervisorError> {
    use crate::kubelet::simulated;
    let signals = Signals::install()?;
    let dir = args.common.data_dir.join("agent");
    if args.simulate == 0 {
        let kcfg = args.kubelet.to_config(
            &args.common.data_dir,
            default_advertise_address(IpAddr::from([0, 0, 0, 0])),
            hostname(),
        )?;
        let mut kcfg = kcfg;
        let name = kcfg.node_name.clone();
        let clients = join_server(&args, std::slice::from_ref(&name), &dir).await?;
        kcfg.client_ca = std::fs::read_to_string(dir.join("server-ca.crt")).ok();
        let Some(client) = clients.get(&name).cloned() else {
            return Ok(());
        };
        tracing::info!(node = %name, "joined; node certificate under {}", dir.display());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut task = tokio::spawn(crate::kubelet::run::run(
            kcfg,
            client,
            crate::resource_metrics::Sources::default(),
            stop_rx,
        ));
        tokio::select! {
            signal = signals.wait() => {
                tracing::info!(signal, "shutting down");
                stop_tx.send_replace(true);
                if let Ok(Err(e)) = task.await {
                    return Err(e.into());
                }
            }
            done = &mut task => {
                if let Ok(Err(e)) = done {
                    return Err(e.into());
                }
            }
        }
        tracing::info!("stopped cleanly");
        return Ok(());
    }
    let sim = simulated::SimConfig::from_flags(&args.simulated.to_config(args.simulate));
    let names = sim.names();
    // The nodes' kubelet API, bound before joining so a taken port fails at once.
    let ip = args
        .kubelet
        .node_ip
        .unwrap_or_else(|| default_advertise_address(IpAddr::from([0, 0, 0, 0])));
    let listener = crate::kubelet::api::bind(std::net::SocketAddr::from((
        [0, 0, 0, 0],
        args.kubelet.kubelet_port,
    )))
    .await
    .map_err(|e| {
        SupervisorError::Flag(format!(
            "the simulated nodes' kubelet API: {e} (choose another --kubelet-port; 0: any free one)"
        ))
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| SupervisorError::Flag(format!("--kubelet-port: {e}")))?
        .port();
    let clients = join_server(&args, &names, &dir).await?;
    let ca_path = dir.join("server-ca.crt");
    let client_ca = std::fs::read_to_string(&ca_path)
        .map_err(|e| SupervisorError::Flag(format!("reading {}: {e}", ca_path.display())))?;
    let kubelet_api = simulated::KubeletApi {
        listener,
        advertise: std::net::SocketAddr::new(ip, port),
        cert: crate::kubelet::api::serving_cert(
            &hostname().unwrap_or_else(|| "localhost".into()),
            ip,
        )
        .map_err(|e| SupervisorError::Kubelet(e.into()))?,
        client_ca,
    };
    tracing::info!(%ip, port, "simulated nodes' kubelet API listening");
    tracing::info!(
        nodes = clients.len(),
        "joined; node certificates under {}",
        dir.display()
    );
    let clients = Arc::new(clients);
    let Some(fallback) = names.first().and_then(|n| clients.get(n)).cloned() else {
        return Ok(());
    };
    let sim_clients = simulated::Clients {
        reader: None,
        for_node: Arc::new(move |name: &str| {
            clients
                .get(name)
                .cloned()
                .unwrap_or_else(|| fallback.clone())
        }),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    // The server scrapes the nodes' usage from the kubelet API.
    let task = tokio::spawn(simulated::run(
        sim,
        sim_clients,
        crate::resource_metrics::Sources::default(),
        Some(kubelet_api),
        stop_rx,
    ));
    let signal = signals.wait().await;
    tracing::info!(signal, "shutting down");
    stop_tx.send_replace(true);
    let _ = task.await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Joins the server as the agent's nodes; a server that is not up yet is waited for, a wrong
/// token or CA ends the agent.
async fn join_server(
    args: &AgentArgs,
    names: &[String],
    dir: &std::path::Path,
) -> Result<std::collections::HashMap<String, kube::Client>, SupervisorError> {
    use crate::kubelet::join;
    tracing::info!(server = %args.server, nodes = names.len(), "joining");
    loop {
        match join::join(&args.server, &args.token, names, dir).await {
            Ok(c) => return Ok(c),
            Err(join::JoinError::Api(kube::Error::Api(s))) if s.code >= 500 => {
                tracing::warn!(error = %s.message, "the server is not ready; retrying");
            }
            Err(join::JoinError::Api(
                e @ (kube::Error::HyperError(_) | kube::Error::Service(_)),
            )) => {
                tracing::warn!(error = %e, "the server is not reachable; retrying");
            }
            Err(source) => {
                return Err(SupervisorError::Join {
                    server: args.server.clone(),
                    source,
                })
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
