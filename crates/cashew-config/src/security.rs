//! The keys that secure a pool: `tls` (towards clients), `server_tls` (towards
//! servers), `users` (who may authenticate), `redis_auth_user` and `memcached_auth`
//! (how cashew authenticates to servers). Certificate and key files are checked here,
//! where the error can name the line: that they exist and hold what they should.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::model::{ListenTls, ServerTls, User, UserCommands};
use crate::secret::Secret;
use crate::validate::Validator;
use crate::yaml::{Location, Node, Value};

/// What a PEM file must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificates,
    PrivateKey,
}

/// A mapping's entries by key, with errors for keys not in `allowed` and values that
/// are not single values.
fn entries<'n>(
    v: &mut Validator<'_>,
    pool: &str,
    key: &str,
    node: &'n Node,
    allowed: &[&str],
) -> Option<Vec<(&'n str, &'n Node)>> {
    let Value::Mapping(items) = &node.value else {
        v.error(
            node.at,
            Some(pool),
            Some(key),
            format!(
                "expected a mapping of {}, found {}",
                allowed.join(", "),
                node.kind()
            ),
        );
        return None;
    };
    let mut out = Vec::new();
    for (k, value) in items {
        let Value::Scalar(name) = &k.value else {
            v.error(
                k.at,
                Some(pool),
                Some(key),
                "a key must be plain text".into(),
            );
            continue;
        };
        if !allowed.contains(&name.as_str()) {
            let message = format!("unknown key '{name}'; allowed: {}", allowed.join(", "));
            v.error(k.at, Some(pool), Some(key), message);
            continue;
        }
        if out.iter().any(|(n, _)| n == name) {
            v.error(
                k.at,
                Some(pool),
                Some(key),
                format!("'{name}' is set twice"),
            );
            continue;
        }
        out.push((name.as_str(), value));
    }
    Some(out)
}

fn scalar<'n>(v: &mut Validator<'_>, pool: &str, key: &str, node: &'n Node) -> Option<&'n str> {
    match &node.value {
        Value::Scalar(s) if !s.is_empty() => Some(s),
        Value::Scalar(_) => {
            v.error(node.at, Some(pool), Some(key), "is empty".into());
            None
        }
        _ => {
            let found = node.kind();
            v.error(
                node.at,
                Some(pool),
                Some(key),
                format!("expected a single value, found {found}"),
            );
            None
        }
    }
}

/// A PEM file of `what`, as a path from the config file's directory, checked.
fn pem_file(
    v: &mut Validator<'_>,
    pool: &str,
    key: &str,
    node: &Node,
    base: &Path,
    what: Pem,
) -> Option<PathBuf> {
    let text = scalar(v, pool, key, node)?;
    let path = base.join(text);
    let problem = match what {
        Pem::Certificates => match CertificateDer::pem_file_iter(&path) {
            Err(e) => Some(pem_error(&path, e, what)),
            Ok(certs) => match certs.collect::<Result<Vec<_>, _>>() {
                Err(e) => Some(pem_error(&path, e, what)),
                Ok(certs) if certs.is_empty() => {
                    Some(format!("{} holds no certificate", path.display()))
                }
                Ok(_) => None,
            },
        },
        Pem::PrivateKey => match PrivateKeyDer::from_pem_file(&path) {
            Err(e) => Some(pem_error(&path, e, what)),
            Ok(_) => None,
        },
    };
    match problem {
        Some(message) => {
            v.error(node.at, Some(pool), Some(key), message);
            None
        }
        None => Some(path),
    }
}

fn pem_error(path: &Path, e: rustls_pki_types::pem::Error, what: Pem) -> String {
    use rustls_pki_types::pem::Error;
    let wanted = match what {
        Pem::Certificates => "certificate",
        Pem::PrivateKey => "private key (PKCS#8, PKCS#1 or SEC1)",
    };
    match e {
        Error::Io(e) => format!("cannot read {}: {e}", path.display()),
        Error::NoItemsFound => format!("{} holds no PEM {wanted}", path.display()),
        other => format!("{} is not valid PEM: {other:?}", path.display()),
    }
}

impl Validator<'_> {
    /// `tls: {cert, key, ca}`.
    pub(crate) fn listen_tls(
        &mut self,
        pool: &str,
        node: &Node,
        at: Location,
    ) -> Option<ListenTls> {
        let base = self.base_dir();
        let items = entries(self, pool, "tls", node, &["cert", "key", "ca"])?;
        let (mut cert, mut key, mut ca) = (None, None, None);
        let mut ok = true;
        for (name, value) in items {
            let full = format!("tls.{name}");
            let (slot, what) = match name {
                "cert" => (&mut cert, Pem::Certificates),
                "key" => (&mut key, Pem::PrivateKey),
                _ => (&mut ca, Pem::Certificates),
            };
            *slot = pem_file(self, pool, &full, value, &base, what);
            ok &= slot.is_some();
        }
        for (name, value) in [("cert", &cert), ("key", &key)] {
            if value.is_none() && ok {
                self.error(
                    node.at,
                    Some(pool),
                    Some("tls"),
                    format!(
                        "needs '{name}': the PEM file of the listener's {}",
                        if name == "cert" {
                            "certificate chain"
                        } else {
                            "private key"
                        }
                    ),
                );
                ok = false;
            }
        }
        Some(ListenTls {
            cert: cert?,
            key: key?,
            ca,
            at,
        })
        .filter(|_| ok)
    }

    /// `server_tls: {ca, cert, key, server_name}` (or `sentinel_tls:`, `key`).
    pub(crate) fn server_tls(
        &mut self,
        pool: &str,
        key: &str,
        node: &Node,
        at: Location,
    ) -> Option<ServerTls> {
        let base = self.base_dir();
        let items = entries(self, pool, key, node, &["ca", "cert", "key", "server_name"])?;
        let mut tls = ServerTls {
            ca: None,
            cert: None,
            key: None,
            server_name: None,
            at,
        };
        let mut ok = true;
        for (name, value) in items {
            let full = format!("{key}.{name}");
            match name {
                "server_name" => {
                    tls.server_name = scalar(self, pool, &full, value).map(str::to_string);
                    ok &= tls.server_name.is_some();
                }
                _ => {
                    let what = if name == "key" {
                        Pem::PrivateKey
                    } else {
                        Pem::Certificates
                    };
                    let path = pem_file(self, pool, &full, value, &base, what);
                    ok &= path.is_some();
                    match name {
                        "ca" => tls.ca = path,
                        "cert" => tls.cert = path,
                        _ => tls.key = path,
                    }
                }
            }
        }
        if ok && tls.cert.is_some() != tls.key.is_some() {
            self.error(node.at, Some(pool), Some(key), "'cert' and 'key' go together: the client certificate cashew shows servers, and its key".into());
            ok = false;
        }
        ok.then_some(tls)
    }

    /// `users: [{name, password_sha256, commands}]`.
    pub(crate) fn users(&mut self, pool: &str, node: &Node) -> Vec<User> {
        let Value::Sequence(items) = &node.value else {
            let found = node.kind();
            self.error(
                node.at,
                Some(pool),
                Some("users"),
                format!(
                    "expected a list of users (name, password_sha256, commands), found {found}"
                ),
            );
            return Vec::new();
        };
        let mut users: Vec<User> = Vec::new();
        for item in items {
            let Some(fields) = entries(
                self,
                pool,
                "users",
                item,
                &["name", "password_sha256", "commands"],
            ) else {
                continue;
            };
            let (mut name, mut hash, mut commands) = (None, None, Some(UserCommands::All));
            let errors_before = self.error_count();
            for (key, value) in fields {
                let full = format!("users.{key}");
                match key {
                    "name" => name = scalar(self, pool, &full, value).map(str::to_string),
                    "password_sha256" => {
                        // The hash is secret too: never repeated in an error.
                        hash = match &value.value {
                            Value::Scalar(h)
                                if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) =>
                            {
                                Some(Secret::new(h.to_ascii_lowercase()))
                            }
                            _ => {
                                self.error(value.at, Some(pool), Some(&full), "is not 64 hex digits: give the SHA-256 of the password (`printf %s PASSWORD | sha256sum`)".into());
                                None
                            }
                        }
                    }
                    _ => {
                        commands = match scalar(self, pool, &full, value) {
                            Some("all") => Some(UserCommands::All),
                            Some("read") => Some(UserCommands::Read),
                            Some(other) => {
                                self.error(
                                    value.at,
                                    Some(pool),
                                    Some(&full),
                                    format!("unknown value '{other}'; allowed: all, read"),
                                );
                                None
                            }
                            None => None,
                        }
                    }
                }
            }
            let (Some(name), Some(hash), Some(commands)) = (name, hash, commands) else {
                if self.error_count() > errors_before {
                    continue; // the field said what is wrong
                }
                self.error(
                    item.at,
                    Some(pool),
                    Some("users"),
                    "a user needs 'name' and 'password_sha256' ('commands' is all unless said)"
                        .into(),
                );
                continue;
            };
            if users.iter().any(|u| u.name == name) {
                self.error(
                    item.at,
                    Some(pool),
                    Some("users"),
                    format!("user '{name}' is listed twice"),
                );
                continue;
            }
            users.push(User {
                name,
                password_sha256: hash,
                commands,
            });
        }
        users
    }
}
