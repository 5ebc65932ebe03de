//! The certificate authorities upstream TLS trusts: Mozilla's (webpki-roots,
//! the same on every machine), and those of the PEM file `SSL_CERT_FILE`
//! names, the variable curl, OpenSSL and Go read, for a local server with a
//! certificate of its own or a company's TLS-inspecting proxy.

use std::path::Path;
use std::sync::OnceLock;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, TrustAnchor};
use rustls::RootCertStore;

/// The variable that names a PEM file of extra authorities.
pub const EXTRA_ROOTS: &str = "SSL_CERT_FILE";

pub(super) fn roots() -> RootCertStore {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    roots.roots.extend(extra().iter().cloned());
    roots
}

/// `SSL_CERT_FILE`'s usable authorities, read once per process (every
/// upstream client shares them) and logged: how many were added, how many
/// skipped (a system bundle may hold some rustls cannot use), or why none were.
fn extra() -> &'static [TrustAnchor<'static>] {
    static EXTRA: OnceLock<Vec<TrustAnchor<'static>>> = OnceLock::new();
    EXTRA.get_or_init(|| {
        let Some(path) = std::env::var_os(EXTRA_ROOTS) else {
            return Vec::new();
        };
        let path = Path::new(&path);
        let (usable, skipped) = match authorities(path) {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(
                    "{EXTRA_ROOTS}={}: cannot read it ({e}); upstream TLS trusts the built-in authorities only",
                    path.display()
                );
                return Vec::new();
            }
        };
        if usable.is_empty() {
            tracing::error!(
                "{EXTRA_ROOTS}={}: no usable PEM certificate in it ({} skipped); upstream TLS trusts the built-in authorities only",
                path.display(),
                skipped
            );
        } else {
            tracing::info!(
                "upstream TLS also trusts the {} certificate(s) of {EXTRA_ROOTS}={} ({} skipped: no usable authority)",
                usable.len(),
                path.display(),
                skipped
            );
        }
        usable
    })
}

/// The authorities of the PEM file at `path` that rustls can use, and how
/// many of its certificates it cannot.
fn authorities(path: &Path) -> Result<(Vec<TrustAnchor<'static>>, usize), pem::Error> {
    let certs = CertificateDer::pem_file_iter(path)?.collect::<Result<Vec<_>, _>>()?;
    let mut read = RootCertStore::empty();
    let (_, skipped) = read.add_parsable_certificates(certs);
    Ok((read.roots, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_gives_its_usable_authorities_and_counts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap().pem();
        // a well-formed PEM block whose content is no certificate
        let junk = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(&bundle, format!("{ca}{junk}")).unwrap();
        let (usable, skipped) = authorities(&bundle).unwrap();
        assert_eq!((usable.len(), skipped), (1, 1));

        let none = dir.path().join("none.pem");
        std::fs::write(&none, "no PEM here").unwrap();
        assert_eq!(authorities(&none).unwrap().0.len(), 0);
        assert!(authorities(&dir.path().join("missing.pem")).is_err());
    }
}
