//! `cohort node`: one real node.

use crate::modes;
use anyhow::{bail, Context};
use clap::Args;
use cohort_core::{Limits, NodeId, Peers};
use cohort_runtime::{Listeners, NodeOptions, Registry, RuntimeConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Run one node.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// This node's id (a member of --peers).
    #[arg(long)]
    pub id: u64,
    /// Every member's peer address, this node's included: `1=127.0.0.1:7001,2=127.0.0.1:7002`.
    #[arg(long)]
    pub peers: String,
    /// Where this node's HTTP API listens.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub http: SocketAddr,
    /// Other members' HTTP addresses (`2=127.0.0.1:8002,...`), for redirects to the coordinator.
    #[arg(long)]
    pub http_peers: Option<String>,
    /// Directory of this node's data file (created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Coordination mode: static (leader and leaderless are planned).
    #[arg(long, default_value = "static")]
    pub mode: String,
    /// Cluster name, checked in every peer handshake and in the data file.
    #[arg(long, default_value = "cohort")]
    pub cluster_id: String,
    /// Tasks this node runs at once.
    #[arg(long, default_value_t = 4)]
    pub capacity: u32,
    /// Register the `exec` handler (runs commands from task payloads).
    #[arg(long)]
    pub allow_exec: bool,
    /// Largest task payload accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().payload_bytes_max)]
    pub payload_bytes_max: usize,
}

/// Parses `1=host:port,2=host:port`, refusing duplicate ids and addresses.
pub fn parse_addr_map(s: &str, what: &str) -> anyhow::Result<BTreeMap<NodeId, SocketAddr>> {
    let mut map = BTreeMap::new();
    let mut seen = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("{what}: {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("{what}: {id:?} is not a node id"))?;
        let addr: SocketAddr = addr.trim().parse().with_context(|| {
            format!("{what}: {addr:?} is not HOST:PORT (an IP address and a port)")
        })?;
        if map.insert(NodeId(id), addr).is_some() {
            bail!("{what}: node id {id} appears twice");
        }
        if let Some(other) = seen.insert(addr, id) {
            bail!("{what}: nodes {other} and {id} both use {addr}");
        }
    }
    if map.is_empty() {
        bail!("{what}: no members given");
    }
    Ok(map)
}

/// The validated pieces of a node's configuration.
pub struct Validated {
    /// The runtime configuration.
    pub config: RuntimeConfig,
    /// Where to bind the peer transport.
    pub peer_bind: SocketAddr,
    /// The mode.
    pub mode: &'static modes::Mode,
}

/// Checks everything before anything starts.
pub fn validate(args: &NodeArgs) -> anyhow::Result<Validated> {
    let mode = modes::find(&args.mode)?;
    let all = parse_addr_map(&args.peers, "--peers")?;
    let id = NodeId(args.id);
    let Some(&peer_bind) = all.get(&id) else {
        bail!("--id {} is not among --peers", args.id);
    };
    if all.values().any(|a| *a == args.http) {
        bail!("--http {} clashes with a peer address", args.http);
    }
    let limits = Limits {
        payload_bytes_max: args.payload_bytes_max,
        message_bytes_max: Limits::default()
            .message_bytes_max
            .max(args.payload_bytes_max * 2),
        ..Limits::default()
    };
    let peers = Peers::new(id, all.keys().copied(), args.capacity, limits)
        .map_err(|e| anyhow::anyhow!("invalid cluster: {e}"))?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create --data-dir {}", args.data_dir.display()))?;
    let probe = args.data_dir.join(".cohort-write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("--data-dir {} is not writable", args.data_dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    let peer_addrs = all
        .iter()
        .filter(|(k, _)| **k != id)
        .map(|(k, v)| (*k, *v))
        .collect();
    let mut config = RuntimeConfig::new(
        &args.cluster_id,
        mode.name,
        peers,
        peer_addrs,
        &args.data_dir,
    );
    if let Some(h) = &args.http_peers {
        config.http_addrs = parse_addr_map(h, "--http-peers")?;
    }
    config.http_addrs.insert(id, args.http);
    config.validate()?;
    Ok(Validated {
        config,
        peer_bind,
        mode,
    })
}

/// Runs the node until SIGINT or SIGTERM.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    crate::init_tracing();
    let v = validate(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let peer = tokio::net::TcpListener::bind(v.peer_bind)
            .await
            .with_context(|| format!("cannot listen for peers on {}", v.peer_bind))?;
        let http = tokio::net::TcpListener::bind(args.http)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", args.http))?;
        let options = NodeOptions {
            registry: Registry::with_builtins(args.allow_exec),
            ..NodeOptions::default()
        };
        let mut node = (v.mode.start)(v.config, options, Listeners { peer, http }).await?;
        eprintln!(
            "cohort node {} ({} mode) peers on {}, HTTP on http://{}",
            node.id(),
            v.mode.name,
            node.peer_addr(),
            node.http_addr()
        );
        tokio::select! {
            r = node.wait() => r.context("node stopped"),
            _ = shutdown_signal() => {
                eprintln!("shutting down");
                node.shutdown().await.context("shutdown")
            }
        }
    })
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &std::path::Path) -> NodeArgs {
        NodeArgs {
            id: 1,
            peers: "1=127.0.0.1:7001,2=127.0.0.1:7002".into(),
            http: "127.0.0.1:8001".parse().unwrap(),
            http_peers: None,
            data_dir: dir.to_path_buf(),
            mode: "static".into(),
            cluster_id: "c".into(),
            capacity: 4,
            allow_exec: false,
            payload_bytes_max: 1024,
        }
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let args = || args(dir.path());
        let err = |a: NodeArgs| validate(&a).err().unwrap().to_string();
        let mut a = args();
        a.peers = "1=127.0.0.1:7001,1=127.0.0.1:7002".into();
        assert!(err(a).contains("appears twice"));
        let mut a = args();
        a.peers = "1=127.0.0.1:7001,2=127.0.0.1:7001".into();
        assert!(err(a).contains("both use"));
        let mut a = args();
        a.id = 3;
        assert!(err(a).contains("not among --peers"));
        let mut a = args();
        a.mode = "leaderless".into();
        assert!(err(a).contains("not built yet"));
        let mut a = args();
        a.mode = "raft2".into();
        assert!(err(a).contains("unknown mode"));
        let mut a = args();
        a.http = "127.0.0.1:7002".parse().unwrap();
        assert!(err(a).contains("clashes"));
        let mut a = args();
        a.peers = "1=localhost".into();
        assert!(err(a).contains("HOST:PORT"));
        let mut a = args();
        a.data_dir = "/proc/cohort-cannot-be-here".into();
        assert!(err(a).contains("--data-dir"));
        let v = validate(&args()).unwrap();
        assert_eq!(v.peer_bind, "127.0.0.1:7001".parse().unwrap());
    }
}
