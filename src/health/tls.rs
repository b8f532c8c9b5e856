//! TLS client settings for https probes, built once per distinct setting and shared.
//!
//! Three modes: the system's trust store (platform verifier), a custom CA file (only those
//! CAs are trusted, as for an internal PKI), or no verification at all (`tls_verify =
//! false`, for self-signed ingress certificates). Hostname checks use the probe's host
//! (the app hostname), which is also sent as SNI.

use std::{collections::HashMap, path::Path, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};

/// Reads every certificate of a PEM file; an error names the problem (for `gtmd check`).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM in CA file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in CA file {}", path.display()));
    }
    Ok(certs)
}

/// Every client configuration here names its provider; ring is also installed as the
/// process-wide default (once, a no-op if one is installed) for any code that asks for it.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client configuration for one (verify, CA file) setting.
pub fn client_config(verify: bool, ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if !verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else if let Some(path) = ca_file {
        let mut roots = RootCertStore::empty();
        for cert in read_ca_file(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("CA file {}: {e}", path.display()))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| format!("system trust store: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    Ok(config)
}

/// Client configurations by setting, so 10,000 https probes share a handful of them.
#[derive(Default)]
pub struct TlsConfigs(HashMap<(bool, Option<std::path::PathBuf>), Arc<ClientConfig>>);

impl TlsConfigs {
    pub fn get(
        &mut self,
        verify: bool,
        ca_file: Option<&Path>,
    ) -> Result<Arc<ClientConfig>, String> {
        let key = (verify, ca_file.map(Path::to_path_buf));
        if let Some(c) = self.0.get(&key) {
            return Ok(c.clone());
        }
        let c = Arc::new(client_config(verify, ca_file)?);
        self.0.insert(key, c.clone());
        Ok(c)
    }
}

/// Accepts any certificate (signatures of the handshake are still checked, so the peer
/// holds the key of the certificate it sent).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
