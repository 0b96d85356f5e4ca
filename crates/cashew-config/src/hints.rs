//! Hints for the mistakes people make when they copy a `nutcracker.yml` from a web
//! page or a chat: `listen:0.0.0.0:12000` (no space after the colon), pool keys
//! that are not indented under the pool name, `-10.0.0.1:11211:1` (no space after
//! the dash), `true#comment` (no space before `#`), tabs. YAML's own errors for
//! these often point at the next line and say nothing of the cause; a hint says it
//! at the line where the mistake is. Hints are looked for only in a file that has
//! errors, so a valid file is never second-guessed.

use crate::error::ConfigError;
use crate::validate::POOL_KEYS;
use crate::yaml::Location;

struct Hint {
    at: Location,
    message: String,
    /// Shown only as an addition to an error on the same line (the text may be
    /// meant, e.g. a password with a `#`).
    only_with_an_error: bool,
}

/// Adds hints to `errors`: merged into an error on the same line, else as errors
/// of their own, in line order.
pub fn annotate(file: &str, text: &str, mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    for hint in find(text) {
        let same_line = errors
            .iter_mut()
            .find(|e| e.at.is_some_and(|at| at.line == hint.at.line));
        match same_line {
            Some(error) => {
                error.message.push_str("; ");
                error.message.push_str(&hint.message);
            }
            None if !hint.only_with_an_error => errors.push(ConfigError {
                file: file.to_string(),
                at: Some(hint.at),
                pool: None,
                key: None,
                message: hint.message,
            }),
            None => {}
        }
    }
    errors.sort_by_key(|e| e.at.map(|at| (at.line, at.column)));
    errors
}

fn find(text: &str) -> Vec<Hint> {
    let mut hints = Vec::new();
    // The last top-level name seen: the pool a misplaced key belongs to.
    let mut pool: Option<&str> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let indent = raw.len() - raw.trim_start_matches([' ', '\t']).len();
        let body = raw[indent..].trim_end();
        let at = |column: usize| Location { line, column };
        if let Some(tab) = raw[..indent].find('\t') {
            hints.push(Hint {
                at: at(tab + 1),
                message: "a tab indents this line; YAML indents with spaces only".into(),
                only_with_an_error: false,
            });
        }
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if let Some(rest) = body.strip_prefix('-') {
            if !rest.is_empty() && !rest.starts_with([' ', '-']) {
                hints.push(Hint {
                    at: at(indent + 1),
                    message: format!(
                        "'{body}' needs a space after the dash to be a list entry; did you mean '- {rest}'?"
                    ),
                    only_with_an_error: false,
                });
            }
            continue;
        }
        let Some((key, value)) = body.split_once(':') else {
            continue;
        };
        let under = |pool: Option<&str>| match pool {
            Some(p) if indent == 0 => format!(", indented under '{p}:'"),
            _ => String::new(),
        };
        if POOL_KEYS.contains(&key) && !value.is_empty() && !value.starts_with([' ', '\t']) {
            hints.push(Hint {
                at: at(indent + 1),
                message: format!(
                    "'{body}' is not a key and value; did you mean '{key}: {value}'{}?",
                    under(pool)
                ),
                only_with_an_error: false,
            });
            continue;
        }
        if indent == 0 && POOL_KEYS.contains(&key) {
            if let Some(p) = pool {
                hints.push(Hint {
                    at: at(1),
                    message: format!(
                        "'{key}' is a pool key at the top level, where pool names go; did you mean it indented under '{p}:' (two spaces)?"
                    ),
                    only_with_an_error: false,
                });
            }
            continue;
        }
        if indent == 0 {
            pool = Some(key);
        }
        let value = value.trim_start();
        if let Some(hash) = value.find('#') {
            let before = &value[..hash];
            if hash > 0 && !before.ends_with([' ', '\t']) && !value.starts_with(['"', '\'']) {
                hints.push(Hint {
                    at: at(indent + key.len() + 3),
                    message: format!(
                        "a comment needs a space before '#': did you mean '{key}: {before} {}'?",
                        &value[hash..]
                    ),
                    only_with_an_error: true,
                });
            }
        }
    }
    hints
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(text: &str) -> Vec<(usize, String)> {
        find(text)
            .into_iter()
            .map(|h| (h.at.line, h.message))
            .collect()
    }

    #[test]
    fn a_key_without_a_space_after_its_colon() {
        let hints = messages("MemcachedProxy01:\nlisten:0.0.0.0:12000\n");
        assert_eq!(
            hints,
            [(2, "'listen:0.0.0.0:12000' is not a key and value; did you mean 'listen: 0.0.0.0:12000', indented under 'MemcachedProxy01:'?".to_string())]
        );
        let hints = messages("a:\n  listen:0.0.0.0:12000\n");
        assert!(
            hints[0]
                .1
                .ends_with("did you mean 'listen: 0.0.0.0:12000'?"),
            "{hints:?}"
        );
    }

    #[test]
    fn pool_keys_at_the_top_level() {
        let hints =
            messages("MemcachedProxy01:\nlisten: 0.0.0.0:12000\nservers:\n  - 127.0.0.1:11211:1\n");
        assert_eq!(hints.len(), 2, "{hints:?}");
        assert_eq!(hints[0].0, 2);
        assert!(
            hints[1]
                .1
                .contains("'servers' is a pool key at the top level"),
            "{hints:?}"
        );
    }

    #[test]
    fn a_dash_without_a_space() {
        let hints = messages("a:\n  servers:\n    -192.168.1.1:11211:1\n");
        assert_eq!(hints[0].1, "'-192.168.1.1:11211:1' needs a space after the dash to be a list entry; did you mean '- 192.168.1.1:11211:1'?");
    }

    #[test]
    fn a_comment_without_a_space_and_tabs() {
        let found = find("a:\n  preconnect: true#comment\n\tlisten: x\n");
        assert!(found[0]
            .message
            .contains("did you mean 'preconnect: true #comment'"));
        assert!(found[0].only_with_an_error);
        assert_eq!(
            found[1].message,
            "a tab indents this line; YAML indents with spaces only"
        );
    }

    #[test]
    fn a_valid_file_has_no_hints() {
        let text = "alpha:\n  listen: 127.0.0.1:22121\n  hash_tag: \"{}\"\n  servers:\n    - 127.0.0.1:11211:1 # a comment\n---\n";
        assert!(messages(text).is_empty(), "{:?}", messages(text));
    }
}
