#!/usr/bin/env python3
"""TURN relay benchmark for scripts/bench-turn (not a test).

In one run, with one load generator (`turn-load`, ChannelData over UDP, a
closed loop of W datagrams in flight per allocation, all on loopback):
- a trivial UDP forwarder (`udp-forward`): the physical limit;
- Parvis (`parvis turn`);
- coturn 4.6 (Debian);
- turn-rs (crate turn-server, client-to-client only), when built
  (scripts/bench-turn builds it).
Echo mode: client -> relay -> echo peer -> relay -> client. Pairs mode:
client -> relay -> relay -> client, for the servers that relay between their
own clients (turn-rs can do only that). Every datagram received by the tool
crossed the server once: "relayed". Reported per server and setting, medians
of R repetitions: relayed datagrams/s, Mbit/s of payload, loss, server CPU
time per relayed datagram (stable on a shared machine), RSS; then ratios.
Finally RSS with 1,000 idle allocations. Every run is bounded in time.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from procstat import proc_stats

SECRET = "bench-secret-0123456789abcdef"
SECS = float(os.environ.get("BENCH_SECS", "3"))
REPS = int(os.environ.get("BENCH_REPS", "3"))


def free_port(kind=socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Bench:
    def __init__(self, bindir, turnrs):
        self.bindir, self.turnrs = bindir, turnrs
        self.work = tempfile.mkdtemp(prefix="bench-turn-")

    def start(self, kind, echo_port):
        port = free_port()
        log = open(os.path.join(self.work, f"{kind}-{port}.log"), "w")
        if kind == "forwarder":
            cmd = [os.path.join(self.bindir, "udp-forward"), "--listen", f"127.0.0.1:{port}", "--to", f"127.0.0.1:{echo_port}"]
        elif kind == "parvis":
            data = os.path.join(self.work, f"parvis-{port}")
            os.makedirs(data)
            with open(os.path.join(data, "turn-secret"), "w") as f:
                f.write(SECRET + "\n")
            # one load-generator username holds every allocation: lift the quotas
            with open(os.path.join(data, "parvis.toml"), "w") as f:
                f.write("[turn]\nuser_quota = 2000\ntotal_quota = 2000\nrelay_port_min = 40000\nrelay_port_max = 49999\n")
            cmd = [os.path.join(self.bindir, "parvis"), "turn", "--data", data, "--turn", f"127.0.0.1:{port}",
                   "--turn-tls", f"127.0.0.1:{free_port(socket.SOCK_STREAM)}", "--turn-allow-loopback-peers",
                   "--log", "warn"]
        elif kind == "coturn":
            cmd = ["turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", "127.0.0.1",
                   "--listening-port", str(port), "--relay-ip", "127.0.0.1", "--min-port", "52000",
                   "--max-port", "54999", "--use-auth-secret", "--static-auth-secret", SECRET, "--realm", "bench",
                   "--allow-loopback-peers", "--log-file", log.name + ".coturn", "--simple-log"]
        elif kind == "turn-rs":
            conf = os.path.join(self.work, f"turn-rs-{port}.toml")
            with open(conf, "w") as f:
                f.write(f'[server]\nrealm = "bench"\nport-range = "55000..57999"\n'
                        f'[[server.interfaces]]\ntransport = "udp"\nlisten = "127.0.0.1:{port}"\n'
                        f'external = "127.0.0.1:{port}"\n[log]\nlevel = "error"\n'
                        f'[auth]\nstatic-auth-secret = "{SECRET}"\n')
            cmd = [self.turnrs, "--config", conf]
        else:
            raise ValueError(kind)
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(0.6)
        if p.poll() is not None:
            raise RuntimeError(f"{kind} exited: see {log.name}")
        return p, port

    def load(self, port, echo_port, allocs, size, mode, hold=0.0, secs=SECS):
        cmd = [os.path.join(self.bindir, "turn-load"), "--server", f"127.0.0.1:{port}", "--allocs", str(allocs),
               "--size", str(size), "--secs", str(secs), "--hold", str(hold)]
        if mode == "raw":
            cmd += ["--raw", "--echo-port", str(echo_port)]
        elif mode == "echo":
            cmd += ["--secret", SECRET, "--echo-port", str(echo_port)]
        else:
            cmd += ["--secret", SECRET, "--pairs"]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)

    def measure(self, kind, allocs, size, mode):
        echo_port = free_port()
        p, port = self.start(kind, echo_port)
        try:
            hold = 1.0
            gen = self.load(port, echo_port, allocs, size, mode, hold=hold)
            time.sleep(hold * 0.8)  # set-up done, traffic about to start
            c0, _ = proc_stats(p.pid)
            out, _ = gen.communicate(timeout=120 + SECS)
            c1, rss = proc_stats(p.pid)
        finally:
            p.terminate()
            p.wait(timeout=10)
        r = json.loads(out.strip().splitlines()[-1])
        relayed = r["received"]
        cpu = (c1 - c0) / 100.0
        return {
            "server": kind, "mode": mode, "allocs": allocs, "size": size,
            "relayed_per_s": relayed / r["secs"], "mbit_per_s": relayed * size * 8 / r["secs"] / 1e6,
            "loss_pct": r["loss_pct"], "cpu_us_per_datagram": cpu * 1e6 / relayed if relayed else None,
            "rss_mib": rss / 1024,
        }

    def median(self, kind, allocs, size, mode):
        runs = [self.measure(kind, allocs, size, mode) for _ in range(REPS)]
        for r in runs:
            print(json.dumps(r), flush=True)
        m = dict(runs[0])
        for k in ("relayed_per_s", "mbit_per_s", "loss_pct", "cpu_us_per_datagram", "rss_mib"):
            vals = [r[k] for r in runs if r[k] is not None]
            m[k] = statistics.median(vals) if vals else None
        return m

    def idle_rss(self, kind, allocs):
        echo_port = free_port()
        p, port = self.start(kind, echo_port)
        try:
            gen = self.load(port, echo_port, allocs, 100, "echo", hold=4.0, secs=0.5)
            deadline = time.monotonic() + 60
            peak = 0
            while gen.poll() is None and time.monotonic() < deadline:
                peak = max(peak, proc_stats(p.pid)[1])
                time.sleep(0.2)
            gen.communicate(timeout=60)
            return peak / 1024
        finally:
            p.terminate()
            p.wait(timeout=10)


def fmt(x, f="{:.0f}"):
    return f.format(x) if isinstance(x, (int, float)) else "-"


def main():
    bindir, turnrs = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
    b = Bench(bindir, turnrs)
    table = []
    for size in (100, 1200):
        for allocs in (1, 10, 100):
            row = {k: b.median(k, allocs, size, "raw" if k == "forwarder" else "echo")
                   for k in ("forwarder", "parvis", "coturn")}
            table.append(("echo", size, allocs, row))
    pair_servers = ["parvis", "coturn"] + (["turn-rs"] if turnrs and os.path.exists(turnrs) else [])
    for size in (100, 1200):
        row = {k: b.median(k, 100, size, "pairs") for k in pair_servers}
        table.append(("pairs", size, 100, row))
    rss = {k: b.idle_rss(k, 1000) for k in ("parvis", "coturn")}

    print(f"\nTURN relay, turn-load (ChannelData over UDP, 8 in flight per allocation), loopback, medians of {REPS} x {SECS:.0f} s")
    print("relayed = datagrams through the server per second; µs = server CPU per relayed datagram")
    head = f"{'mode':>5} {'size':>5} {'allocs':>6} | {'server':>9} {'relayed/s':>10} {'Mbit/s':>7} {'loss%':>6} {'µs':>5} {'RSS MiB':>7}"
    print(head)
    for mode, size, allocs, row in table:
        for k, r in row.items():
            print(f"{mode:>5} {size:>5} {allocs:>6} | {k:>9} {fmt(r['relayed_per_s']):>10} {fmt(r['mbit_per_s']):>7} "
                  f"{fmt(r['loss_pct'], '{:.2f}'):>6} {fmt(r['cpu_us_per_datagram'], '{:.2f}'):>5} {r['rss_mib']:>7.1f}")
    print("\nratios (Parvis against each peer, same run)")
    print(f"{'mode':>5} {'size':>5} {'allocs':>6} | {'rate vs coturn':>14} {'rate vs fwd':>11} {'rate vs turn-rs':>15} {'coturn µs / Parvis µs':>21}")
    for mode, size, allocs, row in table:
        p = row["parvis"]

        def rate(k):
            return p["relayed_per_s"] / row[k]["relayed_per_s"] if k in row and row[k]["relayed_per_s"] else None
        cpu = (row["coturn"]["cpu_us_per_datagram"] / p["cpu_us_per_datagram"]
               if p["cpu_us_per_datagram"] and row["coturn"]["cpu_us_per_datagram"] else None)
        print(f"{mode:>5} {size:>5} {allocs:>6} | {fmt(rate('coturn'), '{:.2f}x'):>14} {fmt(rate('forwarder'), '{:.0%}'):>11} "
              f"{fmt(rate('turn-rs'), '{:.2f}x'):>15} {fmt(cpu, '{:.2f}x'):>21}")
    print(f"\nRSS with 1,000 allocations: Parvis {rss['parvis']:.1f} MiB, coturn {rss['coturn']:.1f} MiB")


if __name__ == "__main__":
    main()
