//! Property test: single-key gets joined into one request and the server's reply
//! split back give every request exactly the reply it would have got alone.

use cashew_protocol::memcache::coalesce::{single_retrieval, split_reply, Retrieval};
use cashew_protocol::memcache::{parse_reply, ReplyParse};
use proptest::prelude::*;

/// A few keys, so that requests repeat them; each stored or not, with some value.
fn store() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
    prop::collection::vec(
        (
            "[!-~]{1,12}",
            prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        ),
        1..6,
    )
}

/// What memcached answers to `get`/`gets` of `keys`: a VALUE block per stored key,
/// in the order asked, then END.
fn answer(store: &[(String, Option<Vec<u8>>)], keys: &[&str], cas: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for key in keys {
        let found = store
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_ref());
        if let Some(value) = found {
            let cas = if cas { " 77" } else { "" };
            out.extend(format!("VALUE {key} 3 {}{cas}\r\n", value.len()).bytes());
            out.extend(value);
            out.extend(b"\r\n");
        }
    }
    out.extend(b"END\r\n");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn joined_gets_get_their_own_replies(
        store in store(),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 1..20),
        cas in any::<bool>(),
    ) {
        // The first key of the store with the same text wins, as in memcached.
        let keys: Vec<&str> = picks.iter().map(|i| store[i.index(store.len())].0.as_str()).collect();
        let command = if cas { "gets" } else { "get" };
        for key in &keys {
            let request = format!("{command} {key}\r\n");
            let (retrieval, k) = single_retrieval(request.as_bytes()).expect("joinable");
            prop_assert_eq!(retrieval, if cas { Retrieval::Gets } else { Retrieval::Get });
            prop_assert_eq!(k, key.as_bytes());
        }
        let reply = answer(&store, &keys, cas);
        prop_assert_eq!(parse_reply(&reply), ReplyParse::Complete(reply.len()));
        let mut got = Vec::new();
        let split = split_reply(&reply, keys.iter().map(|k| k.as_bytes()), |block| {
            let mut one = block.unwrap_or_default().to_vec();
            one.extend(b"END\r\n");
            got.push(one);
        });
        prop_assert!(split);
        let alone: Vec<Vec<u8>> = keys.iter().map(|k| answer(&store, &[k], cas)).collect();
        prop_assert_eq!(got, alone);
    }
}
