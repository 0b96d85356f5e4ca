//! A Redis Cluster node's answer that the request belongs elsewhere or later:
//! `-MOVED slot host:port`, `-ASK slot host:port`, `-TRYAGAIN ...` and
//! `-CLUSTERDOWN ...`.

/// What a cluster node's error reply asks of the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirect<'a> {
    /// The slot lives on `address` now: update the map, send it there.
    Moved { slot: u16, address: &'a str },
    /// The slot is moving to `address`: send `ASKING` and the request there, once.
    Ask { slot: u16, address: &'a str },
    /// The slot is moving and the keys are split: try again shortly.
    TryAgain,
    /// The cluster cannot serve the slot right now (a failover): try again shortly.
    ClusterDown,
}

/// The redirection `reply` (one whole reply) asks for, if it is one.
pub fn parse_redirect(reply: &[u8]) -> Option<Redirect<'_>> {
    let line = reply.strip_prefix(b"-")?;
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    let kind = words.next()?;
    match kind {
        "MOVED" | "ASK" => {
            let slot = words.next()?.parse().ok()?;
            let address = words.next()?;
            if address.is_empty() || words.next().is_some() {
                return None;
            }
            Some(match kind {
                "MOVED" => Redirect::Moved { slot, address },
                _ => Redirect::Ask { slot, address },
            })
        }
        "TRYAGAIN" => Some(Redirect::TryAgain),
        "CLUSTERDOWN" => Some(Redirect::ClusterDown),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirections_are_read() {
        assert_eq!(
            parse_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Moved {
                slot: 3999,
                address: "127.0.0.1:6381"
            })
        );
        assert_eq!(
            parse_redirect(b"-ASK 12182 [::1]:7002\r\n"),
            Some(Redirect::Ask {
                slot: 12182,
                address: "[::1]:7002"
            })
        );
        assert_eq!(
            parse_redirect(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
            Some(Redirect::TryAgain)
        );
        assert_eq!(
            parse_redirect(b"-CLUSTERDOWN The cluster is down\r\n"),
            Some(Redirect::ClusterDown)
        );
    }

    #[test]
    fn other_replies_are_not_redirections() {
        for reply in [
            &b"+OK\r\n"[..],
            b"-ERR unknown command\r\n",
            b"-MOVED\r\n",
            b"-MOVED x 127.0.0.1:1\r\n",
            b"-MOVED 70000 127.0.0.1:1\r\n",
            b"-ASK 1\r\n",
            b"-MOVED 1 a:1 extra\r\n",
            b"$5\r\nMOVED\r\n",
            b"-MOVEDX 1 a:1\r\n",
        ] {
            assert_eq!(
                parse_redirect(reply),
                None,
                "{:?}",
                String::from_utf8_lossy(reply)
            );
        }
    }
}
