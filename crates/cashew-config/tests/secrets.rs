//! No secret of a config file can be shown: not by the model (its `Debug`, which
//! logs and errors may use) and not by the file's text as the admin API serves it.
//! A key added later that holds a secret but is not treated as one fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cashew_config::{redact, POOL_KEYS, SECRET_KEYS};

/// Words in a key's name that say its value is a secret.
const SECRET_WORDS: [&str; 5] = ["auth", "password", "secret", "token", "private"];
/// Keys with such a word whose value is not secret: the name of the user cashew
/// authenticates as is no more secret than a server's address.
const NOT_SECRET: [&str; 2] = ["redis_auth_user", "sentinel_auth_user"];

fn every_key_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good/every_key.yml")
}

fn every_key_file() -> String {
    std::fs::read_to_string(every_key_path()).unwrap()
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

/// Each line of the file that sets a secret key, with the value it sets.
fn secret_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(n, line)| {
            let (key, value) = line.trim_start().trim_start_matches("- ").split_once(':')?;
            SECRET_KEYS.contains(&key.trim()).then(|| {
                let value = value.split(" #").next().unwrap().trim();
                (n, value.to_string())
            })
        })
        .collect()
}

#[test]
fn the_fixture_sets_every_key_and_every_secret_key() {
    let text = every_key_file();
    let set = keys_set(&text);
    for key in POOL_KEYS {
        assert!(
            set.contains(key),
            "every_key.yml does not set '{key}': add it"
        );
    }
    for key in SECRET_KEYS {
        assert!(
            set.contains(key),
            "every_key.yml does not set the secret '{key}'"
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
    let config = cashew_config::load(&every_key_path()).expect("every_key.yml is valid");
    let model = format!("{config:?} {config:#?}").to_ascii_lowercase();
    let served = redact(&text);
    let secrets = secret_lines(&text);
    assert!(secrets.len() >= SECRET_KEYS.len(), "{secrets:?}");
    for (_, value) in &secrets {
        let value = value.to_ascii_lowercase();
        assert!(!model.contains(&value), "the model shows {value}:\n{model}");
        assert!(
            !served.to_ascii_lowercase().contains(&value),
            "the served text shows {value}:\n{served}"
        );
    }
    // Only the secrets changed: every other line is served as written.
    let secret_at: Vec<usize> = secrets.iter().map(|(n, _)| *n).collect();
    for (n, (given, shown)) in text.lines().zip(served.lines()).enumerate() {
        if secret_at.contains(&n) {
            assert!(shown.contains("\"<redacted>\""), "line {}: {shown}", n + 1);
        } else {
            assert_eq!(given, shown, "line {} changed", n + 1);
        }
    }
    assert_eq!(text.lines().count(), served.lines().count());
    assert!(
        served.contains("redis_auth: \"<redacted>\"  # a comment that stays"),
        "{served}"
    );
    // The model holds the values, for the places that must send or check them.
    let rd = &config.pools[2];
    assert_eq!(
        rd.redis_auth.as_ref().map(|s| s.expose()),
        Some("SECRET-redis-password")
    );
    assert_eq!(
        rd.users[1].password_sha256.expose(),
        secrets[3].1.to_ascii_lowercase()
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
