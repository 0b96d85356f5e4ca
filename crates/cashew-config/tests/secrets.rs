//! No secret of a config file can be shown: not by the model (its `Debug`, which
//! logs and errors may use) and not by the file's text as the admin API serves it.
//! A key added later that holds a secret but is not treated as one fails here.

use std::collections::BTreeSet;
use std::path::Path;

use cashew_config::{redact, POOL_KEYS, SECRET_KEYS};

/// Words in a key's name that say its value is a secret.
const SECRET_WORDS: [&str; 5] = ["auth", "password", "secret", "token", "private"];
/// Keys with such a word whose value is not secret (none yet).
const NOT_SECRET: [&str; 0] = [];

fn every_key_file() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good/every_key.yml");
    std::fs::read_to_string(path).unwrap()
}

/// The keys a line sets (`  key: value`, at any depth, list items included).
fn keys_set(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.trim_start().trim_start_matches("- ").split_once(':'))
        .map(|(key, _)| key.trim().to_string())
        .filter(|k| !k.is_empty() && !k.contains(' '))
        .collect()
}

#[test]
fn the_fixture_sets_every_key_and_every_secret_key_to_a_secret() {
    let text = every_key_file();
    let set = keys_set(&text);
    for key in POOL_KEYS {
        assert!(
            set.contains(key),
            "every_key.yml does not set '{key}': add it"
        );
    }
    for key in SECRET_KEYS {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("every_key.yml does not set the secret '{key}'"));
        assert!(
            line.contains("SECRET-"),
            "give '{key}' a value starting with SECRET-: {line}"
        );
    }
}

#[test]
fn keys_named_like_secrets_are_secrets() {
    for key in POOL_KEYS {
        let looks_secret = SECRET_WORDS.iter().any(|w| key.contains(w));
        if looks_secret && !NOT_SECRET.contains(&key) {
            assert!(
                SECRET_KEYS.contains(&key),
                "'{key}' looks like a secret: make it a Secret and list it in SECRET_KEYS (or in NOT_SECRET here, saying why)"
            );
        }
    }
}

#[test]
fn neither_the_model_nor_the_served_text_shows_a_secret() {
    let text = every_key_file();
    let config = cashew_config::parse("every_key.yml", &text).expect("every_key.yml is valid");
    let model = format!("{config:?} {config:#?}");
    assert!(
        !model.contains("SECRET-"),
        "the model shows a secret:\n{model}"
    );
    let served = redact(&text);
    assert!(
        !served.contains("SECRET-"),
        "the served text shows a secret:\n{served}"
    );
    assert!(
        served.contains("redis_auth: \"<redacted>\"  # a comment that stays"),
        "{served}"
    );
    // Only the secrets changed: the redacted text is the same config but for them.
    let again = cashew_config::parse("every_key.yml", &served).unwrap();
    assert_eq!(
        format!("{:?}", again.pools[0]),
        format!("{:?}", config.pools[0])
    );
    assert_eq!(again.pools[2].redis_db, config.pools[2].redis_db);
    assert_eq!(
        again.pools[2].redis_auth.as_ref().map(|s| s.expose()),
        Some("<redacted>")
    );
    assert_eq!(
        config.pools[2].redis_auth.as_ref().map(|s| s.expose()),
        Some("SECRET-redis-password")
    );
}

#[test]
fn an_error_about_a_secret_does_not_repeat_it() {
    let text =
        "m:\n  listen: 127.0.0.1:1\n  redis_auth: SECRET-x\n  servers:\n    - 127.0.0.1:2:1\n";
    let errors = cashew_config::parse("t.yml", text).unwrap_err().to_string();
    assert!(errors.contains("redis_auth"), "{errors}");
    assert!(!errors.contains("SECRET-"), "{errors}");
}
