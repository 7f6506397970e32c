//! `cohort submit / get / wait / cancel / list / members / ring / drain / schedule`: clients of a node's HTTP API.

use anyhow::Context;
use clap::{Args, Subcommand};
use cohort_runtime::client::{Client, ClientOptions, DrainInfo, RingInfo, TaskView};
use cohort_runtime::http::{parse_wait, RetryBody, SubmitBody};
use std::path::PathBuf;
use std::time::Duration;

/// How the client authenticates and what it trusts.
#[derive(Args, Clone, Default)]
pub struct AuthArgs {
    /// Bearer token for nodes started with --tokens.
    #[arg(long, env = "COHORT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust: talk TLS to nodes started with --http-tls.
    #[arg(long, env = "COHORT_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for nodes started with --http-client-ca.
    #[arg(long, env = "COHORT_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, env = "COHORT_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl std::fmt::Debug for AuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthArgs")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl AuthArgs {
    /// A client of `node` with these credentials.
    pub fn client(&self, node: &str) -> anyhow::Result<Client> {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read(p).with_context(|| format!("cannot read {what} {}", p.display()))
        };
        let options = ClientOptions {
            token: self.token.clone().filter(|t| !t.is_empty()),
            ca_pem: self.ca.as_ref().map(|p| read(p, "--ca")).transpose()?,
            identity_pem: match (&self.cert, &self.key) {
                (Some(c), Some(k)) => Some((read(c, "--cert")?, read(k, "--key")?)),
                _ => None,
            },
        };
        Ok(Client::with_options(node, options)?)
    }
}

/// Submit a task.
#[derive(Args, Debug, Clone)]
pub struct SubmitArgs {
    /// Any node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub node: String,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Handler kind: sleep, hash, echo, exec (if the node allows it).
    #[arg(long, required_unless_present = "batch")]
    pub kind: Option<String>,
    /// Submit many tasks in one `POST /v1/tasks:batch` instead: a file
    /// (`-` for stdin) with one submit body per line, e.g.
    /// `{"id":"a1","kind":"echo","payload":"hi"}`. Prints the ids in order.
    #[arg(long, conflicts_with_all = ["kind", "id", "idempotency_key", "dedupe_key", "wait", "not_before_ms", "delay", "backoff_initial_ms", "backoff_max_ms", "non_retryable", "schedule_to_start_ms", "priority", "heartbeat_timeout_ms", "lease_grace_ms", "labels", "limit_key"])]
    pub batch: Option<PathBuf>,
    /// Payload text (sleep: milliseconds or {"ms":N}; hash: {"rounds":N,"data":"..."}; exec: a command line).
    #[arg(long, default_value = "")]
    pub payload: String,
    /// Client-chosen task id (hex) for an idempotent submit.
    #[arg(long, conflicts_with = "idempotency_key")]
    pub id: Option<String>,
    /// A key of your own (1-255 visible ASCII bytes) that names the task:
    /// submitting again under it returns the same task, never a second one
    /// (the same id as the HTTP `Idempotency-Key` header gives).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// A key (1-255 visible ASCII bytes) under which at most one task is
    /// pending or running: while the key's last task is not final, its id
    /// is printed (with `deduplicated`) and nothing is created; once it is
    /// final, this submit creates the key's next task. Decided by the
    /// cluster's consensus (the HTTP `Dedupe-Key` header).
    #[arg(long, conflicts_with_all = ["id", "idempotency_key"])]
    pub dedupe_key: Option<String>,
    /// Per-execution timeout.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Attempts before the task fails.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Do not start the task before this instant, in ms since the Unix epoch.
    #[arg(long, conflicts_with = "delay")]
    pub not_before_ms: Option<u64>,
    /// Do not start the task before this long from now (e.g. 30s). Sent as
    /// an absolute `not_before_ms`, read from this machine's clock, so a
    /// second run makes a different body: with --id or --idempotency-key,
    /// give --not-before-ms instead.
    #[arg(long)]
    pub delay: Option<String>,
    /// Retry backoff cap after the first failed attempt, doubling per
    /// failed attempt (the delay is drawn uniformly below it); 0 retries at
    /// once. Default 1000.
    #[arg(long)]
    pub backoff_initial_ms: Option<u64>,
    /// Largest retry backoff cap. Default 60000.
    #[arg(long)]
    pub backoff_max_ms: Option<u64>,
    /// An error class (the `class` of a `class: message` handler error)
    /// that fails the task at once instead of retrying it; repeatable.
    #[arg(long = "non-retryable", value_name = "CLASS")]
    pub non_retryable: Vec<String>,
    /// Fail the task (`not_started`) if no node has started it this long
    /// after it could start; default: wait for ever.
    #[arg(long)]
    pub schedule_to_start_ms: Option<u64>,
    /// Among tasks that may start, a higher priority starts first
    /// (-128 to 127; default 0).
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i8>,
    /// Stop a handler that goes this long without a heartbeat and fail the
    /// attempt (class `heartbeat_timeout`); default: none.
    #[arg(long)]
    pub heartbeat_timeout_ms: Option<u64>,
    /// How long past its timeout the cluster waits for an attempt's
    /// outcome before it ends the lease itself (1000 to 3600000; default:
    /// the kind's, else the timeout again within 1 to 10 s).
    #[arg(long)]
    pub lease_grace_ms: Option<u64>,
    /// Routing: a worker label a node must carry to run the task (repeat
    /// for more; a node must carry every one). A queue is a label its
    /// workers carry (`--label queue=reports`).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub limit: LimitArgs,
    /// Wait this long (e.g. 10s) for the outcome and print it.
    #[arg(long)]
    pub wait: Option<String>,
}

/// Read a task.
#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    /// Any node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub node: String,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The task id.
    pub id: String,
    /// A local read that may be behind.
    #[arg(long)]
    pub stale: bool,
    /// Also print what happened to the task: submitted, assigned, failed
    /// attempts, lost runners, its outcome.
    #[arg(long)]
    pub events: bool,
}

/// Wait for a task to be final and print it; non-zero exit unless it succeeded.
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Any node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub node: String,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The task id.
    pub id: String,
    /// Give up after this long (e.g. 30s, 500ms).
    #[arg(long, default_value = "30s")]
    pub timeout: String,
}

/// Cancel a task.
#[derive(Args, Debug, Clone)]
pub struct CancelArgs {
    /// Any node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub node: String,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The task id.
    pub id: String,
}

/// Run failed or cancelled tasks again, each as a new task with the same
/// body (at most one live retry per task).
#[derive(Args, Debug, Clone)]
pub struct RetryArgs {
    /// Any node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub node: String,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The tasks to retry.
    #[arg(required_unless_present = "failed", conflicts_with = "failed")]
    pub ids: Vec<String>,
    /// Retry every failed task of the cluster (bulk retry).
    #[arg(long)]
    pub failed: bool,
    /// With --failed: only tasks whose error's class is this (the text
    /// before ": ", e.g. `timeout`, `heartbeat_timeout`).
    #[arg(long, requires = "failed")]
    pub error_class: Option<String>,
    /// With --failed: look at most this many failed tasks.
    #[arg(long, default_value_t = 1000, requires = "failed")]
    pub limit: usize,
}

/// List the cluster's tasks.
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// Any node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub node: String,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Only tasks in this state: pending, running, succeeded, failed or cancelled.
    #[arg(long)]
    pub state: Option<String>,
    /// Print at most this many tasks (lowest ids first).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

/// Show the cluster as a node sees it.
#[derive(Args, Debug, Clone)]
pub struct MembersArgs {
    /// Any node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub node: String,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Show or change the ring (leaderless mode): the members tasks are placed on.
#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RingArgs {
    #[command(subcommand)]
    pub command: Option<RingCommand>,
    /// Without a subcommand: `show`.
    #[command(flatten)]
    pub target: RingTarget,
}

/// What `cohort ring` does.
#[derive(Subcommand, Debug, Clone)]
pub enum RingCommand {
    /// The ring the node knows: epoch, members, its change in flight.
    Show(RingTarget),
    /// Ask the node to propose that configured member N joins the ring.
    Join(RingChangeArgs),
    /// Ask the node to propose that member N leaves the ring.
    Remove(RingChangeArgs),
}

/// Which node to ask.
#[derive(Args, Debug, Clone)]
pub struct RingTarget {
    /// Any node's HTTP address.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub node: String,
    #[command(flatten)]
    pub auth: AuthArgs,
}

/// A join or removal.
#[derive(Args, Debug, Clone)]
pub struct RingChangeArgs {
    /// The node (its id) joining or leaving.
    pub member: u64,
    #[command(flatten)]
    pub target: RingTarget,
    /// Wait this long (e.g. 10s) until the asked node's ring reflects the
    /// change; non-zero exit if it does not by then.
    #[arg(long)]
    pub wait: Option<String>,
}

/// Drain a node: it takes no new work, lets its running tasks finish until
/// the deadline, then hands what is left back to run elsewhere.
#[derive(Args, Debug, Clone)]
pub struct DrainArgs {
    /// The node to drain, by id (its address is read from `--node`'s
    /// `/v1/cluster`); without it, the node at `--node` itself.
    pub member: Option<u64>,
    /// Any node's HTTP address (the drained one when no id is given).
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub node: String,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// How long running tasks may go on before they are handed back
    /// (e.g. 30s; the node's default is 30s, its maximum 1h).
    #[arg(long)]
    pub deadline: Option<String>,
    /// Then wait this long (e.g. 1m) until the node holds no task;
    /// non-zero exit if it still does by then.
    #[arg(long)]
    pub wait: Option<String>,
    /// Only show where the node's drain stands; change nothing.
    #[arg(long, conflicts_with_all = ["deadline", "wait"])]
    pub status: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn print_task(t: &TaskView) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(t)?);
    Ok(())
}

fn wait_arg(s: &str) -> anyhow::Result<Duration> {
    parse_wait(s).with_context(|| format!("{s:?} is not a duration like 10s or 500ms"))
}

/// Waits for `id` on `client` until final or `timeout`.
async fn wait_final(client: &Client, id: &str, timeout: Duration) -> anyhow::Result<TaskView> {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let t = client
            .get(id, false, Some(left.min(Duration::from_secs(60))))
            .await?;
        if t.is_final() || left.is_zero() {
            return Ok(t);
        }
    }
}

/// `cohort submit`.
pub fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let wait = args.wait.as_deref().map(wait_arg).transpose()?;
    if let Some(path) = &args.batch {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --batch {}", path.display()))?
        };
        let mut tasks = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let body: SubmitBody = serde_json::from_str(line)
                .with_context(|| format!("--batch line {}: not a submit body", n + 1))?;
            tasks.push(body);
        }
        return runtime()?.block_on(async move {
            let ids = args.auth.client(&args.node)?.submit_batch(&tasks).await?;
            for id in ids {
                println!("{id}");
            }
            Ok(())
        });
    }
    runtime()?.block_on(async move {
        let client = args.auth.client(&args.node)?;
        let id = match &args.idempotency_key {
            Some(key) => Some(
                cohort_runtime::idempotency::task_id_for_key(key.as_bytes())
                    .map_err(|e| anyhow::anyhow!("--idempotency-key: {e}"))?
                    .to_string(),
            ),
            None => args.id,
        };
        let not_before_ms = match &args.delay {
            Some(d) => {
                let delay = wait_arg(d).context("--delay")?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .context("the clock is before the Unix epoch")?;
                Some(u64::try_from((now + delay).as_millis()).context("--delay is too long")?)
            }
            None => args.not_before_ms,
        };
        let retry = (args.backoff_initial_ms.is_some()
            || args.backoff_max_ms.is_some()
            || !args.non_retryable.is_empty())
        .then(|| RetryBody {
            backoff_initial_ms: args.backoff_initial_ms,
            backoff_max_ms: args.backoff_max_ms,
            non_retryable: (!args.non_retryable.is_empty()).then(|| args.non_retryable.clone()),
        });
        let body = SubmitBody {
            id,
            kind: args.kind.unwrap_or_default(),
            payload: Some(args.payload),
            payload_base64: None,
            timeout_ms: args.timeout_ms,
            max_attempts: args.max_attempts,
            not_before_ms,
            retry,
            schedule_to_start_ms: args.schedule_to_start_ms,
            priority: args.priority,
            heartbeat_timeout_ms: args.heartbeat_timeout_ms,
            labels: (!args.labels.is_empty()).then(|| args.labels.clone()),
            limit: args.limit.body(),
            lease_grace_ms: args.lease_grace_ms,
        };
        let id = match &args.dedupe_key {
            Some(key) => {
                let r = client.submit_unique(key, &body).await?;
                // The id on stdout as for any submit; whether it was
                // deduplicated on stderr, for people and scripts alike.
                if r.deduplicated {
                    eprintln!(
                        "deduplicated: generation {} of the key is {}",
                        r.generation,
                        r.state.as_deref().unwrap_or("not final")
                    );
                } else {
                    eprintln!("created: generation {} of the key", r.generation);
                }
                r.id
            }
            None => client.submit(&body).await?,
        };
        match wait {
            None => println!("{id}"),
            Some(w) => print_task(&wait_final(&client, &id, w).await?)?,
        }
        Ok(())
    })
}

/// `cohort get`.
pub fn get(args: GetArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = args.auth.client(&args.node)?;
        if args.events {
            let t = client.events(&args.id, args.stale).await?;
            println!("{}", serde_json::to_string_pretty(&t)?);
            return Ok(());
        }
        print_task(&client.get(&args.id, args.stale, None).await?)
    })
}

/// `cohort wait`.
pub fn wait(args: WaitArgs) -> anyhow::Result<()> {
    let timeout = wait_arg(&args.timeout)?;
    runtime()?.block_on(async move {
        let t = wait_final(&args.auth.client(&args.node)?, &args.id, timeout).await?;
        print_task(&t)?;
        match t.state.as_str() {
            "succeeded" => Ok(()),
            s if t.is_final() => anyhow::bail!("task {} {s}", args.id),
            s => anyhow::bail!("task {} still {s} after {}", args.id, args.timeout),
        }
    })
}

/// `cohort cancel`.
pub fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    runtime()?
        .block_on(async move { print_task(&args.auth.client(&args.node)?.cancel(&args.id).await?) })
}

/// `cohort retry`: prints `RETRIED-ID  new|existing  RETRY-ID` per task;
/// fails if any retry was refused.
pub fn retry(args: RetryArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = args.auth.client(&args.node)?;
        let answers = if args.failed {
            client
                .retry_failed(args.error_class.as_deref(), args.limit)
                .await?
        } else {
            let mut out = Vec::new();
            for id in &args.ids {
                out.push((id.clone(), client.retry(id).await));
            }
            out
        };
        let mut refused = 0;
        for (id, answer) in &answers {
            match answer {
                Ok(r) => {
                    let how = if r.deduplicated { "existing" } else { "new" };
                    println!("{id}  {how:<8}  {}", r.id);
                }
                Err(e) => {
                    refused += 1;
                    eprintln!("{id}  refused: {e}");
                }
            }
        }
        if args.failed && answers.is_empty() {
            eprintln!("no failed task to retry");
        }
        anyhow::ensure!(
            refused == 0,
            "{refused} of {} retries refused",
            answers.len()
        );
        Ok(())
    })
}

/// `cohort list`.
pub fn list(args: ListArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let client = args.auth.client(&args.node)?;
        let listing = client.list_all(args.state.as_deref(), args.limit).await?;
        println!("{:<32}  {:<10} {:>5} {:>6}", "id", "state", "node", "epoch");
        for t in &listing.tasks {
            println!(
                "{:<32}  {:<10} {:>5} {:>6}",
                t.id,
                t.state,
                t.node.map_or("-".into(), |n| format!("n{n}")),
                t.epoch.map_or("-".into(), |e| e.to_string())
            );
        }
        for (node, why) in &listing.unreachable {
            eprintln!("warning: n{node} could not be listed ({why}); a task all of whose replicas are unreachable is missing");
        }
        if listing.truncated {
            eprintln!("(stopped at --limit {}; more tasks exist)", args.limit);
        }
        Ok(())
    })
}

pub fn members(args: MembersArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let c = args.auth.client(&args.node)?.cluster().await?;
        println!(
            "cluster {} · mode {} · asked node n{} ({})",
            c["cluster_id"].as_str().unwrap_or("?"),
            c["mode"].as_str().unwrap_or("?"),
            c["node"],
            c["role"].as_str().unwrap_or("?"),
        );
        if let Some(term) = c["term"].as_u64() {
            let leader = c["leader"]
                .as_u64()
                .map_or("unknown".to_string(), |l| format!("n{l}"));
            println!("term {term} · leader {leader}");
        }
        println!(
            "{:>6}  {:<22} {:<22} link",
            "node", "peer address", "http address"
        );
        for m in c["members"].as_array().into_iter().flatten() {
            let link = if m["self"] == true {
                "self"
            } else if m["connected"] == true {
                "up"
            } else {
                "down"
            };
            println!(
                "{:>6}  {:<22} {:<22} {link}",
                format!("n{}", m["id"]),
                m["peer_addr"].as_str().unwrap_or("-"),
                m["http_addr"].as_str().unwrap_or("-"),
            );
        }
        let workers = c["workers"].as_array().cloned().unwrap_or_default();
        if workers.is_empty() {
            println!("n{} places no work, so it lists no workers", c["node"]);
            return Ok(());
        }
        println!("workers as n{} last heard of them:", c["node"]);
        println!(
            "{:>6}  {:<5} {:>8} {:>9}  labels",
            "node", "live", "running", "capacity"
        );
        for w in &workers {
            let labels: Vec<&str> = w["labels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str())
                .collect();
            println!(
                "{:>6}  {:<5} {:>8} {:>9}  {}",
                format!("n{}", w["id"]),
                if w["live"] == true { "yes" } else { "no" },
                w["running"],
                w["capacity_tasks"]
                    .as_u64()
                    .map_or("-".to_string(), |c| c.to_string()),
                if labels.is_empty() {
                    "-".to_string()
                } else {
                    labels.join(",")
                },
            );
        }
        Ok(())
    })
}

fn print_ring(r: &RingInfo) {
    let members: Vec<String> = r.members.iter().map(|m| format!("n{m}")).collect();
    println!(
        "n{} knows ring epoch {}: {}",
        r.node,
        r.epoch,
        members.join(" ")
    );
    match &r.in_flight {
        Some(c) => println!("change in flight at n{}: {} n{}", r.node, c.op, c.node),
        None => println!("no change in flight at n{}", r.node),
    }
}

/// How often `cohort ring join/remove --wait` asks again once the node's
/// own wait (at most its `wait_ms_max`) ran out.
const RING_POLL: Duration = Duration::from_millis(200);

/// `cohort ring`.
pub fn ring(args: RingArgs) -> anyhow::Result<()> {
    let (join, change) = match args.command {
        None => return ring_show(args.target),
        Some(RingCommand::Show(t)) => return ring_show(t),
        Some(RingCommand::Join(c)) => (true, c),
        Some(RingCommand::Remove(c)) => (false, c),
    };
    let wait = change.wait.as_deref().map(wait_arg).transpose()?;
    let op = if join { "join" } else { "remove" };
    runtime()?.block_on(async move {
        let client = change.target.auth.client(&change.target.node)?;
        let end = wait.map(|w| tokio::time::Instant::now() + w);
        let mut r = client.ring_change(join, change.member, wait).await?;
        let reflected = |r: &RingInfo| r.members.contains(&change.member) == join;
        while !reflected(&r) && end.is_some_and(|e| tokio::time::Instant::now() < e) {
            tokio::time::sleep(RING_POLL).await;
            r = client.ring().await?;
        }
        print_ring(&r);
        if reflected(&r) {
            println!("{op} n{}: the ring reflects it", change.member);
            Ok(())
        } else if let Some(w) = &change.wait {
            anyhow::bail!(
                "{op} n{}: not in the ring n{} knows after {w}",
                change.member,
                r.node
            )
        } else {
            println!(
                "{op} n{}: started; `cohort ring` shows when it is agreed",
                change.member
            );
            Ok(())
        }
    })
}

fn ring_show(t: RingTarget) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        print_ring(&t.auth.client(&t.node)?.ring().await?);
        Ok(())
    })
}

fn print_drain(d: &DrainInfo) {
    if !d.draining {
        println!("n{} is not draining", d.node);
        return;
    }
    let held = d.held_count.unwrap_or(0);
    if d.is_done() {
        println!(
            "n{} drained: it holds no task and takes no new work",
            d.node
        );
    } else if d.handing_back == Some(true) {
        println!("n{} draining: handing back {held} task(s)", d.node);
    } else {
        println!(
            "n{} draining: {held} task(s) held, hand-back in {:.1}s",
            d.node,
            d.deadline_in_ms.unwrap_or(0) as f64 / 1000.0
        );
    }
    for id in &d.held {
        println!("  {id}");
    }
}

/// How often `cohort drain --wait` asks the node again.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// `cohort drain`.
pub fn drain(args: DrainArgs) -> anyhow::Result<()> {
    let deadline = args.deadline.as_deref().map(wait_arg).transpose()?;
    let wait = args.wait.as_deref().map(wait_arg).transpose()?;
    runtime()?.block_on(async move {
        let mut client = args.auth.client(&args.node)?;
        if let Some(member) = args.member {
            let addr = client
                .member_addr(member)
                .await?
                .with_context(|| format!("{} lists no HTTP address for n{member}", args.node))?;
            client = client.at(&addr);
        }
        if args.status {
            print_drain(&client.drain_status().await?);
            return Ok(());
        }
        let mut d = client.drain(deadline).await?;
        if let Some(w) = wait {
            let end = tokio::time::Instant::now() + w;
            while !d.is_done() && tokio::time::Instant::now() < end {
                tokio::time::sleep(DRAIN_POLL).await;
                d = client.drain_status().await?;
            }
            print_drain(&d);
            if !d.is_done() {
                anyhow::bail!(
                    "n{} still holds {} task(s) after {}",
                    d.node,
                    d.held_count.unwrap_or(0),
                    args.wait.as_deref().unwrap_or_default()
                );
            }
            return Ok(());
        }
        print_drain(&d);
        Ok(())
    })
}

/// Create, read or delete a schedule stored in the cluster.
#[derive(Args, Debug, Clone)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

/// What `cohort schedule` does.
#[derive(Subcommand, Debug, Clone)]
pub enum ScheduleCommand {
    /// Store a schedule: each tick fires one task, exactly once.
    Create(Box<ScheduleCreateArgs>),
    /// Show a schedule: its definition, whether it is deleted, its next tick.
    Get(ScheduleNameArgs),
    /// Delete a schedule: no tick fires once its links see the deletion.
    Delete(ScheduleNameArgs),
    /// List the cluster's schedules (every member's view merged in
    /// leaderless mode), deleted ones included.
    List(ScheduleListArgs),
}

/// `cohort schedule list`.
#[derive(Args, Debug, Clone)]
pub struct ScheduleListArgs {
    #[command(flatten)]
    pub target: RingTarget,
    /// Most schedules shown.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

/// A schedule by name.
#[derive(Args, Debug, Clone)]
pub struct ScheduleNameArgs {
    /// The schedule's name.
    pub name: String,
    #[command(flatten)]
    pub target: RingTarget,
}

/// `cohort schedule create`.
#[derive(Args, Debug, Clone)]
pub struct ScheduleCreateArgs {
    /// The schedule's name (1-128 bytes of a-z A-Z 0-9 _ . -).
    pub name: String,
    #[command(flatten)]
    pub target: RingTarget,
    /// A fixed interval (e.g. 500ms, 10s, 5m).
    #[arg(long, required_unless_present = "cron", conflicts_with = "cron")]
    pub every: Option<String>,
    /// The first tick of --every, in ms since the Unix epoch (default 0:
    /// ticks at the multiples of the interval).
    #[arg(long, requires = "every")]
    pub start_ms: Option<u64>,
    /// A 5-field UTC cron expression, e.g. "*/15 9-17 * * 1-5".
    #[arg(long)]
    pub cron: Option<String>,
    /// What a tick does while the previous firing is not final: skip
    /// (default), buffer_one or allow.
    #[arg(long)]
    pub overlap: Option<String>,
    /// How late a tick may still fire (e.g. 1m; default 1m).
    #[arg(long)]
    pub catch_up_window: Option<String>,
    /// The fired task's handler kind.
    #[arg(long)]
    pub kind: String,
    /// The fired task's payload text.
    #[arg(long, default_value = "")]
    pub payload: String,
    /// The fired task's per-execution timeout.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// The fired task's attempts.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// A worker label the fired tasks need (repeat for more): they run
    /// only on nodes carrying every one.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub limit: LimitArgs,
}

/// A task's concurrency and rate limit (leader and static modes; the
/// leaderless mode refuses it).
#[derive(Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Count the task under this limit key (a tenant, a customer, an API
    /// to call), shared with every task naming it; replaces the kind's
    /// limit. Needs --concurrency-max or --rate-max.
    #[arg(long)]
    pub limit_key: Option<String>,
    /// At most this many tasks of the key run at once, cluster-wide.
    #[arg(long, requires = "limit_key")]
    pub concurrency_max: Option<u32>,
    /// At most this many tasks of the key start within --rate-window-ms,
    /// cluster-wide.
    #[arg(long, requires = "limit_key")]
    pub rate_max: Option<u32>,
    /// The rate limit's window (default 1000).
    #[arg(long, requires = "rate_max")]
    pub rate_window_ms: Option<u64>,
}

impl LimitArgs {
    /// The submit body's `limit`, if a key is given.
    fn body(&self) -> Option<cohort_runtime::http::LimitBody> {
        Some(cohort_runtime::http::LimitBody {
            key: self.limit_key.clone()?,
            concurrency_max: self.concurrency_max,
            rate_max: self.rate_max,
            rate_window_ms: self.rate_window_ms,
        })
    }
}

/// `cohort schedule`.
pub fn schedule(args: ScheduleArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match args.command {
            ScheduleCommand::Create(a) => {
                let ms = |d: &str, what: &str| -> anyhow::Result<u64> {
                    let d = wait_arg(d).with_context(|| what.to_string())?;
                    u64::try_from(d.as_millis()).with_context(|| format!("{what} is too long"))
                };
                let body = cohort_runtime::http::ScheduleBody {
                    name: a.name.clone(),
                    every_ms: a.every.as_deref().map(|e| ms(e, "--every")).transpose()?,
                    start_ms: a.start_ms,
                    cron: a.cron,
                    overlap: a.overlap,
                    catch_up_window_ms: a
                        .catch_up_window
                        .as_deref()
                        .map(|w| ms(w, "--catch-up-window"))
                        .transpose()?,
                    task: SubmitBody {
                        id: None,
                        kind: a.kind,
                        payload: Some(a.payload),
                        payload_base64: None,
                        timeout_ms: a.timeout_ms,
                        max_attempts: a.max_attempts,
                        not_before_ms: None,
                        retry: None,
                        schedule_to_start_ms: None,
                        priority: None,
                        heartbeat_timeout_ms: None,
                        labels: (!a.labels.is_empty()).then(|| a.labels.clone()),
                        limit: a.limit.body(),
                        lease_grace_ms: None,
                    },
                };
                let client = a.target.auth.client(&a.target.node)?;
                let id = client.schedule_create(&body).await?;
                println!("schedule {} stored (definition task {id})", a.name);
            }
            ScheduleCommand::Get(a) => {
                let client = a.target.auth.client(&a.target.node)?;
                let v = client.schedule_get(&a.name).await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            ScheduleCommand::Delete(a) => {
                let client = a.target.auth.client(&a.target.node)?;
                client.schedule_delete(&a.name).await?;
                println!("schedule {} deleted", a.name);
            }
            ScheduleCommand::List(a) => {
                let client = a.target.auth.client(&a.target.node)?;
                let listing = client.schedules(a.limit).await?;
                println!("{:<32} {:<8} {:<10} {:>15}", "name", "state", "every/cron", "next_tick_ms");
                for v in &listing.schedules {
                    let state = if v.deleted {
                        "deleted"
                    } else if v.started {
                        "started"
                    } else {
                        "stored"
                    };
                    let def = v.definition.as_ref();
                    let spec = def
                        .and_then(|d| d["cron"].as_str().map(str::to_string))
                        .or_else(|| def.and_then(|d| d["every_ms"].as_u64()).map(|ms| format!("{ms}ms")))
                        .unwrap_or_else(|| "-".into());
                    let next = v.next_tick_ms.map_or("-".into(), |t| t.to_string());
                    println!("{:<32} {:<8} {:<10} {:>15}", v.name, state, spec, next);
                }
                for (node, why) in &listing.unreachable {
                    eprintln!("warning: n{node} could not be listed ({why}); a schedule all of whose replicas are unreachable is missing");
                }
                if listing.truncated {
                    eprintln!("(stopped at --limit {}; more schedules exist)", a.limit);
                }
            }
        }
        Ok(())
    })
}
