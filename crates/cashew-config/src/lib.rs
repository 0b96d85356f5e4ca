//! cashew's configuration: reads an unchanged `nutcracker.yml` into one validated
//! model. Validation is at least as strict as nutcracker's, and every error names
//! the file, line, column, pool and key, and says what is allowed.

mod address;
mod error;
mod hints;
mod model;
mod routes;
mod secret;
mod security;
mod validate;
mod yaml;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::{
    ClusterTopology, Config, Listen, ListenTls, Pool, ReadFrom, SentinelReplicas, Server,
    ServerAddress, ServerTls, Shadow, User, UserCommands,
};
pub use secret::{redact, Secret, REDACTED, SECRET_KEYS};
pub use validate::POOL_KEYS;
pub use yaml::Location;

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&file, &text),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file,
            at: None,
            pool: None,
            key: None,
            message: format!("cannot read the config file: {e}"),
        }])),
    }
}

/// Validates config `text`; `file` is the name errors are reported against.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    let root = yaml::parse(text).map_err(|e| {
        let error = ConfigError {
            file: file.to_string(),
            at: Some(e.at),
            pool: None,
            key: None,
            message: e.message,
        };
        ConfigErrors(hints::annotate(file, text, vec![error]))
    })?;
    let mut validator = validate::Validator::new(file);
    let config = validator.config(root);
    let errors = validator.finish();
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(hints::annotate(file, text, errors)))
    }
}
