//! The commands cashew knows, what it does with each, and their arity as Redis
//! defines it (positive: exactly that many arguments, command name included;
//! negative: at least that many).

use CommandKind::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    /// Forwarded whole to the server of the first key (argument 1).
    Keyed,
    /// EVAL-style: `numkeys` at argument 2, the first key at argument 3.
    Script,
    /// Split per server over its keys; integer replies summed, or values merged (MGET).
    SplitKeys,
    /// Split per server over key-value pairs (MSET).
    SplitPairs,
    /// Answered by the proxy.
    Local,
    /// A redis command that has no meaning through a sharding proxy.
    Unsupported,
}

#[derive(Clone, Copy, Debug)]
pub struct CommandSpec {
    /// Lower case.
    pub name: &'static str,
    pub arity: i32,
    pub kind: CommandKind,
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

    /// First key, last key (negative: from the end) and step, as `COMMAND` reports them.
    pub fn key_spec(&self) -> (i64, i64, i64) {
        match self.kind {
            Keyed => (1, 1, 1),
            SplitKeys => (1, -1, 1),
            SplitPairs => (1, -1, 2),
            Script | Local | Unsupported => (0, 0, 0),
        }
    }
}

const fn spec(name: &'static str, arity: i32, kind: CommandKind) -> CommandSpec {
    CommandSpec { name, arity, kind }
}

/// Sorted by name, for binary search.
pub static COMMANDS: &[CommandSpec] = &[
    spec("acl", -2, Unsupported),
    spec("append", 3, Keyed),
    spec("auth", -2, Local),
    spec("bgrewriteaof", 1, Unsupported),
    spec("bgsave", -1, Unsupported),
    spec("bitcount", -2, Keyed),
    spec("bitfield", -2, Keyed),
    spec("bitfield_ro", -2, Keyed),
    spec("bitpos", -3, Keyed),
    spec("blmove", 6, Unsupported),
    spec("blmpop", -5, Unsupported),
    spec("blpop", -3, Unsupported),
    spec("brpop", -3, Unsupported),
    spec("brpoplpush", 4, Unsupported),
    spec("bzmpop", -5, Unsupported),
    spec("bzpopmax", -3, Unsupported),
    spec("bzpopmin", -3, Unsupported),
    spec("client", -2, Local),
    spec("cluster", -2, Unsupported),
    spec("command", -1, Local),
    spec("config", -2, Unsupported),
    spec("copy", -3, Unsupported),
    spec("dbsize", 1, Unsupported),
    spec("debug", -2, Unsupported),
    spec("decr", 2, Keyed),
    spec("decrby", 3, Keyed),
    spec("del", -2, SplitKeys),
    spec("discard", 1, Unsupported),
    spec("dump", 2, Keyed),
    spec("echo", 2, Local),
    spec("eval", -3, Script),
    spec("eval_ro", -3, Script),
    spec("evalsha", -3, Script),
    spec("evalsha_ro", -3, Script),
    spec("exec", 1, Unsupported),
    spec("exists", -2, SplitKeys),
    spec("expire", -3, Keyed),
    spec("expireat", -3, Keyed),
    spec("expiretime", 2, Keyed),
    spec("failover", -1, Unsupported),
    spec("fcall", -3, Unsupported),
    spec("fcall_ro", -3, Unsupported),
    spec("flushall", -1, Unsupported),
    spec("flushdb", -1, Unsupported),
    spec("function", -2, Unsupported),
    spec("geoadd", -5, Keyed),
    spec("geodist", -4, Keyed),
    spec("geohash", -2, Keyed),
    spec("geopos", -2, Keyed),
    spec("georadius", -6, Keyed),
    spec("georadius_ro", -6, Keyed),
    spec("georadiusbymember", -5, Keyed),
    spec("georadiusbymember_ro", -5, Keyed),
    spec("geosearch", -7, Keyed),
    spec("geosearchstore", -8, Keyed),
    spec("get", 2, Keyed),
    spec("getbit", 3, Keyed),
    spec("getdel", 2, Keyed),
    spec("getex", -2, Keyed),
    spec("getrange", 4, Keyed),
    spec("getset", 3, Keyed),
    spec("hdel", -3, Keyed),
    spec("hello", -1, Local),
    spec("hexists", 3, Keyed),
    spec("hget", 3, Keyed),
    spec("hgetall", 2, Keyed),
    spec("hincrby", 4, Keyed),
    spec("hincrbyfloat", 4, Keyed),
    spec("hkeys", 2, Keyed),
    spec("hlen", 2, Keyed),
    spec("hmget", -3, Keyed),
    spec("hmset", -4, Keyed),
    spec("hrandfield", -2, Keyed),
    spec("hscan", -3, Keyed),
    spec("hset", -4, Keyed),
    spec("hsetnx", 4, Keyed),
    spec("hstrlen", 3, Keyed),
    spec("hvals", 2, Keyed),
    spec("incr", 2, Keyed),
    spec("incrby", 3, Keyed),
    spec("incrbyfloat", 3, Keyed),
    spec("info", -1, Local),
    spec("keys", 2, Unsupported),
    spec("lastsave", 1, Unsupported),
    spec("latency", -2, Unsupported),
    spec("lindex", 3, Keyed),
    spec("linsert", 5, Keyed),
    spec("llen", 2, Keyed),
    spec("lmove", 5, Keyed),
    spec("lmpop", -4, Unsupported),
    spec("lpop", -2, Keyed),
    spec("lpos", -3, Keyed),
    spec("lpush", -3, Keyed),
    spec("lpushx", -3, Keyed),
    spec("lrange", 4, Keyed),
    spec("lrem", 4, Keyed),
    spec("lset", 4, Keyed),
    spec("ltrim", 4, Keyed),
    spec("memory", -2, Unsupported),
    spec("mget", -2, SplitKeys),
    spec("migrate", -6, Unsupported),
    spec("module", -2, Unsupported),
    spec("monitor", 1, Unsupported),
    spec("move", 3, Unsupported),
    spec("mset", -3, SplitPairs),
    spec("msetnx", -3, Unsupported),
    spec("multi", 1, Unsupported),
    spec("object", -2, Unsupported),
    spec("persist", 2, Keyed),
    spec("pexpire", -3, Keyed),
    spec("pexpireat", -3, Keyed),
    spec("pexpiretime", 2, Keyed),
    spec("pfadd", -2, Keyed),
    spec("pfcount", -2, Keyed),
    spec("pfmerge", -2, Keyed),
    spec("ping", -1, Local),
    spec("psetex", 4, Keyed),
    spec("psubscribe", -2, Unsupported),
    spec("pttl", 2, Keyed),
    spec("publish", 3, Unsupported),
    spec("pubsub", -2, Unsupported),
    spec("punsubscribe", -1, Unsupported),
    spec("quit", -1, Local),
    spec("randomkey", 1, Unsupported),
    spec("readonly", 1, Unsupported),
    spec("readwrite", 1, Unsupported),
    spec("rename", 3, Unsupported),
    spec("renamenx", 3, Unsupported),
    spec("replicaof", 3, Unsupported),
    spec("reset", 1, Unsupported),
    spec("restore", -4, Keyed),
    spec("role", 1, Unsupported),
    spec("rpop", -2, Keyed),
    spec("rpoplpush", 3, Keyed),
    spec("rpush", -3, Keyed),
    spec("rpushx", -3, Keyed),
    spec("sadd", -3, Keyed),
    spec("save", 1, Unsupported),
    spec("scan", -2, Unsupported),
    spec("scard", 2, Keyed),
    spec("script", -2, Unsupported),
    spec("sdiff", -2, Keyed),
    spec("sdiffstore", -3, Keyed),
    spec("select", 2, Local),
    spec("set", -3, Keyed),
    spec("setbit", 4, Keyed),
    spec("setex", 4, Keyed),
    spec("setnx", 3, Keyed),
    spec("setrange", 4, Keyed),
    spec("shutdown", -1, Unsupported),
    spec("sinter", -2, Keyed),
    spec("sintercard", -3, Unsupported),
    spec("sinterstore", -3, Keyed),
    spec("sismember", 3, Keyed),
    spec("slaveof", 3, Unsupported),
    spec("slowlog", -2, Unsupported),
    spec("smembers", 2, Keyed),
    spec("smismember", -3, Keyed),
    spec("smove", 4, Keyed),
    spec("sort", -2, Keyed),
    spec("sort_ro", -2, Keyed),
    spec("spop", -2, Keyed),
    spec("spublish", 3, Unsupported),
    spec("srandmember", -2, Keyed),
    spec("srem", -3, Keyed),
    spec("sscan", -3, Keyed),
    spec("ssubscribe", -2, Unsupported),
    spec("strlen", 2, Keyed),
    spec("subscribe", -2, Unsupported),
    spec("substr", 4, Keyed),
    spec("sunion", -2, Keyed),
    spec("sunionstore", -3, Keyed),
    spec("sunsubscribe", -1, Unsupported),
    spec("swapdb", 3, Unsupported),
    spec("sync", 1, Unsupported),
    spec("time", 1, Unsupported),
    spec("touch", -2, SplitKeys),
    spec("ttl", 2, Keyed),
    spec("type", 2, Keyed),
    spec("unlink", -2, SplitKeys),
    spec("unsubscribe", -1, Unsupported),
    spec("unwatch", 1, Unsupported),
    spec("wait", 3, Unsupported),
    spec("watch", -2, Unsupported),
    spec("zadd", -4, Keyed),
    spec("zcard", 2, Keyed),
    spec("zcount", 4, Keyed),
    spec("zdiff", -3, Unsupported),
    spec("zdiffstore", -4, Unsupported),
    spec("zincrby", 4, Keyed),
    spec("zinter", -3, Unsupported),
    spec("zintercard", -3, Unsupported),
    spec("zinterstore", -4, Keyed),
    spec("zlexcount", 4, Keyed),
    spec("zmpop", -4, Unsupported),
    spec("zmscore", -3, Keyed),
    spec("zpopmax", -2, Keyed),
    spec("zpopmin", -2, Keyed),
    spec("zrandmember", -2, Keyed),
    spec("zrange", -4, Keyed),
    spec("zrangebylex", -4, Keyed),
    spec("zrangebyscore", -4, Keyed),
    spec("zrangestore", -5, Keyed),
    spec("zrank", -3, Keyed),
    spec("zrem", -3, Keyed),
    spec("zremrangebylex", 4, Keyed),
    spec("zremrangebyrank", 4, Keyed),
    spec("zremrangebyscore", 4, Keyed),
    spec("zrevrange", -4, Keyed),
    spec("zrevrangebylex", -4, Keyed),
    spec("zrevrangebyscore", -4, Keyed),
    spec("zrevrank", -3, Keyed),
    spec("zscan", -3, Keyed),
    spec("zscore", 3, Keyed),
    spec("zunion", -3, Unsupported),
    spec("zunionstore", -4, Keyed),
];

/// The command named `name`, in any letter case.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut lower = [0u8; 24];
    if name.len() > lower.len() {
        return None;
    }
    for (l, &c) in lower.iter_mut().zip(name) {
        *l = c.to_ascii_lowercase();
    }
    let lower = &lower[..name.len()];
    COMMANDS
        .binary_search_by(|c| c.name.as_bytes().cmp(lower))
        .ok()
        .map(|i| &COMMANDS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in COMMANDS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} / {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(lookup(b"GET").unwrap().name, "get");
        assert_eq!(lookup(b"mGeT").unwrap().kind, SplitKeys);
        assert_eq!(lookup(b"keys").unwrap().kind, Unsupported);
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(b"a-very-long-name-that-is-no-command").is_none());
    }

    #[test]
    fn arity() {
        let get = lookup(b"get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(1) && !get.arity_ok(3));
        let set = lookup(b"set").unwrap();
        assert!(set.arity_ok(3) && set.arity_ok(6) && !set.arity_ok(2));
    }
}
