//! The memcached text protocol: requests from clients, replies from servers.

pub mod base64;
pub mod coalesce;
mod numbers;
mod reply;
mod request;
mod scan;
mod tokens;

pub use reply::{parse_reply, parse_reply_resumable, ReplyParse, ValueBlocks};
pub use request::{
    parse_request, Command, Invalid, Parsed, Request, Shape, MAX_KEY_LEN, MAX_LINE_LEN,
    SHORT_LINE_LEN,
};
pub use tokens::keys;
