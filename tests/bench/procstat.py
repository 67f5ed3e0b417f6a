"""Reading a process's CPU time and memory from /proc (benchmarks only)."""


def proc_stats(pid):
    """(utime + stime in clock ticks, VmRSS in KiB) of process `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return ticks, rss
