#!/usr/bin/env python3
"""1, 2 and 3 replicas on one Redis behind nginx, in one run.

The release binary runs as N replicas (`[webhooks] state = "redis"`: shared merge
state and the fleet view, flushed every second) on a private redis-server (no
persistence, in a temporary directory), behind nginx (a round-robin upstream, the
recipe's `max_fails=0` and `keepalive 32`). The same nginx answers the session
check, the webhook forward and the apps' REST APIs. For N = 1, 2, 3, each in turn:

  - auth: wrk -t2 -c64 through the front with bench/wrk-auth.lua (as bench/load.py:
    every request another socket, channel and user), req/s and p99, and the CPU
    per request of the replicas together, of the front and of Redis;
  - webhooks: wrk -t2 -c16 (a client reads at most 16 bodies at once,
    `MAX_BODIES_PER_CLIENT`) with pre-signed webhooks, each another body
    (bench/wrk-replicas-webhooks.lua), alternately from both apps;
  - Redis: the commands each replica sends per second at idle (IDLE_SECS) and
    under each load, from `INFO` deltas (`total_commands_processed`, the INFO
    calls themselves taken off; `commandstats` beside it for which);
  - the status page: STATUS_READS reads of `/status` on one replica's admin port
    (after the idle phase), and the Redis commands one read costs over the idle
    rate.

Each replica runs `workers = 1` and is pinned with taskset to core i mod the
machine's cores (on 2 cores the third shares core 0): on a small machine shared
with the load, that is the cheaper setting (docs/performance.md). wrk, nginx and
Redis are not pinned: they share the same cores, so adding a replica cannot add a
whole core's throughput here. What a replica adds is read from the CPU per request:
flat as replicas are added means each adds what it costs, and the throughput then
follows the cores free for it.

    python3 bench/replicas.py     # DURATION=5 IDLE_SECS=10 STATUS_READS=200 REPLICAS=1,2,3
    python3 bench/replicas.py --guard  # CI: 2 replicas of the debug build, 3 s each; exit 1 if
                                       # what the replicas share grew (Redis commands per auth,
                                       # per webhook, per status read, per idle second)

The guard counts Redis commands rather than timing them. Its limits are about twice
what was measured (docs/performance.md): under auth load a replica sends Redis 21-24
commands a second whatever the rate, since an authorization touches Redis 0.00 times
(42: one command per authorization would add hundreds a second); a webhook 7.0-7.7
(15); a status read 11 (22); an idle replica 14.9-16.4 a second (33). A run with too
few authorizations to tell (under 100 a second) or with more webhooks than distinct
bodies (a repeat is acknowledged as a duplicate and costs less) fails.
"""
import hashlib, hmac, json, os, socket, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402

ROOT = load.ROOT
GUARD = "--guard" in sys.argv
IDLE_SECS = int(os.environ.get("IDLE_SECS", "3" if GUARD else "10"))
STATUS_READS = int(os.environ.get("STATUS_READS", "20" if GUARD else "200"))
REPLICAS = [int(n) for n in os.environ.get("REPLICAS", "2" if GUARD else "1,2,3").split(",")]
if GUARD:
    load.DURATION = int(os.environ.get("DURATION", "3"))
# Distinct webhook bodies per run: more than wrk sends at 20,000/s (release ran ~15,000/s).
WEBHOOK_BODIES = max(30_000, 20_000 * load.DURATION) if GUARD else 150_000
# Redis commands: per second per replica under auth load, per webhook (over the idle
# rate), per status read, per idle second per replica; about twice what was measured.
GUARD_LIMITS = {"second per replica under auth load": 42, "webhook": 15, "status read": 22,
                "idle second per replica": 33}
WEBHOOK_CONNECTIONS = 16
APPS = {"old": ("1111", "old-app-key", "old-app-secret"), "new": ("2222", "new-app-key", "new-app-secret")}


def redis_command(port, *args):
    """One command over RESP; the reply's bulk string (INFO's text)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"$"):
                head, _, rest = data.partition(b"\r\n")
                if len(rest) >= int(head[1:]) + 2:
                    return rest[: int(head[1:])].decode()
            elif data.endswith(b"\r\n"):
                return data.decode().strip()


def redis_counts(port):
    """Commands Redis has processed (top level) and calls per command (scripts' own calls included)."""
    info = redis_command(port, "INFO", "all")
    total = int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("total_commands_processed:")))
    calls = {}
    for line in info.splitlines():
        if line.startswith("cmdstat_"):
            name, stats = line[len("cmdstat_"):].split(":", 1)
            calls[name] = int(stats.split("calls=")[1].split(",")[0])
    return total, calls


class RedisWatch:
    """Redis commands between start and stop, the INFO calls taken off."""

    def __init__(self, port):
        self.port = port
        self.total0, self.calls0 = redis_counts(port)
        self.t0 = time.time()

    def stop(self):
        total, calls = redis_counts(self.port)
        self.seconds = time.time() - self.t0
        self.total = total - self.total0 - 1  # this INFO
        self.calls = {k: v - self.calls0.get(k, 0) for k, v in calls.items() if v - self.calls0.get(k, 0)}
        self.calls["info"] = self.calls.get("info", 0) - 1
        if not self.calls["info"]:
            del self.calls["info"]
        return self


def replica_conf(port, admin, check_port, redis_port):
    apps = "".join(f'[apps.{n}]\napp_id = "{i}"\nkey = "{k}"\nsecret = "{s}"\nrest_url = "http://127.0.0.1:{check_port}"\n'
                   for n, (i, k, s) in APPS.items())
    return f"""[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
workers = 1
[session_check]
url = "http://127.0.0.1:{check_port}/check"
{apps}[webhooks]
forward_url = "http://127.0.0.1:{check_port}/hook"
key = "hook-key"
secret = "hook-secret"
state = "redis"
redis_url = "redis://127.0.0.1:{redis_port}/0"
[status]
old_app = "old"
[rollout]
from = "old"
to = "new"
percent = 50
[log]
format = "json"
level = "warn"
"""


def nginx_conf(work, check_port, front_port, replicas):
    upstream = "".join(f"    server 127.0.0.1:{p} max_fails=0;\n" for p in replicas)
    return f"""worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/body; proxy_temp_path {work}/proxy; fastcgi_temp_path {work}/fcgi;
  uwsgi_temp_path {work}/uwsgi; scgi_temp_path {work}/scgi;
  keepalive_requests 1000000;
  upstream replicas {{
{upstream}    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{check_port};
    location = /check {{
      default_type application/json;
      add_header X-Check-Id $http_x_check_id always;
      return 200 '{{"user_id":"u-1","user_info":{{"name":"Bench"}}}}';
    }}
    location /apps/ {{
      default_type application/json;
      return 200 '{{"channels":{{}}}}';
    }}
    location / {{
      default_type application/json;
      return 200 '{{}}';
    }}
  }}
  server {{
    listen 127.0.0.1:{front_port};
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
    }}
  }}
}}
"""


def write_webhooks(path, count):
    """`count` signed webhooks, each another body: per channel, occupied on old, then on
    new, then vacated on old, then on new (what the merge forwards once each)."""
    now = int(time.time() * 1000)
    tag = os.urandom(4).hex()
    with open(path, "w") as f:
        for i in range(count):
            name = "old" if i % 2 == 0 else "new"
            _, key, secret = APPS[name]
            event = "channel_occupied" if (i // 2) % 2 == 0 else "channel_vacated"
            body = json.dumps({"time_ms": now, "events": [{"name": event, "channel": f"private-wh-{tag}-{i // 4}"}]},
                              separators=(",", ":"))
            sig = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
            f.write(f"{key}\t{sig}\t{body}\n")


def wrk(url, seconds, script, connections, env=None):
    cmd = ["wrk", f"-t{load.THREADS}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
           os.path.join(ROOT, "bench", script), url]
    path = "/" + url.split("/", 3)[3]
    return load.parse(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                     env={**os.environ, "WRK_PATH": path, "THREADS": str(load.THREADS),
                                          **(env or {})}).stdout)


def under_load(kind, url, script, connections, groups, redis_port, n, idle_rate, env_for=None):
    """One wrk run after a warm-up: throughput, latency, CPU per request of each group, Redis
    commands (also over `idle_rate`, the fleet's commands per second at idle)."""
    wrk(url, 2, script, connections, env_for("warm") if env_for else None)
    cpu0 = {g: load.cpu_seconds(p) for g, p in groups.items()}
    watch = RedisWatch(redis_port)
    r = wrk(url, load.DURATION, script, connections, env_for("run") if env_for else None)
    watch.stop()
    r["cpu_us_per_req"] = {g: (load.cpu_seconds(p) - cpu0[g]) / max(r["requests"], 1) * 1e6 for g, p in groups.items()}
    r["redis_per_sec_per_replica"] = watch.total / watch.seconds / n
    r["redis_per_req"] = watch.total / max(r["requests"], 1)
    r["redis_over_idle_per_req"] = max(watch.total - idle_rate * watch.seconds, 0) / max(r["requests"], 1)
    r["redis_calls"] = watch.calls
    r["kind"] = kind
    return r


def wait_http(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with load.urllib.request.urlopen(url, timeout=1) as res:
                if res.status == 200:
                    return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{url} not ready")


def main():
    load.need("nginx", "nginx-light")
    load.need("wrk", "wrk")
    load.need("redis-server", "redis-server")
    binary = load.service_binary("debug" if GUARD else "release")
    cores = os.cpu_count()
    work = load.tempfile.mkdtemp(prefix="replicas-bench-")
    procs = []  # every process started, ended (its group) in the finally

    def start(cmd, **kw):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw)
        procs.append(p)
        return p

    def stop(p):
        try:
            os.killpg(p.pid, load.signal.SIGTERM)
        except ProcessLookupError:
            pass
        p.wait(timeout=30)
        procs.remove(p)

    results = []
    try:
        for n in REPLICAS:
            redis_port, check_port, front_port = load.free_port(), load.free_port(), load.free_port()
            os.makedirs(f"{work}/redis-{n}")
            redis = start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", f"{work}/redis-{n}"])
            ports = [(load.free_port(), load.free_port()) for _ in range(n)]
            replicas = []
            for i, (port, admin) in enumerate(ports):
                conf = f"{work}/replica-{n}-{i}.toml"
                with open(conf, "w") as f:
                    f.write(replica_conf(port, admin, check_port, redis_port))
                replicas.append(start(["taskset", "-c", str(i % cores), binary, "serve", "--config", conf],
                                      env={**os.environ, "RUST_LOG": ""}))
            with open(f"{work}/nginx-{n}.conf", "w") as f:
                f.write(nginx_conf(work, check_port, front_port, [p for p, _ in ports]))
            nginx = start(["nginx", "-p", work, "-c", f"{work}/nginx-{n}.conf", "-g", "daemon off;"])
            for port, admin in ports:
                wait_http(f"http://127.0.0.1:{admin}/readyz")
            wait_http(f"http://127.0.0.1:{front_port}/healthz")
            time.sleep(2)  # every replica has flushed once
            groups = {"replicas": [p for r in replicas for p in load.tree(r.pid)], "nginx": load.tree(nginx.pid),
                      "redis": [redis.pid]}
            row = {"replicas": n}
            # Idle: the fleet flush (and whatever else runs in the background) alone.
            watch, cpu0 = RedisWatch(redis_port), load.cpu_seconds(groups["replicas"])
            time.sleep(IDLE_SECS)
            watch.stop()
            row["idle"] = {"redis_per_sec_per_replica": watch.total / watch.seconds / n, "redis_calls": watch.calls,
                           "replica_cpu_ms_per_sec": (load.cpu_seconds(groups["replicas"]) - cpu0) / watch.seconds / n * 1e3}
            # The status page: one replica's /status, read STATUS_READS times in a row; before
            # the webhook load, whose outbox the replicas then drain for a while.
            status_url = f"http://127.0.0.1:{ports[0][1]}/status"
            watch, cpu0, t0 = RedisWatch(redis_port), load.cpu_seconds(groups["replicas"]), time.time()
            for _ in range(STATUS_READS):
                with load.urllib.request.urlopen(status_url, timeout=5) as res:
                    res.read()
            elapsed = time.time() - t0
            watch.stop()
            background = row["idle"]["redis_per_sec_per_replica"] * n * watch.seconds
            row["status"] = {"redis_per_read": (watch.total - background) / STATUS_READS,
                             "ms_per_read": elapsed / STATUS_READS * 1e3, "redis_calls": watch.calls,
                             "replica_cpu_us_per_read": (load.cpu_seconds(groups["replicas"]) - cpu0) / STATUS_READS * 1e6}
            idle_rate = row["idle"]["redis_per_sec_per_replica"] * n
            row["auth"] = under_load("auth", f"http://127.0.0.1:{front_port}/auth/new", "wrk-auth.lua",
                                     load.CONNECTIONS, groups, redis_port, n, idle_rate)

            def webhook_file(phase):
                path = f"{work}/webhooks-{n}-{phase}.tsv"
                write_webhooks(path, WEBHOOK_BODIES)
                return {"WEBHOOKS": path}
            row["webhooks"] = under_load("webhooks", f"http://127.0.0.1:{front_port}/webhooks", "wrk-replicas-webhooks.lua",
                                         WEBHOOK_CONNECTIONS, groups, redis_port, n, idle_rate, webhook_file)
            results.append(row)
            for p in [nginx, *replicas, redis]:
                stop(p)
    finally:
        for p in list(reversed(procs)):
            try:
                os.killpg(p.pid, load.signal.SIGTERM)
                p.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        load.shutil.rmtree(work, ignore_errors=True)

    one = {k: results[0][k]["rps"] for k in ("auth", "webhooks")} if results and results[0]["replicas"] == 1 else None
    print(f"\nN replicas ({'debug' if GUARD else 'release'}, workers = 1 each, pinned to core i mod {cores}) on one redis-server behind nginx "
          f"(round robin); wrk -t{load.THREADS}, {load.DURATION} s after a 2 s warm-up; {cores} CPUs shared by all")
    print(f"{'N':>2} {'load':<9}{'req/s':>9}{'x N=1':>7}{'p50 ms':>8}{'p99 ms':>8}{'non-2xx':>8}"
          f"{'replicas µs/req':>17}{'per replica':>13}{'nginx µs/req':>14}{'redis µs/req':>14}"
          f"{'redis cmd/req':>15}{'redis cmd/s/replica':>21}")
    for row in results:
        n = row["replicas"]
        for kind in ("auth", "webhooks"):
            r = row[kind]
            c = r["cpu_us_per_req"]
            scale = f"{r['rps'] / one[kind]:>7.2f}" if one else f"{'':>7}"
            print(f"{n:>2} {kind:<9}{r['rps']:>9.0f}{scale}{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}{r['non2xx']:>8}"
                  f"{c['replicas']:>17.1f}{c['replicas'] * n:>13.1f}{c['nginx']:>14.1f}{c['redis']:>14.1f}"
                  f"{r['redis_per_req']:>15.2f}{r['redis_per_sec_per_replica']:>21.0f}")
    print("per replica: a replica's CPU per request it answered (each answers 1/N of them)")
    print(f"\n{'N':>2}{'idle: redis cmd/s/replica':>27}{'replica CPU ms/s':>18}"
          f"{'status read: redis cmd':>24}{'ms':>7}{'replica µs':>12}")
    for row in results:
        i, s = row["idle"], row["status"]
        print(f"{row['replicas']:>2}{i['redis_per_sec_per_replica']:>27.1f}{i['replica_cpu_ms_per_sec']:>18.2f}"
              f"{s['redis_per_read']:>24.1f}{s['ms_per_read']:>7.2f}{s['replica_cpu_us_per_read']:>12.0f}")
    print("\nidle Redis calls by command (all replicas, per second): " + ", ".join(
        f"N={row['replicas']}: " + " ".join(f"{k} {v / IDLE_SECS:.1f}" for k, v in sorted(row["idle"]["redis_calls"].items()))
        for row in results))
    print("status read, Redis calls by command (per read): " + ", ".join(
        f"N={row['replicas']}: " + " ".join(f"{k} {v / STATUS_READS:.2f}" for k, v in sorted(row["status"]["redis_calls"].items()))
        for row in results))
    bad = [f"N={row['replicas']} {k}" for row in results for k in ("auth", "webhooks")
           if row[k]["non2xx"] or row[k]["socket_errors"] != "none"]
    if bad:
        print(f"\nerrors or non-2xx answers: {bad}")
    print("json: " + json.dumps(results))
    if GUARD:
        guard(results, bad)


def guard(results, bad):
    """Exit 1 if a replica shares more with the others than it did when the limits were set."""
    over = []
    for row in results:
        seen = {"second per replica under auth load": row["auth"]["redis_per_sec_per_replica"],
                "webhook": row["webhooks"]["redis_over_idle_per_req"],
                "status read": row["status"]["redis_per_read"],
                "idle second per replica": row["idle"]["redis_per_sec_per_replica"]}
        for what, value in seen.items():
            print(f"guard: N={row['replicas']} Redis commands per {what} {value:.3f} (limit {GUARD_LIMITS[what]:g})")
            if value > GUARD_LIMITS[what]:
                over.append(f"N={row['replicas']} per {what}: {value:.3f} > {GUARD_LIMITS[what]:g}")
        print(f"guard: N={row['replicas']} Redis commands per authorization over the idle rate "
              f"{row['auth']['redis_over_idle_per_req']:.3f} (not a limit: the fleet flush carries the counts)")
        if row["auth"]["rps"] < 100:
            over.append(f"N={row['replicas']}: {row['auth']['rps']:.0f} authorizations/s, too few to tell "
                        "one Redis command per authorization from the flush")
        if row["webhooks"]["requests"] > WEBHOOK_BODIES // 2 or row["webhooks"]["requests"] < 100:
            over.append(f"N={row['replicas']}: {row['webhooks']['requests']} webhooks for {WEBHOOK_BODIES} bodies "
                        "(each wrk thread reads half the file: repeats, or too few to count)")
    if bad:
        sys.exit(f"guard: errors or non-2xx answers from {bad}")
    if over:
        sys.exit("guard: what the replicas share grew: " + "; ".join(over))


if __name__ == "__main__":
    main()
