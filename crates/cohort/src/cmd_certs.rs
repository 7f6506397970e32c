//! `cohort certs`: a development CA, node certificates and API tokens, so
//! that a secure cluster is one command away.

use anyhow::{bail, Context};
use clap::Args;
use cohort_core::NodeId;
use cohort_runtime::tls::DevCerts;
use std::path::{Path, PathBuf};

/// Generate a development CA, a certificate per node, a client certificate
/// and a token file (one token per role).
#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory to write into (created; existing files are never overwritten).
    #[arg(long)]
    pub out: PathBuf,
    /// Node ids: `1,2,3`.
    #[arg(long)]
    pub nodes: String,
    /// Extra names or IP addresses every node certificate is valid for
    /// (`10.0.0.5,node1.example`); `node-<id>`, localhost, 127.0.0.1 and ::1 always are.
    #[arg(long, default_value = "")]
    pub hosts: String,
    /// Cluster name in the CA's common name.
    #[arg(long, default_value = "cohort")]
    pub cluster_id: String,
}

/// Parses `1,2,3`.
fn parse_nodes(s: &str) -> anyhow::Result<Vec<NodeId>> {
    let mut ids = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id: u64 = part
            .parse()
            .with_context(|| format!("--nodes: {part:?} is not a node id"))?;
        if ids.contains(&NodeId(id)) {
            bail!("--nodes: {id} appears twice");
        }
        ids.push(NodeId(id));
    }
    if ids.is_empty() {
        bail!("--nodes: no node ids given");
    }
    Ok(ids)
}

/// A random token: 32 hex digits from the OS's randomness.
fn random_token() -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("no OS randomness"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Writes `text` to a new file; private files get mode 0600.
fn write_new(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| {
        format!(
            "cannot create {} (an existing file is never overwritten)",
            path.display()
        )
    })?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_all()?;
    Ok(())
}

/// Generates everything into `args.out`; returns the files written.
pub fn generate(args: &CertsArgs) -> anyhow::Result<Vec<PathBuf>> {
    let nodes = parse_nodes(&args.nodes)?;
    let hosts: Vec<String> = args
        .hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    let certs = DevCerts::generate(&args.cluster_id, &nodes, &hosts)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create --out {}", args.out.display()))?;
    let mut files: Vec<(PathBuf, String, bool)> = vec![
        (args.out.join("ca.pem"), certs.ca_cert.clone(), false),
        (args.out.join("ca.key"), certs.ca_key.clone(), true),
        (args.out.join("client.pem"), certs.client.0.clone(), false),
        (args.out.join("client.key"), certs.client.1.clone(), true),
    ];
    for (id, cert, key) in &certs.nodes {
        files.push((
            args.out.join(format!("node-{}.pem", id.0)),
            cert.clone(),
            false,
        ));
        files.push((
            args.out.join(format!("node-{}.key", id.0)),
            key.clone(),
            true,
        ));
    }
    let mut tokens = String::from(
        "# cohort API tokens: ROLE TOKEN per line (read < submit < admin).\n\
         # Give this file to nodes with --tokens; give clients one token (--token / COHORT_TOKEN).\n",
    );
    for role in ["read", "submit", "admin"] {
        tokens.push_str(&format!("{role} {}\n", random_token()?));
    }
    files.push((args.out.join("tokens"), tokens, true));
    // Refuse before writing anything if any file exists.
    for (p, _, _) in &files {
        if p.exists() {
            bail!(
                "{} already exists; choose another --out or remove it",
                p.display()
            );
        }
    }
    for (p, text, private) in &files {
        write_new(p, text, *private)?;
    }
    Ok(files.into_iter().map(|f| f.0).collect())
}

/// `cohort certs`.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let files = generate(&args)?;
    for f in &files {
        println!("{}", f.display());
    }
    eprintln!(
        "development certificates only: keep ca.key, the node keys and tokens private. \
         Start a node with --ca {0}/ca.pem --cert {0}/node-ID.pem --key {0}/node-ID.key \
         [--http-tls] --tokens {0}/tokens",
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_runtime::auth::{Role, Tokens};
    use cohort_runtime::tls::{PeerTls, TlsFiles};

    #[test]
    fn certs_writes_a_ca_node_certs_and_tokens_that_load_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let args = CertsArgs {
            out: dir.path().join("certs"),
            nodes: "1,2,3".into(),
            hosts: "10.1.2.3,box.example".into(),
            cluster_id: "c".into(),
        };
        let files = generate(&args).unwrap();
        assert_eq!(files.len(), 4 + 2 * 3 + 1);
        for n in 1..=3 {
            let f = TlsFiles {
                ca: args.out.join("ca.pem"),
                cert: args.out.join(format!("node-{n}.pem")),
                key: args.out.join(format!("node-{n}.key")),
            };
            PeerTls::new(&f.read().unwrap()).unwrap();
        }
        let tokens = Tokens::load(&args.out.join("tokens")).unwrap();
        let text = std::fs::read_to_string(args.out.join("tokens")).unwrap();
        let admin = text.lines().find_map(|l| l.strip_prefix("admin ")).unwrap();
        assert_eq!(tokens.role_of(admin.as_bytes()), Some(Role::Admin));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(args.out.join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "ca.key is readable by others");
        }
        let e = generate(&args).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        assert!(parse_nodes("1,1").is_err());
        assert!(parse_nodes("x").is_err());
    }
}
