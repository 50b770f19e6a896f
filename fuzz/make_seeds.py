#!/usr/bin/env python3
"""Writes the checked-in seed corpora, fuzz/corpus/seed-<target>/, from docs/protocol.md's examples
plus malformed variants of each. Run it again after changing the protocol or the fixture keys
(src/lib.rs spells the same keys and symbols) and commit the result.

    python3 fuzz/make_seeds.py
"""

import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# As in src/lib.rs: the fixture's keys, so seeds get past authentication.
PARTNER_KEY = b"pb_fuzz_partner_0000000000000000000"
PUBLIC_RATE_KEY = b"pb_fuzz_public_rate_000000000000000"
PUBLIC_QUOTA_KEY = b"pb_fuzz_public_quota_00000000000000"
REVOKED_KEY = b"pb_fuzz_revoked_0000000000000000000"
UNKNOWN_KEY = b"pb_ffffffffffffffffffffffffffffffff"
LONG_SYMBOL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def get(target, *headers, method=b"GET", version=b"HTTP/1.1", body=b""):
    lines = [method + b" " + target + b" " + version, b"Host: api.example.com"]
    lines += list(headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def keyed(target, key=PARTNER_KEY, **kw):
    return get(target, b"X-API-Key: " + key, **kw)


def http_seeds():
    session = b'{"symbols":["BTC-USD","ETH-USD"]}'
    seeds = {
        # docs/protocol.md's requests, as written.
        "price": keyed(b"/v1/price?symbol=BTC-USD"),
        "price-sources": keyed(b"/v1/price?symbol=BTC-USD&sources=1"),
        "prices": keyed(b"/v1/prices?symbols=BTC-USD,ETH-USD"),
        "prices-missing": keyed(b"/v1/prices?symbols=BTC-USD,ETH-USD,FOO-BAR"),
        "usage": keyed(b"/v1/usage"),
        "usage-public": keyed(b"/v1/usage", key=PUBLIC_QUOTA_KEY),
        "health": get(b"/health"),
        "ready": get(b"/ready"),
        "bearer": get(b"/v1/price?symbol=ETH-USD", b"Authorization: Bearer " + PARTNER_KEY),
        "sessions": keyed(b"/v1/sessions", method=b"POST", body=session)
        .replace(b"\r\n\r\n", b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(session), 1),
        "stream": get(b"/v1/stream?session_id=abc123", b"Upgrade: websocket", b"Connection: Upgrade",
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13"),
        # Each error row of docs/protocol.md's table.
        "public-rate": keyed(b"/v1/price?symbol=BTC-USD", key=PUBLIC_RATE_KEY),
        "public-quota": keyed(b"/v1/price?symbol=BTC-USD", key=PUBLIC_QUOTA_KEY),
        "revoked": keyed(b"/v1/price?symbol=BTC-USD", key=REVOKED_KEY),
        "unknown-key": keyed(b"/v1/price?symbol=BTC-USD", key=UNKNOWN_KEY),
        "no-key": get(b"/v1/price?symbol=BTC-USD"),
        "key-in-query": get(b"/v1/price?symbol=BTC-USD&api_key=" + PARTNER_KEY),
        "unknown-symbol": keyed(b"/v1/price?symbol=FOO-BAR"),
        "stale": keyed(b"/v1/price?symbol=STALE-USD"),
        "never-written": keyed(b"/v1/price?symbol=NEVER-USD"),
        "extreme": keyed(b"/v1/price?symbol=EXTREME&sources=1"),
        "spread": keyed(b"/v1/price?symbol=spread&sources=true"),
        "long-symbol": keyed(b"/v1/price?symbol=" + LONG_SYMBOL + b"&sources=1"),
        "prices-all": keyed(b"/v1/prices?symbols=BTC-USD,ETH-USD,SOL-USD,STALE-USD,NEVER-USD,EXTREME,SPREAD,"
                            + LONG_SYMBOL + b",FOO-BAR"),
        "prices-101": keyed(b"/v1/prices?symbols=" + b",".join([b"BTC-USD"] * 101)),
        "prices-encoded": keyed(b"/v1/prices?symbols=btc-usd%2Ceth-usd"),
        "prices-empty-item": keyed(b"/v1/prices?symbols=BTC-USD,,ETH-USD"),
        "missing-param": keyed(b"/v1/price"),
        "bad-symbol": keyed(b"/v1/price?symbol=BTC%20USD"),
        "bad-percent": keyed(b"/v1/price?symbol=BTC%2"),
        "bad-sources": keyed(b"/v1/price?symbol=BTC-USD&sources=2"),
        "not-found": get(b"/v1/nothing"),
        "method": keyed(b"/v1/price?symbol=BTC-USD", method=b"DELETE"),
        "head": keyed(b"/v1/price?symbol=BTC-USD", method=b"HEAD"),
        # Connection handling and pipelining.
        "close": get(b"/health", b"Connection: close"),
        "http10": get(b"/health", version=b"HTTP/1.0"),
        "http10-keepalive": get(b"/health", b"Connection: keep-alive", version=b"HTTP/1.0"),
        "pipelined": keyed(b"/v1/price?symbol=BTC-USD") + keyed(b"/v1/prices?symbols=ETH-USD") + get(b"/health"),
        "pipelined-partial": get(b"/health") + b"GET /v1/price?symbol=BTC-USD HTTP/1.1\r\nX-API",
        # Malformed: each refusal of the reader.
        "partial": b"GET /v1/price?symbol=BTC-USD HTTP/1.1\r\nHost: x\r\n",
        "chunked": keyed(b"/v1/sessions", method=b"POST").replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 1),
        "two-lengths": get(b"/v1/sessions", b"Content-Length: 1", b"Content-Length: 2", method=b"POST", body=b"ab"),
        "bad-length": get(b"/v1/sessions", b"Content-Length: -1", method=b"POST"),
        "body-too-large": get(b"/v1/sessions", b"Content-Length: 999999", method=b"POST"),
        "too-many-headers": get(b"/health", *[b"X-H%d: v" % i for i in range(49)]),
        "long-header": get(b"/health", b"X-Pad: " + b"a" * 9000),
        "tls-hello": bytes.fromhex("160301020001000001fc0303") + bytes(32),
        "spdy": b"GET / SPDY/3\r\n\r\n",
        "no-colon": b"GET /health HTTP/1.1\r\nHost x\r\n\r\n",
        "lf-only": b"GET /health HTTP/1.1\nHost: x\n\n",
        "empty": b"",
    }
    return seeds


def datagram(request_id, key, symbol, pad_to=64):
    body = b"PB\x01\x01" + struct.pack(">I", request_id) + bytes([len(key)]) + key + bytes([len(symbol)]) + symbol
    return body + bytes(max(0, pad_to - len(body)))


def udp_seeds():
    good = datagram(0xDEADBEEF, PARTNER_KEY, b"BTC-USD")

    def with_byte(at, value):
        d = bytearray(good)
        d[at] = value
        return bytes(d)

    seeds = {
        "price": good,
        "price-eth": datagram(7, PARTNER_KEY, b"eth-usd"),
        "public-rate": datagram(1, PUBLIC_RATE_KEY, b"BTC-USD"),
        "public-quota": datagram(2, PUBLIC_QUOTA_KEY, b"BTC-USD"),
        "revoked": datagram(3, REVOKED_KEY, b"BTC-USD"),
        "unknown-key": datagram(4, UNKNOWN_KEY, b"BTC-USD"),
        "unknown-symbol": datagram(5, PARTNER_KEY, b"FOO-BAR"),
        "stale": datagram(6, PARTNER_KEY, b"STALE-USD"),
        "extreme": datagram(8, PARTNER_KEY, b"EXTREME"),
        "bad-symbol": datagram(9, PARTNER_KEY, b"BTC USD"),
        "long-symbol": datagram(10, PARTNER_KEY, LONG_SYMBOL),
        "key-16": datagram(11, b"k" * 16, b"BTC-USD"),
        "key-64": datagram(12, b"k" * 64, b"A"),
        "padded-200": datagram(13, PARTNER_KEY, b"BTC-USD", pad_to=200),
        # Malformed: each reason decode refuses.
        "short-63": good[:63],
        "empty": b"",
        "magic": with_byte(0, ord("X")),
        "version": with_byte(2, 2),
        "type-response": with_byte(3, 0x81),
        "key-len-15": with_byte(8, 15),
        "key-len-65": with_byte(8, 65),
        "symbol-len-0": with_byte(9 + len(PARTNER_KEY), 0),
        "symbol-len-33": with_byte(9 + len(PARTNER_KEY), 33),
        "symbol-past-end": with_byte(9 + len(PARTNER_KEY), 32),
        # A key length that runs past the end of a short datagram (the key, then the symbol
        # length byte): found by this fuzzer, kept so a fix stays fixed.
        "key-past-end": with_byte(8, 64),
        "symbol-len-past-end": with_byte(8, 55),
    }
    return seeds


def decimal_seeds():
    texts = [
        # docs/protocol.md's and the feeds' spellings.
        b"97123.45", b"97123.40", b"-12.340", b"0.000012", b"1.5e-3", b"240.5", b"3000",
        # Edges of the range.
        b"0", b"-0", b"+1", b"0.000000000000000001", b"1e18", b"1e-18", b"9223372036854775807",
        b"-9223372036854775807", b"922337203685477580.7", b"1.000000000000000000000000", b"100e-20",
        # Accepted, but written as 20 digits that parse refuses: found by this fuzzer.
        b"1e19",
        # Refused.
        b"9223372036854775808", b"1e-19", b"", b"-", b".", b"1.", b".5", b"1e", b"1e+", b"1e1000",
        b"1.2.3", b"abc", b"1_000", b" 1", b"1 ", b"0x10", b"NaN", b"inf",
    ]
    return {"d%02d" % i: t for i, t in enumerate(texts)}


def write(target, seeds):
    folder = os.path.join(HERE, "corpus", "seed-" + target)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def main():
    http = http_seeds()
    write("http_request", http)
    # http_respond's first byte says where the connection's bytes split into two reads: 255
    # delivers each seed in one read, 128 cuts it in the middle (a request split across reads).
    respond = {name: b"\xff" + data for name, data in http.items()}
    respond.update({name + "-split": b"\x80" + data for name, data in http.items()})
    write("http_respond", respond)
    write("udp_decode", udp_seeds())
    write("decimal_parse", decimal_seeds())


if __name__ == "__main__":
    main()
