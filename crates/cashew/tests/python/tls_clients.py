"""redis-py and pymemcache, current releases, over TLS to cashew: redis-py with
ssl=True and a client certificate (RESP3, then RESP2), pymemcache with a
tls_context. Exits non-zero with a message on the first wrong answer."""
import ssl
import sys

kind, host, port, ca = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

if kind == "redis":
    import redis

    cert, key = sys.argv[5], sys.argv[6]
    for protocol in (3, 2):
        r = redis.Redis(
            host=host,
            port=port,
            protocol=protocol,
            ssl=True,
            ssl_ca_certs=ca,
            ssl_certfile=cert,
            ssl_keyfile=key,
        )
        tag = f"tls{protocol}"
        assert r.ping() is True
        assert r.set(f"{tag}:k", "v") is True
        assert r.get(f"{tag}:k") == b"v"
        pipe = r.pipeline(transaction=False)
        for i in range(200):
            pipe.set(f"{tag}:n{i}", "x" * 1000)
            pipe.get(f"{tag}:n{i}")
        replies = pipe.execute()
        assert replies[1::2] == [b"x" * 1000] * 200, replies[:4]
        r.close()
    print("redis-py over TLS: ok")
else:
    from pymemcache.client.base import Client

    context = ssl.create_default_context(cafile=ca)
    c = Client((host, port), tls_context=context)
    c.set("tls:k", b"hello")
    assert c.get("tls:k") == b"hello"
    c.set_many({f"tls:m{i}": str(i).encode() for i in range(100)})
    got = c.get_many([f"tls:m{i}" for i in range(100)])
    assert len(got) == 100 and got["tls:m42"] == b"42", got
    c.close()
    print("pymemcache over TLS: ok")
