//! Real backends for tests: each process is started on a loopback address with a
//! free port, waited for until it accepts connections, and killed when dropped.

pub mod cluster;
pub mod dns;
pub mod faulty;
pub mod load;
pub mod netns;
pub mod random;
pub mod resp;
pub mod tls;

mod cashew;
mod mc;
mod process;
mod servers;

pub use cashew::*;
pub use mc::*;
pub use process::*;
pub use servers::*;
