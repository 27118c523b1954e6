//! rustls client settings: trust by CA file, by pinned certificate fingerprint, or not at all.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::client::{certificate_fingerprint, TlsTrust};
use crate::error::ClientError;
use crate::wire::ALPN;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn client_crypto(trust: &TlsTrust) -> Result<rustls::ClientConfig, ClientError> {
    let tls_err = |e: String| ClientError::Tls(e);
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(e.to_string()))?;
    let mut config = match trust {
        TlsTrust::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|e| tls_err(format!("reading CA file {}: {e}", path.display())))?;
            builder.with_root_certificates(roots(&pem)?).with_no_client_auth()
        }
        TlsTrust::CaPem(pem) => builder.with_root_certificates(roots(pem)?).with_no_client_auth(),
        TlsTrust::Fingerprint(hex) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                sha256_hex: Some(hex.to_lowercase()),
                provider: provider(),
            }))
            .with_no_client_auth(),
        TlsTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { sha256_hex: None, provider: provider() }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

fn roots(pem: &[u8]) -> Result<rustls::RootCertStore, ClientError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(|e| ClientError::Tls(format!("CA PEM: {e}")))?;
        store.add(cert).map_err(|e| ClientError::Tls(format!("CA certificate: {e}")))?;
    }
    if store.is_empty() {
        return Err(ClientError::Tls("the CA PEM holds no certificate".into()));
    }
    Ok(store)
}

/// Accepts the server certificate whose SHA-256 matches, or any when no fingerprint is set; the
/// handshake signature is still verified, so the peer must hold the certificate's key.
#[derive(Debug)]
struct Pinned {
    sha256_hex: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.sha256_hex {
            Some(expected) if *expected != certificate_fingerprint(end_entity) => Err(rustls::Error::General(format!(
                "broker certificate fingerprint {} does not match the pinned {expected}",
                certificate_fingerprint(end_entity)
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
