#!/usr/bin/env python3
"""Load benchmark: pusher-dual-auth vs nginx's single exchange and the Node/Express
reference, side by side, in one run.

nginx (Debian) answers the session check (over TCP, and over a Unix socket for the
`session_check.unix_socket` variant); wrk (Debian) drives each target in turn on
loopback with the same script (every request another socket, channel and user).
The baseline is nginx answering that check itself: one HTTP exchange, what an
auth callback costs at best. It is measured right before and right after every
target (bracketing), and a target's ratio is against the mean of the two: this
machine's speed drifts by tens of percent within a minute (shared host), so a
baseline taken once at the start misstates targets measured later. ROUNDS rounds;
the figures printed are medians over them. Prints req/s, p50/p99, non-2xx, peak
RSS, server CPU per request, how often the server lost its core per request
(involuntary context switches), the ratios and the targets. Beside the service
runs its floor (examples/floor_proxy.rs): the same crates making the same two
exchanges with no work at all. What the service costs over the floor is its own
code; a target the floor misses is out of reach of that code. --instructions and
--floor also run the protocol floor (examples/protocol_floor.rs): the floor plus
the protocol's own work (form, check JSON, host JSON, HMAC, answer JSON) and no
safety; what the service costs over it is what its safety and operations cost.

    python3 bench/load.py            # ROUNDS=3 DURATION=5 CONNECTIONS=64 THREADS=2 by default
    python3 bench/load.py --guard    # CI: one round, debug build; exit 1 if the service's CPU
                                     # per request exceeds GUARD_RATIO x nginx's (bracketed)
    python3 bench/load.py --syscalls # syscalls per request (strace -c -f): nginx's one
                                     # exchange, the service over TCP and over a Unix socket
    python3 bench/load.py --instructions  # user-space instructions per authorization
                                     # (callgrind): repeatable where CPU time is not
    BENCH_USER_AGENT="Mozilla/5.0 ..." python3 bench/load.py [--instructions]  # each request
                                     # with that User-Agent (none by default)
    SERVICE_BIN=/path/to/other/build python3 bench/load.py [--instructions]  # before/after
    python3 bench/load.py --tracing  # CPU per authorization with [telemetry] absent, on at
                                     # sample_ratio 0, on at 1 (exported to an OTLP stub);
                                     # BEFORE_BIN=/path/to/build adds the build before tracing
    python3 bench/load.py --tracing --instructions  # the same four as instructions (callgrind)
    python3 bench/load.py --floor    # only the service and its floor, 1 and 2 workers, one
                                     # after the other in each round (order reversed every
                                     # other round): the median of each round's ratio,
                                     # and the protocol floor's to the floor
    BEFORE_BIN=/path/to/other/build python3 bench/load.py --floor  # that build beside the
                                     # service in each round, against the same floors
"""
import hashlib, hmac, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATION = int(os.environ.get("DURATION", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "64"))
THREADS = int(os.environ.get("THREADS", "2"))
CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def need(cmd, package):
    if shutil.which(cmd) is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], check=True)


def service_binary(profile):
    """The service to measure: SERVICE_BIN if set, else this checkout built for `profile`
    ("debug" or "release")."""
    if os.environ.get("SERVICE_BIN"):
        return os.environ["SERVICE_BIN"]
    release = ["--release"] if profile == "release" else []
    subprocess.run(["cargo", "build", "--locked", "--bin", "pusher-dual-auth", *release], cwd=ROOT, check=True)
    return os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), profile, "pusher-dual-auth")


def wait_ready(url, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{url}: the server exited with {proc.returncode}")
        try:
            req = urllib.request.Request(url, data=b"socket_id=1.1&channel_name=private-ready",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            with urllib.request.urlopen(req, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{url} not ready")


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            pass
    return out


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except FileNotFoundError:
            pass
    return total / CLK


def peak_rss_mib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
            total += int(m.group(1)) if m else 0
        except FileNotFoundError:
            pass
    return total / 1024


def preemptions(pids):
    """Involuntary context switches of every thread of `pids`: each one is the
    process losing its core to another task (here: the wrk or nginx it just woke)."""
    total = 0
    for p in pids:
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/status") as f:
                    m = re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", f.read())
                total += int(m.group(1)) if m else 0
        except FileNotFoundError:
            pass
    return total


def wrk(url, seconds, threads=THREADS, connections=CONNECTIONS, timeout=None):
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
           os.path.join(ROOT, "bench/wrk-auth.lua"), url] + ([f"--timeout={timeout}"] if timeout else [])
    path = "/" + url.split("/", 3)[3]
    return subprocess.run(cmd, capture_output=True, text=True, check=True,
                          env={**os.environ, "WRK_PATH": path}).stdout


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = to_ms(*re.search(r"50%\s+([\d.]+)(us|ms|s)", out).groups())
    p99 = to_ms(*re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "requests": total, "p50_ms": p50, "p99_ms": p99,
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else "none"}


def measure_pids(name, pids, url, seconds):
    wrk(url, min(2, seconds))  # warm-up: pools, JIT, caches
    cpu0, pre0 = cpu_seconds(pids), preemptions(pids)
    result = parse(wrk(url, seconds))
    result["cpu_us_per_req"] = (cpu_seconds(pids) - cpu0) / max(result["requests"], 1) * 1e6
    result["preempted_per_req"] = (preemptions(pids) - pre0) / max(result["requests"], 1)
    result["peak_rss_mib"] = peak_rss_mib(pids)
    result["name"] = name
    return result


def measure(name, cmd, env, url, cwd=None, seconds=None):
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(url, proc)
        return measure_pids(name, tree(proc.pid), url, seconds or DURATION)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def nginx_http(work, server):
    """An nginx config running in `work` with one `server` block (its inside)."""
    return f"""worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/body; proxy_temp_path {work}/proxy; fastcgi_temp_path {work}/fcgi;
  uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
  keepalive_requests 1000000;
  server {{
{server}
  }}
}}
"""


def nginx_conf(work, check_port):
    return nginx_http(work, f"""    listen 127.0.0.1:{check_port};
    listen unix:{work}/session.sock;
    location = /v1/traces {{
      return 200;
    }}
    location = /check {{
      default_type application/json;
      add_header X-Check-Id $http_x_check_id always;
      return 200 '{{"user_id":"u-1","user_info":{{"name":"Bench"}}}}';
    }}""")


def start_nginx(prefix):
    """A work directory, and nginx there answering the session check (TCP and Unix socket)."""
    work = tempfile.mkdtemp(prefix=prefix)
    check_port = free_port()
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(nginx_conf(work, check_port))
    nginx = subprocess.Popen(["nginx", "-p", work, "-c", f"{work}/nginx.conf", "-g", "daemon off;"],
                             start_new_session=True)
    time.sleep(0.3)
    return work, check_port, nginx


def stop_nginx(work, nginx):
    os.killpg(nginx.pid, signal.SIGTERM)
    nginx.wait()
    shutil.rmtree(work, ignore_errors=True)


def service_conf(work, svc_port, check_port, unix=False):
    socket_line = f'unix_socket = "{work}/session.sock"\n' if unix else ""
    return f"""[server]
listen = "127.0.0.1:{svc_port}"
[session_check]
{socket_line}url = "http://127.0.0.1:{check_port}/check"
[apps.old]
app_id = "1111"
key = "old-app-key"
secret = "old-app-secret"
[apps.new]
app_id = "2222"
key = "new-app-key"
secret = "new-app-secret"
[log]
format = "json"
level = "info"
"""


# The targets (#21), each against a baseline of the same run.
TARGETS = [
    ("CPU per request vs nginx's one exchange", "cpu_vs_nginx", "<=", 3.0),
    ("throughput vs the Node reference", "rps_vs_node", ">=", 10.0),
    ("p99 at 64 connections (ms)", "p99_ms", "<=", 5.0),
    ("peak RSS (MiB)", "peak_rss_mib", "<=", 30.0),
]


def strace_counts(pids, url, seconds=3):
    """Syscalls per request of `pids` (attached with strace -c -f) under wrk for `seconds`."""
    out = tempfile.mktemp(prefix="strace-")
    args = ["strace", "-c", "-f", "-o", out]
    for p in pids:
        args += ["-p", str(p)]
    tracer = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    requests = parse(wrk(url, seconds))["requests"]
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    counts = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                counts[parts[-1]] = int(parts[3])
    os.unlink(out)
    return requests, {k: v / max(requests, 1) for k, v in counts.items()}


def syscalls():
    """Per-request syscalls: nginx's one exchange beside the service over TCP and over a Unix socket."""
    need("strace", "strace")
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "pusher-dual-auth"], cwd=ROOT, check=True)
    work, check_port, nginx = start_nginx("dual-auth-strace-")
    svc_port = free_port()
    rows = []
    try:
        nginx_pids = tree(nginx.pid)
        rows.append(("nginx, one exchange", *strace_counts(nginx_pids, f"http://127.0.0.1:{check_port}/check")))
        for unix in (False, True):
            conf = f"{work}/service{'-unix' if unix else ''}.toml"
            with open(conf, "w") as f:
                f.write(service_conf(work, svc_port, check_port, unix))
            binary = os.path.join(ROOT, "target/release/pusher-dual-auth")
            proc = subprocess.Popen([binary, "serve", "--config", conf], env={**os.environ, "RUST_LOG": ""},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                url = f"http://127.0.0.1:{svc_port}/auth/new"
                wait_ready(url, proc)
                wrk(url, 1)
                name = "pusher-dual-auth" + (", unix socket" if unix else "")
                rows.append((name, *strace_counts(tree(proc.pid), url)))
                # The host's side of the service's check, during the same kind of run.
                rows.append((f"  nginx answering {name}", *strace_counts(nginx_pids, url)))
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
    finally:
        stop_nginx(work, nginx)
    names = sorted({k for _, _, c in rows for k in c}, key=lambda k: -max(c.get(k, 0) for _, _, c in rows))
    names = [n for n in names if max(c.get(n, 0) for _, _, c in rows) >= 0.05]
    print(f"\nsyscalls per request (strace -c -f, wrk -t{THREADS} -c{CONNECTIONS} -d3s, release build)")
    print(f"{'':<40}" + "".join(f"{n[:12]:>13}" for n in names) + f"{'total':>9}")
    for name, requests, c in rows:
        print(f"{name:<40}" + "".join(f"{c.get(n, 0):>13.2f}" for n in names) + f"{sum(c.values()):>9.2f}")
    print("json: " + json.dumps([{"name": n, "requests": r, "per_request": c} for n, r, c in rows]))


# valgrind counts every byte a `rep stos`/`rep movs` instruction stores or copies as
# one instruction; the CPU retires it as one. glibc picks those for memset/memcpy of
# 2 KiB and more, and actix-http clears a 3 KiB header index on every poll of a
# connection, about 6 times per authorization: 18.6k of a count of 88.9k, the same in
# every server measured, for about 0.2 µs of CPU. Told never to use them, glibc runs
# its vector loops instead, which valgrind counts as the CPU runs them (the same
# 28 ns for 3 KiB on this machine's CPU). COUNT_REP_BYTES=1 counts as before.
STRING_LOOPS = {} if os.environ.get("COUNT_REP_BYTES") else {"GLIBC_TUNABLES": ":".join(
    f"glibc.cpu.x86_rep_{op}_threshold=0x7fffffffffffffff" for op in ("stosb", "movsb"))}


def need_callgrind():
    """valgrind, and a check that it counts a memset as loops (`STRING_LOOPS`): fails
    loudly if it still counts one by the byte (the tunable ignored), as the figures
    would silently include it."""
    need("valgrind", "valgrind")
    if not STRING_LOOPS:
        return
    python = os.path.realpath(sys.executable)
    counts = []
    with tempfile.TemporaryDirectory(prefix="dual-auth-memset-") as work:
        for size in (1 << 22, 1 << 24):
            run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg.out", python,
                                  "-S", "-c", f"b'\\x01' * {size}"], env={**os.environ, **STRING_LOOPS},
                                 capture_output=True, text=True, check=True)
            counts.append(int(re.search(r"Collected : (\d+)", run.stderr).group(1)))
    per_byte = (counts[1] - counts[0]) / ((1 << 24) - (1 << 22))
    if per_byte > 0.5:
        sys.exit(f"valgrind counts {per_byte:.2f} instructions per byte of a memset under "
                 f"{STRING_LOOPS['GLIBC_TUNABLES']}: glibc ignored the tunable")


def callgrind_total(binary, conf, url, seconds, out, env=None):
    """Instructions the service ran under callgrind, and the requests answered
    (`seconds` = 0: the one readiness request only). `conf` None: `binary` is
    the floor, configured by `env`. String instructions are counted as loops
    (`STRING_LOOPS`)."""
    args = [binary] if conf is None else [binary, "serve", "--config", conf]
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *args],
                            env={**os.environ, "RUST_LOG": "", **STRING_LOOPS, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(url, proc, timeout=120)
        requests = 1
        if seconds:
            # Slow under valgrind: wrk's 2 s default would count a late answer as an error.
            r = parse(wrk(url, seconds, threads=1, connections=8, timeout="10s"))
            if r["non2xx"] or r["socket_errors"] != "none":
                # A refusal is cheaper than a signature: counted, it would flatter the figure.
                sys.exit(f"{binary}: {r['non2xx']} non-2xx, socket errors {r['socket_errors']}")
            requests += r["requests"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    with open(out) as f:
        total = next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:")))
    os.unlink(out)
    return requests, total


def build_auth_servers():
    """Builds the service and both floors (release): their paths. SERVICE_BIN
    names another build of the service to measure instead."""
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "pusher-dual-auth"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--locked", "--example", "floor_proxy",
                    "--example", "protocol_floor"], cwd=ROOT, check=True)
    examples = os.path.join(ROOT, "target/release/examples")
    return (os.environ.get("SERVICE_BIN", os.path.join(ROOT, "target/release/pusher-dual-auth")),
            os.path.join(examples, "floor_proxy"), os.path.join(examples, "protocol_floor"))


def assert_protocol_floor_signs(binary, port, check_port):
    """The protocol floor answers as the service does: a bad signature or a refusal
    would be cheaper than the work it stands for, and would flatter the figure."""
    url = f"http://127.0.0.1:{port}/auth/new"
    env = {"PORT": str(port), "CHECK": f"127.0.0.1:{check_port}", "WORKERS": "1"}
    proc = subprocess.Popen([binary], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(url, proc)
        for channel in ("private-check", "presence-check"):
            req = urllib.request.Request(url, data=f"socket_id=1.2&channel_name={channel}".encode(),
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            with urllib.request.urlopen(req, timeout=5) as r:
                answer = json.loads(r.read())
            presence = channel.startswith("presence-")
            signed = f"1.2:{channel}" + (f":{answer.get('channel_data')}" if presence else "")
            sig = hmac.new(b"new-app-secret", signed.encode(), hashlib.sha256).hexdigest()
            # The identity nginx's check answers (start_nginx), all of it in channel_data.
            member = {"user_id": "u-1", "user_info": {"name": "Bench"}}
            if (answer.get("auth") != f"new-app-key:{sig}"
                    or set(answer) != ({"auth", "channel_data"} if presence else {"auth"})
                    or (presence and json.loads(answer["channel_data"]) != member)):
                sys.exit(f"the protocol floor's answer for {channel} is not the service's: {answer}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def instructions():
    """User-space instructions per authorization (callgrind): the service's own
    cost, repeatable whatever the shared machine is doing, unlike CPU time.
    Startup is subtracted (a run answering one request). One worker; SHA-256 runs
    its portable code under valgrind (no SHA extensions), so hashing weighs more
    here than on the CPU."""
    need_callgrind()
    need("nginx", "nginx-light")
    need("wrk", "wrk")
    binary, floor, protocol = build_auth_servers()
    work, check_port, nginx = start_nginx("dual-auth-callgrind-")
    svc_port = free_port()
    rows = []
    try:
        url = f"http://127.0.0.1:{svc_port}/auth/new"
        for unix in (False, True):
            conf = f"{work}/service{'-unix' if unix else ''}.toml"
            with open(conf, "w") as f:
                f.write(service_conf(work, svc_port, check_port, unix).replace("[server]\n", "[server]\nworkers = 1\n", 1))
            r0, i0 = callgrind_total(binary, conf, url, 0, f"{work}/cg.out")
            r1, i1 = callgrind_total(binary, conf, url, DURATION * 2, f"{work}/cg.out")
            rows.append(("pusher-dual-auth" + (", unix socket" if unix else ""), r1 - r0, (i1 - i0) / (r1 - r0)))
        # The floor (examples/floor_proxy.rs): the same crates' two exchanges, no work.
        env = {"PORT": str(svc_port), "CHECK": f"127.0.0.1:{check_port}", "WORKERS": "1"}
        r0, i0 = callgrind_total(floor, None, url, 0, f"{work}/cg.out", env)
        r1, i1 = callgrind_total(floor, None, url, DURATION * 2, f"{work}/cg.out", env)
        rows.append(("floor: same crates, no work", r1 - r0, (i1 - i0) / (r1 - r0)))
        # The protocol floor (examples/protocol_floor.rs): that floor plus the protocol's
        # own work and nothing else (form, check JSON with the Cookie, host JSON,
        # channel_data, HMAC, answer JSON): what any implementation on these crates pays
        # before it keeps any promise.
        assert_protocol_floor_signs(protocol, svc_port, check_port)
        r0, i0 = callgrind_total(protocol, None, url, 0, f"{work}/cg.out", env)
        r1, i1 = callgrind_total(protocol, None, url, DURATION * 2, f"{work}/cg.out", env)
        rows.append(("protocol floor: + protocol's work", r1 - r0, (i1 - i0) / (r1 - r0)))
    finally:
        stop_nginx(work, nginx)
    counted = "rep string instructions by the byte" if not STRING_LOOPS else "memset/memcpy as loops"
    print(f"\nuser-space instructions per authorization (callgrind, {counted}, 1 worker, wrk -t1 -c8 -d{DURATION * 2}s)")
    for name, requests, per in rows:
        print(f"{name:<34}{per:>12,.0f}   ({requests} requests)")
    print("json: " + json.dumps([{"name": n, "requests": r, "instructions_per_request": p} for n, r, p in rows]))


def tracing_variants(work, svc_port, check_port):
    """(name, binary, config file) for --tracing: the build before tracing (BEFORE_BIN, if
    given), [telemetry] absent, on at sample_ratio 0 and at 1 (exported to nginx's OTLP stub)."""
    binary = os.environ.get("SERVICE_BIN", os.path.join(ROOT, "target/release/pusher-dual-auth"))
    base = service_conf(work, svc_port, check_port)
    telemetry = f'[telemetry]\notlp_endpoint = "http://127.0.0.1:{check_port}/v1/traces"\nsample_ratio = '
    variants = []
    if os.environ.get("BEFORE_BIN"):
        variants.append(("before tracing (BEFORE_BIN)", os.environ["BEFORE_BIN"], base))
    variants += [("tracing off (no [telemetry])", binary, base),
                 ("tracing on, sample_ratio 0", binary, base + telemetry + "0.0\n"),
                 ("tracing on, sample_ratio 1", binary, base + telemetry + "1.0\n")]
    out = []
    for i, (name, path, conf) in enumerate(variants):
        with open(f"{work}/tracing-{i}.toml", "w") as f:
            f.write(conf)
        out.append((name, path, f"{work}/tracing-{i}.toml"))
    return out


def tracing_cost():
    """What [telemetry] costs per authorization: CPU time (ROUNDS rounds, the variants in a
    rotated order each round, each round's ratio to 'off' in the same round; medians), or
    with --instructions user-space instructions (callgrind, 1 worker), which no neighbour
    on the machine moves. The service's CPU includes its export thread."""
    need("nginx", "nginx-light")
    need("wrk", "wrk")
    counting = "--instructions" in sys.argv
    if counting:
        need_callgrind()
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "pusher-dual-auth"], cwd=ROOT, check=True)
    work, check_port, nginx = start_nginx("dual-auth-tracing-")
    svc_port = free_port()
    url = f"http://127.0.0.1:{svc_port}/auth/new"
    variants = tracing_variants(work, svc_port, check_port)
    results = {name: [] for name, _, _ in variants}
    try:
        if counting:
            for name, binary, conf in variants:
                with open(conf) as f:
                    text = f.read()
                with open(conf, "w") as f:
                    f.write(text.replace("[server]\n", "[server]\nworkers = 1\n", 1))
                r0, i0 = callgrind_total(binary, conf, url, 0, f"{work}/cg.out")
                r1, i1 = callgrind_total(binary, conf, url, DURATION * 2, f"{work}/cg.out")
                results[name].append({"requests": r1 - r0, "per_request": (i1 - i0) / (r1 - r0)})
        else:
            for round_ in range(ROUNDS):
                order = variants[round_ % len(variants):] + variants[:round_ % len(variants)]
                for name, binary, conf in order:
                    r = measure(name, [binary, "serve", "--config", conf], {"RUST_LOG": ""}, url)
                    results[name].append({"per_request": r["cpu_us_per_req"], "rps": r["rps"],
                                          "non2xx": r["non2xx"], "round": round_})
    finally:
        stop_nginx(work, nginx)
    off = "tracing off (no [telemetry])"
    unit = "instructions/auth" if counting else "CPU µs/auth"
    print(f"\n[telemetry] cost per authorization ({unit}; "
          + ("callgrind, 1 worker)" if counting else f"wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}s, medians of {ROUNDS} rounds)"))
    print(f"{'variant':<34}{unit:>20}{'vs off':>10}")
    summary = []
    for name, rs in results.items():
        per = statistics.median(r["per_request"] for r in rs)
        ratios = [r["per_request"] / results[off][i]["per_request"] for i, r in enumerate(rs)]
        ratio = statistics.median(ratios)
        print(f"{name:<34}{per:>20,.1f}{ratio:>10.3f}   per round: " + ", ".join(f"{x:.3f}" for x in ratios))
        summary.append({"name": name, "per_request": per, "vs_off": ratio, "vs_off_per_round": ratios})
    bad = [name for name, rs in results.items() if any(r.get("non2xx") for r in rs)]
    if bad:
        print(f"\nnon-2xx answers from {bad}")
    print("json: " + json.dumps({"unit": unit, "summary": summary, "runs": results}))


def floor_pairs():
    """The service against its floor, side by side: each round runs the service and the
    floor with one worker, then with two, back to back (the order reversed every other
    round), so each round's ratio sees the same machine. Performance II's auth targets
    are these ratios (<= 1.2 with one worker, <= 1.3 with two). The protocol floor
    (the floor plus the protocol's own work, no safety) runs in each round
    too (examples/protocol_floor.rs): what of the ratio any implementation pays.
    BEFORE_BIN=/path/to/another/build adds that build beside the service in each round
    (a change measured before and after against the same floors)."""
    need("nginx", "nginx-light")
    need("wrk", "wrk")
    binary, floor, protocol = build_auth_servers()
    work, check_port, nginx = start_nginx("dual-auth-floor-")
    port = free_port()
    url = f"http://127.0.0.1:{port}/auth/new"
    with open(f"{work}/service.toml", "w") as f:
        f.write(service_conf(work, port, check_port))
    service = [binary, "serve", "--config", f"{work}/service.toml"]
    floor_env = {"PORT": str(port), "CHECK": f"127.0.0.1:{check_port}"}
    before = os.environ.get("BEFORE_BIN")
    # Each floor beside the runs set against it: every ratio sees the same machine.
    targets = []
    for workers, service_env, floor_workers in (("1 worker", {"DUAL_AUTH__SERVER__WORKERS": "1"}, "1"),
                                                ("2 workers", {}, "")):
        service_env = {"RUST_LOG": "", **service_env}
        targets.append((f"service, {workers}", service, service_env))
        if before:
            targets.append((f"before, {workers}", [before, *service[1:]], service_env))
        targets += [(f"floor, {workers}", [floor], {**floor_env, "WORKERS": floor_workers}),
                    (f"protocol floor, {workers}", [protocol], {**floor_env, "WORKERS": floor_workers})]
    cpu = {name: [] for name, *_ in targets}
    try:
        assert_protocol_floor_signs(protocol, port, check_port)
        for round_ in range(ROUNDS):
            for name, cmd, env in (targets if round_ % 2 == 0 else targets[::-1]):
                r = measure(name, cmd, env, url)
                if r["non2xx"] or r["socket_errors"] != "none":
                    sys.exit(f"{name}: {r['non2xx']} non-2xx, socket errors {r['socket_errors']}")
                cpu[name].append(r["cpu_us_per_req"])
    finally:
        stop_nginx(work, nginx)
    med = statistics.median
    print(f"\nthe service against its floor, CPU µs per authorization (wrk -t{THREADS} -c{CONNECTIONS} "
          f"-d{DURATION}s, {ROUNDS} rounds, medians)")
    out = []
    for workers in ("1 worker", "2 workers"):
        f = cpu[f"floor, {workers}"]
        row = {"workers": workers, "floor_us": med(f)}
        # Each as round-by-round ratios to the floor: (target, json keys' names, printed label).
        for target, us_key, prefix, label in (("service", "service_us", "", "service"),
                                              ("protocol floor", "protocol_floor_us", "protocol_", "protocol floor"),
                                              ("before", "before_us", "before_", "BEFORE_BIN")):
            if target == "before" and not before:
                continue
            xs = cpu[f"{target}, {workers}"]
            ratios = [a / b for a, b in zip(xs, f)]
            row.update({us_key: med(xs), f"{prefix}ratios": ratios, f"{prefix}median_ratio": med(ratios)})
            each = " ".join(f"{x:.2f}" for x in ratios)
            if target == "service":
                print(f"{workers:<10} service {med(xs):6.1f}  floor {med(f):6.1f}  each round: {each}"
                      f"  median ratio {med(ratios):.3f}")
            else:
                print(f"{'':<10} {label} {med(xs):6.1f}  each round: {each}  median ratio to the floor {med(ratios):.3f}")
        out.append(row)
    print("json: " + json.dumps(out))


def main():
    if "--floor" in sys.argv:
        return floor_pairs()
    if "--tracing" in sys.argv:
        return tracing_cost()
    if "--syscalls" in sys.argv:
        return syscalls()
    if "--instructions" in sys.argv:
        return instructions()
    guard = "--guard" in sys.argv
    need("nginx", "nginx-light")
    need("wrk", "wrk")
    profile = "debug" if guard else "release"
    build = ["cargo", "build", "--locked", "--bin", "pusher-dual-auth"] + ([] if guard else ["--release"])
    subprocess.run(build, cwd=ROOT, check=True)
    ref = os.path.join(ROOT, "bench/node-reference")
    if not guard and not os.path.isdir(os.path.join(ref, "node_modules")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ref, check=True)
    if not guard:
        subprocess.run(["cargo", "build", "--locked", "--release", "--example", "floor_proxy"], cwd=ROOT, check=True)

    work, check_port, nginx = start_nginx("dual-auth-bench-")
    svc_port, node_port = free_port(), free_port()
    seconds = 3 if guard else DURATION
    rounds = 1 if guard else ROUNDS
    for unix in (False, True):
        with open(f"{work}/service{'-unix' if unix else ''}.toml", "w") as f:
            f.write(service_conf(work, svc_port, check_port, unix))
    # SERVICE_BIN: another build (an older commit) to compare against, in the same way.
    binary = os.environ.get("SERVICE_BIN", os.path.join(ROOT, f"target/{profile}/pusher-dual-auth"))
    service = [binary, "serve", "--config", f"{work}/service.toml"]
    service_unix = [binary, "serve", "--config", f"{work}/service-unix.toml"]
    url = f"http://127.0.0.1:{svc_port}/auth/new"
    one_worker = {"RUST_LOG": "", "DUAL_AUTH__SERVER__WORKERS": "1"}
    floor = os.path.join(ROOT, "target/release/examples/floor_proxy")
    floor_env = {"PORT": str(svc_port), "CHECK": f"127.0.0.1:{check_port}", "WORKERS": ""}
    targets = [("pusher-dual-auth", service, {"RUST_LOG": ""}, url, None)]
    if not guard:
        targets += [
            ("pusher-dual-auth, unix socket", service_unix, {"RUST_LOG": ""}, url, None),
            ("node-express-reference", ["node", "server.js"],
             {"PORT": str(node_port), "CHECK_URL": f"http://127.0.0.1:{check_port}/check"},
             f"http://127.0.0.1:{node_port}/auth/new", ref),
            # One worker thread: on 2 cores wrk and nginx need the other one.
            ("pusher-dual-auth (1 worker)", service, one_worker, url, None),
            ("pusher-dual-auth, unix, 1 worker", service_unix, one_worker, url, None),
            # The design's floor: the same crates, two exchanges, no work (examples/floor_proxy.rs).
            ("floor: same crates, no work", [floor], floor_env, url, None),
            ("floor: 1 worker", [floor], {**floor_env, "WORKERS": "1"}, url, None),
            # actix-web alone, one exchange: the browser side's share of the floor.
            ("actix-web, one exchange, no work", [floor], {**floor_env, "CHECK": ""}, url, None),
        ]
    runs = {name: [] for name, *_ in targets}
    baselines = []
    try:
        nginx_url = f"http://127.0.0.1:{check_port}/check"
        # nginx answering the check itself: one exchange, the floor an auth callback costs.
        def baseline():
            b = measure_pids("nginx, one exchange", tree(nginx.pid), nginx_url, seconds)
            baselines.append(b)
            return b
        for _ in range(rounds):
            before = baseline()
            for name, cmd, env, target_url, cwd in targets:
                r = measure(name, cmd, env, target_url, cwd=cwd, seconds=seconds)
                after = baseline()
                r["nginx_cpu_us_per_req"] = (before["cpu_us_per_req"] + after["cpu_us_per_req"]) / 2
                runs[name].append(r)
                before = after
    finally:
        stop_nginx(work, nginx)

    med = statistics.median
    for name, rs in runs.items():
        for i, r in enumerate(rs):
            r["cpu_vs_nginx"] = r["cpu_us_per_req"] / r["nginx_cpu_us_per_req"]
            if not guard and not name.startswith("node"):
                r["rps_vs_node"] = r["rps"] / runs["node-express-reference"][i]["rps"]
    def summary(name, rs):
        out = {"name": name, "rounds": len(rs), "socket_errors": "none"}
        for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "cpu_vs_nginx", "rps_vs_node", "preempted_per_req"):
            if key in rs[0]:
                out[key] = med([r[key] for r in rs])
        out["peak_rss_mib"] = max(r["peak_rss_mib"] for r in rs)
        out["non2xx"] = sum(r["non2xx"] for r in rs)
        bad = [r["socket_errors"] for r in rs if r["socket_errors"] != "none"]
        if bad:
            out["socket_errors"] = bad[0]
        return out
    results = [summary("nginx, one exchange", baselines)] + [summary(n, rs) for n, rs in runs.items()]

    print(f"\nwrk -t{THREADS} -c{CONNECTIONS} -d{seconds}s, nginx as the session check, {os.cpu_count()} CPUs, "
          f"{profile} build; medians of {rounds} round(s), nginx measured before and after every target")
    print(f"{'server':<34}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'peak RSS MiB':>14}{'CPU µs/req':>12}"
          f"{'preempted/req':>15}{'x nginx':>9}")
    for r in results:
        ratio = f"{r['cpu_vs_nginx']:>9.2f}" if "cpu_vs_nginx" in r and r["name"] != "nginx, one exchange" else ""
        print(f"{r['name']:<34}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['non2xx']:>9}"
              f"{r['peak_rss_mib']:>14.1f}{r['cpu_us_per_req']:>12.1f}{r['preempted_per_req']:>15.3f}{ratio}")
    print("preempted/req: involuntary context switches per request, all threads (the core lost to a woken wrk or nginx)")
    bad = [r["name"] for r in results if r["non2xx"] or r["socket_errors"] != "none"]
    if guard:
        ratio = results[1]["cpu_vs_nginx"]
        # About twice the ratio measured when the guard was set (docs/performance.md):
        # a change that doubles the per-request cost trips it.
        limit = float(os.environ.get("GUARD_RATIO", "120"))
        print(f"\nguard: service CPU/request = {ratio:.1f} x nginx's one exchange (limit {limit:g}, debug build)")
        print("json: " + json.dumps(results))
        if bad:
            sys.exit(f"guard: errors or non-2xx answers from {bad}")
        if ratio > limit:
            sys.exit(f"guard: the per-request cost rose to {ratio:.1f} x nginx's (limit {limit:g})")
        return
    for us in (r for r in results if r["name"].startswith(("pusher-dual-auth", "floor:"))):
        met = []
        for label, key, op, goal in TARGETS:
            ok = us[key] <= goal if op == "<=" else us[key] >= goal
            met.append(f"{label} {us[key]:.1f} ({op} {goal:g}: {'met' if ok else 'NOT met'})")
        print(f"\n{us['name']}: " + "; ".join(met))
    print("\nfloor: a target the floor misses is out of reach of any change to the service's own work")
    if bad:
        print(f"\nerrors or non-2xx answers from {bad}")
    print("json: " + json.dumps({"summary": results, "rounds": runs, "baselines": baselines}))


if __name__ == "__main__":
    main()
