//! TLS for a pool: the listener's side (`tls`) and the servers' side
//! (`server_tls`), built from the files the config names each time a config is
//! loaded, so a reload picks up rotated certificates. rustls with ring: no OpenSSL.

use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use cashew_config::{ConfigError, ListenTls, Location, Pool, ServerTls};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A pool's TLS, as loaded with its generation.
#[derive(Clone, Default)]
pub(crate) struct PoolTls {
    /// Clients connect with TLS.
    pub(crate) accept: Option<TlsAcceptor>,
    /// Servers are connected to with TLS.
    pub(crate) connect: Option<Arc<ServerTlsConnector>>,
    /// The Sentinels are connected to with TLS.
    pub(crate) sentinels: Option<Arc<ServerTlsConnector>>,
}

/// What connects to a pool's servers over TLS.
pub(crate) struct ServerTlsConnector {
    connector: TlsConnector,
    /// `server_name`: verified and sent for every server; else each server's host.
    name: Option<ServerName<'static>>,
    /// A digest of the files and the name: a reload that changes neither keeps the
    /// pool's server connections, one that does opens new ones.
    fingerprint: [u8; 32],
}

impl PartialEq for ServerTlsConnector {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for ServerTlsConnector {}

impl std::fmt::Debug for ServerTlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerTlsConnector({:?})", self.name)
    }
}

impl ServerTlsConnector {
    /// The TLS handshake over a connected socket to `host`.
    pub(crate) async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = match &self.name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_string()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("'{host}' is not a name a certificate can be verified for"),
                )
            })?,
        };
        self.connector.connect(name, tcp).await
    }

    /// As [`connect`](Self::connect) over a blocking socket, for the control
    /// plane's few calls (reading a Redis Cluster's slot map): the handshake
    /// happens at the first read or write.
    pub(crate) fn connect_blocking(
        &self,
        host: &str,
        tcp: std::net::TcpStream,
    ) -> io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        let name = match &self.name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_string())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, host.to_string()))?,
        };
        let session = rustls::ClientConnection::new(self.connector.config().clone(), name)
            .map_err(io::Error::other)?;
        Ok(rustls::StreamOwned::new(session, tcp))
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    // ring builds with nothing but a C compiler; rustls deprecates its provider
    // (since 0.23.48) for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let ring = rustls::crypto::ring::default_provider;
    PROVIDER.get_or_init(|| Arc::new(ring())).clone()
}

/// The TLS of every pool of a config, in order; an error names the file, the line
/// of the pool's `tls`, `server_tls` or `sentinel_tls` and what is wrong with its files.
pub(crate) fn for_pools(file: &str, pools: &[Pool]) -> Result<Vec<PoolTls>, String> {
    let mut errors = Vec::new();
    let mut all = Vec::new();
    for pool in pools {
        let error = |at: Location, key: &str, message: String| ConfigError {
            file: file.to_string(),
            at: Some(at),
            pool: Some(pool.name.clone()),
            key: Some(key.to_string()),
            message,
        };
        let mut tls = PoolTls::default();
        if let Some(listen) = &pool.tls {
            match acceptor(listen) {
                Ok(a) => tls.accept = Some(a),
                Err(m) => errors.push(error(listen.at, "tls", m)),
            }
        }
        for (settings, key, connect) in [
            (&pool.server_tls, "server_tls", &mut tls.connect),
            (&pool.sentinel_tls, "sentinel_tls", &mut tls.sentinels),
        ] {
            if let Some(settings) = settings {
                match connector(settings) {
                    Ok(c) => *connect = Some(Arc::new(c)),
                    Err(m) => errors.push(error(settings.at, key, m)),
                }
            }
        }
        all.push(tls);
    }
    match errors.is_empty() {
        true => Ok(all),
        false => Err(cashew_config::ConfigErrors(errors).to_string()),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let read = |e| format!("{}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    match certs.is_empty() {
        true => Err(format!("{} holds no certificate", path.display())),
        false => Ok(certs),
    }
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A certificate chain and the key it certifies, checked to belong together.
fn certified(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let (chain, private) = (certificates(cert)?, private_key(key)?);
    let mismatch = || {
        format!(
            "the key in {} is not the key of the certificate in {}",
            key.display(),
            cert.display()
        )
    };
    let pair = CertifiedKey::from_der(chain.clone(), private.clone_key(), &provider()).map_err(
        |e| match e {
            rustls::Error::InconsistentKeys(_) => mismatch(),
            other => format!("{}: {other}", key.display()),
        },
    )?;
    pair.keys_match().map_err(|_| mismatch())?;
    Ok((chain, private))
}

fn roots(ca: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    match added {
        0 => Err("no 'ca' given and the system has no CA certificates".into()),
        _ => Ok(roots),
    }
}

fn acceptor(tls: &ListenTls) -> Result<TlsAcceptor, String> {
    let (chain, key) = certified(&tls.cert, &tls.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn connector(tls: &ServerTls) -> Result<ServerTlsConnector, String> {
    let roots = match &tls.ca {
        Some(ca) => roots(ca)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let (chain, key) = certified(cert, key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = match &tls.server_name {
        Some(name) => Some(
            ServerName::try_from(name.clone())
                .map_err(|_| format!("server_name '{name}' is not a DNS name or an IP address"))?,
        ),
        None => None,
    };
    let fingerprint = {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        for path in [&tls.ca, &tls.cert, &tls.key].into_iter().flatten() {
            digest.update(path.as_os_str().as_encoded_bytes());
            digest.update(std::fs::read(path).unwrap_or_default());
        }
        digest.update(tls.server_name.as_deref().unwrap_or_default());
        digest.finalize().into()
    };
    Ok(ServerTlsConnector {
        connector: TlsConnector::from(Arc::new(config)),
        name,
        fingerprint,
    })
}

/// Why a TLS handshake failed, in words for a log line or a server's failure.
pub(crate) fn reason(e: &io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                "the peer closed the connection during the handshake".into()
            }
            _ => e.to_string(),
        };
    };
    use rustls::{CertificateError, Error};
    match tls {
        Error::InvalidMessage(_) => "not TLS (a plaintext client?)".into(),
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the certificate is not signed by a trusted CA".into()
        }
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "the certificate is for another name".into()
        }
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "the certificate has expired".into()
        }
        Error::NoCertificatesPresented => "the client presented no certificate".into(),
        Error::AlertReceived(alert) => format!("the peer refused the handshake ({alert:?})"),
        other => other.to_string(),
    }
}
