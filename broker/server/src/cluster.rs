//! The broker-to-broker endpoint: QUIC with mutual TLS under the cluster's certificate
//! authority. Each node makes itself a certificate signed by the cluster CA at start; a peer
//! is accepted only with a certificate that chains to the same CA, both ways.
//!
//! On top of it, one request and one answer per bidirectional stream: `u8 kind | u32 length |
//! body` out, `u32 length | body` back, each length checked against [`RPC_BYTES_MAX`] before
//! anything is read. What the kinds and bodies mean is the caller's (the controller's Raft
//! RPCs and forwarded commands, in `controller.rs`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub const ALPN: &[u8] = b"weir-cluster/1";

/// The largest request or answer either side reads on the cluster endpoint (a Raft batch or
/// snapshot chunk is far below it).
pub const RPC_BYTES_MAX: usize = 64 << 20;

/// Streams one peer connection may have open at once.
const STREAMS_PER_CONNECTION_MAX: u32 = 256;

/// Of those, how many requests a broker forwards for its clients at once (fetch long polls,
/// produce, group requests), so clients can never take the streams the controller's Raft
/// RPCs need: at least `STREAMS_PER_CONNECTION_MAX - FORWARDED_STREAMS_MAX` stay free.
pub const FORWARDED_STREAMS_MAX: usize = 192;

/// The CA certificate's subject; a node certificate's issuer must match it (and its signature
/// the CA's key).
const CA_NAME: &str = "Weir cluster CA";

/// The name a node's certificate is issued for, and what a peer checks when connecting to it.
pub fn node_name(node_id: u64) -> String {
    format!("weir-node-{node_id}")
}

fn ca_params() -> anyhow::Result<rcgen::CertificateParams> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, CA_NAME);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// Writes a new cluster CA (certificate and key, one PEM file, owner-only) to `path` unless a
/// file is there already; of several nodes racing to create it, one wins and all use its CA.
/// Returns whether this call created it.
pub fn create_ca(path: &Path) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = rcgen::KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let staged = path.with_extension(format!("{}.tmp", std::process::id()));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staged)
            .with_context(|| format!("writing {}", staged.display()))?;
        file.write_all(pem.as_bytes())?;
        file.sync_all()?;
    }
    // A hard link fails if the name exists: exactly one creator wins, and a reader never sees
    // half a file.
    let created = match std::fs::hard_link(&staged, path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    let _ = std::fs::remove_file(&staged);
    Ok(created)
}

/// This node's TLS for the cluster endpoint: a fresh key and certificate for
/// [`node_name`]`(node_id)` signed by the CA in `ca_path`, trusting only that CA.
pub struct NodeTls {
    pub server: rustls::ServerConfig,
    pub client: rustls::ClientConfig,
}

/// The cluster CA of `ca_path`: its certificate, and an issuer that signs with its key.
struct ClusterCa {
    cert: CertificateDer<'static>,
    /// The certificate's PEM block, as the CA file has it.
    cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn load_ca(ca_path: &Path) -> anyhow::Result<ClusterCa> {
    let pem =
        std::fs::read_to_string(ca_path).with_context(|| format!("reading the cluster CA {}", ca_path.display()))?;
    let ca_certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", ca_path.display()))?;
    let cert = ca_certs.first().with_context(|| format!("{} holds no certificate", ca_path.display()))?.clone();
    let key_pem = pem
        .find("-----BEGIN PRIVATE KEY-----")
        .map(|at| &pem[at..])
        .with_context(|| format!("{} holds no CA key (PKCS#8 PEM)", ca_path.display()))?;
    let ca_key = rcgen::KeyPair::from_pem(key_pem).with_context(|| format!("{}: the CA key", ca_path.display()))?;
    const END: &str = "-----END CERTIFICATE-----";
    let cert_pem = pem
        .find("-----BEGIN CERTIFICATE-----")
        .and_then(|start| pem[start..].find(END).map(|end| format!("{}\n", &pem[start..start + end + END.len()])))
        .with_context(|| format!("{} holds no PEM certificate block", ca_path.display()))?;
    Ok(ClusterCa { cert, cert_pem, issuer: rcgen::Issuer::new(ca_params()?, ca_key) })
}

/// The certificate of a broker's client listeners in a cluster, signed by the cluster CA for
/// `names`: (the PEM chain, leaf then CA certificate; the key's PEM). A client that trusts
/// the chain of any broker (`<data-dir>/tls/cert.pem`) trusts every broker of the cluster, so
/// it can reach each partition's leader.
pub fn listener_certificate(ca_path: &Path, names: &[String]) -> anyhow::Result<(String, String)> {
    let ca = load_ca(ca_path)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "weir broker");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((format!("{}{}", cert.pem(), ca.cert_pem), key.serialize_pem()))
}

/// Whether `chain_pem` ends in the certificate of the cluster CA at `ca_path`.
pub fn chain_ends_in_ca(chain_pem: &[u8], ca_path: &Path) -> anyhow::Result<bool> {
    let ca = load_ca(ca_path)?;
    let chain = rustls_pemfile::certs(&mut &chain_pem[..]).collect::<Result<Vec<_>, _>>()?;
    Ok(chain.len() > 1 && chain.last() == Some(&ca.cert))
}

pub fn node_tls(ca_path: &Path, node_id: u64) -> anyhow::Result<NodeTls> {
    let ClusterCa { cert: ca_cert, issuer, .. } = load_ca(ca_path)?;

    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![node_name(node_id)])?;
    params.distinguished_name.push(rcgen::DnType::CommonName, node_name(node_id));
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer)?;
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert).context("the cluster CA certificate")?;
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .context("building the peer certificate verifier")?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), private.clone_key())?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok(NodeTls { server, client })
}

/// Binds the cluster endpoint: it accepts peers and connects to them.
pub fn bind(addr: SocketAddr, tls: NodeTls) -> anyhow::Result<quinn::Endpoint> {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(STREAMS_PER_CONNECTION_MAX.into());
    transport.max_concurrent_uni_streams(0u32.into());
    // A peer that stops answering (killed, stopped, cut off) is noticed within 3 s, so calls to
    // it fail instead of waiting on a dead connection.
    transport.keep_alive_interval(Some(Duration::from_millis(500)));
    transport.max_idle_timeout(Some(Duration::from_secs(3).try_into()?));
    // Replica fetch answers are up to 8 MiB: windows that take one without waiting for credit
    // (the connection's bounds what all streams hold).
    transport.stream_receive_window(quinn::VarInt::from_u32(16 << 20));
    transport.receive_window(quinn::VarInt::from_u32(64 << 20));
    transport.send_window(64 << 20);
    let transport = Arc::new(transport);
    let mut server =
        quinn::ServerConfig::with_crypto(Arc::new(quinn::crypto::rustls::QuicServerConfig::try_from(tls.server)?));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls.client)?));
    client.transport_config(transport);
    let mut endpoint = quinn::Endpoint::server(server, addr)?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

async fn read_body(recv: &mut quinn::RecvStream) -> anyhow::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    anyhow::ensure!(len <= RPC_BYTES_MAX, "a cluster message of {len} bytes is over RPC_BYTES_MAX = {RPC_BYTES_MAX}");
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await?;
    Ok(body)
}

fn length(body: &[u8]) -> anyhow::Result<[u8; 4]> {
    anyhow::ensure!(body.len() <= RPC_BYTES_MAX, "a cluster message of {} bytes is over RPC_BYTES_MAX", body.len());
    Ok(u32::try_from(body.len())?.to_be_bytes())
}

/// Sends one request of `kind` on a new stream of `connection` and reads its answer.
pub async fn call(connection: &quinn::Connection, kind: u8, body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(&[kind]).await?;
    send.write_all(&length(body)?).await?;
    send.write_all(body).await?;
    send.finish()?;
    read_body(&mut recv).await
}

/// Accepts peers until the endpoint closes; each request is answered by `handle(kind, body)`
/// on a task of its own, whose answer is the concatenation of the chunks it returns (written
/// one after another, not copied into one buffer). A stream whose request breaks the framing
/// is dropped.
pub async fn serve<H, F>(endpoint: quinn::Endpoint, handle: H)
where
    H: Fn(u8, Vec<u8>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Vec<bytes::Bytes>> + Send + 'static,
{
    while let Some(incoming) = endpoint.accept().await {
        let handle = handle.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster peer refused (TLS or handshake)");
                    return;
                }
            };
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let mut kind = [0u8; 1];
                    if recv.read_exact(&mut kind).await.is_err() {
                        return;
                    }
                    let body = match read_body(&mut recv).await {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::warn!(error = %e, "cluster request dropped");
                            return;
                        }
                    };
                    let mut answer = handle(kind[0], body).await;
                    let total: usize = answer.iter().map(bytes::Bytes::len).sum();
                    if total > RPC_BYTES_MAX {
                        tracing::warn!(bytes = total, "a cluster answer over RPC_BYTES_MAX was dropped");
                        return;
                    }
                    let Ok(len) = u32::try_from(total) else { return };
                    let _ = send.write_all(&len.to_be_bytes()).await;
                    let _ = send.write_all_chunks(&mut answer).await;
                    let _ = send.finish();
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn peers_under_one_ca_talk_and_a_node_of_another_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (dir.path().join("ca.pem"), dir.path().join("other.pem"));
        assert!(create_ca(&ours).unwrap());
        assert!(!create_ca(&ours).unwrap(), "the first CA stays");
        assert!(create_ca(&theirs).unwrap());

        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = bind(any, node_tls(&ours, 1).unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(serve(server.clone(), |kind, body: Vec<u8>| async move {
            vec![bytes::Bytes::from(vec![kind]), bytes::Bytes::from(body)]
        }));

        let friend = bind(any, node_tls(&ours, 2).unwrap()).unwrap();
        let connection = friend.connect(addr, &node_name(1)).unwrap().await.expect("same CA: accepted");
        assert_eq!(call(&connection, 7, b"hello").await.unwrap(), b"\x07hello");

        let stranger = bind(any, node_tls(&theirs, 3).unwrap()).unwrap();
        let refused = match stranger.connect(addr, &node_name(1)).unwrap().await {
            Err(e) => e.to_string(),
            // TLS 1.3: the client may finish before the server checks its certificate; then
            // the first request fails.
            Ok(c) => call(&c, 7, b"hello").await.expect_err("another CA: refused").to_string(),
        };
        assert!(!refused.is_empty());

        // A node that claims another node's name is still checked by chain: the name a
        // connection asks for must be on the certificate.
        let wrong_name = friend.connect(addr, &node_name(9)).unwrap().await;
        assert!(wrong_name.is_err(), "node 1's certificate is not node 9's");
    }
}
