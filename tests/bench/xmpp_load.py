#!/usr/bin/env python3
"""Load generator for the benchmark peer (Prosody MUC) in scripts/bench-chat.

Same shape and same figures as tests/src/bin/chat-load.rs: N clients in rooms
of M members, R groupchat messages/s in aggregate for D seconds; latency from
send to every other member, deliveries/s, the server's CPU time and RSS read
from /proc. Plain asyncio, SASL PLAIN over loopback (no TLS, as the peer
setup in shared/notes/CHAT-BENCH.md).

Usage: xmpp_load.py --port P --pid PID --clients N --room-size M --rate R --secs D
"""
import argparse
import asyncio
import base64
import json
import random
import re
import time

from procstat import proc_stats

NS_STREAM = ("<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
             "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
BODY = re.compile(rb"<message[^>]*from=['\"]([^'\"]+)['\"][^>]*>.*?<body>bench (\d+)</body>", re.S)


async def read_until(reader, buf, marker):
    while marker not in buf:
        chunk = await asyncio.wait_for(reader.read(65536), 30)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    idx = buf.index(marker) + len(marker)
    return buf[:idx], buf[idx:]


class Client:
    def __init__(self, i, room, port, start):
        self.i, self.room, self.port, self.start = i, room, port, start
        self.nick = f"room{room}@conference.localhost/u{i}".encode()
        self.lat = []

    async def connect(self):
        r, w = await asyncio.open_connection("127.0.0.1", self.port)
        self.r, self.w = r, w
        buf = b""
        w.write(NS_STREAM.encode())
        _, buf = await read_until(r, buf, b"</stream:features>")
        cred = base64.b64encode(f"\0u{self.i}\0pw".encode()).decode()
        w.write(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{cred}</auth>".encode())
        await read_until(r, buf, b"<success")
        buf = b""  # the rest of <success/> may trail; the next marker comes later
        w.write(NS_STREAM.encode())
        _, buf = await read_until(r, buf, b"</stream:features>")
        w.write(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                b"<resource>r</resource></bind></iq>")
        _, buf = await read_until(r, buf, b"</iq>")
        w.write(f"<presence to='room{self.room}@conference.localhost/u{self.i}'>"
                "<x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>".encode())
        _, buf = await read_until(r, buf, b"code='110'")
        self.buf = buf

    def send(self, now_ns):
        self.w.write(f"<message to='room{self.room}@conference.localhost' type='groupchat'>"
                     f"<body>bench {now_ns}</body></message>".encode())

    async def read_loop(self, counter):
        buf = self.buf
        while True:
            chunk = await self.r.read(65536)
            if not chunk:
                return
            buf += chunk
            now = time.monotonic_ns() - self.start
            last = 0
            for m in BODY.finditer(buf):
                last = m.end()
                if m.group(1) == self.nick:
                    continue
                self.lat.append((now - int(m.group(2))) // 1000)
                counter[0] += 1
            if last:
                buf = buf[last:]
            elif len(buf) > 1 << 20:
                buf = buf[-65536:]


async def main():
    ap = argparse.ArgumentParser()
    for k, d in [("port", 5222), ("pid", 0), ("clients", 1000), ("room-size", 50), ("secs", 15)]:
        ap.add_argument("--" + k, type=int, default=d)
    ap.add_argument("--rate", type=float, default=500.0)
    a = ap.parse_args()
    start = time.monotonic_ns()
    _, rss_empty = proc_stats(a.pid)
    clients = [Client(i, i // a.room_size, a.port, start) for i in range(a.clients)]
    sem = asyncio.Semaphore(50)

    async def conn(c):
        async with sem:
            await c.connect()
    await asyncio.gather(*(conn(c) for c in clients))
    counter = [0]
    readers = [asyncio.ensure_future(c.read_loop(counter)) for c in clients]
    await asyncio.sleep(2)
    _, rss_idle = proc_stats(a.pid)
    cpu0, _ = proc_stats(a.pid)
    total = int(a.rate * a.secs)
    t0 = time.monotonic()
    rss_peak = rss_idle
    rnd = random.Random(7)
    for n in range(total):
        due = t0 + n / a.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        rnd.choice(clients).send(time.monotonic_ns() - start)
        if n % 500 == 0:
            rss_peak = max(rss_peak, proc_stats(a.pid)[1])
    send_secs = time.monotonic() - t0
    sizes = {}
    for c in clients:
        sizes[c.room] = sizes.get(c.room, 0) + 1
    expected = int(total * (sum(sizes.values()) / len(sizes) - 1))
    until = time.monotonic() + 15
    while counter[0] < expected and time.monotonic() < until:
        await asyncio.sleep(0.05)
    wall = time.monotonic() - t0
    cpu1, rss_after = proc_stats(a.pid)
    lat = sorted(x for c in clients for x in c.lat)

    def pct(p):
        return lat[round((len(lat) - 1) * p)] / 1000 if lat else None
    cpu_s = (cpu1 - cpu0) / 100
    got = counter[0]
    print(json.dumps({
        "server": "prosody", "clients": a.clients, "room_size": a.room_size, "rate": a.rate, "secs": a.secs,
        "sent": total, "send_secs": send_secs, "deliveries": got, "expected": expected,
        "lost": max(0, expected - got), "deliveries_per_s": got / wall,
        "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0),
        "cpu_s": cpu_s, "cpu_us_per_delivery": cpu_s * 1e6 / max(got, 1),
        "rss_empty_mib": rss_empty / 1024, "rss_idle_mib": rss_idle / 1024,
        "rss_peak_mib": max(rss_peak, rss_after) / 1024,
    }))
    for t in readers:
        t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
