//! Values that must never be shown: passwords and the like. A [`Secret`] prints as
//! `<redacted>` however it is formatted, so a config model logged or put in an error
//! cannot leak it; and [`redact`] gives a config file's text with every secret value
//! replaced, for anyone who asks to see the file.

use std::fmt;

use crate::yaml::{self, Node, Value};

/// What a secret prints as, and what [`redact`] puts in its place.
pub const REDACTED: &str = "<redacted>";

/// Keys whose values are secrets, wherever they appear in the file. A password's
/// hash is one too: it would let anyone try passwords offline.
pub const SECRET_KEYS: [&str; 4] = [
    "redis_auth",
    "memcached_auth",
    "sentinel_auth",
    "password_sha256",
];

/// A secret value: readable only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is the secret, compared without stopping at the first
    /// difference so that the time taken tells nothing of where it differs.
    pub fn matches(&self, given: &[u8]) -> bool {
        let own = self.0.as_bytes();
        own.len() == given.len()
            && own.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// `text` with the value of every key of [`SECRET_KEYS`], at any depth, replaced by
/// `"<redacted>"`; the rest of the file (comments, layout) as written. A text that
/// is not YAML is withheld whole, since where its secrets are cannot be told.
pub fn redact(text: &str) -> String {
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => return text.to_string(),
        Err(_) => return format!("# {REDACTED}: the file is not valid YAML\n"),
    };
    let mut spans = Vec::new();
    secret_spans(&root, &mut spans);
    spans.sort_unstable();
    // Spans count characters; the text is cut by bytes.
    let byte_at = |chars: usize| {
        text.char_indices()
            .nth(chars)
            .map_or(text.len(), |(b, _)| b)
    };
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (key_end, value_end) in spans {
        // From the key's end (the `:`, a block scalar's `|`, its lines) to the
        // value's last character: a block scalar's span runs on to the next key.
        let start = byte_at(key_end);
        let end = start + text[start..byte_at(value_end)].trim_end().len();
        if start < copied {
            continue;
        }
        out.push_str(&text[copied..start]);
        out.push_str(": \"");
        out.push_str(REDACTED);
        out.push('"');
        copied = end;
    }
    out.push_str(&text[copied..]);
    out
}

fn secret_spans(node: &Node, spans: &mut Vec<(usize, usize)>) {
    match &node.value {
        Value::Scalar(_) => {}
        Value::Sequence(items) => items.iter().for_each(|n| secret_spans(n, spans)),
        Value::Mapping(entries) => {
            for (key, value) in entries {
                let secret =
                    matches!(&key.value, Value::Scalar(k) if SECRET_KEYS.contains(&k.as_str()));
                if secret {
                    spans.push((key.span.1, value.span.1));
                } else {
                    secret_spans(value, spans);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(
            format!("{s:?} {s} {:?}", Some(&s)),
            "<redacted> <redacted> Some(<redacted>)"
        );
        assert_eq!(s.expose(), "hunter2");
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter3"));
        assert!(!s.matches(b"hunter"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn every_form_of_a_secret_value_is_replaced_and_nothing_else() {
        let text = "rd:\n  listen: 127.0.0.1:1 # port\n  redis_auth: pl@in # the password\n  redis: true\nb:\n  redis_auth: \"qu0\\\"t3d\"\n  x: 'é'\nc:\n  redis_auth: 'single'\nd:\n  redis_auth: |\n    block\n    two\n  after: 1\ne: {redis_auth: flow, y: 2}\n";
        let out = redact(text);
        for secret in ["pl@in", "qu0", "t3d", "single", "block", "two", "flow"] {
            assert!(!out.contains(secret), "{secret} in:\n{out}");
        }
        for kept in [
            "# port",
            "# the password",
            "redis: true",
            "x: 'é'",
            "after: 1",
            "y: 2",
        ] {
            assert!(out.contains(kept), "{kept} lost:\n{out}");
        }
        assert_eq!(out.matches("\"<redacted>\"").count(), 5, "{out}");
        // Still YAML, and the same keys.
        assert!(crate::yaml::parse(&out).is_ok(), "{out}");
    }

    #[test]
    fn text_that_is_not_yaml_is_withheld() {
        assert!(!redact("a: [redis_auth: x\n").contains('x'));
        assert_eq!(redact(""), "");
    }
}
