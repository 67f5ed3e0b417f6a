"""Files benchmark (not a test; scripts/bench-files runs it).

In the same run, on the same disk, over TLS on loopback:
- upload and download of one big file (BENCH_MB, default 1024 MiB):
  Parvis (one tus PATCH, then GET from its download origin) against nginx
  (Debian's, WebDAV PUT and static GET), with the server's peak RSS growth;
- previews of photos (BENCH_PHOTOS, default 5, 4000x3000 JPEG): Parvis's
  two previews (the time its completing PATCH takes beyond the same bytes
  as a non-image) against ImageMagick's `convert -thumbnail` making both.
Medians of BENCH_REPS runs (default 3), printed as JSON lines, a table and
same-run ratios. Parvis fsyncs an upload before acknowledging it; nginx
does not: the ratio includes that durability.
"""

import base64
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client

sys.path.insert(0, os.path.dirname(__file__))
from procstat import proc_stats  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/x86_64-unknown-linux-gnu/release"
MB = int(os.environ.get("BENCH_MB", "1024"))
REPS = int(os.environ.get("BENCH_REPS", "3"))
PHOTOS = int(os.environ.get("BENCH_PHOTOS", "5"))
CHUNK = 1 << 20


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, secs=20):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


class Peak:
    """Peak RSS growth of a process while a block runs (sampled every 20 ms)."""

    def __init__(self, pid):
        self.pid, self.base, self.peak, self.run = pid, proc_stats(pid)[1], 0, True

    def __enter__(self):
        def sample():
            while self.run:
                self.peak = max(self.peak, proc_stats(self.pid)[1])
                time.sleep(0.02)
        self.t = threading.Thread(target=sample, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *a):
        self.run = False
        self.t.join()
        self.grew_mib = max(0, self.peak - self.base) / 1024


def conn(port):
    return http.client.HTTPSConnection("127.0.0.1", port, context=CTX, timeout=600)


def put_file(port, path, url, headers):
    """Streams a file as a request body; (status, response headers, seconds)."""
    c = conn(port)
    size = os.path.getsize(path)
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        c.request(headers.pop("_method", "PUT"), url, body=f, headers={**headers, "Content-Length": str(size)}, encode_chunked=False)
        r = c.getresponse()
        r.read()
    dt = time.perf_counter() - t0
    c.close()
    return r.status, dict(r.getheaders()), dt


def get_file(port, url):
    c = conn(port)
    t0 = time.perf_counter()
    c.request("GET", url)
    r = c.getresponse()
    n = 0
    while True:
        b = r.read(CHUNK)
        if not b:
            break
        n += len(b)
    dt = time.perf_counter() - t0
    c.close()
    return r.status, n, dt


class Parvis:
    def __init__(self, work):
        self.data = os.path.join(work, "parvis-data")
        self.https, self.downloads = free_port(), free_port()
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "parvis"), "serve", "--no-mdns", "--log", "warn", "--data", self.data,
             "--https", f"127.0.0.1:{self.https}", "--http", f"127.0.0.1:{free_port()}",
             "--downloads", f"127.0.0.1:{self.downloads}",
             "--turn", f"127.0.0.1:{free_port()}", "--turn-tls", f"127.0.0.1:{free_port()}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.https)
        code = open(os.path.join(self.data, "setup-code")).read().strip()
        r = self.api("POST", "/api/setup", {"code": code, "company": "Bench", "username": "alice",
                                             "display_name": "Alice", "password": "password-1"})
        self.csrf = r["csrf"]
        self.room = self.api("POST", "/api/rooms", {"name": "Bench", "visibility": "invite"})["id"]

    def api(self, method, path, body=None, headers=None):
        c = conn(self.https)
        h = {"Host": f"localhost:{self.https}", **(headers or {})}
        if hasattr(self, "cookie"):
            h["Cookie"] = self.cookie
            h["X-CSRF-Token"] = self.csrf
        data = None
        if body is not None:
            data = json.dumps(body)
            h["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        text = r.read()
        for k, v in r.getheaders():
            if k.lower() == "set-cookie" and v.startswith("parvis_session="):
                self.cookie = v.split(";")[0]
        self.last = r
        return json.loads(text) if text else None

    def upload(self, path, name):
        """tus creation and one PATCH of the whole file: (upload id, PATCH seconds)."""
        meta = "filename " + base64.b64encode(name.encode()).decode()
        self.api("POST", f"/api/rooms/{self.room}/uploads", None,
                 {"Tus-Resumable": "1.0.0", "Upload-Length": str(os.path.getsize(path)), "Upload-Metadata": meta})
        loc = self.last.getheader("Location")
        st, _, dt = put_file(self.https, path, loc, {
            "_method": "PATCH", "Host": f"localhost:{self.https}", "Cookie": self.cookie, "X-CSRF-Token": self.csrf,
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
        assert st == 204, st
        return loc.rsplit("/", 1)[1], dt

    def send(self, upload):
        """A message carrying the upload, over a minimal WebSocket client."""
        raw = socket.create_connection(("127.0.0.1", self.https))
        s = CTX.wrap_socket(raw, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /api/ws HTTP/1.1\r\nHost: localhost:{self.https}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: https://localhost:{self.https}\r\n"
                   f"Cookie: {self.cookie}\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        assert b" 101 " in buf.split(b"\r\n")[0], buf[:80]

        def frame(text):
            p = text.encode()
            mask = os.urandom(4)
            head = bytes([0x81]) + (bytes([0x80 | len(p)]) if len(p) < 126 else bytes([0xFE]) + len(p).to_bytes(2, "big"))
            s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(p)))
        frame(json.dumps({"t": "sync", "since": {}}))
        frame(json.dumps({"t": "send", "id": "b" + upload[:20], "room": self.room, "body": "", "files": [upload]}))
        end = time.time() + 10
        data = b""
        while b'"ack"' not in data and time.time() < end:
            data += s.recv(65536)
        s.close()
        page = self.api("GET", f"/api/rooms/{self.room}/files?limit=1")
        f = page["files"][0]
        return f"{page['link']['prefix']}/{f['id']}/x"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Nginx:
    def __init__(self, work, cert, key):
        self.root = os.path.join(work, "nginx")
        for d in ("www", "tmp"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        self.port = free_port()
        conf = os.path.join(self.root, "nginx.conf")
        user = "user root;\n" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(f"""{user}worker_processes 1;
pid {self.root}/nginx.pid;
error_log {self.root}/error.log;
events {{}}
http {{
  access_log off;
  client_body_temp_path {self.root}/tmp;
  client_max_body_size 0;
  sendfile on;
  server {{
    listen 127.0.0.1:{self.port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    root {self.root}/www;
    location / {{ dav_methods PUT DELETE; create_full_put_path on; }}
  }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        time.sleep(0.3)
        kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        self.worker = int(kids[0]) if kids else self.proc.pid

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def median(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    if not shutil.which("nginx"):
        raise SystemExit("nginx is missing (apt-get install nginx)")
    work = os.path.abspath(tempfile.mkdtemp(prefix="parvis-bench-files-", dir=os.environ.get("BENCH_DIR", "target")))
    try:
        big = os.path.join(work, "big.bin")
        with open(big, "wb") as f:
            for _ in range(MB):
                f.write(os.urandom(CHUNK))
        p = Parvis(work)
        n = Nginx(work, os.path.join(p.data, "tls", "server.pem"), os.path.join(p.data, "tls", "server.key"))
        runs = []
        for rep in range(REPS):
            with Peak(p.proc.pid) as up:
                upload, p_up = p.upload(big, f"big-{rep}.bin")
            url = p.send(upload)
            with Peak(p.proc.pid) as down:
                st, got, p_down = get_file(p.downloads, url)
            assert st == 200 and got == MB * CHUNK, (st, got)
            with Peak(n.worker) as nup:
                st, _, n_up = put_file(n.port, big, f"/big-{rep}.bin", {"Host": "localhost"})
            assert st in (201, 204), st
            with Peak(n.worker) as ndown:
                st, got, n_down = get_file(n.port, f"/big-{rep}.bin")
            assert st == 200 and got == MB * CHUNK, (st, got)
            run = {"rep": rep, "mib": MB,
                   "parvis_up_mib_s": MB / p_up, "nginx_up_mib_s": MB / n_up,
                   "parvis_down_mib_s": MB / p_down, "nginx_down_mib_s": MB / n_down,
                   "parvis_up_rss_mib": up.grew_mib, "nginx_up_rss_mib": nup.grew_mib,
                   "parvis_down_rss_mib": down.grew_mib, "nginx_down_rss_mib": ndown.grew_mib}
            print(json.dumps(run), flush=True)
            runs.append(run)
            os.remove(os.path.join(n.root, "www", f"big-{rep}.bin"))
        n.stop()
        os.remove(big)

        # previews: Parvis's completing PATCH beyond the same bytes as a non-image, against ImageMagick
        thumbs = []
        if shutil.which("convert") and subprocess.run(["convert", "-version"], capture_output=True).returncode == 0:
            for i in range(PHOTOS):
                photo = os.path.join(work, f"photo-{i}.jpg")
                subprocess.run(["convert", "-seed", str(i + 1), "-size", "4000x3000", "plasma:fractal", "-quality", "90", photo], check=True)
                plain = os.path.join(work, f"plain-{i}.bin")
                with open(photo, "rb") as f, open(plain, "wb") as g:
                    b = bytearray(f.read())
                    b[0:3] = b"\0\0\0"  # no longer a JPEG: stored, not previewed
                    g.write(b)
                _, with_previews = p.upload(photo, f"photo-{i}.jpg")
                _, without = p.upload(plain, f"plain-{i}.bin")
                t0 = time.perf_counter()
                subprocess.run(["convert", photo, "-auto-orient", "-thumbnail", "1280x1280", "-write", os.path.join(work, "t1280.jpg"),
                                "-thumbnail", "320x320", os.path.join(work, "t320.jpg")], check=True)
                im = time.perf_counter() - t0
                t = {"photo": i, "parvis_preview_ms": max(0.0, with_previews - without) * 1000, "imagemagick_ms": im * 1000}
                print(json.dumps(t), flush=True)
                thumbs.append(t)
        else:
            print("ImageMagick is missing (apt-get install imagemagick): no preview figures", flush=True)
        p.stop()

        print(f"\n{MB} MiB over TLS on loopback, same disk, medians of {REPS}:")
        print(f"{'':24}{'Parvis':>10}{'nginx':>10}{'ratio':>8}")
        for what, key in [("upload MiB/s", "up_mib_s"), ("download MiB/s", "down_mib_s"),
                          ("upload RSS +MiB", "up_rss_mib"), ("download RSS +MiB", "down_rss_mib")]:
            a, b = median(runs, "parvis_" + key), median(runs, "nginx_" + key)
            ratio = f"{a / b:.2f}" if b > 0.05 else "-"
            print(f"{what:24}{a:>10.1f}{b:>10.1f}{ratio:>8}")
        if thumbs:
            a, b = median(thumbs, "parvis_preview_ms"), median(thumbs, "imagemagick_ms")
            print(f"\nPreviews of a 4000x3000 JPEG (320 and 1280 px), medians of {len(thumbs)}:")
            print(f"  Parvis {a:.0f} ms, ImageMagick convert {b:.0f} ms, ratio {a / b:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
