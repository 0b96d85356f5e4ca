//! The memcached text protocol: requests from clients, replies from servers.

mod reply;
mod request;
mod tokens;

pub use reply::{parse_reply, ReplyParse, ValueBlocks};
pub use request::{parse_request, Command, Invalid, Parsed, Request, Shape, MAX_LINE_LEN};
pub use tokens::{is_valid_key, keys, MAX_KEY_LEN};
