//! The two address formats of `nutcracker.yml`: `listen:` and `servers:` entries.
//! Both are read from the right, as nutcracker reads them.

use std::path::PathBuf;

use crate::model::{Listen, Server, ServerAddress};

/// libmemcached leaves this port out of ketama names; nutcracker does the same.
const KETAMA_DEFAULT_PORT: u16 = 11211;

pub fn parse_listen(text: &str) -> Result<Listen, String> {
    const FORMS: &str = "expected 'host:port', '[ipv6]:port' or '/path/to.sock [octal mode]'";
    if text.is_empty() {
        return Err(format!("is empty; {FORMS}"));
    }
    if text.starts_with('/') {
        let (path, mode) = match text.rsplit_once(' ') {
            Some((path, mode)) => (path.trim_end(), Some(parse_mode(mode)?)),
            None => (text, None),
        };
        return Ok(Listen::Unix {
            path: PathBuf::from(path),
            mode,
        });
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("'{text}' has no port; {FORMS}"));
    };
    Ok(Listen::Tcp {
        host: parse_host(host, text, FORMS)?,
        port: parse_port(port, text)?,
    })
}

fn parse_mode(mode: &str) -> Result<u32, String> {
    match u32::from_str_radix(mode, 8) {
        Ok(m) if m <= 0o777 && !mode.starts_with('+') => Ok(m),
        _ => Err(format!(
            "socket mode '{mode}' is not an octal file mode from 0 to 777"
        )),
    }
}

/// Parses `master:weight [name]`: a server of a pool with `sentinels`, known by
/// its Sentinel master name (also its name for placement unless one is given).
pub fn parse_sentinel_server(entry: &str) -> Result<Server, String> {
    const FORM: &str = "a pool with 'sentinels' names its servers 'master:weight [name]'";
    let (master_weight, node_name) = match entry.split_once(' ') {
        Some((m, name)) if !name.is_empty() && !name.contains(' ') => (m, Some(name)),
        Some(_) => return Err(format!("'{entry}': {FORM}")),
        None => (entry, None),
    };
    let Some((master, weight)) = master_weight.rsplit_once(':') else {
        return Err(format!("'{entry}' has no weight; {FORM}"));
    };
    if master.is_empty() || master.contains(':') {
        return Err(format!("'{entry}': {FORM}"));
    }
    let weight = weight
        .parse::<u32>()
        .ok()
        .filter(|&w| w > 0 && weight.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            format!(
                "'{entry}' has weight '{weight}', which is not a whole number from 1 to {}",
                u32::MAX
            )
        })?;
    let name = node_name.unwrap_or(master).to_string();
    Ok(Server::new(
        entry.to_string(),
        ServerAddress::Sentinel {
            master: master.to_string(),
        },
        weight,
        name,
    ))
}

/// Parses a Sentinel's `host:port`.
pub fn parse_sentinel(entry: &str) -> Result<(String, u16), String> {
    const FORM: &str = "a Sentinel is 'host:port'";
    let Some((host, port)) = entry.rsplit_once(':') else {
        return Err(format!("'{entry}' has no port; {FORM}"));
    };
    let port = parse_port(port, entry)?;
    Ok((parse_host(host, entry, FORM)?, port))
}

/// Parses `host:port:weight [name]` or `/path:weight [name]`.
pub fn parse_server(entry: &str) -> Result<Server, String> {
    const FORMS: &str = "expected 'host:port:weight [name]' or '/path/to.sock:weight [name]'";
    let (address, node_name) = match entry.rsplit_once(' ') {
        Some((address, name)) => {
            if name.is_empty() {
                return Err(format!(
                    "'{entry}' ends with a space but has no name; {FORMS}"
                ));
            }
            (address, Some(name))
        }
        None => (entry, None),
    };
    let Some((host_port, weight)) = address.rsplit_once(':') else {
        return Err(format!(
            "'{entry}' needs a host, a port and a weight; {FORMS}"
        ));
    };
    let weight = match weight.parse::<u32>() {
        Ok(0) => {
            return Err(format!(
                "'{entry}' has weight 0; the weight must be 1 or more"
            ))
        }
        Ok(w) if weight.bytes().all(|b| b.is_ascii_digit()) => w,
        _ => {
            return Err(format!(
                "'{entry}' has weight '{weight}', which is not a whole number from 1 to {}",
                u32::MAX
            ))
        }
    };

    let (server_address, default_name) = if host_port.starts_with('/') {
        // nutcracker names an unnamed socket server by its path and the colon that
        // follows it; keep that, since the name decides ketama placement.
        let name = format!("{host_port}:");
        (
            ServerAddress::Unix {
                path: PathBuf::from(host_port),
            },
            name,
        )
    } else {
        let Some((host, port_text)) = host_port.rsplit_once(':') else {
            return Err(format!(
                "'{entry}' needs a host, a port and a weight; {FORMS}"
            ));
        };
        let port = parse_port(port_text, entry)?;
        let name = if port == KETAMA_DEFAULT_PORT {
            host.to_string()
        } else {
            host_port.to_string()
        };
        (
            ServerAddress::Tcp {
                host: parse_host(host, entry, FORMS)?,
                port,
            },
            name,
        )
    };
    let name = node_name.map_or(default_name, str::to_string);
    Ok(Server::new(entry.to_string(), server_address, weight, name))
}

fn parse_host(host: &str, whole: &str, forms: &str) -> Result<String, String> {
    let bare = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or_else(|| format!("'{whole}' has an unclosed '[' in its address; {forms}"))?,
        None => host,
    };
    if bare.is_empty() {
        return Err(format!("'{whole}' has no host; {forms}"));
    }
    if bare.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "'{whole}' has a host with white space in it; {forms}"
        ));
    }
    Ok(bare.to_string())
}

fn parse_port(port: &str, whole: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(format!(
            "'{whole}' has port '{port}', which is not a number from 1 to 65535"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_follow_nutcracker() {
        let s = parse_server("10.0.0.1:11211:1").unwrap();
        assert_eq!(s.name(), "10.0.0.1");
        assert_eq!(s.weight, 1);
        let s = parse_server("10.0.0.1:11212:3").unwrap();
        assert_eq!(s.name(), "10.0.0.1:11212");
        assert_eq!(s.weight, 3);
        let s = parse_server("10.0.0.1:11211:1 cache-a").unwrap();
        assert_eq!(s.name(), "cache-a");
        assert_eq!(s.entry, "10.0.0.1:11211:1 cache-a");
        let s = parse_server("/tmp/mc.sock:2").unwrap();
        assert_eq!(s.name(), "/tmp/mc.sock:");
        assert_eq!(
            s.address,
            ServerAddress::Unix {
                path: "/tmp/mc.sock".into()
            }
        );
        let s = parse_server("[::1]:6379:1").unwrap();
        assert_eq!(
            s.address,
            ServerAddress::Tcp {
                host: "::1".into(),
                port: 6379
            }
        );
        assert_eq!(s.name(), "[::1]:6379");
    }

    #[test]
    fn listen_addresses_print_as_written() {
        for text in ["127.0.0.1:22121", "[::1]:22121", "/tmp/cashew.sock"] {
            assert_eq!(parse_listen(text).unwrap().to_string(), text);
        }
        assert_eq!(
            parse_listen("/tmp/cashew.sock 0600").unwrap().to_string(),
            "/tmp/cashew.sock"
        );
    }

    #[test]
    fn bad_servers() {
        for bad in [
            "10.0.0.1:11211",
            "10.0.0.1:11211:0",
            "10.0.0.1:11211:-1",
            "10.0.0.1:99999:1",
            "10.0.0.1:0:1",
            "10.0.0.1:port:1",
            ":11211:1",
            "10.0.0.1:11211:1 ",
            "[::1:11211:1",
            "/tmp/sock",
        ] {
            assert!(parse_server(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn listen_forms() {
        assert_eq!(
            parse_listen("127.0.0.1:22121").unwrap(),
            Listen::Tcp {
                host: "127.0.0.1".into(),
                port: 22121
            }
        );
        assert_eq!(
            parse_listen("[::1]:22121").unwrap(),
            Listen::Tcp {
                host: "::1".into(),
                port: 22121
            }
        );
        assert_eq!(
            parse_listen("/var/run/cashew.sock 0660").unwrap(),
            Listen::Unix {
                path: "/var/run/cashew.sock".into(),
                mode: Some(0o660)
            }
        );
        assert_eq!(
            parse_listen("/var/run/cashew.sock").unwrap(),
            Listen::Unix {
                path: "/var/run/cashew.sock".into(),
                mode: None
            }
        );
        for bad in [
            "",
            "22121",
            "host:",
            "host:70000",
            "/s.sock 999",
            "/s.sock rw",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad} was accepted");
        }
    }
}
