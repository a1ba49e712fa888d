#!/usr/bin/env python3
"""Webhooks accepted, merged and forwarded, in memory and Redis mode, beside their
floors, in one run.

wrk posts signed webhooks (X-Pusher-Key, X-Pusher-Signature: HMAC-SHA256 of the
body with the app's secret, as Pusher signs them) at `POST /webhooks`, every one
another body: `channel_occupied` then `channel_vacated` on many distinct
channels, from both apps (old occupies, new occupies, old vacates, new vacates:
half of them are transitions of the merged state, forwarded to the host).
wrk's Lua has no HMAC, so the requests are written signed to a file
(bench/wrk-webhooks.lua replays it, never a line twice: a repeat would be
acknowledged as a duplicate, not applied). nginx is the host, answering at
once; it logs each delivery, which gives the host delivery rate.

The floors, in the same run:
- nginx accepting the same webhooks itself (one exchange), measured right
  before and right after each target (this machine drifts; see
  docs/performance.md): the service's CPU per webhook is a ratio to it;
- the service's own Redis script, as the service invokes it (taken from
  MONITOR), run alone by redis-benchmark: the webhooks/s Redis allows at best.

Per target: webhooks/s (one event each), p50/p99, the service's CPU per webhook
including the forwarding that follows (and Redis's CPU separately), Redis
round trips per webhook (every command a client sent, counted by MONITOR in a
separate short run, divided by the webhooks it accepted), forwarded events per
second reaching the host, and how long the host's deliveries lag wrk's end.

    python3 bench/webhooks.py          # ROUNDS=3 DURATION=5, release build; SERVICE_BIN= another build
    python3 bench/webhooks.py --guard  # CI: debug build, one short round; exit 1 if the service's CPU
                                       # per webhook exceeds GUARD_RATIO_MEMORY / GUARD_RATIO_REDIS
                                       # x nginx accepting the same webhooks (bracketed)
    python3 bench/webhooks.py --soak [--soak-secs 600]  # memory: 100,000 channels occupied and
                                       # vacated, over and over; RSS sampled every 10 s
"""
import hashlib, hmac, json, os, re, signal, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the same wrk, CPU and RSS measurements as the auth bench)

ROOT = load.ROOT
# Webhooks arrive over few connections (Pusher's senders), and one client
# address reads at most MAX_BODIES_PER_CLIENT (16) bodies at once: 16 connections.
CONNECTIONS = int(os.environ.get("CONNECTIONS", "16"))
THREADS = load.THREADS
APPS = {"old": ("old-app-key", "old-app-secret"), "new": ("new-app-key", "new-app-secret")}
# Channels of one block go through all four events before the next block's:
# a channel's events are BLOCK * 2 lines apart, far beyond the 16 in flight.
BLOCK = 1000
PREFIX = "pusher-dual-auth"
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")


def write_webhooks(path, tag, channels, block=BLOCK):
    """Writes 4 signed webhooks per channel (one event each); returns how many lines.
    Their time_ms runs ahead of now by a ms every 5 lines (400,000 lines: 80 s, well
    inside the 600 s window)."""
    now = int(time.time() * 1000)
    secrets = {app: (key, secret.encode()) for app, (key, secret) in APPS.items()}
    lines = 0
    with open(path, "w") as f:
        for start in range(0, channels, block):
            names = [f"private-wh-{tag}-{i}" for i in range(start, min(start + block, channels))]
            for event, app in (("channel_occupied", "old"), ("channel_occupied", "new"),
                               ("channel_vacated", "old"), ("channel_vacated", "new")):
                key, secret = secrets[app]
                for channel in names:
                    # Pusher stamps each webhook as it sends it: at 5,000 a second, 5 share a ms
                    # (deliveries to the host batch only events of the same time_ms).
                    t = now + lines // 5
                    body = '{"time_ms":%d,"events":[{"name":"%s","channel":"%s"}]}' % (t, event, channel)
                    sig = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
                    f.write(f"{key}\t{sig}\t{body}\n")
                    lines += 1
    return lines


def wrk_webhooks(url, seconds, path, cycle=False, connections=None):
    cmd = ["wrk", f"-t{THREADS}", f"-c{connections or CONNECTIONS}", f"-d{seconds}s", "--latency", "-s",
           os.path.join(ROOT, "bench/wrk-webhooks.lua"), url]
    env = {**os.environ, "WEBHOOKS": path, "WRK_THREADS": str(THREADS), "WEBHOOKS_CYCLE": "1" if cycle else "0"}
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout


def nginx_conf(work, port):
    conf = load.nginx_http(work, f"""    listen 127.0.0.1:{port};
    # The host: answers at once; one line per delivery, with its time.
    location = /hook {{ access_log {work}/hook.log hook; return 200 '{{}}'; }}
    # The floor: nginx accepting a webhook itself.
    location = /webhooks {{ return 200 '{{}}'; }}
    # Both apps' REST APIs, for start-up reconciliation: nothing occupied.
    location / {{ default_type application/json; return 200 '{{"channels":{{}}}}'; }}""")
    return conf.replace("http {\n", "http {\n  log_format hook '$msec';\n", 1)


def service_conf(port, admin_port, host_port, redis_port=None, level="info"):
    apps = "".join(f'[apps.{n}]\napp_id = "{i}"\nkey = "{APPS[n][0]}"\nsecret = "{APPS[n][1]}"\n'
                   f'rest_url = "http://127.0.0.1:{host_port}"\n' for n, i in (("old", "1111"), ("new", "2222")))
    store = f'state = "redis"\nredis_url = "redis://127.0.0.1:{redis_port}/0"\n' if redis_port else ""
    return f"""[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
[session_check]
url = "http://127.0.0.1:9/check"
{apps}[status]
# Reconciliation against the REST stub only at start: a run is not a missed webhook.
reconcile_secs = 86400
[webhooks]
forward_url = "http://127.0.0.1:{host_port}/hook"
key = "host-key"
secret = "host-secret"
{store}[log]
format = "json"
level = "{level}"
"""


def metric(admin_port, name, label=""):
    """The sum of a counter's series (those whose labels contain `label`)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def accepted(admin_port):
    return metric(admin_port, "pusher_webhook_requests_total", 'result="accepted"')


def hook_log(work):
    """Times (s) of the host's deliveries so far."""
    try:
        with open(f"{work}/hook.log") as f:
            return [float(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def drain(work, quiet=1.0, limit=120):
    """Waits until the host has had no delivery for `quiet` seconds; the deliveries' times."""
    seen, since = len(hook_log(work)), time.time()
    deadline = time.time() + limit
    while time.time() < deadline:
        time.sleep(0.1)
        n = len(hook_log(work))
        if n != seen:
            seen, since = n, time.time()
        elif time.time() - since >= quiet:
            break
    return hook_log(work)


class Redis:
    """A private redis-server (no persistence, its own temp dir)."""

    def __init__(self, work):
        self.port = load.free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=work)
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(100):
            if self.cli("PING").strip() == "PONG":
                return
            time.sleep(0.05)
        sys.exit("redis-server not ready")

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True).stdout

    def cpu(self):
        return load.cpu_seconds([self.proc.pid])

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def monitor_args(line):
    """The arguments of one MONITOR line, unescaped."""
    out = []
    for raw in re.findall(r'"((?:[^"\\]|\\.)*)"', line):
        out.append(re.sub(r'\\(x[0-9a-fA-F]{2}|.)',
                          lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "x" and len(m.group(1)) == 3
                          else {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b"}.get(m.group(1), m.group(1)),
                          raw))
    return out


def round_trips(redis, admin_port, url, work, tag):
    """Commands clients sent Redis (MONITOR, script-internal calls left out) per webhook
    accepted, by command; and one of the service's EVALSHA calls, for the floor."""
    path = f"{work}/rt.txt"
    write_webhooks(path, tag, 2000)
    out = open(f"{work}/monitor.txt", "w")
    mon = subprocess.Popen(["redis-cli", "-p", str(redis.port), "MONITOR"], stdout=out, start_new_session=True)
    time.sleep(0.5)
    a0 = accepted(admin_port)
    wrk_webhooks(url, 1, path)
    drain(work)
    a1 = accepted(admin_port)
    os.killpg(mon.pid, signal.SIGTERM)
    mon.wait()
    out.close()
    counts, evalsha = {}, None
    with open(f"{work}/monitor.txt") as f:
        for line in f:
            m = re.match(r'[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
            if not m or m.group(1) == "lua":
                continue
            cmd = m.group(2).upper()
            counts[cmd] = counts.get(cmd, 0) + 1
            if cmd == "EVALSHA" and evalsha is None and f'"{PREFIX}:seen:' in line:
                evalsha = monitor_args(line)  # the webhook script (fleet flushes are scripts too)
    os.unlink(f"{work}/monitor.txt")
    webhooks = max(a1 - a0, 1)
    return {k: v / webhooks for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}, evalsha


def redis_floor(redis, evalsha, n):
    """The service's script alone: redis-benchmark sends `evalsha` as captured, with a
    fresh replay mark and channel every call (each one a first occupation: the most
    work a one-event webhook makes the script do)."""
    # EVALSHA sha numkeys keys... args...: ARGV[6] is the event's mode, ARGV[9] its channel.
    nkeys = int(evalsha[2])
    keys, args = evalsha[3:3 + nkeys], evalsha[3 + nkeys:]
    channel = args[8]
    keys[0] = f"{PREFIX}:bench-seen:__rand_int__"
    keys[1] = f"{PREFIX}:bench-outbox"
    args[5] = "add"
    sub = lambda s: s.replace(channel, "rb-__rand_int__")  # noqa: E731
    cmd = ["EVALSHA", evalsha[1], str(nkeys)] + [sub(k) for k in keys] + [sub(a) for a in args]
    cpu0 = redis.cpu()
    out = subprocess.run(["redis-benchmark", "-p", str(redis.port), "-n", str(n), "-c", str(CONNECTIONS),
                          "-r", "2000000000", "-q", *cmd], capture_output=True, text=True, check=True).stdout
    cpu = redis.cpu() - cpu0
    rps = float(re.findall(r"([\d.]+) requests per second", out)[-1])
    p50 = re.search(r"p50=([\d.]+) msec", out)
    redis.cli("DEL", f"{PREFIX}:bench-outbox")
    return {"name": "redis-benchmark: the script alone", "rps": rps, "redis_cpu_us": cpu / n * 1e6,
            "p50_ms": float(p50.group(1)) if p50 else None}


def nginx_floor(nginx_pids, host_port, work, seconds):
    """nginx accepting the same webhooks: one exchange, what a webhook costs at best."""
    path = f"{work}/floor.txt"
    write_webhooks(path, "floor", 5000)
    url = f"http://127.0.0.1:{host_port}/webhooks"
    wrk_webhooks(url, 1, path, cycle=True)
    cpu0 = load.cpu_seconds(nginx_pids)
    r = load.parse(wrk_webhooks(url, seconds, path, cycle=True))
    r["cpu_us"] = (load.cpu_seconds(nginx_pids) - cpu0) / max(r["requests"], 1) * 1e6
    r["name"] = "nginx accepting the webhook"
    return r


def run_service(name, binary, work, host_port, seconds, redis=None, tag="", counting=False):
    """One target: warm-up (and its rate, to size the file), then a measured run and the
    forwarding it leaves, then (Redis, `counting`) the round trips."""
    port, admin = load.free_port(), load.free_port()
    conf = f"{work}/service-{tag}.toml"
    with open(conf, "w") as f:
        f.write(service_conf(port, admin, host_port, redis.port if redis else None))
    proc = subprocess.Popen([binary, "serve", "--config", conf], env={**os.environ, "RUST_LOG": ""},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/webhooks"
    try:
        for _ in range(200):
            if proc.poll() is not None:
                sys.exit(f"{name}: the service exited with {proc.returncode}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        pids = load.tree(proc.pid)
        path = f"{work}/webhooks.txt"
        # Warm-up, and the rate that sizes the measured file.
        write_webhooks(path, f"{tag}w", 8000)
        a0, t0 = accepted(admin), time.time()
        wrk_webhooks(url, 1, path)
        rate = (accepted(admin) - a0) / (time.time() - t0)
        drain(work)
        write_webhooks(path, f"{tag}m", int(rate * seconds * 2 / 4) + 2000)
        lines = sum(1 for _ in open(path))
        deliveries0 = len(hook_log(work))
        a0 = accepted(admin)
        fwd0 = metric(admin, "pusher_webhook_events_total", "forwarded")
        cpu0, rcpu0 = load.cpu_seconds(pids), redis.cpu() if redis else 0
        start = time.time()
        r = load.parse(wrk_webhooks(url, seconds, path))
        end = time.time()
        times = drain(work)[deliveries0:]
        r["cpu_us"] = (load.cpu_seconds(pids) - cpu0)
        r["redis_cpu_us"] = (redis.cpu() - rcpu0) if redis else None
        webhooks = accepted(admin) - a0
        if webhooks >= lines:
            sys.exit(f"{name}: the file ran out ({lines} webhooks): wrk sent /healthz at the end")
        forwarded = metric(admin, "pusher_webhook_events_total", "forwarded") - fwd0
        r.update({
            "name": name, "webhooks": webhooks, "webhooks_per_s": webhooks / (end - start),
            "cpu_us": r["cpu_us"] / webhooks * 1e6,
            "redis_cpu_us": r["redis_cpu_us"] / webhooks * 1e6 if redis else None,
            "forwarded": forwarded, "deliveries": len(times),
            # Forwarded events reaching the host per second, from wrk's start to the last delivery.
            "host_events_per_s": forwarded / (max(times[-1], end) - start) if times else 0,
            "host_lag_s": max(times[-1] - end, 0) if times else None,
            "duplicates": metric(admin, "pusher_webhook_requests_total", 'result="duplicate"'),
            "refused": metric(admin, "pusher_webhook_requests_total") - accepted(admin)
            - metric(admin, "pusher_webhook_requests_total", 'result="duplicate"'),
            "peak_rss_mib": load.peak_rss_mib(pids),
        })
        if counting and redis:
            r["round_trips"], r["evalsha"] = round_trips(redis, admin, url, work, f"{tag}rt")
        return r
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def start_host(work):
    host_port = load.free_port()
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(nginx_conf(work, host_port))
    nginx = subprocess.Popen(["nginx", "-p", work, "-c", f"{work}/nginx.conf", "-g", "daemon off;"],
                             start_new_session=True)
    time.sleep(0.3)
    return host_port, nginx


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass


def bench(guard):
    load.need("wrk", "wrk")
    load.need("nginx", "nginx-light")
    load.need("redis-server", "redis-server")
    profile = "debug" if guard else "release"
    binary = load.service_binary(profile)
    seconds = 3 if guard else load.DURATION
    rounds = 1 if guard else load.ROUNDS
    work = tempfile.mkdtemp(prefix="webhooks-bench-")
    host_port, nginx = start_host(work)
    redis = None
    runs, floors, redis_floors = {}, [], []
    try:
        redis = Redis(work)
        nginx_pids = load.tree(nginx.pid)
        for round_ in range(rounds):
            before = nginx_floor(nginx_pids, host_port, work, seconds)
            floors.append(before)
            for mode in ("memory", "redis"):
                name = f"service, {mode} mode"
                r = run_service(name, binary, work, host_port, seconds, redis=redis if mode == "redis" else None,
                                tag=f"{round_}{mode[0]}", counting=not guard)
                after = nginx_floor(nginx_pids, host_port, work, seconds)
                floors.append(after)
                r["nginx_cpu_us"] = (before["cpu_us"] + after["cpu_us"]) / 2
                r["cpu_vs_nginx"] = r["cpu_us"] / r["nginx_cpu_us"]
                runs.setdefault(name, []).append(r)
                before = after
                if mode == "redis" and not guard:
                    redis_floors.append(redis_floor(redis, r.pop("evalsha"), 200_000))
                redis.cli("FLUSHALL")
    finally:
        if redis:
            redis.stop()
        stop(nginx)
        load.shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    print(f"\nwrk -t{THREADS} -c{CONNECTIONS} -d{seconds}s, signed webhooks (one event each, every body new), "
          f"nginx as the host; {profile} build, medians of {rounds} round(s), nginx measured before and after each")
    print(f"{'target':<38}{'webhooks/s':>11}{'p50 ms':>8}{'p99 ms':>8}{'CPU µs':>8}{'x nginx':>8}"
          f"{'Redis µs':>9}{'host ev/s':>10}{'lag s':>7}{'RSS MiB':>8}")
    f = {k: med(x[k] for x in floors) for k in ("rps", "p50_ms", "p99_ms", "cpu_us")}
    print(f"{'nginx accepting the webhook (floor)':<38}{f['rps']:>11.0f}{f['p50_ms']:>8.2f}{f['p99_ms']:>8.2f}"
          f"{f['cpu_us']:>8.1f}{1:>8}")
    summary = {"nginx": f, "targets": {}}
    for name, rs in runs.items():
        m = {k: med(r[k] for r in rs) for k in ("webhooks_per_s", "p50_ms", "p99_ms", "cpu_us", "cpu_vs_nginx",
                                                  "host_events_per_s", "peak_rss_mib")}
        m["redis_cpu_us"] = med(r["redis_cpu_us"] for r in rs) if rs[0]["redis_cpu_us"] is not None else None
        m["host_lag_s"] = med(r["host_lag_s"] or 0 for r in rs)
        m["non2xx"] = sum(r["non2xx"] for r in rs)
        m["refused"] = sum(r["refused"] for r in rs)
        m["per_round_vs_nginx"] = [r["cpu_vs_nginx"] for r in rs]
        if "round_trips" in rs[0]:
            m["round_trips"] = {k: med(r["round_trips"].get(k, 0) for r in rs) for k in rs[0]["round_trips"]}
        summary["targets"][name] = m
        rc = f"{m['redis_cpu_us']:>9.1f}" if m["redis_cpu_us"] is not None else f"{'':>9}"
        print(f"{name:<38}{m['webhooks_per_s']:>11.0f}{m['p50_ms']:>8.2f}{m['p99_ms']:>8.2f}{m['cpu_us']:>8.1f}"
              f"{m['cpu_vs_nginx']:>8.2f}{rc}{m['host_events_per_s']:>10.0f}{m['host_lag_s']:>7.2f}"
              f"{m['peak_rss_mib']:>8.1f}")
    if redis_floors:
        rf = {"rps": med(x["rps"] for x in redis_floors), "redis_cpu_us": med(x["redis_cpu_us"] for x in redis_floors)}
        summary["redis_floor"] = rf
        print(f"{'redis-benchmark: the script alone':<38}{rf['rps']:>11.0f}{'':>32}{rf['redis_cpu_us']:>9.1f}")
    print("CPU µs: the service's CPU per webhook, forwarding included; Redis µs: redis-server's; host ev/s: "
          "forwarded events reaching the host per second (wrk's start to the last delivery); lag s: the last "
          "delivery after wrk's end")
    redis_mode = summary["targets"].get("service, redis mode", {})
    if "round_trips" in redis_mode:
        rt = redis_mode["round_trips"]
        print(f"\nRedis round trips per webhook (MONITOR): {sum(rt.values()):.2f} = "
              + ", ".join(f"{k} {v:.2f}" for k, v in rt.items() if v >= 0.005) + " (target: 1)")
    bad = {n: (m["non2xx"], m["refused"]) for n, m in summary["targets"].items() if m["non2xx"] or m["refused"]}
    if bad:
        print(f"\nnon-2xx answers or refusals (non-2xx, refused): {bad}")
    if not guard:
        wps = redis_mode.get("webhooks_per_s", 0)
        print(f"\ntarget: Redis mode >= 5,000 events/s: {wps:,.0f} ({'met' if wps >= 5000 else 'NOT met'}); "
              f"the host received {redis_mode.get('host_events_per_s', 0):,.0f} forwarded events/s")
    print("json: " + json.dumps({"summary": summary, "runs": runs, "floors": floors, "redis_floors": redis_floors}))
    if guard:
        # About twice the ratios measured when the guard was set (docs/performance.md):
        # a change that doubles the per-webhook cost trips it.
        limits = {"service, memory mode": float(os.environ.get("GUARD_RATIO_MEMORY", "100")),
                  "service, redis mode": float(os.environ.get("GUARD_RATIO_REDIS", "150"))}
        failed = []
        for name, limit in limits.items():
            ratio = summary["targets"][name]["cpu_vs_nginx"]
            print(f"guard: {name}: CPU/webhook = {ratio:.1f} x nginx's (limit {limit:g}, debug build)")
            if ratio > limit:
                failed.append(f"{name}: {ratio:.1f} x nginx's (limit {limit:g})")
        if bad:
            sys.exit(f"guard: non-2xx answers or refusals: {bad}")
        if failed:
            sys.exit("guard: the per-webhook cost rose: " + "; ".join(failed))


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


def soak(seconds, channels=100_000):
    """Memory mode: `channels` distinct channels occupied by both apps, then vacated by
    both, over and over (every pass new bodies) for `seconds`; RSS every 10 s."""
    load.need("wrk", "wrk")
    load.need("nginx", "nginx-light")
    binary = os.environ.get("SERVICE_BIN") or os.path.join(TARGET, "release/pusher-dual-auth")
    if not os.environ.get("SERVICE_BIN"):
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "pusher-dual-auth"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="webhooks-soak-")
    host_port, nginx = start_host(work)
    port, admin = load.free_port(), load.free_port()
    with open(f"{work}/service.toml", "w") as f:
        f.write(service_conf(port, admin, host_port))
    proc = subprocess.Popen([binary, "serve", "--config", f"{work}/service.toml"], env={**os.environ, "RUST_LOG": ""},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    samples, done = [], threading.Event()
    passes, sent, lost = 0, 0, 0
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        start = time.time()

        def sample():
            while not done.is_set():
                samples.append((round(time.time() - start), rss_mib(proc.pid)))
                done.wait(10)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        path = f"{work}/soak.txt"
        url = f"http://127.0.0.1:{port}/webhooks"
        while time.time() - start < seconds:
            # The whole pass in one block: all 100,000 occupied at once, then all vacated.
            lines = write_webhooks(path, f"s{passes}", channels, block=channels)
            target = accepted(admin) + lines
            cmd = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", "-d3600s", "-s",
                   os.path.join(ROOT, "bench/wrk-webhooks.lua"), url]
            w = subprocess.Popen(cmd, env={**os.environ, "WEBHOOKS": path, "WRK_THREADS": str(THREADS)},
                                 stdout=subprocess.DEVNULL, start_new_session=True)
            try:
                # Done when every webhook was accepted, or none more for 5 s once they flow
                # (wrk takes seconds to load its share first): wrk drops the request in
                # flight on a connection it has to reconnect (a few a pass, if any).
                first = last = accepted(admin)
                still = time.time()
                while last < target and w.poll() is None and (last == first or time.time() - still < 5):
                    time.sleep(0.2)
                    now = accepted(admin)
                    if now != last:
                        last, still = now, time.time()
            finally:
                stop_wrk(w)
            passes, sent, lost = passes + 1, sent + lines, lost + max(target - accepted(admin), 0)
            print(f"pass {passes}: {lines} webhooks, {time.time() - start:.0f} s, RSS {rss_mib(proc.pid):.1f} MiB",
                  flush=True)
        drain(work)
        occupied = metric(admin, "pusher_webhook_events_total", "forwarded")
        done.set()
        sampler.join()
        samples.append((round(time.time() - start), rss_mib(proc.pid)))
        refused = metric(admin, "pusher_webhook_requests_total") - accepted(admin)
    finally:
        done.set()
        stop(proc)
        stop(nginx)
        load.shutil.rmtree(work, ignore_errors=True)
    rss = [m for _, m in samples]
    half = len(rss) // 2
    print(f"\nsoak: {passes} passes of {channels:,} channels occupied then vacated by both apps, "
          f"{sent:,} webhooks in {samples[-1][0]} s ({sent / samples[-1][0]:,.0f}/s), "
          f"{occupied:,.0f} events forwarded, {refused:.0f} refused, {lost:.0f} never answered (wrk)")
    print(f"RSS MiB every 10 s: first {rss[0]:.1f}, last {rss[-1]:.1f}, max {max(rss):.1f}; "
          f"max of the first half {max(rss[:half] or rss):.1f}, of the second half {max(rss[half:]):.1f}")
    print("samples: " + ", ".join(f"{t}s {m:.1f}" for t, m in samples))
    print("json: " + json.dumps({"passes": passes, "webhooks": sent, "lost": lost, "samples": samples}))


def stop_wrk(w):
    if w.poll() is None:
        os.killpg(w.pid, signal.SIGINT)
        try:
            w.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(w.pid, signal.SIGKILL)
            w.wait()


def main():
    # Cleanup (the `finally`s stop every process started) on SIGTERM too, and on SIGINT
    # even when started in the background (where the shell ignores SIGINT).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if "--soak" in sys.argv:
        secs = int(sys.argv[sys.argv.index("--soak-secs") + 1]) if "--soak-secs" in sys.argv else 60
        return soak(secs)
    bench("--guard" in sys.argv)


if __name__ == "__main__":
    main()
