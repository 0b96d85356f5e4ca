//! RESP2, the redis protocol: client requests (multibulk or inline) and server
//! replies of every type, parsed incrementally over byte slices.

mod command;
mod encode;
mod reply;
mod request;

pub use command::{lookup, CommandKind, CommandSpec, COMMANDS};
pub use encode::{array_header, bulk, error, integer, null_bulk, simple};
pub use reply::{parse_reply, ReplyParse};
pub use request::{parse_request, Parsed, Request, MAX_BULK_LEN, MAX_MULTIBULK_LEN};
