//! Every command Redis 7 knows, what cashew does with it, and its arity and key
//! positions as Redis reports them in `COMMAND` (arity positive: exactly that many
//! arguments, name included; negative: at least that many). A test asks a real
//! redis-server for its `COMMAND` list and fails on any command missing here.
//! Commands of later servers that take a key are here too, so that clients of
//! those servers reach them (the hash field expiry of Redis 7.4 and 8.0 and Valkey
//! 9, `XACKDEL` and `XDELEX` of Redis 8.2), with the arity of their shortest form.

use CommandKind::*;

/// Why a command cannot go through a sharding proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Blocking,
    Transactions,
    PubSub,
    Keyspace,
    Admin,
    Replication,
    Cluster,
    Databases,
}

impl Reason {
    /// The end of the refusal, after "is not supported by the proxy: ".
    pub fn text(self) -> &'static str {
        match self {
            Reason::Blocking => {
                "it blocks the server connection, which the proxy shares between clients"
            }
            Reason::Transactions => {
                "transactions need every command on one connection to one server"
            }
            Reason::PubSub => {
                "it needs server push on a connection of its own (pub/sub, client tracking)"
            }
            Reason::Keyspace => {
                "it works on the whole keyspace, which is spread over several servers"
            }
            Reason::Admin => "server administration: send it to each server directly",
            Reason::Replication => "replication: send it to each server directly",
            Reason::Cluster => "the proxy is not a redis cluster",
            Reason::Databases => "the pool's database is set by redis_db in its config",
        }
    }
}

/// Where the keys of a command that needs all its keys on one server are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// Arguments `first..=last` (negative: from the end) every `step`.
    Range { first: u8, last: i8, step: u8 },
    /// A key count at this argument, the keys after it.
    NumKeys(u8),
    /// After the `STREAMS` keyword, the first half of what follows; options
    /// (`BLOCK` among them) start at argument `options` (after XREADGROUP's
    /// `GROUP group consumer`, which may be spelled like an option).
    Streams { options: u8 },
}

/// The commands the proxy answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalCommand {
    Auth,
    Client,
    Command,
    Echo,
    Hello,
    Info,
    Ping,
    Quit,
    Reset,
    Select,
}

impl LocalCommand {
    /// Whether a client that has not authenticated yet may send it.
    pub fn allowed_before_auth(self) -> bool {
        matches!(
            self,
            LocalCommand::Auth | LocalCommand::Quit | LocalCommand::Hello | LocalCommand::Reset
        )
    }
}

/// The commands over the whole keyspace, which go to every server of the pool (or,
/// SCAN, to one server at a time) and whose replies are put together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyspaceCommand {
    Scan,
    Keys,
    Dbsize,
    Randomkey,
    Flushdb,
    Flushall,
}

/// How the replies of a command every server runs make one (Redis's
/// `response_policy` for it in `COMMAND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// SCRIPT LOAD, FLUSH; FUNCTION LOAD, DELETE, FLUSH, RESTORE: the first
    /// server's reply (they all give the same) unless one gives an error.
    AllSucceeded,
    /// SCRIPT KILL, FUNCTION KILL: `+OK` if one server did it, else the first error.
    OneSucceeded,
    /// SCRIPT EXISTS: 1 for a script only where every server has it.
    LogicalAnd,
}

/// The commands of a transaction, which hold a connection to one server from
/// MULTI (or WATCH) to EXEC, DISCARD (or UNWATCH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionCommand {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
}

/// The commands of a subscriber, which hold connections of the client's own to the
/// servers its channels live on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubSubCommand {
    Subscribe,
    Unsubscribe,
    Psubscribe,
    Punsubscribe,
    Ssubscribe,
    Sunsubscribe,
}

/// How `PUBSUB` subcommands put the servers' replies together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubSubQuery {
    /// CHANNELS, SHARDCHANNELS: the servers' arrays as one.
    Names,
    /// NUMSUB, SHARDNUMSUB: each channel's count, summed over the servers.
    Counts,
    /// NUMPAT: a pattern is subscribed on every server: the largest count.
    Patterns,
}

/// How the replies of a command split over several servers make one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// MGET: the values, in the client's key order.
    Values,
    /// DEL, UNLINK, EXISTS, TOUCH: the integers summed.
    Sum,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    /// Forwarded whole to the server of the key at this argument (multi-key
    /// commands nutcracker forwards by their first key stay so).
    Keyed(u8),
    /// Forwarded when every key is on one server (hash tags make that usual),
    /// refused otherwise.
    SameServer(Keys),
    /// EVAL-style: `numkeys` at argument 2, forwarded by the first key (argument 3).
    Script,
    /// Split per server over its keys; the replies merged so.
    SplitKeys(Merge),
    /// Split per server over key-value pairs (MSET): `+OK` when every part says so.
    SplitPairs,
    /// Answered by the proxy.
    Local(LocalCommand),
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: on a connection of the client's own.
    Transaction(TransactionCommand),
    /// Blocks until data comes or its timeout: on a connection of the client's own
    /// for the call, all its keys (at these positions) on one server.
    Blocking(Keys),
    /// A subscriber's command: on connections of the client's own.
    PubSub(PubSubCommand),
    /// `PUBSUB` subcommands, over every server.
    PubSubQuery(PubSubQuery),
    /// Over every server of the pool (refused as [`Reason::Keyspace`] where the
    /// pool says `keyspace_commands: false`).
    Keyspace(KeyspaceCommand),
    /// About no key, answered by the first live server (`TIME`, `LOLWUT`).
    AnyServer,
    /// Run by every live server of the pool (scripts are loaded and functions
    /// kept on each): with `replicas`, a cluster pool's replicas too.
    EveryServer { replicas: bool, combine: Combine },
    /// The subcommand decides (see [`SUBCOMMANDS`]).
    BySubcommand,
    /// Refused, with the reason.
    Refused(Reason),
}

#[derive(Clone, Copy, Debug)]
pub struct CommandSpec {
    /// Lower case; a subcommand is `container|sub`.
    pub name: &'static str,
    pub arity: i32,
    /// First key, last key (negative: from the end) and step, as `COMMAND` reports them.
    pub keys: (i8, i8, i8),
    pub kind: CommandKind,
    /// Redis flags it `write` (a write sent to a gutter pool gets its TTL capped).
    pub write: bool,
    /// Where it may be served: a replica may serve a read.
    pub effect: Effect,
}

/// What a command does, which decides where it may be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Reads only: a replica may serve it.
    Read,
    /// Writes (Redis flags it `write`): the master serves it.
    Write,
    /// Writes no key, but only the master may serve it: a publish, whose
    /// subscribers are the master's, or a script, which may write.
    MasterOnly,
}

impl CommandSpec {
    /// Whether `args` arguments (name included) fit the arity.
    pub fn arity_ok(&self, args: usize) -> bool {
        let args = args as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            args == arity
        } else {
            args >= -arity
        }
    }

    /// Whether cashew serves it (rather than refusing it).
    pub fn is_served(&self) -> bool {
        !matches!(self.kind, Refused(_))
    }
}

/// Run by every master (functions are replicated with the data).
const fn every_shard(combine: Combine) -> CommandKind {
    EveryServer {
        replicas: false,
        combine,
    }
}

/// Run by every server, replicas too (each keeps its own script cache).
const fn every_node(combine: Combine) -> CommandKind {
    EveryServer {
        replicas: true,
        combine,
    }
}

const fn spec(
    name: &'static str,
    arity: i32,
    keys: (i8, i8, i8),
    kind: CommandKind,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        keys,
        kind,
        write: listed(WRITE_COMMANDS, name),
        effect: if listed(WRITE_COMMANDS, name) {
            Effect::Write
        } else if listed(MASTER_ONLY, name) {
            Effect::MasterOnly
        } else {
            Effect::Read
        },
    }
}

/// Commands Redis does not flag `write` that a replica must not serve: a publish
/// reaches only the subscribers of the server it is sent to, and scripts and
/// functions may write (`EVAL_RO` and `FCALL_RO` are sent as their writing forms
/// are, by their first key).
static MASTER_ONLY: &[&str] = &[
    "eval",
    "eval_ro",
    "evalsha",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
    "publish",
    "spublish",
];

/// Whether `name` is in `list`, at compile time.
const fn listed(list: &[&str], name: &str) -> bool {
    let mut i = 0;
    while i < list.len() {
        let (a, b) = (list[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// Sorted by name.
pub static COMMANDS: &[CommandSpec] = COMMAND_TABLE;

const COMMAND_TABLE: &[CommandSpec] = &[
    spec("acl", -2, (0, 0, 0), Refused(Reason::Admin)),
    spec("append", 3, (1, 1, 1), Keyed(1)),
    spec("asking", 1, (0, 0, 0), Refused(Reason::Cluster)),
    spec("auth", -2, (0, 0, 0), Local(LocalCommand::Auth)),
    spec("bgrewriteaof", 1, (0, 0, 0), Refused(Reason::Admin)),
    spec("bgsave", -1, (0, 0, 0), Refused(Reason::Admin)),
    spec("bitcount", -2, (1, 1, 1), Keyed(1)),
    spec("bitfield", -2, (1, 1, 1), Keyed(1)),
    spec("bitfield_ro", -2, (1, 1, 1), Keyed(1)),
    spec(
        "bitop",
        -4,
        (2, -1, 1),
        SameServer(Keys::Range {
            first: 2,
            last: -1,
            step: 1,
        }),
    ),
    spec("bitpos", -3, (1, 1, 1), Keyed(1)),
    spec(
        "blmove",
        6,
        (1, 2, 1),
        Blocking(Keys::Range {
            first: 1,
            last: 2,
            step: 1,
        }),
    ),
    spec("blmpop", -5, (0, 0, 0), Blocking(Keys::NumKeys(2))),
    spec(
        "blpop",
        -3,
        (1, -2, 1),
        Blocking(Keys::Range {
            first: 1,
            last: -2,
            step: 1,
        }),
    ),
    spec(
        "brpop",
        -3,
        (1, -2, 1),
        Blocking(Keys::Range {
            first: 1,
            last: -2,
            step: 1,
        }),
    ),
    spec(
        "brpoplpush",
        4,
        (1, 2, 1),
        Blocking(Keys::Range {
            first: 1,
            last: 2,
            step: 1,
        }),
    ),
    spec("bzmpop", -5, (0, 0, 0), Blocking(Keys::NumKeys(2))),
    spec(
        "bzpopmax",
        -3,
        (1, -2, 1),
        Blocking(Keys::Range {
            first: 1,
            last: -2,
            step: 1,
        }),
    ),
    spec(
        "bzpopmin",
        -3,
        (1, -2, 1),
        Blocking(Keys::Range {
            first: 1,
            last: -2,
            step: 1,
        }),
    ),
    spec("client", -2, (0, 0, 0), Local(LocalCommand::Client)),
    spec("cluster", -2, (0, 0, 0), Refused(Reason::Cluster)),
    spec("command", -1, (0, 0, 0), Local(LocalCommand::Command)),
    spec("config", -2, (0, 0, 0), Refused(Reason::Admin)),
    spec(
        "copy",
        -3,
        (1, 2, 1),
        SameServer(Keys::Range {
            first: 1,
            last: 2,
            step: 1,
        }),
    ),
    spec("dbsize", 1, (0, 0, 0), Keyspace(KeyspaceCommand::Dbsize)),
    spec("debug", -2, (0, 0, 0), Refused(Reason::Admin)),
    spec("decr", 2, (1, 1, 1), Keyed(1)),
    spec("decrby", 3, (1, 1, 1), Keyed(1)),
    spec("del", -2, (1, -1, 1), SplitKeys(Merge::Sum)),
    spec(
        "discard",
        1,
        (0, 0, 0),
        Transaction(TransactionCommand::Discard),
    ),
    spec("dump", 2, (1, 1, 1), Keyed(1)),
    spec("echo", 2, (0, 0, 0), Local(LocalCommand::Echo)),
    spec("eval", -3, (0, 0, 0), Script),
    spec("eval_ro", -3, (0, 0, 0), Script),
    spec("evalsha", -3, (0, 0, 0), Script),
    spec("evalsha_ro", -3, (0, 0, 0), Script),
    spec("exec", 1, (0, 0, 0), Transaction(TransactionCommand::Exec)),
    spec("exists", -2, (1, -1, 1), SplitKeys(Merge::Sum)),
    spec("expire", -3, (1, 1, 1), Keyed(1)),
    spec("expireat", -3, (1, 1, 1), Keyed(1)),
    spec("expiretime", 2, (1, 1, 1), Keyed(1)),
    spec("failover", -1, (0, 0, 0), Refused(Reason::Admin)),
    spec("fcall", -3, (0, 0, 0), Script),
    spec("fcall_ro", -3, (0, 0, 0), Script),
    spec(
        "flushall",
        -1,
        (0, 0, 0),
        Keyspace(KeyspaceCommand::Flushall),
    ),
    spec("flushdb", -1, (0, 0, 0), Keyspace(KeyspaceCommand::Flushdb)),
    spec("function", -2, (0, 0, 0), BySubcommand),
    spec("geoadd", -5, (1, 1, 1), Keyed(1)),
    spec("geodist", -4, (1, 1, 1), Keyed(1)),
    spec("geohash", -2, (1, 1, 1), Keyed(1)),
    spec("geopos", -2, (1, 1, 1), Keyed(1)),
    spec("georadius", -6, (1, 1, 1), Keyed(1)),
    spec("georadius_ro", -6, (1, 1, 1), Keyed(1)),
    spec("georadiusbymember", -5, (1, 1, 1), Keyed(1)),
    spec("georadiusbymember_ro", -5, (1, 1, 1), Keyed(1)),
    spec("geosearch", -7, (1, 1, 1), Keyed(1)),
    spec(
        "geosearchstore",
        -8,
        (1, 2, 1),
        SameServer(Keys::Range {
            first: 1,
            last: 2,
            step: 1,
        }),
    ),
    spec("get", 2, (1, 1, 1), Keyed(1)),
    spec("getbit", 3, (1, 1, 1), Keyed(1)),
    spec("getdel", 2, (1, 1, 1), Keyed(1)),
    spec("getex", -2, (1, 1, 1), Keyed(1)),
    spec("getrange", 4, (1, 1, 1), Keyed(1)),
    spec("getset", 3, (1, 1, 1), Keyed(1)),
    spec("hdel", -3, (1, 1, 1), Keyed(1)),
    spec("hello", -1, (0, 0, 0), Local(LocalCommand::Hello)),
    spec("hexists", 3, (1, 1, 1), Keyed(1)),
    spec("hexpire", -6, (1, 1, 1), Keyed(1)),
    spec("hexpireat", -6, (1, 1, 1), Keyed(1)),
    spec("hexpiretime", -5, (1, 1, 1), Keyed(1)),
    spec("hget", 3, (1, 1, 1), Keyed(1)),
    spec("hgetall", 2, (1, 1, 1), Keyed(1)),
    spec("hgetdel", -5, (1, 1, 1), Keyed(1)),
    spec("hgetex", -5, (1, 1, 1), Keyed(1)),
    spec("hincrby", 4, (1, 1, 1), Keyed(1)),
    spec("hincrbyfloat", 4, (1, 1, 1), Keyed(1)),
    spec("hkeys", 2, (1, 1, 1), Keyed(1)),
    spec("hlen", 2, (1, 1, 1), Keyed(1)),
    spec("hmget", -3, (1, 1, 1), Keyed(1)),
    spec("hmset", -4, (1, 1, 1), Keyed(1)),
    spec("hpersist", -5, (1, 1, 1), Keyed(1)),
    spec("hpexpire", -6, (1, 1, 1), Keyed(1)),
    spec("hpexpireat", -6, (1, 1, 1), Keyed(1)),
    spec("hpexpiretime", -5, (1, 1, 1), Keyed(1)),
    spec("hpttl", -5, (1, 1, 1), Keyed(1)),
    spec("hrandfield", -2, (1, 1, 1), Keyed(1)),
    spec("hscan", -3, (1, 1, 1), Keyed(1)),
    spec("hset", -4, (1, 1, 1), Keyed(1)),
    spec("hsetex", -6, (1, 1, 1), Keyed(1)),
    spec("hsetnx", 4, (1, 1, 1), Keyed(1)),
    spec("hstrlen", 3, (1, 1, 1), Keyed(1)),
    spec("httl", -5, (1, 1, 1), Keyed(1)),
    spec("hvals", 2, (1, 1, 1), Keyed(1)),
    spec("incr", 2, (1, 1, 1), Keyed(1)),
    spec("incrby", 3, (1, 1, 1), Keyed(1)),
    spec("incrbyfloat", 3, (1, 1, 1), Keyed(1)),
    spec("info", -1, (0, 0, 0), Local(LocalCommand::Info)),
    spec("keys", 2, (0, 0, 0), Keyspace(KeyspaceCommand::Keys)),
    spec("lastsave", 1, (0, 0, 0), Refused(Reason::Admin)),
    spec("latency", -2, (0, 0, 0), Refused(Reason::Admin)),
    spec(
        "lcs",
        -3,
        (1, 2, 1),
        SameServer(Keys::Range {
            first: 1,
            last: 2,
            step: 1,
        }),
    ),
    spec("lindex", 3, (1, 1, 1), Keyed(1)),
    spec("linsert", 5, (1, 1, 1), Keyed(1)),
    spec("llen", 2, (1, 1, 1), Keyed(1)),
    spec(
        "lmove",
        5,
        (1, 2, 1),
        SameServer(Keys::Range {
            first: 1,
            last: 2,
            step: 1,
        }),
    ),
    spec("lmpop", -4, (0, 0, 0), SameServer(Keys::NumKeys(1))),
    spec("lolwut", -1, (0, 0, 0), AnyServer),
    spec("lpop", -2, (1, 1, 1), Keyed(1)),
    spec("lpos", -3, (1, 1, 1), Keyed(1)),
    spec("lpush", -3, (1, 1, 1), Keyed(1)),
    spec("lpushx", -3, (1, 1, 1), Keyed(1)),
    spec("lrange", 4, (1, 1, 1), Keyed(1)),
    spec("lrem", 4, (1, 1, 1), Keyed(1)),
    spec("lset", 4, (1, 1, 1), Keyed(1)),
    spec("ltrim", 4, (1, 1, 1), Keyed(1)),
    spec("memory", -2, (0, 0, 0), BySubcommand),
    spec("mget", -2, (1, -1, 1), SplitKeys(Merge::Values)),
    spec("migrate", -6, (3, 3, 1), Refused(Reason::Admin)),
    spec("module", -2, (0, 0, 0), Refused(Reason::Admin)),
    spec("monitor", 1, (0, 0, 0), Refused(Reason::Admin)),
    spec("move", 3, (1, 1, 1), Refused(Reason::Databases)),
    spec("mset", -3, (1, -1, 2), SplitPairs),
    spec(
        "msetnx",
        -3,
        (1, -1, 2),
        SameServer(Keys::Range {
            first: 1,
            last: -1,
            step: 2,
        }),
    ),
    spec(
        "multi",
        1,
        (0, 0, 0),
        Transaction(TransactionCommand::Multi),
    ),
    spec("object", -2, (0, 0, 0), BySubcommand),
    spec("persist", 2, (1, 1, 1), Keyed(1)),
    spec("pexpire", -3, (1, 1, 1), Keyed(1)),
    spec("pexpireat", -3, (1, 1, 1), Keyed(1)),
    spec("pexpiretime", 2, (1, 1, 1), Keyed(1)),
    spec("pfadd", -2, (1, 1, 1), Keyed(1)),
    spec("pfcount", -2, (1, -1, 1), Keyed(1)),
    spec("pfdebug", 3, (2, 2, 1), Refused(Reason::Admin)),
    spec("pfmerge", -2, (1, -1, 1), Keyed(1)),
    spec("pfselftest", 1, (0, 0, 0), Refused(Reason::Admin)),
    spec("ping", -1, (0, 0, 0), Local(LocalCommand::Ping)),
    spec("psetex", 4, (1, 1, 1), Keyed(1)),
    spec(
        "psubscribe",
        -2,
        (0, 0, 0),
        PubSub(PubSubCommand::Psubscribe),
    ),
    spec("psync", -3, (0, 0, 0), Refused(Reason::Replication)),
    spec("pttl", 2, (1, 1, 1), Keyed(1)),
    spec("publish", 3, (0, 0, 0), Keyed(1)),
    spec("pubsub", -2, (0, 0, 0), BySubcommand),
    spec(
        "punsubscribe",
        -1,
        (0, 0, 0),
        PubSub(PubSubCommand::Punsubscribe),
    ),
    spec("quit", -1, (0, 0, 0), Local(LocalCommand::Quit)),
    spec(
        "randomkey",
        1,
        (0, 0, 0),
        Keyspace(KeyspaceCommand::Randomkey),
    ),
    spec("readonly", 1, (0, 0, 0), Refused(Reason::Cluster)),
    spec("readwrite", 1, (0, 0, 0), Refused(Reason::Cluster)),
    spec(
        "rename",
        3,
        (1, 2, 1),
        SameServer(Keys::Range {
            first: 1,
            last: 2,
            step: 1,
        }),
    ),
    spec(
        "renamenx",
        3,
        (1, 2, 1),
        SameServer(Keys::Range {
            first: 1,
            last: 2,
            step: 1,
        }),
    ),
    spec("replconf", -1, (0, 0, 0), Refused(Reason::Replication)),
    spec("replicaof", 3, (0, 0, 0), Refused(Reason::Replication)),
    spec("reset", 1, (0, 0, 0), Local(LocalCommand::Reset)),
    spec("restore", -4, (1, 1, 1), Keyed(1)),
    spec("restore-asking", -4, (1, 1, 1), Refused(Reason::Cluster)),
    spec("role", 1, (0, 0, 0), Refused(Reason::Replication)),
    spec("rpop", -2, (1, 1, 1), Keyed(1)),
    spec("rpoplpush", 3, (1, 2, 1), Keyed(1)),
    spec("rpush", -3, (1, 1, 1), Keyed(1)),
    spec("rpushx", -3, (1, 1, 1), Keyed(1)),
    spec("sadd", -3, (1, 1, 1), Keyed(1)),
    spec("save", 1, (0, 0, 0), Refused(Reason::Admin)),
    spec("scan", -2, (0, 0, 0), Keyspace(KeyspaceCommand::Scan)),
    spec("scard", 2, (1, 1, 1), Keyed(1)),
    spec("script", -2, (0, 0, 0), BySubcommand),
    spec("sdiff", -2, (1, -1, 1), Keyed(1)),
    spec("sdiffstore", -3, (1, -1, 1), Keyed(1)),
    spec("select", 2, (0, 0, 0), Local(LocalCommand::Select)),
    spec("set", -3, (1, 1, 1), Keyed(1)),
    spec("setbit", 4, (1, 1, 1), Keyed(1)),
    spec("setex", 4, (1, 1, 1), Keyed(1)),
    spec("setnx", 3, (1, 1, 1), Keyed(1)),
    spec("setrange", 4, (1, 1, 1), Keyed(1)),
    spec("shutdown", -1, (0, 0, 0), Refused(Reason::Admin)),
    spec("sinter", -2, (1, -1, 1), Keyed(1)),
    spec("sintercard", -3, (0, 0, 0), SameServer(Keys::NumKeys(1))),
    spec("sinterstore", -3, (1, -1, 1), Keyed(1)),
    spec("sismember", 3, (1, 1, 1), Keyed(1)),
    spec("slaveof", 3, (0, 0, 0), Refused(Reason::Replication)),
    spec("slowlog", -2, (0, 0, 0), Refused(Reason::Admin)),
    spec("smembers", 2, (1, 1, 1), Keyed(1)),
    spec("smismember", -3, (1, 1, 1), Keyed(1)),
    spec("smove", 4, (1, 2, 1), Keyed(1)),
    spec("sort", -2, (1, 1, 1), Keyed(1)),
    spec("sort_ro", -2, (1, 1, 1), Keyed(1)),
    spec("spop", -2, (1, 1, 1), Keyed(1)),
    spec("spublish", 3, (1, 1, 1), Keyed(1)),
    spec("srandmember", -2, (1, 1, 1), Keyed(1)),
    spec("srem", -3, (1, 1, 1), Keyed(1)),
    spec("sscan", -3, (1, 1, 1), Keyed(1)),
    spec(
        "ssubscribe",
        -2,
        (1, -1, 1),
        PubSub(PubSubCommand::Ssubscribe),
    ),
    spec("strlen", 2, (1, 1, 1), Keyed(1)),
    spec("subscribe", -2, (0, 0, 0), PubSub(PubSubCommand::Subscribe)),
    spec("substr", 4, (1, 1, 1), Keyed(1)),
    spec("sunion", -2, (1, -1, 1), Keyed(1)),
    spec("sunionstore", -3, (1, -1, 1), Keyed(1)),
    spec(
        "sunsubscribe",
        -1,
        (1, -1, 1),
        PubSub(PubSubCommand::Sunsubscribe),
    ),
    spec("swapdb", 3, (0, 0, 0), Refused(Reason::Databases)),
    spec("sync", 1, (0, 0, 0), Refused(Reason::Replication)),
    spec("time", 1, (0, 0, 0), AnyServer),
    spec("touch", -2, (1, -1, 1), SplitKeys(Merge::Sum)),
    spec("ttl", 2, (1, 1, 1), Keyed(1)),
    spec("type", 2, (1, 1, 1), Keyed(1)),
    spec("unlink", -2, (1, -1, 1), SplitKeys(Merge::Sum)),
    spec(
        "unsubscribe",
        -1,
        (0, 0, 0),
        PubSub(PubSubCommand::Unsubscribe),
    ),
    spec(
        "unwatch",
        1,
        (0, 0, 0),
        Transaction(TransactionCommand::Unwatch),
    ),
    spec("wait", 3, (0, 0, 0), Refused(Reason::Replication)),
    spec("waitaof", 4, (0, 0, 0), Refused(Reason::Replication)),
    spec(
        "watch",
        -2,
        (1, -1, 1),
        Transaction(TransactionCommand::Watch),
    ),
    spec("xack", -4, (1, 1, 1), Keyed(1)),
    spec("xackdel", -6, (1, 1, 1), Keyed(1)),
    spec("xadd", -5, (1, 1, 1), Keyed(1)),
    spec("xautoclaim", -6, (1, 1, 1), Keyed(1)),
    spec("xclaim", -6, (1, 1, 1), Keyed(1)),
    spec("xdel", -3, (1, 1, 1), Keyed(1)),
    spec("xdelex", -5, (1, 1, 1), Keyed(1)),
    spec("xgroup", -2, (0, 0, 0), BySubcommand),
    spec("xinfo", -2, (0, 0, 0), BySubcommand),
    spec("xlen", 2, (1, 1, 1), Keyed(1)),
    spec("xpending", -3, (1, 1, 1), Keyed(1)),
    spec("xrange", -4, (1, 1, 1), Keyed(1)),
    spec(
        "xread",
        -4,
        (0, 0, 0),
        SameServer(Keys::Streams { options: 1 }),
    ),
    spec(
        "xreadgroup",
        -7,
        (0, 0, 0),
        SameServer(Keys::Streams { options: 4 }),
    ),
    spec("xrevrange", -4, (1, 1, 1), Keyed(1)),
    spec("xsetid", -3, (1, 1, 1), Keyed(1)),
    spec("xtrim", -4, (1, 1, 1), Keyed(1)),
    spec("zadd", -4, (1, 1, 1), Keyed(1)),
    spec("zcard", 2, (1, 1, 1), Keyed(1)),
    spec("zcount", 4, (1, 1, 1), Keyed(1)),
    spec("zdiff", -3, (0, 0, 0), Keyed(2)),
    spec("zdiffstore", -4, (1, 1, 1), Keyed(1)),
    spec("zincrby", 4, (1, 1, 1), Keyed(1)),
    spec("zinter", -3, (0, 0, 0), Keyed(2)),
    spec("zintercard", -3, (0, 0, 0), SameServer(Keys::NumKeys(1))),
    spec("zinterstore", -4, (1, 1, 1), Keyed(1)),
    spec("zlexcount", 4, (1, 1, 1), Keyed(1)),
    spec("zmpop", -4, (0, 0, 0), SameServer(Keys::NumKeys(1))),
    spec("zmscore", -3, (1, 1, 1), Keyed(1)),
    spec("zpopmax", -2, (1, 1, 1), Keyed(1)),
    spec("zpopmin", -2, (1, 1, 1), Keyed(1)),
    spec("zrandmember", -2, (1, 1, 1), Keyed(1)),
    spec("zrange", -4, (1, 1, 1), Keyed(1)),
    spec("zrangebylex", -4, (1, 1, 1), Keyed(1)),
    spec("zrangebyscore", -4, (1, 1, 1), Keyed(1)),
    spec(
        "zrangestore",
        -5,
        (1, 2, 1),
        SameServer(Keys::Range {
            first: 1,
            last: 2,
            step: 1,
        }),
    ),
    spec("zrank", 3, (1, 1, 1), Keyed(1)),
    spec("zrem", -3, (1, 1, 1), Keyed(1)),
    spec("zremrangebylex", 4, (1, 1, 1), Keyed(1)),
    spec("zremrangebyrank", 4, (1, 1, 1), Keyed(1)),
    spec("zremrangebyscore", 4, (1, 1, 1), Keyed(1)),
    spec("zrevrange", -4, (1, 1, 1), Keyed(1)),
    spec("zrevrangebylex", -4, (1, 1, 1), Keyed(1)),
    spec("zrevrangebyscore", -4, (1, 1, 1), Keyed(1)),
    spec("zrevrank", 3, (1, 1, 1), Keyed(1)),
    spec("zscan", -3, (1, 1, 1), Keyed(1)),
    spec("zscore", 3, (1, 1, 1), Keyed(1)),
    spec("zunion", -3, (0, 0, 0), Keyed(2)),
    spec("zunionstore", -4, (1, 1, 1), Keyed(1)),
];

/// The subcommands of the commands whose kind is [`BySubcommand`], sorted.
pub static SUBCOMMANDS: &[CommandSpec] = SUBCOMMAND_TABLE;

const SUBCOMMAND_TABLE: &[CommandSpec] = &[
    spec(
        "function|delete",
        3,
        (0, 0, 0),
        every_shard(Combine::AllSucceeded),
    ),
    spec("function|dump", 2, (0, 0, 0), AnyServer),
    spec(
        "function|flush",
        -2,
        (0, 0, 0),
        every_shard(Combine::AllSucceeded),
    ),
    spec("function|help", 2, (0, 0, 0), AnyServer),
    spec(
        "function|kill",
        2,
        (0, 0, 0),
        every_shard(Combine::OneSucceeded),
    ),
    spec("function|list", -2, (0, 0, 0), AnyServer),
    spec(
        "function|load",
        -3,
        (0, 0, 0),
        every_shard(Combine::AllSucceeded),
    ),
    spec(
        "function|restore",
        -3,
        (0, 0, 0),
        every_shard(Combine::AllSucceeded),
    ),
    spec("function|stats", 2, (0, 0, 0), AnyServer),
    spec("memory|doctor", 2, (0, 0, 0), Refused(Reason::Admin)),
    spec("memory|help", 2, (0, 0, 0), AnyServer),
    spec("memory|malloc-stats", 2, (0, 0, 0), Refused(Reason::Admin)),
    spec("memory|purge", 2, (0, 0, 0), Refused(Reason::Admin)),
    spec("memory|stats", 2, (0, 0, 0), Refused(Reason::Admin)),
    spec("memory|usage", -3, (2, 2, 1), Keyed(2)),
    spec("object|encoding", 3, (2, 2, 1), Keyed(2)),
    spec("object|freq", 3, (2, 2, 1), Keyed(2)),
    spec("object|help", 2, (0, 0, 0), AnyServer),
    spec("object|idletime", 3, (2, 2, 1), Keyed(2)),
    spec("object|refcount", 3, (2, 2, 1), Keyed(2)),
    spec(
        "pubsub|channels",
        -2,
        (0, 0, 0),
        PubSubQuery(PubSubQuery::Names),
    ),
    spec("pubsub|help", 2, (0, 0, 0), AnyServer),
    spec(
        "pubsub|numpat",
        2,
        (0, 0, 0),
        PubSubQuery(PubSubQuery::Patterns),
    ),
    spec(
        "pubsub|numsub",
        -2,
        (0, 0, 0),
        PubSubQuery(PubSubQuery::Counts),
    ),
    spec(
        "pubsub|shardchannels",
        -2,
        (0, 0, 0),
        PubSubQuery(PubSubQuery::Names),
    ),
    spec(
        "pubsub|shardnumsub",
        -2,
        (0, 0, 0),
        PubSubQuery(PubSubQuery::Counts),
    ),
    spec("script|debug", 3, (0, 0, 0), Refused(Reason::Admin)),
    spec(
        "script|exists",
        -3,
        (0, 0, 0),
        every_shard(Combine::LogicalAnd),
    ),
    spec(
        "script|flush",
        -2,
        (0, 0, 0),
        every_node(Combine::AllSucceeded),
    ),
    spec("script|help", 2, (0, 0, 0), AnyServer),
    spec(
        "script|kill",
        2,
        (0, 0, 0),
        every_shard(Combine::OneSucceeded),
    ),
    spec(
        "script|load",
        3,
        (0, 0, 0),
        every_node(Combine::AllSucceeded),
    ),
    spec("xgroup|create", -5, (2, 2, 1), Keyed(2)),
    spec("xgroup|createconsumer", 5, (2, 2, 1), Keyed(2)),
    spec("xgroup|delconsumer", 5, (2, 2, 1), Keyed(2)),
    spec("xgroup|destroy", 4, (2, 2, 1), Keyed(2)),
    spec("xgroup|help", 2, (0, 0, 0), AnyServer),
    spec("xgroup|setid", -5, (2, 2, 1), Keyed(2)),
    spec("xinfo|consumers", 4, (2, 2, 1), Keyed(2)),
    spec("xinfo|groups", 3, (2, 2, 1), Keyed(2)),
    spec("xinfo|help", 2, (0, 0, 0), AnyServer),
    spec("xinfo|stream", -3, (2, 2, 1), Keyed(2)),
];

/// The commands Redis flags `write` (from `COMMAND`), sorted: a write sent to a
/// gutter pool gets its TTL capped.
static WRITE_COMMANDS: &[&str] = &[
    "append",
    "bitfield",
    "bitop",
    "blmove",
    "blmpop",
    "blpop",
    "brpop",
    "brpoplpush",
    "bzmpop",
    "bzpopmax",
    "bzpopmin",
    "copy",
    "decr",
    "decrby",
    "del",
    "expire",
    "expireat",
    "flushall",
    "flushdb",
    "geoadd",
    "georadius",
    "georadiusbymember",
    "geosearchstore",
    "getdel",
    "getex",
    "getset",
    "hdel",
    "hexpire",
    "hexpireat",
    "hgetdel",
    "hgetex",
    "hincrby",
    "hincrbyfloat",
    "hmset",
    "hpersist",
    "hpexpire",
    "hpexpireat",
    "hset",
    "hsetex",
    "hsetnx",
    "incr",
    "incrby",
    "incrbyfloat",
    "linsert",
    "lmove",
    "lmpop",
    "lpop",
    "lpush",
    "lpushx",
    "lrem",
    "lset",
    "ltrim",
    "migrate",
    "move",
    "mset",
    "msetnx",
    "persist",
    "pexpire",
    "pexpireat",
    "pfadd",
    "pfdebug",
    "pfmerge",
    "psetex",
    "rename",
    "renamenx",
    "restore",
    "restore-asking",
    "rpop",
    "rpoplpush",
    "rpush",
    "rpushx",
    "sadd",
    "sdiffstore",
    "set",
    "setbit",
    "setex",
    "setnx",
    "setrange",
    "sinterstore",
    "smove",
    "sort",
    "spop",
    "srem",
    "sunionstore",
    "swapdb",
    "unlink",
    "xack",
    "xackdel",
    "xadd",
    "xautoclaim",
    "xclaim",
    "xdel",
    "xdelex",
    "xreadgroup",
    "xsetid",
    "xtrim",
    "zadd",
    "zdiffstore",
    "zincrby",
    "zinterstore",
    "zmpop",
    "zpopmax",
    "zpopmin",
    "zrangestore",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
    "zunionstore",
];

/// The spec of a command, by name in any case.
#[inline]
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.len() > SHORT {
        return find(COMMANDS, &COMMAND_SLOTS, name);
    }
    let key = short_key(name);
    let mut i = short_slot(key);
    loop {
        let c = usize::from(SHORT_SLOTS[i]).checked_sub(1)?;
        if SHORT_KEYS[c] == key && COMMAND_TABLE[c].name.len() == name.len() {
            return Some(&COMMAND_TABLE[c]);
        }
        i = (i + 1) % SLOTS;
    }
}

/// The spec of `container|sub`, by the two names in any case.
pub fn lookup_subcommand(container: &str, sub: &[u8]) -> Option<&'static CommandSpec> {
    let mut full = [0u8; 48];
    let len = container.len() + 1 + sub.len();
    if len > full.len() {
        return None;
    }
    full[..container.len()].copy_from_slice(container.as_bytes());
    full[container.len()] = b'|';
    full[container.len() + 1..len].copy_from_slice(sub);
    find(SUBCOMMANDS, &SUBCOMMAND_SLOTS, &full[..len])
}

/// Slots of the hash tables that find a command by name: a power of two, at least
/// four times the commands, so that probes are short.
const SLOTS: usize = 1024;

/// FNV-1a of a name in lower case: where the search for it starts.
const fn name_hash(name: &[u8]) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < name.len() {
        hash ^= name[i].to_ascii_lowercase() as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash as usize
}

/// A hash table of `table`'s names, built at compile time: each slot holds a
/// command's index plus one, or 0; a name is in its hash's slot or the next ones.
const fn slots(table: &[CommandSpec]) -> [u16; SLOTS] {
    let mut slots = [0u16; SLOTS];
    let mut c = 0;
    while c < table.len() {
        let mut i = name_hash(table[c].name.as_bytes()) % SLOTS;
        while slots[i] != 0 {
            i = (i + 1) % SLOTS;
        }
        slots[i] = (c + 1) as u16;
        c += 1;
    }
    slots
}

static COMMAND_SLOTS: [u16; SLOTS] = slots(COMMAND_TABLE);

/// Names of at most this many bytes (nearly every command of a request) are found
/// by their bytes read as one number: lower-cased in a few operations, hashed by
/// one multiplication and compared once, where the general path takes each byte
/// in turn.
const SHORT: usize = 8;

/// A short name's bytes in lower case, as one number (little-endian, zero-padded:
/// its length tells `get` from `get\0`).
#[inline]
fn short_key(name: &[u8]) -> u64 {
    let mut x = 0u64;
    for (i, &b) in name.iter().enumerate().take(SHORT) {
        x |= u64::from(b) << (8 * i);
    }
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Per byte, without carries between bytes: its high bit set when the low seven
    // bits are at least 'A', and when they are past 'Z'; a byte whose own high bit is
    // set is no letter.
    let low = x & !HIGH;
    let from_a = low + ONES * u64::from(0x80 - b'A');
    let past_z = low + ONES * u64::from(0x80 - b'Z' - 1);
    let upper = from_a & !past_z & !x & HIGH;
    x | (upper >> 2)
}

/// [`short_key`] at compile time, for the table.
const fn short_key_of(name: &[u8]) -> u64 {
    let mut x = 0u64;
    let mut i = 0;
    while i < name.len() {
        x |= (name[i].to_ascii_lowercase() as u64) << (8 * i);
        i += 1;
    }
    x
}

const fn short_slot(key: u64) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54) as usize % SLOTS
}

/// Each command's [`short_key`] (0 for a longer name).
static SHORT_KEYS: [u64; COMMAND_TABLE.len()] = {
    let mut keys = [0u64; COMMAND_TABLE.len()];
    let mut c = 0;
    while c < keys.len() {
        let name = COMMAND_TABLE[c].name.as_bytes();
        if name.len() <= SHORT {
            keys[c] = short_key_of(name);
        }
        c += 1;
    }
    keys
};

/// The hash table of the short names, as [`slots`] builds.
static SHORT_SLOTS: [u16; SLOTS] = {
    let mut slots = [0u16; SLOTS];
    let mut c = 0;
    while c < COMMAND_TABLE.len() {
        let name = COMMAND_TABLE[c].name.as_bytes();
        if name.len() <= SHORT {
            let mut i = short_slot(short_key_of(name));
            while slots[i] != 0 {
                i = (i + 1) % SLOTS;
            }
            slots[i] = (c + 1) as u16;
        }
        c += 1;
    }
    slots
};
static SUBCOMMAND_SLOTS: [u16; SLOTS] = slots(SUBCOMMAND_TABLE);

/// Finds `name` in any case: one hash of its bytes, a compare or two.
fn find(
    table: &'static [CommandSpec],
    slots: &[u16; SLOTS],
    name: &[u8],
) -> Option<&'static CommandSpec> {
    let mut i = name_hash(name) % SLOTS;
    loop {
        let spec = table.get(usize::from(slots[i]).checked_sub(1)?)?;
        let known = spec.name.as_bytes();
        if known.len() == name.len()
            && known
                .iter()
                .zip(name)
                .all(|(&k, &n)| k == n.to_ascii_lowercase())
        {
            return Some(spec);
        }
        i = (i + 1) % SLOTS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        for table in [COMMANDS, SUBCOMMANDS] {
            for pair in table.windows(2) {
                assert!(
                    pair[0].name < pair[1].name,
                    "{} before {}",
                    pair[0].name,
                    pair[1].name
                );
            }
        }
    }

    #[test]
    fn write_commands_are_sorted_and_known() {
        for pair in WRITE_COMMANDS.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        for name in WRITE_COMMANDS {
            assert!(lookup(name.as_bytes()).is_some(), "{name}");
        }
        let write = |name: &str| lookup(name.as_bytes()).unwrap().write;
        assert!(write("set") && write("hset") && write("del") && !write("get") && !write("mget"));
        let flagged = COMMANDS
            .iter()
            .chain(SUBCOMMANDS)
            .filter(|c| c.write)
            .count();
        assert_eq!(
            flagged,
            WRITE_COMMANDS.len(),
            "every write command is in a table once"
        );
    }

    #[test]
    fn replicas_serve_reads_but_not_publishes_or_scripts() {
        for name in MASTER_ONLY {
            assert!(lookup(name.as_bytes()).is_some(), "{name}");
        }
        let replica_ok = |name: &str| lookup(name.as_bytes()).unwrap().effect == Effect::Read;
        for read in [
            "get", "mget", "hgetall", "zrange", "exists", "ttl", "sort_ro",
        ] {
            assert!(replica_ok(read), "{read}");
        }
        for master in [
            "set", "del", "sort", "publish", "spublish", "eval", "fcall_ro",
        ] {
            assert!(!replica_ok(master), "{master}");
        }
    }

    #[test]
    fn every_command_is_found_by_its_name_in_any_case_after_a_few_probes() {
        for (table, slots) in [(COMMANDS, &COMMAND_SLOTS), (SUBCOMMANDS, &SUBCOMMAND_SLOTS)] {
            for spec in table {
                let upper = spec.name.to_ascii_uppercase();
                for name in [spec.name.as_bytes(), upper.as_bytes()] {
                    let found = find(table, slots, name).map(|c| c.name);
                    assert_eq!(found, Some(spec.name));
                }
                let mut probes = 0;
                let mut i = name_hash(spec.name.as_bytes()) % SLOTS;
                while table[usize::from(slots[i]) - 1].name != spec.name {
                    i = (i + 1) % SLOTS;
                    probes += 1;
                }
                assert!(probes <= 4, "{} takes {probes} probes", spec.name);
            }
        }
        for name in [&b""[..], b"ge", b"gett", b"g\xc3\xa9t", b"get\0"] {
            assert!(lookup(name).is_none(), "{name:?}");
        }
    }

    #[test]
    fn short_names_are_found_as_the_general_path_finds_them() {
        // Every command in three cases, then names of up to 8 bytes drawn from bytes
        // that lower-casing could confuse (the letters' neighbours, the same with the
        // high bit set, NUL).
        for spec in COMMANDS {
            let upper = spec.name.to_ascii_uppercase();
            let mixed: String = spec
                .name
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            for name in [spec.name, &upper, &mixed] {
                assert_eq!(lookup(name.as_bytes()).map(|c| c.name), Some(spec.name));
            }
        }
        let alphabet = b"getGETsSmM@AZ[`az{\0\x7f\xc5\xc7\xe5\xc1\xda|-_ ";
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut found = 0;
        for _ in 0..200_000 {
            crate::next_random(&mut x);
            let len = 1 + (x % 8) as usize;
            let name: Vec<u8> = (0..len)
                .map(|i| alphabet[(x >> (8 + 6 * i)) as usize % alphabet.len()])
                .collect();
            let expected = find(COMMANDS, &COMMAND_SLOTS, &name).map(|c| c.name);
            assert_eq!(lookup(&name).map(|c| c.name), expected, "{name:?}");
            found += usize::from(expected.is_some());
        }
        assert!(found > 10, "the draw finds commands too ({found})");
        // Every short name with one byte changed to a neighbour, its other case, the
        // same with the high bit, or NUL; and with a byte more or less.
        for spec in COMMANDS.iter().filter(|c| c.name.len() <= SHORT) {
            let name = spec.name.as_bytes();
            let mut variants = vec![name[1..].to_vec(), name[..name.len() - 1].to_vec()];
            if name.len() < SHORT {
                variants.extend([[name, b"\0"].concat(), [name, b"a"].concat()]);
            }
            for i in 0..name.len() {
                for change in [1u8, 0x20, 0x80, 0xa0, 0xff] {
                    let mut v = name.to_vec();
                    v[i] = v[i].wrapping_add(change);
                    variants.push(v.clone());
                    v[i] = name[i] ^ change;
                    variants.push(v.clone());
                    v[i] = 0;
                    variants.push(v);
                }
            }
            for v in variants {
                let expected = find(COMMANDS, &COMMAND_SLOTS, &v).map(|c| c.name);
                assert_eq!(lookup(&v).map(|c| c.name), expected, "{v:?}");
            }
        }
        let mut probes_most = 0;
        for (c, spec) in COMMANDS.iter().enumerate() {
            if spec.name.len() <= SHORT {
                let mut i = short_slot(SHORT_KEYS[c]);
                let mut probes = 0;
                while usize::from(SHORT_SLOTS[i]) != c + 1 {
                    i = (i + 1) % SLOTS;
                    probes += 1;
                }
                probes_most = probes_most.max(probes);
            }
        }
        assert!(probes_most <= 4, "a short name takes {probes_most} probes");
    }

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(lookup(b"GeT").unwrap().name, "get");
        assert!(lookup(b"nosuchcommand").is_none());
        assert_eq!(
            lookup_subcommand("object", b"ENCODING").unwrap().kind,
            Keyed(2)
        );
        assert!(lookup_subcommand("object", b"nope").is_none());
    }

    #[test]
    fn every_container_has_subcommands() {
        for c in COMMANDS.iter().filter(|c| c.kind == BySubcommand) {
            let prefix = format!("{}|", c.name);
            assert!(
                SUBCOMMANDS.iter().any(|s| s.name.starts_with(&prefix)),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn arity() {
        let get = lookup(b"get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(3));
        let del = lookup(b"del").unwrap();
        assert!(del.arity_ok(2) && del.arity_ok(9) && !del.arity_ok(1));
    }
}
