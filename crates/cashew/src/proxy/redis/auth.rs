//! Who a redis client is: the pool's `redis_auth` password (the user `default`, as
//! nutcracker has it) and its `users`, checked as Redis 6 checks `AUTH` and
//! `HELLO .. AUTH`, and what an authenticated client may run.

use cashew_config::{Pool, UserCommands};
use sha2::{Digest, Sha256};

/// What a client may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    /// Only what may come before `AUTH`: the pool wants a password.
    None,
    All,
    /// Commands that write get `-NOPERM`.
    Read,
}

impl Access {
    /// A new client's access: all, unless the pool asks for a password.
    pub(super) fn of_new_client(pool: &Pool) -> Access {
        match pool.redis_auth.is_none() && pool.users.is_empty() {
            true => Access::All,
            false => Access::None,
        }
    }
}

/// Why an `AUTH` failed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The pool has no password at all.
    NoPassword,
    WrongPass,
}

impl Refusal {
    pub(super) fn reply(&self) -> &'static str {
        match self {
            Refusal::NoPassword => "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            Refusal::WrongPass => "WRONGPASS invalid username-password pair or user is disabled.",
        }
    }
}

/// The access `AUTH [user] password` gives. Every password given is hashed and
/// compared in constant time, whether or not its user exists, so the time taken
/// tells nothing of which users there are.
pub(super) fn authenticate(
    pool: &Pool,
    user: Option<&[u8]>,
    password: &[u8],
) -> Result<Access, Refusal> {
    if pool.redis_auth.is_none() && pool.users.is_empty() {
        // As Redis whose default user has no password: it takes any password
        // given with its name, and no other user exists.
        return match user {
            None => Err(Refusal::NoPassword),
            Some(b"default") => Ok(Access::All),
            Some(_) => Err(Refusal::WrongPass),
        };
    }
    let name = user.unwrap_or(b"default");
    if name == b"default" {
        if let Some(expected) = &pool.redis_auth {
            return match expected.matches(password) {
                true => Ok(Access::All),
                false => Err(Refusal::WrongPass),
            };
        }
    }
    let digest = Sha256::digest(password);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let Some(entry) = pool.users.iter().find(|u| u.name.as_bytes() == name) else {
        return Err(Refusal::WrongPass);
    };
    if !entry.password_sha256.matches(hex.as_bytes()) {
        return Err(Refusal::WrongPass);
    }
    Ok(match entry.commands {
        UserCommands::All => Access::All,
        UserCommands::Read => Access::Read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(extra: &str) -> Pool {
        let yaml = format!(
            "p:\n  listen: 127.0.0.1:1\n  redis: true\n{extra}  servers:\n    - 127.0.0.1:2:1\n"
        );
        cashew_config::parse("t.yml", &yaml)
            .unwrap()
            .pools
            .remove(0)
    }

    // printf %s secret | sha256sum; printf %s look | sha256sum
    const USERS: &str = "  users:\n    - name: app\n      password_sha256: 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\n    - name: dashboard\n      password_sha256: 6ffc5e4f0b4a8ba4ec8adbd4ab6e3d84f9f1fb2c1c7f6ad4a1b8d0c4c0e5c2a3\n      commands: read\n";

    #[test]
    fn users_and_the_default_password() {
        let p = pool(&format!("  redis_auth: pw\n{USERS}"));
        assert_eq!(Access::of_new_client(&p), Access::None);
        assert_eq!(authenticate(&p, None, b"pw"), Ok(Access::All));
        assert_eq!(authenticate(&p, Some(b"default"), b"pw"), Ok(Access::All));
        assert_eq!(authenticate(&p, None, b"secret"), Err(Refusal::WrongPass));
        assert_eq!(authenticate(&p, Some(b"app"), b"secret"), Ok(Access::All));
        assert_eq!(
            authenticate(&p, Some(b"app"), b"pw"),
            Err(Refusal::WrongPass)
        );
        assert_eq!(
            authenticate(&p, Some(b"nobody"), b"secret"),
            Err(Refusal::WrongPass)
        );
    }

    #[test]
    fn a_read_user_is_named_and_the_default_user_may_be_listed() {
        let digest = Sha256::digest(b"look");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let users = USERS.replace(
            "6ffc5e4f0b4a8ba4ec8adbd4ab6e3d84f9f1fb2c1c7f6ad4a1b8d0c4c0e5c2a3",
            &hex,
        );
        let p = pool(&users);
        assert_eq!(
            authenticate(&p, Some(b"dashboard"), b"look"),
            Ok(Access::Read)
        );
        // No `redis_auth` and no user `default`: `AUTH password` is refused.
        assert_eq!(authenticate(&p, None, b"secret"), Err(Refusal::WrongPass));
        let p = pool(&USERS.replace("name: app", "name: default"));
        assert_eq!(authenticate(&p, None, b"secret"), Ok(Access::All));
    }

    #[test]
    fn a_pool_without_passwords() {
        let p = pool("");
        assert_eq!(Access::of_new_client(&p), Access::All);
        assert_eq!(authenticate(&p, None, b"x"), Err(Refusal::NoPassword));
        // As Redis's default user without a password: any password with its name.
        assert_eq!(authenticate(&p, Some(b"default"), b"x"), Ok(Access::All));
        assert_eq!(
            authenticate(&p, Some(b"app"), b"x"),
            Err(Refusal::WrongPass)
        );
    }
}
