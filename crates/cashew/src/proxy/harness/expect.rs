//! What the harness's clients send and what their replies must be: requests made
//! from the input, and checks of each reply against what its request asked.

use super::Input;

/// What a request's reply must be.
#[derive(Debug)]
pub(crate) enum Expect {
    /// Values for these keys, in this order: memcached `get`/`gets` (any of them,
    /// as a subsequence), a meta get (`quiet`: nothing on a miss), redis `MGET`
    /// (every one, a value or nil in its place) or `GET`.
    Values { keys: Vec<String>, quiet: bool },
    /// One reply, of any kind.
    One,
}

pub(crate) fn memcache_request(input: &mut Input, kind: u8) -> (String, Option<Expect>) {
    let noreply = if input.byte() & 1 == 1 {
        " noreply"
    } else {
        ""
    };
    match kind % 6 {
        command @ (0 | 1) => {
            let keys: Vec<String> = (0..=input.byte() % 5).map(|_| input.key()).collect();
            let verb = ["get", "gets"][usize::from(command)];
            let text = format!("{verb} {}\r\n", keys.join(" "));
            (text, Some(Expect::Values { keys, quiet: false }))
        }
        2 => {
            let key = input.key();
            let text = format!("set {key} 0 0 {}{noreply}\r\n{key}\r\n", key.len());
            (text, noreply.is_empty().then_some(Expect::One))
        }
        3 => {
            let key = input.key();
            let text = format!("delete {key}{noreply}\r\n");
            (text, noreply.is_empty().then_some(Expect::One))
        }
        4 => {
            let key = input.key();
            let quiet = !noreply.is_empty();
            let text = format!("mg {key} v{}\r\n", if quiet { " q" } else { "" });
            let keys = vec![key];
            (text, Some(Expect::Values { keys, quiet }))
        }
        _ => ("mn\r\n".into(), Some(Expect::One)),
    }
}

pub(crate) fn redis_request(input: &mut Input, kind: u8) -> (String, Option<Expect>) {
    let command = |args: &[&str]| {
        let mut text = format!("*{}\r\n", args.len());
        for a in args {
            text += &format!("${}\r\n{a}\r\n", a.len());
        }
        text
    };
    match kind % 5 {
        0 => {
            let key = input.key();
            let keys = vec![key.clone()];
            (
                command(&["GET", &key]),
                Some(Expect::Values { keys, quiet: false }),
            )
        }
        1 => {
            let keys: Vec<String> = (0..=input.byte() % 5).map(|_| input.key()).collect();
            let mut args = vec!["MGET"];
            args.extend(keys.iter().map(String::as_str));
            (command(&args), Some(Expect::Values { keys, quiet: false }))
        }
        2 => {
            let key = input.key();
            (command(&["SET", &key, &key]), Some(Expect::One))
        }
        3 => {
            let keys: Vec<String> = (0..=input.byte() % 4).map(|_| input.key()).collect();
            let mut args = vec!["DEL"];
            args.extend(keys.iter().map(String::as_str));
            (command(&args), Some(Expect::One))
        }
        _ => ("PING\r\n".into(), Some(Expect::One)),
    }
}

pub(crate) fn check_memcache(text: &str, expect: &Expect) -> Result<(), String> {
    let is_error = text.starts_with("SERVER_ERROR ") && text.ends_with("\r\n");
    let one_line = text.ends_with("\r\n") && text.find("\r\n") == Some(text.len() - 2);
    match expect {
        Expect::One => match one_line {
            true => Ok(()),
            false => Err("not one reply line".into()),
        },
        Expect::Values { keys, .. } if keys.len() == 1 && text.starts_with('V') => {
            // Meta get: VA, or a VALUE block for get.
            if text.starts_with("VA ") {
                let want = format!("VA {}\r\n{}\r\n", keys[0].len(), keys[0]);
                return match text == want {
                    true => Ok(()),
                    false => Err(format!("expected {want:?}")),
                };
            }
            check_values(text, keys)
        }
        Expect::Values { quiet: true, .. } if text.is_empty() || is_error => Ok(()),
        Expect::Values { .. } if is_error || text == "EN\r\n" => Ok(()),
        Expect::Values { keys, .. } => check_values(text, keys),
    }
}

/// `VALUE` blocks for a subsequence of `keys`, each holding its key, then `END`.
fn check_values(text: &str, keys: &[String]) -> Result<(), String> {
    let mut rest = text;
    let mut next_key = 0;
    while let Some(block) = rest.strip_prefix("VALUE ") {
        let (header, after) = block.split_once("\r\n").ok_or("a VALUE line without end")?;
        let key = header.split(' ').next().unwrap_or("");
        let data = after.get(..key.len()).ok_or("a short value")?;
        if data != key || after.get(key.len()..key.len() + 2) != Some("\r\n") {
            return Err(format!("the value of {key} is not its own"));
        }
        let found = keys[next_key..]
            .iter()
            .position(|k| k == key)
            .ok_or_else(|| format!("{key} not asked for, or out of order"))?;
        next_key += found + 1;
        rest = &after[key.len() + 2..];
    }
    match rest {
        "END\r\n" => Ok(()),
        _ => Err(format!("ends with {rest:?}, not END")),
    }
}

pub(crate) fn check_redis(text: &str, expect: &Expect) -> Result<(), String> {
    let one_line = text.ends_with("\r\n") && text.find("\r\n") == Some(text.len() - 2);
    let is_error = one_line && text.starts_with('-');
    match expect {
        Expect::One if one_line => Ok(()),
        Expect::One => Err("not one simple reply".into()),
        Expect::Values { .. } if is_error => Ok(()),
        Expect::Values { keys, .. } if keys.len() == 1 && !text.starts_with('*') => {
            check_bulk(text, &keys[0]).and_then(|rest| match rest {
                "" => Ok(()),
                _ => Err("more than one reply".into()),
            })
        }
        Expect::Values { keys, .. } => {
            let header = format!("*{}\r\n", keys.len());
            let mut rest = text
                .strip_prefix(header.as_str())
                .ok_or(format!("not an array of {}", keys.len()))?;
            for key in keys {
                rest = match rest.starts_with('-') {
                    true => rest.split_once("\r\n").ok_or("an error without end")?.1,
                    false => check_bulk(rest, key)?,
                };
            }
            match rest {
                "" => Ok(()),
                _ => Err(format!("{rest:?} after the array")),
            }
        }
    }
}

/// A nil or a bulk string holding `key` at the start of `text`; what follows it.
fn check_bulk<'t>(text: &'t str, key: &str) -> Result<&'t str, String> {
    if let Some(rest) = text.strip_prefix("$-1\r\n") {
        return Ok(rest);
    }
    let want = format!("${}\r\n{key}\r\n", key.len());
    text.strip_prefix(want.as_str())
        .ok_or_else(|| format!("the value of {key} is not its own"))
}
