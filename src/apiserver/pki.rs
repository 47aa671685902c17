//! The cluster's certificates: a CA, the API server's serving certificate and the admin client
//! certificate, created on first start under `DATA_DIR/server/tls/` and reused after.
//!
//! The CA and the admin certificate are kept; the serving certificate is issued anew on every
//! start, so new `--tls-san` names or node addresses take effect without a manual step (clients
//! trust the CA, not the leaf).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Why the certificates could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("reading or writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid subject alternative name {0:?}")]
    BadSan(String),
}

/// PEM texts of the cluster's certificates and keys.
#[derive(Clone)]
pub struct Pki {
    pub ca_cert: String,
    /// The CA's key (PEM), which signs node client certificates for joining agents.
    pub ca_key: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// The key service-account tokens are signed with (ECDSA P-256, PKCS#8 PEM).
    pub service_account_key: String,
    /// The API server's client certificate towards kubelets (CN=kube-apiserver-kubelet-client,
    /// O=system:masters), reissued at every start.
    pub kubelet_client_cert: String,
    pub kubelet_client_key: String,
}

const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 365;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(text.as_bytes()).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "k1s-server-ca");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, CA_DAYS);
    p
}

/// Loads the PKI under `dir`, creating what is missing, and issues a serving certificate for
/// `sans` (DNS names or IP addresses).
pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Pki, PkiError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let ca_cert_path = dir.join("server-ca.crt");
    let ca_key_path = dir.join("server-ca.key");
    let (ca_cert, ca_key) = if ca_cert_path.exists() && ca_key_path.exists() {
        (
            std::fs::read_to_string(&ca_cert_path).map_err(io_err(&ca_cert_path))?,
            KeyPair::from_pem(
                &std::fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?,
            )?,
        )
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        std::fs::write(&ca_cert_path, cert.pem()).map_err(io_err(&ca_cert_path))?;
        (cert.pem(), key)
    };
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, &ca_key)?;

    // The serving certificate, anew.
    let mut serving = CertificateParams::default();
    serving.distinguished_name = rcgen::DistinguishedName::new();
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    for san in sans {
        let entry = match san.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                san.clone()
                    .try_into()
                    .map_err(|_| PkiError::BadSan(san.clone()))?,
            ),
        };
        if !serving.subject_alt_names.contains(&entry) {
            serving.subject_alt_names.push(entry);
        }
    }
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.use_authority_key_identifier_extension = true;
    validity(&mut serving, LEAF_DAYS);
    let serving_key = KeyPair::generate()?;
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;
    let serving_cert_path = dir.join("serving-kube-apiserver.crt");
    let serving_key_path = dir.join("serving-kube-apiserver.key");
    write_private(&serving_key_path, &serving_key.serialize_pem())?;
    std::fs::write(&serving_cert_path, serving_cert.pem()).map_err(io_err(&serving_cert_path))?;

    // The admin client certificate: CN=system:admin, O=system:masters.
    let admin_cert_path = dir.join("client-admin.crt");
    let admin_key_path = dir.join("client-admin.key");
    let (admin_cert, admin_key) = if admin_cert_path.exists() && admin_key_path.exists() {
        (
            std::fs::read_to_string(&admin_cert_path).map_err(io_err(&admin_cert_path))?,
            std::fs::read_to_string(&admin_key_path).map_err(io_err(&admin_key_path))?,
        )
    } else {
        let mut admin = CertificateParams::default();
        admin.distinguished_name = rcgen::DistinguishedName::new();
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin
            .distinguished_name
            .push(DnType::CommonName, "system:admin");
        admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        admin.use_authority_key_identifier_extension = true;
        validity(&mut admin, LEAF_DAYS);
        let key = KeyPair::generate()?;
        let cert = admin.signed_by(&key, &issuer)?;
        write_private(&admin_key_path, &key.serialize_pem())?;
        std::fs::write(&admin_cert_path, cert.pem()).map_err(io_err(&admin_cert_path))?;
        (cert.pem(), key.serialize_pem())
    };
    // The service-account token signing key, kept across restarts (tokens stay valid).
    let sa_key_path = dir.join("service.key");
    let service_account_key = if sa_key_path.exists() {
        std::fs::read_to_string(&sa_key_path).map_err(io_err(&sa_key_path))?
    } else {
        let key = KeyPair::generate()?.serialize_pem();
        write_private(&sa_key_path, &key)?;
        key
    };
    // The client certificate kubelets see the API server's proxied requests come with.
    let mut kc = CertificateParams::default();
    kc.distinguished_name = rcgen::DistinguishedName::new();
    kc.distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    kc.distinguished_name
        .push(DnType::CommonName, "kube-apiserver-kubelet-client");
    kc.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    kc.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    kc.use_authority_key_identifier_extension = true;
    validity(&mut kc, LEAF_DAYS);
    let kc_key = KeyPair::generate()?;
    let kc_cert = kc.signed_by(&kc_key, &issuer)?;
    Ok(Pki {
        kubelet_client_cert: kc_cert.pem(),
        kubelet_client_key: kc_key.serialize_pem(),
        ca_key: ca_key.serialize_pem(),
        ca_cert,
        serving_cert: serving_cert.pem(),
        serving_key: serving_key.serialize_pem(),
        admin_cert,
        admin_key,
        service_account_key,
    })
}

/// A kubelet client certificate for `node` (CN=system:node:NODE, O=system:nodes) and its key,
/// signed by the cluster CA, as a joining agent gets it.
pub fn node_client_cert(pki: &Pki, node: &str) -> Result<(String, String), PkiError> {
    let ca_key = KeyPair::from_pem(&pki.ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(&pki.ca_cert, &ca_key)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    p.distinguished_name
        .push(DnType::CommonName, format!("system:node:{node}"));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, LEAF_DAYS);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_and_admin_survive_restarts_serving_is_reissued() {
        let dir = tempfile::tempdir().expect("tmp");
        let sans = vec!["127.0.0.1".to_string(), "kubernetes".to_string()];
        let first = load_or_create(dir.path(), &sans).expect("create");
        let second = load_or_create(dir.path(), &sans).expect("load");
        assert_eq!(first.ca_cert, second.ca_cert);
        assert_eq!(first.admin_cert, second.admin_cert);
        assert_eq!(first.service_account_key, second.service_account_key);
        assert_ne!(first.serving_cert, second.serving_cert);
        let key = std::fs::metadata(dir.path().join("server-ca.key")).expect("key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }
}
