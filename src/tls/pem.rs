//! Certificates and keys from PEM files, into rustls configurations. Every error names the
//! setting (`label`, e.g. "--target-tls-ca (file key target.tls_ca)") and the file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The one crypto provider compiled in: ring.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, label: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{label}: cannot read {}: {e}", path.display()))
}

/// Every certificate in a PEM file (at least one).
pub(crate) fn certs(path: &Path, label: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = read(path, label)?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{label}: {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{label}: {} holds no certificate (expected a -----BEGIN CERTIFICATE----- block)", path.display()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, SEC1 EC or PKCS#1 RSA).
pub(crate) fn key(path: &Path, label: &str) -> Result<PrivateKeyDer<'static>, String> {
    let text = read(path, label)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{label}: {} holds no private key (expected a -----BEGIN PRIVATE KEY-----, EC PRIVATE KEY or RSA PRIVATE KEY block)",
            path.display()
        ),
        e => format!("{label}: {} is not valid PEM: {e}", path.display()),
    })
}

/// Where the system's CA bundle usually is (Debian/Ubuntu, RHEL/Fedora, SUSE, Alpine).
const SYSTEM_BUNDLES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem"];

/// The CAs to trust: those of the `ca` file, else the system's bundle (`SSL_CERT_FILE` or the
/// usual places).
pub(crate) fn roots(ca: Option<&Path>, label: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    if let Some(path) = ca {
        for c in certs(path, label)? {
            store.add(c).map_err(|e| format!("{label}: {}: a certificate in it cannot serve as a CA: {e}", path.display()))?;
        }
        return Ok(store);
    }
    let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let bundle = env.or_else(|| SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from).find(|p| p.is_file())).ok_or_else(|| {
        format!("{label} is not set and no system CA bundle was found ({}): give the CA file", SYSTEM_BUNDLES.join(", "))
    })?;
    let certs = certs(&bundle, &format!("the system CA bundle (used as {label} is not set)"))?;
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{label} is not set and the system CA bundle {} holds no usable CA", bundle.display()));
    }
    Ok(store)
}

/// Labels of the settings of one side, for messages.
pub(crate) struct Labels {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// A client configuration: trust `ca` (or the system's CAs); present `cert` and `key` when
/// both are given.
pub(crate) fn client_config(
    ca: Option<&Path>,
    cert_key: Option<(&Path, &Path)>,
    labels: &Labels,
) -> Result<ClientConfig, String> {
    let roots = roots(ca, &labels.ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    match cert_key {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key_path)) => {
            let chain = certs(cert, &labels.cert)?;
            let key = key(key_path, &labels.key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!("{} and {}: {} and {} do not make a usable pair: {e}", labels.cert, labels.key, cert.display(), key_path.display())
            })
        }
    }
}

/// A server configuration (the emulator's listener): present `cert` and `key`; with
/// `client_ca`, require a client certificate signed by it, as a Dragonfly master started with
/// `--tls_ca_cert_file` does.
pub fn server_config(cert: &Path, key_path: &Path, client_ca: Option<&Path>, labels: &Labels) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(roots(Some(ca), &labels.ca)?);
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("{}: {}: {e}", labels.ca, ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = certs(cert, &labels.cert)?;
    let key = key(key_path, &labels.key)?;
    let cfg = builder.with_single_cert(chain, key).map_err(|e| {
        format!("{} and {}: {} and {} do not make a usable pair: {e}", labels.cert, labels.key, cert.display(), key_path.display())
    })?;
    Ok(Arc::new(cfg))
}
