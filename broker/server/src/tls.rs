//! The broker's TLS identity: a dev certificate made with rcgen on first start and kept in the
//! data folder, so clients can trust it by file (`--ca`) or by fingerprint (`--cert-sha256`).
//! In a cluster it is signed by the cluster CA and the file holds the chain, so trusting one
//! broker's file trusts them all.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub struct Identity {
    pub cert_path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// SHA-256 of the leaf certificate, as clients pin it.
    pub fn fingerprint(&self) -> String {
        weir_sdk::client::certificate_fingerprint(&self.certs[0])
    }
}

pub fn cert_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("cert.pem")
}

/// Loads the identity from `data_dir/tls`, creating one for `names` if absent: self-signed on a
/// single node; signed by the cluster CA at `cluster_ca` in a cluster (made again if the one
/// kept was not, or was signed by another CA).
pub fn load_or_create(data_dir: &Path, names: &[String], cluster_ca: Option<&Path>) -> anyhow::Result<Identity> {
    let dir = data_dir.join("tls");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if let Some(ca) = cluster_ca {
        let kept = std::fs::read(&cert_path).ok();
        let current = match kept {
            Some(chain) => crate::cluster::chain_ends_in_ca(&chain, ca)? && key_path.exists(),
            None => false,
        };
        if !current {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let (chain, key) = crate::cluster::listener_certificate(ca, names)?;
            std::fs::write(&key_path, key).with_context(|| format!("writing {}", key_path.display()))?;
            std::fs::write(&cert_path, chain).with_context(|| format!("writing {}", cert_path.display()))?;
            tracing::info!(path = %cert_path.display(), "signed the listeners' certificate with the cluster CA");
        }
    } else if !cert_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let generated = rcgen::generate_simple_self_signed(names.to_vec()).context("generating the dev certificate")?;
        std::fs::write(&key_path, generated.signing_key.serialize_pem())
            .with_context(|| format!("writing {}", key_path.display()))?;
        std::fs::write(&cert_path, generated.cert.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
        tracing::info!(path = %cert_path.display(), "created a self-signed dev certificate");
    }
    let cert_pem = std::fs::read(&cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
    let key_pem = std::fs::read(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let certs = rustls_pemfile::certs(&mut &cert_pem[..]).collect::<Result<Vec<_>, _>>().context("parsing cert.pem")?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert_path.display());
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .context("parsing key.pem")?
        .context("key.pem holds no private key")?;
    Ok(Identity { cert_path, certs, key })
}

pub fn server_crypto(identity: &Identity, alpn: &[u8]) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}
