//! Five `cohort node` containers on a private Docker network, the leader cut
//! off with `docker network disconnect` while a client workload runs, then
//! reconnected; every acknowledged task must finish and the merged history
//! must pass the simulator's checkers. The image is `FROM scratch` with the
//! test's own `cohort` binary and the shared libraries `ldd` names (no base
//! image is pulled; `deploy/Dockerfile` does the same with a static binary).
//! Needs a running Docker engine; skipped with the reason printed where
//! there is none, unless `COHORT_FAULT_TESTS_REQUIRED` is set (CI).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod harness;

use harness::{ClientNs, BIN};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

const NODES: usize = 5;

fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Removes containers and networks `cohort-<pid>-dk...` of test processes
/// that are gone.
fn remove_leftovers() {
    let dead = |name: &str| {
        name.strip_prefix("cohort-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(names) = docker(&[
        "ps",
        "-a",
        "--filter",
        "name=cohort-",
        "--format",
        "{{.Names}}",
    ]) {
        for n in names.lines().filter(|n| n.contains("-dk-") && dead(n)) {
            let _ = docker(&["rm", "-f", n]);
        }
    }
    if let Ok(names) = docker(&[
        "network",
        "ls",
        "--filter",
        "name=cohort-",
        "--format",
        "{{.Name}}",
    ]) {
        for n in names.lines().filter(|n| n.ends_with("-dk") && dead(n)) {
            let _ = docker(&["network", "rm", n]);
        }
    }
}

/// The containers, network and image of one test; all removed on drop.
struct DockerCluster {
    prefix: String,
    image: Option<String>,
    network: Option<String>,
    subnet: u8,
    containers: Vec<String>,
    dir: tempfile::TempDir,
    client: ClientNs,
    start_us: u64,
    log: Vec<(cohort_core::Time, String)>,
}

impl DockerCluster {
    fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 10 + i as u8)
    }

    fn http(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.ip(i), 8000))
    }

    fn now(&self) -> cohort_core::Time {
        cohort_core::Time(cohort_runtime::audit::wall_clock_us().saturating_sub(self.start_us))
    }

    fn note(&mut self, what: String) {
        let at = self.now();
        eprintln!("[{at}] {what}");
        self.log.push((at, what));
    }

    /// A `FROM scratch` image holding `BIN` and the libraries it links.
    fn build_image(&mut self) -> Result<(), String> {
        let ctx = self.dir.path().join("image");
        std::fs::create_dir_all(&ctx).map_err(|e| e.to_string())?;
        std::fs::copy(BIN, ctx.join("cohort")).map_err(|e| e.to_string())?;
        let ldd = Command::new("ldd")
            .arg(BIN)
            .output()
            .map_err(|e| e.to_string())?;
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            let Some(path) = path.filter(|p| p.starts_with('/')) else {
                continue;
            };
            let to = ctx.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().expect("a parent")).map_err(|e| e.to_string())?;
            std::fs::copy(path, &to).map_err(|e| format!("{path}: {e}"))?;
        }
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM scratch\nCOPY . /\nENTRYPOINT [\"/cohort\"]\n",
        )
        .map_err(|e| e.to_string())?;
        let tag = format!("{}:test", self.prefix);
        docker(&["build", "-q", "-t", &tag, &ctx.to_string_lossy()])?;
        self.image = Some(tag);
        Ok(())
    }

    fn create_network(&mut self) -> Result<(), String> {
        let name = format!("{}-dk", self.prefix);
        let mut last = String::new();
        // Another run may hold a subnet: try a few.
        for k in 0..20u32 {
            let subnet = ((std::process::id() + k * 37) % 250) as u8;
            match docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &format!("10.213.{subnet}.0/24"),
                &name,
            ]) {
                Ok(_) => {
                    self.subnet = subnet;
                    self.network = Some(name);
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn run_node(&mut self, mode: &str, i: usize) -> Result<(), String> {
        let list = |port: u16| {
            (1..=NODES)
                .map(|j| format!("{j}={}:{port}", self.ip(j)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let name = format!("{}-dk-n{i}", self.prefix);
        let mount = format!("{}:/w", self.dir.path().display());
        let (ip, http) = (self.ip(i).to_string(), self.http(i).to_string());
        let (peers, https) = (list(7000), list(8000));
        let id = i.to_string();
        let data = format!("/w/n{i}");
        let hist = format!("/w/history-n{i}.jsonl");
        let args = [
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            self.network.as_deref().unwrap(),
            "--ip",
            &ip,
            "-v",
            &mount,
            "-e",
            "RUST_LOG=info",
            self.image.as_deref().unwrap(),
            "node",
            "--id",
            &id,
            "--peers",
            &peers,
            "--http",
            &http,
            "--http-peers",
            &https,
            "--mode",
            mode,
            "--cluster-id",
            "docker",
            "--data-dir",
            &data,
            "--history-file",
            &hist,
        ];
        docker(&args)?;
        self.containers.push(name);
        Ok(())
    }

    fn start(mode: &str) -> Result<DockerCluster, String> {
        remove_leftovers();
        let mut c = DockerCluster {
            prefix: format!("cohort-{}", std::process::id()),
            image: None,
            network: None,
            subnet: 0,
            containers: Vec::new(),
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            client: ClientNs::host(),
            start_us: cohort_runtime::audit::wall_clock_us(),
            log: Vec::new(),
        };
        c.build_image()?;
        c.create_network()?;
        for i in 1..=NODES {
            c.run_node(mode, i)?;
        }
        for i in 1..=NODES {
            c.wait_healthy(i);
        }
        Ok(c)
    }

    fn wait_healthy(&self, i: usize) {
        let client = cohort_runtime::client::Client::new(&self.http(i).to_string());
        let ok = self.client.run(async move {
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                let h = tokio::time::timeout(Duration::from_secs(2), client.health()).await;
                if let Ok(Ok(_)) = h {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        });
        assert!(ok, "container n{i} never became healthy\n{}", self.logs(i));
    }

    /// The node among `among` that calls itself leader (waits up to 20 s).
    fn leader(&self, among: &[usize]) -> usize {
        let clients: Vec<(usize, cohort_runtime::client::Client)> = among
            .iter()
            .map(|&i| {
                (
                    i,
                    cohort_runtime::client::Client::new(&self.http(i).to_string()),
                )
            })
            .collect();
        self.client
            .run(async move {
                let end = Instant::now() + Duration::from_secs(20);
                while Instant::now() < end {
                    for (i, c) in &clients {
                        let v = tokio::time::timeout(Duration::from_secs(2), c.cluster()).await;
                        if let Ok(Ok(v)) = v {
                            if v["role"] == "leader" {
                                return Some(*i);
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None
            })
            .expect("no node calls itself leader")
    }

    fn disconnect(&mut self, i: usize) {
        docker(&[
            "network",
            "disconnect",
            self.network.as_deref().unwrap(),
            &self.containers[i - 1],
        ])
        .expect("docker network disconnect");
        self.note(format!("docker network disconnect n{i}"));
    }

    fn connect(&mut self, i: usize) {
        docker(&[
            "network",
            "connect",
            "--ip",
            &self.ip(i).to_string(),
            self.network.as_deref().unwrap(),
            &self.containers[i - 1],
        ])
        .expect("docker network connect");
        self.note(format!("docker network connect n{i}"));
    }

    fn logs(&self, i: usize) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", "30", &self.containers[i - 1]])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        format!("--- n{i} container log (tail) ---\n{out}")
    }

    fn history_files(&self) -> Vec<PathBuf> {
        (1..=NODES)
            .map(|i| self.dir.path().join(format!("history-n{i}.jsonl")))
            .collect()
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        if let Some(n) = &self.network {
            let _ = docker(&["network", "rm", n]);
        }
        if let Some(i) = &self.image {
            let _ = docker(&["rmi", "-f", i]);
        }
    }
}

#[test]
fn docker_network_disconnect_of_the_leader_keeps_the_history_clean() {
    let test = "docker_network_disconnect_of_the_leader_keeps_the_history_clean";
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        harness::skip(test, &format!("no Docker engine: {e}"));
        return;
    }
    let mut c = match DockerCluster::start("leader") {
        Ok(c) => c,
        Err(e) => panic!("cannot start the Docker cluster: {e}"),
    };
    let all: Vec<usize> = (1..=NODES).collect();
    let leader = c.leader(&all);
    let https: Vec<SocketAddr> = all.iter().map(|&i| c.http(i)).collect();
    let w = harness::start_workload(&c.client, &https, c.start_us, 4);
    sleep(Duration::from_millis(1500));
    c.disconnect(leader);
    // The others elect a leader of their own: the cut is real.
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let new_leader = c.leader(&rest);
    c.note(format!("n{new_leader} leads the majority"));
    sleep(Duration::from_secs(2));
    c.connect(leader);
    sleep(Duration::from_secs(1));
    c.note("stopping the workload; draining".into());
    let events = harness::stop_and_drain(&c.client, w, Duration::from_secs(30));
    let end = c.now();
    let (audit, bad) = harness::read_audit_files(&c.history_files());
    let logs = all.iter().map(|&i| c.logs(i)).collect();
    let report = harness::report(c.start_us, events, &audit, bad, end, logs, c.log.clone());
    report.assert_clean("docker, leader mode");
}
