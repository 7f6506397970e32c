//! `cohort node`: one real node.

use crate::modes;
use anyhow::{bail, Context};
use clap::Args;
use cohort_core::{Limits, NodeId, Peers};
use cohort_runtime::auth::Tokens;
use cohort_runtime::tls::{HttpTls, PeerTls, TlsFiles};
use cohort_runtime::{Listeners, NodeOptions, Registry, RuntimeConfig, SecurityConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Run one node. Settings come from flags, a TOML file (`--config`), or
/// both (a flag wins over the file).
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// A TOML file with any of the settings below (`id = 1`, `peers = "1=..."`, `data_dir = "..."`, ...).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id (a member of --peers).
    #[arg(long)]
    pub id: Option<u64>,
    /// Every member's peer address, this node's included: `1=127.0.0.1:7001,2=127.0.0.1:7002`.
    #[arg(long)]
    pub peers: Option<String>,
    /// Where this node's HTTP API listens [default: 127.0.0.1:8001].
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Other members' HTTP addresses (`2=127.0.0.1:8002,...`), for redirects to the coordinator.
    #[arg(long)]
    pub http_peers: Option<String>,
    /// Directory of this node's data file (created if missing).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Coordination mode: static, leader or leaderless [default: static].
    #[arg(long)]
    pub mode: Option<String>,
    /// Cluster name, checked in every peer handshake and in the data file [default: cohort].
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Tasks this node runs at once [default: 4].
    #[arg(long)]
    pub capacity: Option<u32>,
    /// A worker label this node carries (repeat for more): it runs only
    /// tasks whose labels it carries, every one. A queue is a label its
    /// workers carry (`--label queue=reports`).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Register the `exec` handler (runs commands from task payloads). Refused
    /// unless clients must authenticate (--tokens, or --http-client-ca) or
    /// --insecure is given.
    #[arg(long)]
    pub allow_exec: bool,
    /// Let --allow-exec run without client authentication: anyone who can
    /// reach the HTTP API can then run commands as this node's user.
    #[arg(long)]
    pub insecure: bool,
    /// Bearer tokens the HTTP API accepts, one `ROLE TOKEN` line each (roles
    /// read, submit, admin; `#` comments). Without it the API is open.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// Cluster CA certificate (PEM): with --cert and --key, peers speak
    /// mutual TLS and must present a certificate signed by this CA.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// This node's certificate (PEM), for `node-<id>` (see `cohort certs`).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Serve the HTTP API over TLS with --cert and --key.
    #[arg(long)]
    pub http_tls: bool,
    /// With --http-tls: require API clients to present a certificate signed by this CA (PEM).
    #[arg(long)]
    pub http_client_ca: Option<PathBuf>,
    /// Leaderless mode: the ring at epoch 0, the members tasks are placed
    /// on (`1,2,3`; identical on every node) [default: every member]. A
    /// member outside it is a spare that serves clients until it joins
    /// (`cohort ring join N`).
    #[arg(long)]
    pub initial_ring: Option<String>,
    /// Largest task payload accepted, in bytes [default: 1048576].
    #[arg(long)]
    pub payload_bytes_max: Option<usize>,
    /// Most events a task's history keeps: its submission and the latest
    /// ones (at least 2; the same on every node) [default: 16].
    #[arg(long)]
    pub task_events_max: Option<usize>,
    /// How long a succeeded task's record is kept after it finished, in
    /// milliseconds; then it is purged and its id may be used again (the
    /// same on every node) [default: 604800000, a week].
    #[arg(long)]
    pub succeeded_retained_ms: Option<u64>,
    /// Like --succeeded-retained-ms, for failed tasks [default: 604800000].
    #[arg(long)]
    pub failed_retained_ms: Option<u64>,
    /// Like --succeeded-retained-ms, for cancelled tasks [default: 604800000].
    #[arg(long)]
    pub cancelled_retained_ms: Option<u64>,
    /// Most finished task records kept, oldest finished purged first
    /// whatever their retention: per cluster in leader and static mode, per
    /// node in leaderless mode [default: 1000000].
    #[arg(long)]
    pub tasks_retained_max: Option<usize>,
    /// On SIGINT/SIGTERM, how long a leader may take to hand leadership
    /// over before the node stops anyway, in milliseconds [default: 2000].
    #[arg(long)]
    pub shutdown_grace_ms: Option<u64>,
    /// Append one JSON line per handler started, handler completion and
    /// decision note to this file (an audit log for fault-test harnesses).
    #[arg(long)]
    pub history_file: Option<PathBuf>,
    /// Most bytes this process appends to --history-file; later records are
    /// dropped with a warning [default: 67108864].
    #[arg(long)]
    pub history_bytes_max: Option<u64>,
}

use cohort_runtime::config::NodeFile as FileSettings;

/// Settings after flags and file are merged and defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    id: u64,
    peers: String,
    http: SocketAddr,
    http_peers: Option<String>,
    data_dir: PathBuf,
    mode: String,
    cluster_id: String,
    capacity: u32,
    labels: Vec<String>,
    allow_exec: bool,
    payload_bytes_max: usize,
    task_events_max: usize,
    succeeded_retained_ms: u64,
    failed_retained_ms: u64,
    cancelled_retained_ms: u64,
    tasks_retained_max: usize,
    initial_ring: Option<String>,
    insecure: bool,
    tokens: Option<PathBuf>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    http_tls: bool,
    http_client_ca: Option<PathBuf>,
    shutdown_grace_ms: u64,
    history_file: Option<PathBuf>,
    history_bytes_max: u64,
    inputs_per_batch_max: Option<usize>,
    transport: cohort_runtime::config::TransportLimits,
    client: cohort_runtime::config::ClientLimits,
    kinds: BTreeMap<String, cohort_runtime::config::KindPolicy>,
    leaderless: Option<toml::Table>,
}

impl NodeArgs {
    /// Merges the flags over the `--config` file and applies defaults.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            None => FileSettings::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read --config {}", p.display()))?;
                FileSettings::parse(&text)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("invalid --config {}", p.display()))?
            }
        };
        Ok(Settings {
            id: self
                .id
                .or(file.id)
                .context("no node id: give --id or `id` in --config")?,
            peers: self
                .peers
                .clone()
                .or(file.peers)
                .context("no members: give --peers or `peers` in --config")?,
            http: self
                .http
                .or(file.http)
                .unwrap_or_else(|| "127.0.0.1:8001".parse().expect("a socket address")),
            http_peers: self.http_peers.clone().or(file.http_peers),
            data_dir: self
                .data_dir
                .clone()
                .or(file.data_dir)
                .context("no data directory: give --data-dir or `data_dir` in --config")?,
            mode: self
                .mode
                .clone()
                .or(file.mode)
                .unwrap_or_else(|| "static".into()),
            cluster_id: self
                .cluster_id
                .clone()
                .or(file.cluster_id)
                .unwrap_or_else(|| "cohort".into()),
            capacity: self.capacity.or(file.capacity).unwrap_or(4),
            // The flags, when any, replace the file's list.
            labels: if self.labels.is_empty() {
                file.labels.clone().unwrap_or_default()
            } else {
                self.labels.clone()
            },
            allow_exec: self.allow_exec || file.allow_exec.unwrap_or(false),
            payload_bytes_max: self
                .payload_bytes_max
                .or(file.payload_bytes_max)
                .unwrap_or(Limits::default().payload_bytes_max),
            task_events_max: self
                .task_events_max
                .or(file.task_events_max)
                .unwrap_or(Limits::default().task_events_max),
            succeeded_retained_ms: self
                .succeeded_retained_ms
                .or(file.succeeded_retained_ms)
                .unwrap_or(Limits::default().succeeded_retained_ms),
            failed_retained_ms: self
                .failed_retained_ms
                .or(file.failed_retained_ms)
                .unwrap_or(Limits::default().failed_retained_ms),
            cancelled_retained_ms: self
                .cancelled_retained_ms
                .or(file.cancelled_retained_ms)
                .unwrap_or(Limits::default().cancelled_retained_ms),
            tasks_retained_max: self
                .tasks_retained_max
                .or(file.tasks_retained_max)
                .unwrap_or(Limits::default().tasks_retained_max),
            initial_ring: self.initial_ring.clone().or(file.initial_ring),
            insecure: self.insecure || file.insecure.unwrap_or(false),
            tokens: self.tokens.clone().or(file.tokens),
            ca: self.ca.clone().or(file.ca),
            cert: self.cert.clone().or(file.cert),
            key: self.key.clone().or(file.key),
            http_tls: self.http_tls || file.http_tls.unwrap_or(false),
            http_client_ca: self.http_client_ca.clone().or(file.http_client_ca),
            shutdown_grace_ms: self
                .shutdown_grace_ms
                .or(file.shutdown_grace_ms)
                .unwrap_or(cohort_runtime::config::SHUTDOWN_GRACE_MS_DEFAULT),
            history_file: self.history_file.clone().or(file.history_file),
            history_bytes_max: self
                .history_bytes_max
                .or(file.history_bytes_max)
                .unwrap_or(cohort_runtime::audit::AUDIT_BYTES_MAX_DEFAULT),
            inputs_per_batch_max: file.inputs_per_batch_max,
            transport: file.transport.unwrap_or_default(),
            client: file.client.unwrap_or_default(),
            kinds: file.kinds.unwrap_or_default(),
            leaderless: file.leaderless,
        })
    }
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
    /// Leaderless mode: its settings (the `[leaderless]` table over the
    /// defaults, with `initial_ring`), validated against the members.
    pub leaderless: Option<cohort_leaderless::LeaderlessConfig>,
}

/// Parses `--initial-ring`: distinct configured members, at least one.
fn parse_ring(s: &str, members: &BTreeMap<NodeId, SocketAddr>) -> anyhow::Result<Vec<NodeId>> {
    let mut ring = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id: u64 = part
            .parse()
            .with_context(|| format!("--initial-ring: {part:?} is not a node id"))?;
        if !members.contains_key(&NodeId(id)) {
            bail!("--initial-ring: node {id} is not among --peers");
        }
        if ring.contains(&NodeId(id)) {
            bail!("--initial-ring: node {id} appears twice");
        }
        ring.push(NodeId(id));
    }
    if ring.is_empty() {
        bail!("--initial-ring: no members given");
    }
    ring.sort();
    Ok(ring)
}

/// Checks everything before anything starts.
pub fn validate(args: &Settings) -> anyhow::Result<Validated> {
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
        task_events_max: args.task_events_max,
        succeeded_retained_ms: args.succeeded_retained_ms,
        failed_retained_ms: args.failed_retained_ms,
        cancelled_retained_ms: args.cancelled_retained_ms,
        tasks_retained_max: args.tasks_retained_max,
        ..Limits::default()
    };
    let peers = Peers::new(id, all.keys().copied(), args.capacity, limits)
        .and_then(|p| p.with_labels(args.labels.clone()))
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
    config.security = security(args)?;
    config.shutdown_grace_ms = args.shutdown_grace_ms;
    config.transport = args.transport.clone();
    config.client = args.client.clone();
    config.kind_policies = args.kinds.clone();
    if let Some(n) = args.inputs_per_batch_max {
        config.inputs_per_batch_max = n;
    }
    config.audit = args
        .history_file
        .as_ref()
        .map(|path| cohort_runtime::audit::AuditConfig {
            path: path.clone(),
            bytes_max: args.history_bytes_max,
        });
    if args.allow_exec && !config.security.client_auth() && !args.insecure {
        bail!(
            "refusing --allow-exec without client authentication: anyone who reaches the \
             HTTP API could run commands as this user. Give --tokens FILE (or --http-tls with \
             --http-client-ca), or --insecure if only trusted people can reach {}",
            args.http
        );
    }
    let initial_ring = match &args.initial_ring {
        None => None,
        Some(_) if mode.name != "leaderless" => {
            bail!(
                "--initial-ring is for --mode leaderless (the {} mode has no ring)",
                mode.name
            )
        }
        Some(r) => Some(parse_ring(r, &all)?),
    };
    let leaderless = match (&args.leaderless, mode.name) {
        (Some(_), name) if name != "leaderless" => {
            bail!("the [leaderless] table is for --mode leaderless, not {name}")
        }
        (_, "leaderless") => {
            let table = args.leaderless.clone().unwrap_or_default();
            if table.contains_key("initial_ring") {
                bail!("[leaderless]: give initial_ring at the top level or as --initial-ring");
            }
            let mut lc: cohort_leaderless::LeaderlessConfig = toml::Value::Table(table)
                .try_into()
                .map_err(|e| anyhow::anyhow!("[leaderless]: {e}"))?;
            lc.initial_ring = initial_ring;
            lc.validate(&config.peers)
                .map_err(|e| anyhow::anyhow!("[leaderless]: {e}"))?;
            Some(lc)
        }
        _ => None,
    };
    config.validate()?;
    Ok(Validated {
        config,
        peer_bind,
        mode,
        leaderless,
    })
}

/// Reads the token file and the TLS material.
fn security(args: &Settings) -> anyhow::Result<SecurityConfig> {
    let mut sec = SecurityConfig::default();
    if let Some(p) = &args.tokens {
        sec.tokens = Some(Arc::new(Tokens::load(p)?));
    }
    let files = match (&args.ca, &args.cert, &args.key) {
        (None, None, None) => None,
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => bail!("TLS needs all three of --ca, --cert and --key"),
    };
    if let Some(f) = &files {
        sec.peer_tls = Some(PeerTls::new(&f.read()?)?);
    }
    if args.http_tls {
        let Some(f) = &files else {
            bail!("--http-tls needs --ca, --cert and --key");
        };
        let pem = f.read()?;
        let client_ca = match &args.http_client_ca {
            None => None,
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("cannot read --http-client-ca {}", p.display()))?,
            ),
        };
        sec.http_tls = Some(HttpTls::new(&pem.cert, &pem.key, client_ca.as_deref())?);
    } else if args.http_client_ca.is_some() {
        bail!("--http-client-ca needs --http-tls");
    }
    Ok(sec)
}

/// Warns about a listener reachable beyond this machine without protection.
fn warn_exposure(args: &Settings, peer_bind: SocketAddr, sec: &SecurityConfig) {
    if !args.http.ip().is_loopback() && !sec.client_auth() {
        eprintln!(
            "warning: the HTTP API on {} is reachable from the network and needs no token (--tokens)",
            args.http
        );
    }
    if !peer_bind.ip().is_loopback() && sec.peer_tls.is_none() {
        eprintln!(
            "warning: the peer port {peer_bind} is reachable from the network without TLS (--ca/--cert/--key)"
        );
    }
}

/// Runs the node until SIGINT or SIGTERM.
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    crate::init_tracing();
    let args = args.settings()?;
    let v = validate(&args)?;
    warn_exposure(&args, v.peer_bind, &v.config.security);
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
        let listeners = Listeners { peer, http };
        let mut node = match v.leaderless {
            Some(lc) => modes::start_leaderless_config(v.config, options, listeners, lc).await?,
            None => (v.mode.start)(v.config, options, listeners).await?,
        };
        eprintln!(
            "cohort node {} ({} mode) peers on {}{}, HTTP on {}://{}{}",
            node.id(),
            v.mode.name,
            node.peer_addr(),
            if args.ca.is_some() {
                " (mutual TLS)"
            } else {
                ""
            },
            if args.http_tls { "https" } else { "http" },
            node.http_addr(),
            if args.tokens.is_some() {
                " (tokens required)"
            } else {
                ""
            },
        );
        tokio::select! {
            r = node.wait() => return r.context("node stopped"),
            _ = shutdown_signal() => {}
        }
        // Drain first: running tasks finish (or are handed back at the
        // deadline) before the node stops; a second signal stops at once.
        let deadline = Duration::from_millis(cohort_runtime::DRAIN_DEADLINE_MS_DEFAULT);
        eprintln!(
            "draining (deadline {}s; signal again to stop at once)",
            deadline.as_secs()
        );
        tokio::select! {
            r = node.drain_and_wait(deadline) => match r {
                Ok(true) => eprintln!("drained"),
                Ok(false) => eprintln!("drain: tasks still held after the deadline and grace"),
                Err(e) => eprintln!("no drain: {e}"),
            },
            _ = shutdown_signal() => eprintln!("second signal: not waiting for the drain"),
        }
        eprintln!("shutting down");
        node.shutdown().await.context("shutdown")
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
            id: Some(1),
            peers: Some("1=127.0.0.1:7001,2=127.0.0.1:7002".into()),
            http: Some("127.0.0.1:8001".parse().unwrap()),
            data_dir: Some(dir.to_path_buf()),
            mode: Some("static".into()),
            cluster_id: Some("c".into()),
            ..NodeArgs::default()
        }
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let args = || args(dir.path());
        let err = |a: NodeArgs| match a.settings() {
            Ok(s) => validate(&s).err().unwrap().to_string(),
            Err(e) => e.to_string(),
        };
        let mut a = args();
        a.peers = Some("1=127.0.0.1:7001,1=127.0.0.1:7002".into());
        assert!(err(a).contains("appears twice"));
        let mut a = args();
        a.peers = Some("1=127.0.0.1:7001,2=127.0.0.1:7001".into());
        assert!(err(a).contains("both use"));
        let mut a = args();
        a.id = Some(3);
        assert!(err(a).contains("not among --peers"));
        let mut a = args();
        a.mode = Some("raft2".into());
        assert!(err(a).contains("unknown mode"));
        let mut a = args();
        a.http = Some("127.0.0.1:7002".parse().unwrap());
        assert!(err(a).contains("clashes"));
        let mut a = args();
        a.peers = Some("1=localhost".into());
        assert!(err(a).contains("HOST:PORT"));
        let mut a = args();
        a.data_dir = Some("/proc/cohort-cannot-be-here".into());
        assert!(err(a).contains("--data-dir"));
        let mut a = args();
        a.id = None;
        assert!(err(a).contains("no node id"));
        let mut a = args();
        a.initial_ring = Some("1".into());
        assert!(err(a).contains("is for --mode leaderless"));
        for (ring, says) in [
            ("1,3", "not among --peers"),
            ("1,1", "twice"),
            ("one", "not a node id"),
            (",", "no members"),
        ] {
            let mut a = args();
            a.mode = Some("leaderless".into());
            a.initial_ring = Some(ring.into());
            assert!(err(a).contains(says), "{ring}");
        }
        let mut a = args();
        a.mode = Some("leaderless".into());
        a.initial_ring = Some("2, 1".into());
        let v = validate(&a.settings().unwrap()).unwrap();
        assert_eq!(
            v.leaderless.and_then(|l| l.initial_ring),
            Some(vec![NodeId(1), NodeId(2)])
        );
        let v = validate(&args().settings().unwrap()).unwrap();
        assert_eq!(v.peer_bind, "127.0.0.1:7001".parse().unwrap());
    }

    #[test]
    fn allow_exec_is_refused_without_client_auth_unless_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path());
        a.allow_exec = true;
        let e = validate(&a.settings().unwrap()).err().unwrap().to_string();
        assert!(e.contains("refusing --allow-exec"), "{e}");
        a.insecure = true;
        validate(&a.settings().unwrap()).unwrap();
        a.insecure = false;
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "submit 0123456789abcdef0123\n").unwrap();
        a.tokens = Some(tokens);
        let v = validate(&a.settings().unwrap()).unwrap();
        assert!(v.config.security.client_auth());
    }

    #[test]
    fn the_api_binds_loopback_by_default_and_tls_needs_all_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path());
        a.http = None;
        let s = a.settings().unwrap();
        assert!(s.http.ip().is_loopback());
        a.ca = Some(dir.path().join("ca.pem"));
        let e = validate(&a.settings().unwrap()).err().unwrap().to_string();
        assert!(e.contains("all three"), "{e}");
        let mut a = args(dir.path());
        a.http_tls = true;
        let e = validate(&a.settings().unwrap()).err().unwrap().to_string();
        assert!(e.contains("--http-tls needs"), "{e}");
    }

    #[test]
    fn a_config_file_supplies_settings_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            format!(
                "id = 2\npeers = \"1=127.0.0.1:7001,2=127.0.0.1:7002\"\ndata_dir = {:?}\ncluster_id = \"from-file\"\ncapacity = 8\n",
                dir.path()
            ),
        )
        .unwrap();
        let a = NodeArgs {
            config: Some(file.clone()),
            capacity: Some(2),
            ..NodeArgs::default()
        };
        let v = validate(&a.settings().unwrap()).unwrap();
        assert_eq!(v.config.peers.id, NodeId(2));
        assert_eq!(v.config.cluster_id, "from-file");
        assert_eq!(v.config.peers.capacity_tasks, 2, "the flag wins");
        assert_eq!(v.peer_bind, "127.0.0.1:7002".parse().unwrap());
        assert!(v.config.peers.labels.is_empty());
        // Labels: the file's list, replaced by --label flags when given.
        let labelled = format!(
            "id = 2\npeers = \"1=127.0.0.1:7001,2=127.0.0.1:7002\"\ndata_dir = {:?}\nlabels = [\"gpu\", \"queue=render\"]\n",
            dir.path()
        );
        std::fs::write(&file, &labelled).unwrap();
        let mut a = NodeArgs {
            config: Some(file.clone()),
            ..NodeArgs::default()
        };
        let v = validate(&a.settings().unwrap()).unwrap();
        assert_eq!(v.config.peers.labels, ["gpu", "queue=render"]);
        a.labels = vec!["ssd".into()];
        let v = validate(&a.settings().unwrap()).unwrap();
        assert_eq!(v.config.peers.labels, ["ssd"], "the flags win");
        a.labels = vec!["no spaces".into()];
        let e = validate(&a.settings().unwrap()).err().unwrap().to_string();
        assert!(e.contains("label"), "{e}");
        std::fs::write(&file, "id = 2\ncolour = \"blue\"\n").unwrap();
        let a = NodeArgs {
            config: Some(file),
            ..NodeArgs::default()
        };
        let e = format!("{:#}", a.settings().unwrap_err());
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn limits_come_from_the_config_files_tables_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        let base = format!(
            "id = 1\npeers = \"1=127.0.0.1:7001,2=127.0.0.1:7002\"\ndata_dir = {:?}\n",
            dir.path()
        );
        let with = |extra: &str| {
            std::fs::write(&file, format!("{base}{extra}")).unwrap();
            NodeArgs {
                config: Some(file.clone()),
                ..NodeArgs::default()
            }
        };
        let v = validate(
            &with("inputs_per_batch_max = 64\n[transport]\nframe_read_timeout_ms = 2500\n[client]\nlist_page_max = 50\n")
                .settings()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(v.config.transport.frame_read_timeout_ms, 2500);
        assert_eq!(
            v.config.transport.send_queue_len_max,
            cohort_runtime::config::TransportLimits::default().send_queue_len_max,
            "a key left out keeps its default"
        );
        assert_eq!(v.config.client.list_page_max, 50);
        assert_eq!(v.config.inputs_per_batch_max, 64);
        let v = validate(
            &with("[kinds.sleep]\nmax_attempts = 7\nnon_retryable = [\"invalid_payload\"]\n")
                .settings()
                .unwrap(),
        )
        .unwrap();
        let policy = &v.config.kind_policies["sleep"];
        assert_eq!(policy.max_attempts, Some(7));
        assert_eq!(policy.backoff_initial_ms, None, "left out: the default");
        assert_eq!(
            policy.non_retryable.as_deref(),
            Some(&["invalid_payload".to_string()][..])
        );
        let e = validate(
            &with("[kinds.sleep]\nmax_attempts = 0\n")
                .settings()
                .unwrap(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("kind \"sleep\": ") && e.contains("max_attempts"),
            "{e}"
        );
        let e = with("[kinds.sleep]\nattempts = 2\n")
            .settings()
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").contains("unknown field `attempts`"),
            "{e:#}"
        );
        let e = validate(&with("[client]\nlist_page_max = 0\n").settings().unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("list_page_max must be positive"), "{e}");
        let e = validate(
            &with("[transport]\nconnect_backoff_ms_min = 500\nconnect_backoff_ms_max = 100\n")
                .settings()
                .unwrap(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("connect_backoff_ms_max"), "{e}");
        let e = format!(
            "{:#}",
            with("[transport]\nframe_timeout = 1\n")
                .settings()
                .unwrap_err()
        );
        assert!(e.contains("frame_timeout"), "an unknown key is named: {e}");
        let v = validate(&with("task_events_max = 5\n").settings().unwrap()).unwrap();
        assert_eq!(v.config.peers.limits.task_events_max, 5);
        let e = validate(&with("task_events_max = 1\n").settings().unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("task_events_max must be at least 2"), "{e}");
        let v = validate(
            &with(
                "failed_retained_ms = 60000
",
            )
            .settings()
            .unwrap(),
        )
        .unwrap();
        let limits = &v.config.peers.limits;
        assert_eq!(limits.failed_retained_ms, 60_000);
        assert_eq!(
            limits.succeeded_retained_ms,
            Limits::default().succeeded_retained_ms
        );
        let e = validate(
            &with(
                "cancelled_retained_ms = 0
",
            )
            .settings()
            .unwrap(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("cancelled_retained_ms must be 1..="), "{e}");
        let v = validate(&with("tasks_retained_max = 5\n").settings().unwrap()).unwrap();
        assert_eq!(v.config.peers.limits.tasks_retained_max, 5);
        let e = validate(&with("tasks_retained_max = 0\n").settings().unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tasks_retained_max"), "{e}");
    }

    #[test]
    fn the_leaderless_table_sets_the_modes_settings_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.toml");
        let base = format!(
            "id = 1\npeers = \"1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003\"\ndata_dir = {:?}\n",
            dir.path()
        );
        let check = |extra: &str| {
            std::fs::write(&file, format!("{base}{extra}")).unwrap();
            let args = NodeArgs {
                config: Some(file.clone()),
                ..NodeArgs::default()
            };
            validate(&args.settings()?)
        };
        let v = check(
            "mode = \"leaderless\"\ninitial_ring = \"1,2\"\n[leaderless]\npaxos_backoff_max_ms = 5000\nswim_probe_period_ms = 2000\n",
        )
        .unwrap();
        let lc = v.leaderless.expect("leaderless settings");
        assert_eq!(lc.paxos_backoff_max_ms, 5000);
        assert_eq!(lc.swim_probe_period_ms, 2000);
        assert_eq!(
            lc.replicas,
            cohort_leaderless::LeaderlessConfig::default().replicas,
            "a key left out keeps its default"
        );
        assert_eq!(lc.initial_ring, Some(vec![NodeId(1), NodeId(2)]));
        // Without the table, leaderless mode runs on the defaults.
        let v = check("mode = \"leaderless\"\n").unwrap();
        assert_eq!(
            v.leaderless,
            Some(cohort_leaderless::LeaderlessConfig::default())
        );
        for (extra, named) in [
            (
                "mode = \"leaderless\"\n[leaderless]\npaxos_backoff = 1\n",
                "paxos_backoff",
            ),
            (
                "mode = \"leaderless\"\n[leaderless]\nreplicas = 0\n",
                "replicas",
            ),
            (
                "mode = \"leaderless\"\n[leaderless]\nwrite_quorum = 1\n",
                "write_quorum 1",
            ),
            (
                "mode = \"leaderless\"\n[leaderless]\ninitial_ring = [1]\n",
                "initial_ring",
            ),
            (
                "mode = \"leader\"\n[leaderless]\nreplicas = 3\n",
                "[leaderless]",
            ),
        ] {
            let e = format!("{:#}", check(extra).err().expect("refused"));
            assert!(e.contains(named), "{extra:?}: {e}");
        }
    }
}
