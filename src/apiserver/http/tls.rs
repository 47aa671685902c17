//! Client certificates as upstream treats them: the TLS handshake takes any certificate whose
//! key the client proves it holds, and the chain is checked against the cluster CA afterwards,
//! so a certificate from another CA gets a 401 Status, not a failed handshake.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Accepts every client certificate at the handshake (signatures are still checked, so the
/// client holds the key); [`verify`] judges the chain once the connection is up.
#[derive(Debug)]
pub struct Lenient {
    pub strict: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for Lenient {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.strict.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.strict.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.strict.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.strict.supported_verify_schemes()
    }
}

/// Whether a presented chain is signed by the cluster CA and valid now.
pub fn verify(strict: &dyn ClientCertVerifier, chain: &[CertificateDer<'_>]) -> bool {
    match chain.split_first() {
        Some((end, intermediates)) => strict
            .verify_client_cert(end, intermediates, UnixTime::now())
            .is_ok(),
        None => false,
    }
}
