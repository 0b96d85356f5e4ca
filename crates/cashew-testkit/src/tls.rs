//! Certificates made at test time: a CA, and certificates it signs for servers,
//! the proxy and clients, written as PEM files; and a blocking TLS client that
//! trusts a given CA and may show a client certificate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::temp_dir;

/// A certificate authority whose files live in a directory of their own.
pub struct Authority {
    pub dir: PathBuf,
    name: String,
    cert: Certificate,
    key: KeyPair,
}

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a certificate is for, besides its names.
pub struct Request<'a> {
    /// DNS names and IP addresses it is valid for.
    pub names: &'a [&'a str],
    pub serial: u64,
    /// Made already expired.
    pub expired: bool,
}

impl Authority {
    /// A new CA named `name`; its certificate is `ca.crt` in its directory.
    pub fn new(name: &str) -> Authority {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let dir = temp_dir("pki");
        std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
        Authority {
            dir,
            name: name.into(),
            cert,
            key,
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A certificate for 127.0.0.1 and localhost, serial 1, in `file`.crt and .key.
    pub fn issue(&self, file: &str) -> Issued {
        self.issue_for(
            file,
            Request {
                names: &["127.0.0.1", "localhost"],
                serial: 1,
                expired: false,
            },
        )
    }

    pub fn issue_for(&self, file: &str, request: Request<'_>) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = request.names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{file} ({})", self.name));
        params.serial_number = Some(SerialNumber::from(request.serial));
        if request.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        // Servers that drop privileges (memcached -u nobody) read them too.
        for path in [&issued.cert, &issued.key, &self.ca()] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        issued
    }
}

/// A blocking TLS connection.
pub type TlsConn = StreamOwned<ClientConnection, TcpStream>;

/// The client side of TLS: which CA it trusts and which certificate it shows.
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    pub fn new(ca: &PathBuf, identity: Option<&Issued>) -> TlsClient {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        // The provider cashew uses (deprecated since rustls 0.23.48 for lacking
        // post-quantum key exchange).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let chain = CertificateDer::pem_file_iter(&id.cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_file(&id.key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        TlsClient {
            config: Arc::new(config),
        }
    }

    /// Connects and completes the handshake: the error says why it failed.
    pub fn connect(&self, addr: SocketAddr) -> Result<TlsConn, String> {
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = ClientConnection::new(self.config.clone(), name).map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(tls)
    }

    /// One request and a reply of `expected_len` bytes, over a new connection
    /// whose handshake must succeed.
    pub fn roundtrip(&self, addr: SocketAddr, request: &[u8], expected_len: usize) -> Vec<u8> {
        let mut tls = self.connect(addr).unwrap();
        tls.write_all(request).unwrap();
        let mut reply = vec![0; expected_len];
        tls.read_exact(&mut reply).unwrap();
        reply
    }
}

/// The serial number of the certificate a TLS connection's peer showed.
pub fn peer_serial(tls: &TlsConn) -> Vec<u8> {
    let chain = tls.conn.peer_certificates().expect("a handshake was made");
    x509_serial(&chain[0])
}

/// The serial of a DER certificate, read from its TBSCertificate: the first
/// INTEGER after the optional version field.
fn x509_serial(der: &[u8]) -> Vec<u8> {
    // SEQUENCE { SEQUENCE (tbs) { [0] version?, INTEGER serial, ... } ... }
    fn header(b: &[u8]) -> (u8, usize, usize) {
        let tag = b[0];
        let first = b[1] as usize;
        if first < 0x80 {
            return (tag, 2, first);
        }
        let n = first & 0x7f;
        let len = b[2..2 + n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | x as usize);
        (tag, 2 + n, len)
    }
    let (_, h, _) = header(der);
    let tbs = &der[h..];
    let (_, h, _) = header(tbs);
    let mut at = &tbs[h..];
    let (tag, h, len) = header(at);
    if tag == 0xa0 {
        at = &at[h + len..];
    }
    let (tag, h, len) = header(at);
    assert_eq!(tag, 0x02, "a serial number is an INTEGER");
    at[h..h + len].to_vec()
}
