//! RESP, the redis protocol: client requests (multibulk or inline) and server
//! replies of every RESP2 and RESP3 type, parsed incrementally over byte slices.

mod command;
mod encode;
mod redirect;
mod reply;
mod request;

pub use command::{
    lookup, lookup_subcommand, Combine, CommandKind, CommandSpec, Effect, Keys, KeyspaceCommand,
    LocalCommand, Merge, PubSubCommand, PubSubQuery, Reason, TransactionCommand, COMMANDS,
    SUBCOMMANDS,
};
pub use encode::{
    array_header, bulk, error, integer, map_header, null, null_bulk, simple, verbatim_text,
    INVALIDATE_ALL,
};
pub use redirect::{parse_redirect, Redirect};
pub use reply::{
    element_text, is_error, parse_reply, parse_reply_resumable, reply_elements, ReplyParse,
};
pub use request::{
    parse_request, parse_request_resumable, Parsed, Request, RequestResume, MAX_BULK_LEN,
    MAX_MULTIBULK_LEN,
};
