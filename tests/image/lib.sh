# Shared by the image boot tests (sourced): TAP counters, a free loopback
# port, waiting for HTTPS through QEMU's forwarded port, hard power-off.
# The caller sets $work, $https and starts QEMU with $qemu_pid, $started.
pass=0; fail=0; n=0
qemu_pid=
ok() { n=$((n+1)); pass=$((pass+1)); echo "ok $n - $*"; }
not_ok() { n=$((n+1)); fail=$((fail+1)); echo "not ok $n - $*"; }
# A port below the kernel's ephemeral range (no outgoing connection takes it
# meanwhile), never one this test already picked ($ports).
ports=
free_port() {
  python3 - $ports <<'PY'
import random, socket, sys
taken = set(map(int, sys.argv[1:]))
for _ in range(1000):
    port = random.randrange(12000, 32000)
    if port in taken:
        continue
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
        print(port)
        break
    except OSError:
        pass
PY
}
pick_port() { eval "$1=\$(free_port)"; ports="$ports ${!1}"; }
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

# The CSRF token in setup's answer ($1).
csrf_of() { echo "$1" | sed -n 's/.*"csrf":"\([^"]*\)".*/\1/p'; }

# The admin's API call, with the session setup() left and $csrf (JSON, or
# $type); curl arguments follow.
api() {
  curl -sk --max-time 60 -b "$work/cookies" -H "x-csrf-token: $csrf" -H "content-type: ${type:-application/json}" \
    -H "origin: https://127.0.0.1:$https" "$@"
}

finish() {
  echo "1..$n"
  echo "# pass $pass"
  echo "# fail $fail"
  [ "$fail" = 0 ]
}

# Size in MiB of the ext4 filesystem at byte $2 of image $1 (superblock).
ext4_mib() {
  python3 - "$1" "$2" <<'PY'
import struct, sys
with open(sys.argv[1], 'rb') as f:
    f.seek(int(sys.argv[2]) + 1024)
    sb = f.read(1024)
assert sb[0x38:0x3A] == b'\x53\xef', 'no ext4 superblock'
lo, log = struct.unpack_from('<I', sb, 4)[0], struct.unpack_from('<I', sb, 0x18)[0]
hi = struct.unpack_from('<I', sb, 0x150)[0] if struct.unpack_from('<I', sb, 0x60)[0] & 0x80 else 0
print(((hi << 32) | lo) * (1024 << log) >> 20)
PY
}

# "start size" in MiB of partition $2 of image $1.
part_mib() { sfdisk -J "$1" | python3 -c "import json,sys; p=json.load(sys.stdin)['partitiontable']['partitions'][$2-1]; print(p['start']*512>>20, p['size']*512>>20)"; }

# Checks, after a first boot on a disk of $3 MiB made from a smaller image:
# partition $2 of $1 and its filesystem fill the disk ($4: MiB left at the end).
check_grown() {
  local sm fs
  sm=$(part_mib "$1" "$2"); fs=$(ext4_mib "$1" $(( ${sm% *} << 20 )))
  if [ $(( ${sm% *} + ${sm#* } )) = $(( $3 - $4 )) ] && [ "$fs" = "${sm#* }" ] && sfdisk -V "$1" >/dev/null 2>&1; then
    ok "first boot grew the data partition and its filesystem to the disk: ${sm#* } MiB ($(grep -aho 'data grown.*MiB' "$work"/console*.log | head -1 | tr -d '\r'))"
  else
    not_ok "data partition after first boot: start/size ${sm} MiB, filesystem ${fs} MiB, disk $3 MiB; $(sfdisk -V "$1" 2>&1 | tr '\n' ' ')"
  fi
}
