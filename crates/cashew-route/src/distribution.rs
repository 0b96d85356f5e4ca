use std::fmt;
use std::str::FromStr;

use crate::UnknownName;

/// How keys are spread over a pool's servers (`distribution:` in `nutcracker.yml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Distribution {
    /// Consistent hashing: 160 points per server on a ring, scaled by weight.
    #[default]
    Ketama,
    /// `hash % n` over the servers, each repeated `weight` times.
    Modula,
    /// Any live server, picked at random for each request.
    Random,
}

impl Distribution {
    pub const ALL: [Distribution; 3] = [
        Distribution::Ketama,
        Distribution::Modula,
        Distribution::Random,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Modula => "modula",
            Distribution::Random => "random",
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Distribution {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Distribution::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or(UnknownName)
    }
}
