# Shared by the image boot tests (sourced): TAP counters, a free loopback
# port, waiting for HTTPS through QEMU's forwarded port, hard power-off.
# The caller sets $work, $https and starts QEMU with $qemu_pid, $started.
pass=0; fail=0; n=0
qemu_pid=
ok() { n=$((n+1)); pass=$((pass+1)); echo "ok $n - $*"; }
not_ok() { n=$((n+1)); fail=$((fail+1)); echo "not ok $n - $*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() { [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }

wait_https() {  # seconds until /api/status answers over HTTPS (max 240 s; $1: a text it must hold)
  for _ in $(seq 1 480); do
    if curl -sk --max-time 2 "https://127.0.0.1:$https/api/status" > "$work/status.json" 2>/dev/null && grep -q "${1:-setup_needed}" "$work/status.json"; then
      echo $(( $(date +%s) - started )); return 0
    fi
    kill -0 "$qemu_pid" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

poweroff() { kill -9 "$qemu_pid" 2>/dev/null; wait "$qemu_pid" 2>/dev/null; qemu_pid=; }

setup_code() { grep -ao 'setup code [A-Z0-9]\{4\}-[A-Z0-9]\{4\}' "$1" | head -1 | awk '{print $3}'; }

setup() {  # $1: setup code, $2: company; prints the answer (cookies in $work/cookies)
  curl -sk --max-time 20 -c "$work/cookies" -H 'content-type: application/json' -H "origin: https://127.0.0.1:$https" \
    -d "{\"code\":\"$1\",\"company\":\"$2\",\"username\":\"alice\",\"display_name\":\"Alice\",\"password\":\"password-1\"}" \
    "https://127.0.0.1:$https/api/setup"
}

finish() {
  echo "1..$n"
  echo "# pass $pass"
  echo "# fail $fail"
  [ "$fail" = 0 ]
}
