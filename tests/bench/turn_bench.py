#!/usr/bin/env python3
"""TURN relay benchmark for scripts/bench-turn (not a test).

Parvis (`parvis turn`) and coturn 4.6 (Debian) measured in the same run with
the same load generator, coturn's `turnutils_uclient` (Send/Data indications,
echo peer `turnutils_peer`, all on loopback). Each message crosses the relay
twice (client -> peer, peer -> client). Reported per server and setting:
relayed datagrams/s, Mbit/s of payload, loss, server CPU time per relayed
datagram (the figure that is stable on a shared machine), RSS; then the
coturn/parvis ratios. Every run is bounded in packets and time.
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

from procstat import proc_stats

SECRET = "bench-secret-0123456789abcdef"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_udp_server(port):
    time.sleep(0.8)


def start_parvis(binary, work):
    port, tls = free_port(), free_port()
    data = os.path.join(work, f"parvis-{port}")
    os.makedirs(data)
    with open(os.path.join(data, "turn-secret"), "w") as f:
        f.write(SECRET + "\n")
    # one load-generator username holds every allocation: lift the per-user quota
    with open(os.path.join(data, "parvis.toml"), "w") as f:
        f.write("[turn]\nuser_quota = 1000\nrelay_port_min = 40000\nrelay_port_max = 49999\n")
    p = subprocess.Popen([binary, "turn", "--data", data, "--turn", f"127.0.0.1:{port}", "--turn-tls",
                          f"127.0.0.1:{tls}", "--turn-allow-loopback-peers", "--log", "warn"],
                         stdout=subprocess.DEVNULL, stderr=open(data + ".log", "w"))
    wait_udp_server(port)
    return p, port


def start_coturn(work):
    port = free_port()
    log = os.path.join(work, f"coturn-{port}.log")
    p = subprocess.Popen(["turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", "127.0.0.1",
                          "--listening-port", str(port), "--relay-ip", "127.0.0.1", "--min-port", "52000",
                          "--max-port", "52999", "--use-auth-secret", "--static-auth-secret", SECRET,
                          "--realm", "bench", "--allow-loopback-peers", "--log-file", log, "--simple-log"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_udp_server(port)
    return p, port


def run_load(port, peer_port, clients, messages, size):
    cmd = ["turnutils_uclient", "-s", "-c", "-W", SECRET, "-u", "bench", "-e", "127.0.0.1", "-r", str(peer_port),
           "-p", str(port), "-m", str(clients), "-n", str(messages), "-l", str(size), "-z", "0", "127.0.0.1"]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    wall = time.monotonic() - t0
    sent = recv = 0
    for m in re.finditer(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", out):
        sent, recv = int(m.group(1)), int(m.group(2))
    tt = re.findall(r"Total transmit time is (\d+)", out)
    return sent, recv, wall, (int(tt[-1]) if tt else None)


def measure(kind, binary, work, peer_port, clients, messages, size):
    p, port = start_parvis(binary, work) if kind == "parvis" else start_coturn(work)
    try:
        c0, _ = proc_stats(p.pid)
        sent, recv, wall, transmit = run_load(port, peer_port, clients, messages, size)
        c1, rss = proc_stats(p.pid)
    finally:
        p.terminate()
        p.wait(timeout=10)
    relayed = sent + recv  # client->peer and peer->client
    cpu = (c1 - c0) / 100.0
    secs = transmit if transmit else wall
    return {
        "server": kind, "clients": clients, "size": size, "sent": sent, "received": recv,
        "loss_pct": 100.0 * (sent - recv) / sent if sent else None,
        "relayed_per_s": relayed / secs if secs else None,
        "mbit_per_s": relayed * size * 8 / secs / 1e6 if secs else None,
        "cpu_s": cpu, "cpu_us_per_datagram": cpu * 1e6 / relayed if relayed else None,
        "rss_mib": rss / 1024,
    }


def main():
    binary = sys.argv[1]
    work = tempfile.mkdtemp(prefix="bench-turn-")
    peer_port = free_port()
    peer = subprocess.Popen(["turnutils_peer", "-L", "127.0.0.1", "-p", str(peer_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    rows = []
    try:
        for size in (100, 1200):
            for clients in (1, 10, 100):
                messages = max(50, 20000 // clients)
                for kind in ("parvis", "coturn"):
                    r = measure(kind, binary, work, peer_port, clients, messages, size)
                    print(json.dumps(r), flush=True)
                    rows.append(r)
    finally:
        peer.terminate()
    print("\nTURN relay, turnutils_uclient -s (Send/Data indications), loopback, echo peer")
    print(f"{'size':>5} {'allocs':>6} | {'parvis dgram/s':>14} {'loss%':>6} {'µs/dgram':>9} {'RSS MiB':>8} | "
          f"{'coturn dgram/s':>14} {'loss%':>6} {'µs/dgram':>9} {'RSS MiB':>8} | {'coturn/parvis µs':>16}")
    for i in range(0, len(rows), 2):
        p, c = rows[i], rows[i + 1]

        def f(x, fmt):
            return fmt.format(x) if isinstance(x, (int, float)) else "-"
        ratio = (c["cpu_us_per_datagram"] / p["cpu_us_per_datagram"]
                 if p["cpu_us_per_datagram"] and c["cpu_us_per_datagram"] else float("nan"))
        print(f"{p['size']:>5} {p['clients']:>6} | {f(p['relayed_per_s'], '{:.0f}'):>14} {f(p['loss_pct'], '{:.1f}'):>6} "
              f"{f(p['cpu_us_per_datagram'], '{:.1f}'):>9} {p['rss_mib']:>8.1f} | {f(c['relayed_per_s'], '{:.0f}'):>14} "
              f"{f(c['loss_pct'], '{:.1f}'):>6} {f(c['cpu_us_per_datagram'], '{:.1f}'):>9} {c['rss_mib']:>8.1f} | {ratio:>16.2f}")


if __name__ == "__main__":
    main()
