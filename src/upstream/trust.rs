//! The certificate authorities upstream TLS trusts: Mozilla's (webpki-roots,
//! the same on every machine), and those of the PEM file `SSL_CERT_FILE`
//! names, the variable curl, OpenSSL and Go read, for a local server with a
//! certificate of its own or a company's TLS-inspecting proxy.

use std::sync::OnceLock;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The variable that names a PEM file of extra authorities.
pub const EXTRA_ROOTS: &str = "SSL_CERT_FILE";

pub(super) fn roots() -> RootCertStore {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra() {
        // Read and checked once (see `extra`); an authority rustls cannot
        // use was reported there.
        let _ = roots.add(cert.clone());
    }
    roots
}

/// `SSL_CERT_FILE`'s certificates, read once per process (every upstream
/// client shares them) and logged: how many were added, or why none were.
fn extra() -> &'static [CertificateDer<'static>] {
    static EXTRA: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    EXTRA.get_or_init(|| {
        let Some(path) = std::env::var_os(EXTRA_ROOTS) else {
            return Vec::new();
        };
        let path = std::path::PathBuf::from(path);
        let usable =
            |cert: &CertificateDer<'static>| RootCertStore::empty().add(cert.clone()).is_ok();
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read it ({e})"))
            .and_then(|certs| match certs {
                c if c.is_empty() => Err("no PEM certificate in it".to_owned()),
                c if !c.iter().all(usable) => {
                    Err("a certificate in it is no usable authority".to_owned())
                }
                c => Ok(c),
            });
        match certs {
            Ok(certs) => {
                tracing::info!(
                    "upstream TLS also trusts the {} certificate(s) of {EXTRA_ROOTS}={}",
                    certs.len(),
                    path.display()
                );
                certs
            }
            Err(why) => {
                tracing::error!(
                    "{EXTRA_ROOTS}={}: {why}; upstream TLS trusts the built-in authorities only",
                    path.display()
                );
                Vec::new()
            }
        }
    })
}
