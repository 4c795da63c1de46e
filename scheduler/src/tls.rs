//! TLS on the scheduler's gRPC port, with certificates re-read when their files change.
//!
//! The port serves one rustls configuration: the scheduler's certificate and key (PEM
//! files) and, when a client CA is given, verification of client certificates against
//! it. Renewed files — cert-manager, ACM PCA, a rotated CA — are picked up by the next
//! connection ([`ServerTls`], checked at most every five seconds). A client certificate is optional on the port — users
//! present bearer tokens — but the [`auth`](crate::auth) gate admits Ballista's executor
//! RPCs only from a connection whose certificate that CA signed: the executor fleet.
//! Handshakes run off the accept loop, so a slow or hostile client holds only its own
//! connection; a plain-text client is refused by the handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

/// Where the port's certificates are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The scheduler's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA that signs the executors' client certificates (PEM); without it no
    /// client certificate is asked for and executor RPCs are not restricted.
    pub client_ca: Option<PathBuf>,
}

/// Certificates that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS {what} {path}: {message}")]
pub struct TlsError {
    /// What the file is (certificate, key, client CA).
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider())
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |message: String| TlsError {
        what,
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| fail(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| fail(err.to_string()))?;
    if certs.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn certified_key(settings: &TlsSettings) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates("certificate", &settings.cert)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|err| TlsError {
        what: "key",
        path: settings.key.clone(),
        message: err.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|err| TlsError {
            what: "key",
            path: settings.key.clone(),
            message: format!(
                "does not fit the certificate {}: {err}",
                settings.cert.display()
            ),
        })
}

/// The modification times of the certificate, its key and the client CA.
type Modified = Option<(SystemTime, SystemTime, Option<SystemTime>)>;

fn modified(settings: &TlsSettings) -> Modified {
    let at = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let ca = match &settings.client_ca {
        Some(ca) => Some(at(ca)?),
        None => None,
    };
    Some((at(&settings.cert)?, at(&settings.key)?, ca))
}

/// Serves one certificate.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// The port's TLS configuration, rebuilt when the certificate, its key or the client CA
/// changes on disk (checked at most every five seconds, as connections arrive). A set of
/// files half-written by a renewal fails to load; the previous configuration serves until
/// all of them are in place.
#[derive(Debug)]
pub struct ServerTls {
    settings: TlsSettings,
    /// The configuration served, its files' times when read, and the last check.
    state: Mutex<(Arc<ServerConfig>, Modified, Instant)>,
}

impl ServerTls {
    /// Reads the files; an unusable one is an error naming it.
    pub fn load(settings: &TlsSettings) -> Result<Self, TlsError> {
        Ok(Self {
            state: Mutex::new((server_config(settings)?, modified(settings), Instant::now())),
            settings: settings.clone(),
        })
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.2.elapsed() >= Duration::from_secs(5) {
            state.2 = Instant::now();
            let now = modified(&self.settings);
            if now != state.1 {
                match server_config(&self.settings) {
                    Ok(config) => {
                        tracing::info!(cert = %self.settings.cert.display(), "TLS certificates re-read");
                        *state = (config, now, Instant::now());
                    }
                    Err(err) => {
                        tracing::warn!(%err, "TLS files changed and cannot be loaded yet; the previous ones serve")
                    }
                }
            }
        }
        Arc::clone(&state.0)
    }
}

/// A TLS configuration of the files as they are now.
fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = Arc::new(Fixed(certified_key(settings)?));
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError {
            what: "certificate",
            path: settings.cert.clone(),
            message: err.to_string(),
        })?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("client CA", ca)? {
                roots.add(cert).map_err(|err| TlsError {
                    what: "client CA",
                    path: ca.clone(),
                    message: err.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|err| TlsError {
                    what: "client CA",
                    path: ca.clone(),
                    message: err.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS connections accepted on `listener`. Handshakes run beside the accept loop
/// (ten seconds at most each) in a set the stream owns, so dropping the stream stops
/// them all; failed handshakes are dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
) -> impl futures::Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static {
    let state = (listener, JoinSet::new(), tls);
    futures::stream::unfold(state, |(listener, mut handshakes, tls)| async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let acceptor = TlsAcceptor::from(tls.current());
                        handshakes.spawn(async move {
                            let handshake = acceptor.accept(stream);
                            (peer, tokio::time::timeout(Duration::from_secs(10), handshake).await)
                        });
                    }
                    Err(err) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(%err, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = handshakes.join_next(), if !handshakes.is_empty() => match done {
                    Ok((_, Ok(Ok(stream)))) => {
                        return Some((Ok(stream), (listener, handshakes, tls)));
                    }
                    Ok((peer, Ok(Err(err)))) => tracing::debug!(%peer, %err, "TLS handshake refused"),
                    Ok((peer, Err(_))) => tracing::debug!(%peer, "TLS handshake timed out"),
                    Err(err) => tracing::debug!(%err, "a TLS handshake task ended"),
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsSettings {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let settings = TlsSettings {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            client_ca: None,
        };
        std::fs::write(&settings.cert, cert.pem()).unwrap();
        std::fs::write(&settings.key, key.serialize_pem()).unwrap();
        settings
    }

    #[test]
    fn a_key_that_does_not_fit_the_certificate_is_refused_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_pair(dir.path(), "first");
        let second = write_pair(dir.path(), "second");
        let mixed = TlsSettings {
            key: second.key.clone(),
            ..first.clone()
        };
        let err = ServerTls::load(&mixed).unwrap_err().to_string();
        assert!(err.contains("second.key"), "{err}");
        assert!(err.contains("first.crt"), "{err}");
        let missing = TlsSettings {
            cert: dir.path().join("absent.crt"),
            ..first
        };
        let err = ServerTls::load(&missing).unwrap_err().to_string();
        assert!(err.starts_with("TLS certificate "), "{err}");
        assert!(err.contains("absent.crt"), "{err}");
    }

    #[test]
    fn renewed_files_are_served_and_a_half_written_renewal_keeps_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_pair(dir.path(), "scheduler");
        let tls = ServerTls::load(&first).unwrap();
        let served = tls.current();
        let stale = |tls: &ServerTls| {
            tls.state.lock().unwrap().2 -= Duration::from_secs(10);
        };
        // Unchanged files: the same configuration.
        stale(&tls);
        assert!(Arc::ptr_eq(&served, &tls.current()));
        // A renewal: certificate and key replaced (times moved on).
        std::thread::sleep(Duration::from_millis(20));
        write_pair(dir.path(), "scheduler");
        stale(&tls);
        let renewed = tls.current();
        assert!(!Arc::ptr_eq(&served, &renewed), "the renewed pair serves");
        // Half a renewal (a key that fits no certificate): the renewed pair stays.
        std::thread::sleep(Duration::from_millis(20));
        let other = write_pair(dir.path(), "other");
        std::fs::copy(&other.key, &first.key).unwrap();
        stale(&tls);
        assert!(Arc::ptr_eq(&renewed, &tls.current()));
    }
}
