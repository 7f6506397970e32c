//! TLS for peer traffic (mutual, against the cluster CA) and for the HTTP
//! API (server certificate, client certificates optional), with rustls and
//! its `ring` provider; and a development CA ([`DevCerts`], rcgen).
//!
//! Every node certificate names the node as `node-<id>` (a DNS subject
//! alternative name). A dialer checks that the peer it reached presents
//! `node-<to>`, signed by the cluster CA; an acceptor requires a client
//! certificate signed by the cluster CA. A certificate from another CA, or
//! none, fails the TLS handshake, before any cohort frame is read.

use crate::error::RuntimeError;
use cohort_core::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The crypto provider every TLS configuration here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes [`provider`] the process's default, for TLS users (reqwest) that
/// look for one. Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The DNS name a node's certificate carries and a dialer expects.
pub fn node_name(node: NodeId) -> String {
    format!("node-{}", node.0)
}

/// Checks that a (verified) certificate names `node` (`node-<id>`): a node
/// may only claim, in its cohort handshake, the identity its certificate gives.
pub fn cert_names_node(cert: &CertificateDer<'_>, node: NodeId) -> Result<(), String> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let name = ServerName::try_from(node_name(node)).map_err(|e| e.to_string())?;
    ee.verify_is_valid_for_subject_name(&name).map_err(|_| {
        format!(
            "claims to be {node} but its certificate is not for {}",
            node_name(node)
        )
    })
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Config(format!("{what}: {e}"))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(path).map_err(|source| RuntimeError::Io {
        what: format!("cannot read {what} {}", path.display()),
        source,
    })
}

/// Every certificate in a PEM text.
pub fn certs_from_pem(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, RuntimeError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(what, e))?;
    if certs.is_empty() {
        return Err(tls_err(what, "no certificate in the PEM text"));
    }
    Ok(certs)
}

/// The private key of a PEM text.
pub fn key_from_pem(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, RuntimeError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| tls_err(what, e))
}

/// A root store holding the CA certificates of a PEM text.
pub fn roots_from_pem(ca_pem: &[u8]) -> Result<Arc<RootCertStore>, RuntimeError> {
    let mut roots = RootCertStore::empty();
    for c in certs_from_pem(ca_pem, "CA certificate")? {
        roots.add(c).map_err(|e| tls_err("CA certificate", e))?;
    }
    Ok(Arc::new(roots))
}

/// Paths of a CA certificate, a certificate and its key (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signs every legitimate peer (or client).
    pub ca: PathBuf,
    /// This node's certificate (chain).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// A certificate, its key and the CA in PEM, read into memory.
#[derive(Clone)]
pub struct TlsPem {
    /// CA certificate(s).
    pub ca: Vec<u8>,
    /// Certificate chain.
    pub cert: Vec<u8>,
    /// Private key.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsPem { .. }")
    }
}

impl TlsFiles {
    /// Reads the three files.
    pub fn read(&self) -> Result<TlsPem, RuntimeError> {
        Ok(TlsPem {
            ca: read(&self.ca, "CA certificate")?,
            cert: read(&self.cert, "certificate")?,
            key: read(&self.key, "private key")?,
        })
    }
}

/// Mutual TLS for the peer transport: the acceptor and the dialer side.
#[derive(Clone)]
pub struct PeerTls {
    /// Accepts peers that present a certificate signed by the cluster CA.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Dials peers, presenting this node's certificate and checking theirs.
    pub connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls { .. }")
    }
}

impl PeerTls {
    /// Builds both sides from the cluster CA and this node's certificate and key.
    pub fn new(pem: &TlsPem) -> Result<PeerTls, RuntimeError> {
        let roots = roots_from_pem(&pem.ca)?;
        let certs = certs_from_pem(&pem.cert, "node certificate")?;
        let key = key_from_pem(&pem.key, "node private key")?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| tls_err("peer client verifier", e))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("peer TLS", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| tls_err("node certificate and key", e))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("peer TLS", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| tls_err("node certificate and key", e))?;
        Ok(PeerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }

    /// The name a dialer expects `node`'s certificate to carry.
    pub fn server_name(node: NodeId) -> ServerName<'static> {
        ServerName::try_from(node_name(node)).expect("node-N is a valid DNS name")
    }
}

/// TLS for the HTTP API.
#[derive(Clone)]
pub struct HttpTls {
    /// Accepts API clients.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Whether every client must present a certificate signed by the client CA.
    pub client_certs_required: bool,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpTls { .. }")
    }
}

impl HttpTls {
    /// The API's certificate and key; with `client_ca`, every client must
    /// present a certificate signed by it.
    pub fn new(
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<HttpTls, RuntimeError> {
        let certs = certs_from_pem(cert_pem, "HTTP certificate")?;
        let key = key_from_pem(key_pem, "HTTP private key")?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("HTTP TLS", e))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots_from_pem(ca)?, provider())
                        .build()
                        .map_err(|e| tls_err("HTTP client verifier", e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server = builder
            .with_single_cert(certs, key)
            .map_err(|e| tls_err("HTTP certificate and key", e))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            client_certs_required: client_ca.is_some(),
        })
    }
}

/// A listener for the HTTP API that hands axum only connections whose TLS
/// handshake completed. Handshakes run in their own tasks (at most
/// `handshakes_max` at once, each within `handshake_timeout`), so a client
/// that stalls its handshake holds up nobody else.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish()
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    /// Starts accepting on `listener`.
    pub fn new(
        listener: tokio::net::TcpListener,
        tls: &HttpTls,
        handshake_timeout: std::time::Duration,
        handshakes_max: usize,
        metrics: Arc<crate::Metrics>,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = tls.acceptor.clone();
        let permits = Arc::new(tokio::sync::Semaphore::new(handshakes_max));
        let task = tokio::spawn(async move {
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("http accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    metrics.inc(
                        "cohort_http_tls_refused_total",
                        "reason=\"too_many_handshakes\"",
                    );
                    continue;
                };
                let (acceptor, tx, metrics) = (acceptor.clone(), tx.clone(), metrics.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, remote)).await;
                        }
                        Ok(Err(e)) => {
                            metrics.inc(
                                "cohort_http_tls_refused_total",
                                "reason=\"handshake_failed\"",
                            );
                            tracing::info!(%remote, "refusing an HTTP client: TLS handshake failed: {e}");
                        }
                        Err(_) => {
                            metrics.inc(
                                "cohort_http_tls_refused_total",
                                "reason=\"handshake_timeout\"",
                            );
                            tracing::info!(%remote, "refusing an HTTP client: no TLS handshake in time");
                        }
                    }
                });
            }
        });
        Ok(TlsListener { rx, local, task })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task only ends when it is aborted, with the listener.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A client TLS configuration trusting `ca_pem` (for the API client), with
/// an optional client certificate and key.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<ClientConfig, RuntimeError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("client TLS", e))?
        .with_root_certificates(roots_from_pem(ca_pem)?);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                certs_from_pem(cert, "client certificate")?,
                key_from_pem(key, "client private key")?,
            )
            .map_err(|e| tls_err("client certificate and key", e))?,
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A development CA with node and client certificates, all in PEM.
pub struct DevCerts {
    /// The CA certificate.
    pub ca_cert: String,
    /// The CA's private key.
    pub ca_key: String,
    /// `(node, certificate, key)` for each node.
    pub nodes: Vec<(NodeId, String, String)>,
    /// A client certificate and key (for API client certificates).
    pub client: (String, String),
}

impl std::fmt::Debug for DevCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCerts")
            .field("nodes", &self.nodes.iter().map(|n| n.0).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl DevCerts {
    /// A fresh CA named `ca_name` and one certificate per node, each valid
    /// for `node-<id>`, `localhost`, `127.0.0.1`, `::1` and every entry of
    /// `hosts` (DNS names or IP addresses), for both server and client use.
    pub fn generate(
        ca_name: &str,
        nodes: &[NodeId],
        hosts: &[String],
    ) -> Result<DevCerts, RuntimeError> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let e = |e: rcgen::Error| tls_err("certificate generation", e);
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca.distinguished_name
            .push(DnType::CommonName, format!("{ca_name} development CA"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(e)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = CertifiedIssuer::self_signed(ca, ca_key).map_err(e)?;
        let leaf = |names: Vec<String>, cn: String| -> Result<(String, String), RuntimeError> {
            let mut p = CertificateParams::new(names).map_err(e)?;
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().map_err(e)?;
            let cert = p.signed_by(&key, &issuer).map_err(e)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let mut out = Vec::new();
        for &n in nodes {
            let mut names = vec![
                node_name(n),
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
            ];
            names.extend(hosts.iter().cloned());
            let (cert, key) = leaf(names, node_name(n))?;
            out.push((n, cert, key));
        }
        let client = leaf(vec!["cohort-client".into()], "cohort-client".into())?;
        Ok(DevCerts {
            ca_cert: issuer.pem(),
            ca_key: ca_key_pem,
            nodes: out,
            client,
        })
    }

    /// The PEM of `node`'s certificate and key, with the CA, as a node reads them.
    pub fn node_pem(&self, node: NodeId) -> Option<TlsPem> {
        self.nodes.iter().find(|n| n.0 == node).map(|n| TlsPem {
            ca: self.ca_cert.clone().into_bytes(),
            cert: n.1.clone().into_bytes(),
            key: n.2.clone().into_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certs_build_peer_and_http_tls() {
        let certs = DevCerts::generate("t", &[NodeId(1), NodeId(2)], &["10.0.0.1".into()]).unwrap();
        let pem = certs.node_pem(NodeId(2)).unwrap();
        PeerTls::new(&pem).unwrap();
        HttpTls::new(&pem.cert, &pem.key, Some(&pem.ca)).unwrap();
        client_config(
            &pem.ca,
            Some((certs.client.0.as_bytes(), certs.client.1.as_bytes())),
        )
        .unwrap();
        assert!(certs.node_pem(NodeId(3)).is_none());
        assert!(!format!("{certs:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn garbage_pem_is_a_config_error_naming_the_file_kind() {
        let e = PeerTls::new(&TlsPem {
            ca: b"not a pem".to_vec(),
            cert: Vec::new(),
            key: Vec::new(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("CA certificate"), "{e}");
    }
}
