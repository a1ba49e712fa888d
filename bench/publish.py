#!/usr/bin/env python3
"""Publish fan-out, side by side in one run: the REST floor, the host publishing
through the service (recovery off, in memory, in Redis), and the same host
publishing to both apps directly with the official SDK.

nginx stands in for both apps' REST APIs (each app on its own port; it answers
200 `{}` at once). Two passes:

- Throughput (`--throughput`): wrk -t2 -c64 replays one signed publish, a single
  event (`/events`) or a batch of 10 (`/batch_events`, counted per event), at
  the service (which verifies it and forwards it to both apps) and, as **the
  floor**, at nginx answering the same publish itself: one exchange, what a
  publish costs at best. The floor is measured before and after each service
  (this machine's speed drifts by tens of percent); a service's ratio is
  against the mean of the two. Printed: events/s, p50/p99, the service's CPU
  per event (from /proc), x the floor, and how many connections nginx accepted
  against how many publishes it answered during the run (stub_status): with
  keep-alive, a few dozen for hundreds of thousands.
- Added latency (`--latency`): the host's own code, the `pusher` SDK (Node,
  bench/node-reference/publisher.js), publishes at a fixed rate (open loop),
  either to both apps directly in parallel (two triggers, Promise.all: the
  seed's step 4) or once to the service. p50/p99 of each, and the service's
  minus the direct one's at the same percentile and load, per round.

The recovery rows show what keeping events costs (its issue's goal: at most
10 % more per event). Figures are medians of ROUNDS rounds.

    python3 bench/publish.py                # both passes; ROUNDS=3 DURATION=4
    python3 bench/publish.py --throughput   # or --latency (RATE=1000 publishes/s)
    python3 bench/publish.py --instructions # user-space instructions per publish (callgrind;
                                            # CALLGRIND_DIR=dir keeps the profiles)
    python3 bench/publish.py --redis-floor  # redis-server's CPU per XADD alone (redis-benchmark)
    python3 bench/publish.py --guard        # CI: debug build, ~15 s; exit 1 if the service's
                                            # CPU per publish exceeds PUBLISH_GUARD_RATIO x the
                                            # floor's, or a publish opened a connection
    SERVICE_BIN=/path/to/other/build python3 bench/publish.py   # another build
"""
import hashlib, hmac, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the same wrk parsing, CPU and RSS measurements as the auth bench)

ROOT = load.ROOT
DURATION = int(os.environ.get("DURATION", "4"))
RATE = int(os.environ.get("RATE", "1000"))
KEY, SECRET = "publisher-key", "publisher-secret"
APPS = (("old", "1111"), ("new", "2222"))
EVENT = {"name": "tick", "channel": "private-bench", "data": json.dumps({"n": 1, "pad": "x" * 100})}
BATCH = 10
# kind: (path suffix, body, events per request)
KINDS = {
    "single": ("/events", json.dumps(EVENT)),
    "batch": ("/batch_events", json.dumps({"batch": [{**EVENT, "channel": f"private-bench-{i}"} for i in range(BATCH)]})),
}
PER_REQUEST = {"single": 1, "batch": BATCH}
RECOVERY = ("off", "memory", "redis")


def signed_path(app_id, suffix, body, key=KEY, secret=SECRET):
    path = f"/apps/{app_id}{suffix}"
    params = {"auth_key": key, "auth_timestamp": str(int(time.time())), "auth_version": "1.0",
              "body_md5": hashlib.md5(body.encode()).hexdigest()}
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    sig = hmac.new(secret.encode(), f"POST\n{path}\n{query}".encode(), hashlib.sha256).hexdigest()
    return f"{path}?{query}&auth_signature={sig}"


class World:
    """nginx (both apps' REST APIs, one port each, and its stub_status), Redis, and the
    services started; everything stopped on exit, whatever happened."""

    def __init__(self, redis=True):
        self.work = tempfile.mkdtemp(prefix="publish-bench-")
        self.rest = {name: load.free_port() for name, _ in APPS}
        self.status_port = load.free_port()
        self.procs = []
        listens = "".join(f"    listen 127.0.0.1:{p};\n" for p in self.rest.values())
        with open(f"{self.work}/nginx.conf", "w") as f:
            f.write(load.nginx_http(self.work, f"""{listens}    location / {{ default_type application/json; return 200 '{{}}'; }}
  }}
  server {{
    listen 127.0.0.1:{self.status_port};
    location / {{ stub_status; }}"""))
        self.nginx = self.start(["nginx", "-p", self.work, "-c", f"{self.work}/nginx.conf", "-g", "daemon off;"])
        self.redis_port = None
        if redis:
            self.redis_port = load.free_port()
            self.redis = self.start(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no", "--dir", self.work])
        time.sleep(0.3)

    def start(self, cmd, env=None, cwd=None, capture=False):
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
                                stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, text=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self):
        for proc in reversed(list(self.procs)):
            self.stop(proc)
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def nginx_counts(self):
        """(connections accepted, requests answered) so far, without this read itself."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.status_port}/", timeout=5) as r:
            lines = r.read().decode().splitlines()
        accepts, _, requests = (int(x) for x in lines[2].split())
        return accepts - 1, requests - 1

    def service(self, binary, recovery, prefix, wrap=(), workers=None):
        port = load.free_port()
        apps = "".join(f'[apps.{n}]\napp_id = "{i}"\nkey = "{n}-key"\nsecret = "{n}-secret"\n'
                       f'rest_url = "http://127.0.0.1:{self.rest[n]}"\n' for n, i in APPS)
        store = ""
        if recovery == "redis":
            store = (f'[webhooks]\nforward_url = "http://127.0.0.1:{self.rest["old"]}/hook"\nkey = "k"\n'
                     f'secret = "s"\nstate = "redis"\nredis_url = "redis://127.0.0.1:{self.redis_port}/0"\n'
                     f'redis_prefix = "{prefix}"\n')
        conf = f"{self.work}/service-{prefix}.toml"
        with open(conf, "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:{port}"
{f'workers = {workers}' if workers else ''}
[session_check]
url = "http://127.0.0.1:9/check"
{apps}[publish]
app_id = "dual"
key = "{KEY}"
secret = "{SECRET}"
targets = ["old", "new"]
{store}{'[recovery]' if recovery != 'off' else ''}
[log]
format = "json"
level = "warn"
""")
        proc = self.start([*wrap, binary, "serve", "--config", conf], env={"RUST_LOG": ""})
        for _ in range(1200):
            if proc.poll() is not None:
                sys.exit(f"the service exited with {proc.returncode} ({conf})")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                return proc, port
            except Exception:
                time.sleep(0.1)
        sys.exit("the service did not start")


def wrk(url, body, seconds):
    cmd = ["wrk", f"-t{load.THREADS}", f"-c{load.CONNECTIONS}", f"-d{seconds}s", "--latency", "-s",
           os.path.join(ROOT, "bench/wrk-post.lua"), url]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "BODY": body}).stdout


def measure(world, name, pids, url, kind, seconds, warmup=2):
    body = KINDS[kind][1]
    if warmup:
        wrk(url, body, warmup)
    cpu0, (acc0, req0) = load.cpu_seconds(pids), world.nginx_counts()
    r = load.parse(wrk(url, body, seconds))
    cpu = load.cpu_seconds(pids) - cpu0
    acc1, req1 = world.nginx_counts()
    n = PER_REQUEST[kind]
    r.update(name=name, kind=kind, events_per_s=r["rps"] * n,
             cpu_us_per_req=cpu / max(r["requests"], 1) * 1e6,
             cpu_us_per_event=cpu / max(r["requests"] * n, 1) * 1e6,
             peak_rss_mib=load.peak_rss_mib(pids),
             nginx_accepts=acc1 - acc0, nginx_requests=req1 - req0)
    return r


def floor(world, kind, seconds):
    url = f"http://127.0.0.1:{world.rest['old']}{signed_path('dual', KINDS[kind][0], KINDS[kind][1])}"
    return measure(world, "floor", load.tree(world.nginx.pid), url, kind, seconds, warmup=1)


def throughput(binary, rounds, seconds):
    """Per round: for each recovery mode, the floor (single, batch), the service (single,
    batch), the floor again. Returns the service rows, each with its bracketing floor."""
    rows = []
    with World() as world:
        for round_ in range(rounds):
            before = {k: floor(world, k, seconds) for k in KINDS}
            for recovery in RECOVERY:
                proc, port = world.service(binary, recovery, f"r{round_}-{recovery}")
                pids = load.tree(proc.pid)
                runs = []
                accepts0 = world.nginx_counts()[0]
                for kind, (suffix, body) in KINDS.items():
                    url = f"http://127.0.0.1:{port}{signed_path('dual', suffix, body)}"
                    runs.append(measure(world, f"service, recovery {recovery}", pids, url, kind, seconds))
                    # Every connection this service opened to the apps so far, warm-ups included.
                    runs[-1]["service_accepts"] = world.nginx_counts()[0] - accepts0
                world.stop(proc)
                after = {k: floor(world, k, seconds) for k in KINDS}
                for r in runs:
                    fl = (before[r["kind"]], after[r["kind"]])
                    r["round"] = round_
                    r["floor_cpu_us_per_req"] = sum(f["cpu_us_per_req"] for f in fl) / 2
                    r["floor_rps"] = sum(f["rps"] for f in fl) / 2
                    r["floor_p50_ms"] = sum(f["p50_ms"] for f in fl) / 2
                    r["floor_p99_ms"] = sum(f["p99_ms"] for f in fl) / 2
                    r["x_floor"] = r["cpu_us_per_req"] / r["floor_cpu_us_per_req"]
                    rows.append(r)
                before = after
    return rows


def sdk(world, mode, kind, apps, rate, seconds):
    ref = os.path.join(ROOT, "bench/node-reference")
    env = {"MODE": mode, "KIND": kind, "RATE": str(rate), "SECONDS": str(seconds), "WARMUP": "1",
           "BATCH": str(BATCH), "APPS": apps}
    proc = world.start(["node", "publisher.js"], env=env, cwd=ref, capture=True)
    out, _ = proc.communicate(timeout=seconds + 60)
    world.procs.remove(proc)
    if proc.returncode:
        sys.exit(f"publisher.js {mode} {kind} exited with {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def latency(binary, rounds, seconds, rate):
    """Per round and kind: the host publishing to both apps directly, then through the
    service with each recovery mode, at the same rate (publishes/s; a batch is BATCH
    events, so batches go at rate / BATCH)."""
    ref = os.path.join(ROOT, "bench/node-reference")
    if not os.path.isdir(os.path.join(ref, "node_modules")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ref, check=True)
    rows = []
    with World() as world:
        direct_apps = ",".join(f"{i}:{n}-key:{n}-secret@127.0.0.1:{world.rest[n]}" for n, i in APPS)
        for round_ in range(rounds):
            for kind in KINDS:
                r_ = rate // PER_REQUEST[kind]
                acc0, req0 = world.nginx_counts()
                direct = sdk(world, "direct", kind, direct_apps, r_, seconds)
                acc1, req1 = world.nginx_counts()
                direct.update(name="direct to both apps (SDK)", round=round_, nginx_accepts=acc1 - acc0,
                              nginx_requests=req1 - req0)
                rows.append(direct)
                for recovery in RECOVERY:
                    proc, port = world.service(binary, recovery, f"l{round_}-{kind}-{recovery}")
                    pids = load.tree(proc.pid)
                    cpu0, (acc0, req0) = load.cpu_seconds(pids), world.nginx_counts()
                    r = sdk(world, "service", kind, f"dual:{KEY}:{SECRET}@127.0.0.1:{port}", r_, seconds)
                    acc1, req1 = world.nginx_counts()
                    # Includes the SDK's 1 s warm-up: an estimate of the service's CPU at this rate.
                    events = (r["publishes"] + r_) * PER_REQUEST[kind]
                    r.update(name=f"through the service, recovery {recovery}", round=round_,
                             service_cpu_us_per_event=(load.cpu_seconds(pids) - cpu0) / max(events, 1) * 1e6,
                             nginx_accepts=acc1 - acc0, nginx_requests=req1 - req0)
                    for p in ("p50", "p99"):
                        r[f"added_{p}_ms"] = r[f"{p}_ms"] - direct[f"{p}_ms"]
                    world.stop(proc)
                    rows.append(r)
    return rows


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def report_throughput(rows):
    print(f"\nThroughput: wrk -t{load.THREADS} -c{load.CONNECTIONS} -d{DURATION}s, one signed publish replayed "
          f"(a single event, or a batch of {BATCH} counted per event); medians of {len({r['round'] for r in rows})} "
          "round(s); the floor (nginx answering the same publish itself) measured before and after each service")
    print(f"{'':<30}{'kind':<8}{'events/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'CPU µs/ev':>11}{'x floor':>9}"
          f"{'RSS MiB':>9}{'non-2xx':>9}{'nginx conns/requests':>24}")
    for kind in KINDS:
        fl = [r for r in rows if r["kind"] == kind]
        groups = {}
        for r in fl:
            groups.setdefault(r["name"], []).append(r)
        first = next(iter(groups.values()))
        n = PER_REQUEST[kind]
        print(f"{'floor: nginx, one exchange':<30}{kind:<8}{med(first, 'floor_rps') * n:>10.0f}"
              f"{med(first, 'floor_p50_ms'):>8.2f}{med(first, 'floor_p99_ms'):>8.2f}"
              f"{med(first, 'floor_cpu_us_per_req') / n:>11.2f}{1:>9}")
        for name, rs in groups.items():
            conns = f"{max(r['service_accepts'] for r in rs)}/{statistics.median(r['nginx_requests'] for r in rs):.0f}"
            print(f"{name:<30}{kind:<8}{med(rs, 'events_per_s'):>10.0f}{med(rs, 'p50_ms'):>8.2f}{med(rs, 'p99_ms'):>8.2f}"
                  f"{med(rs, 'cpu_us_per_event'):>11.2f}{med(rs, 'x_floor'):>9.2f}{max(r['peak_rss_mib'] for r in rs):>9.1f}"
                  f"{sum(r['non2xx'] for r in rs):>9}{conns:>24}")
    print("nginx conns/requests: connections the service opened to the apps since it started, warm-ups included "
          "(most in a round) / requests nginx answered during the measured run (median; two per publish)")
    for kind in KINDS:
        off = {r["round"]: r for r in rows if r["kind"] == kind and r["name"] == "service, recovery off"}
        for recovery in RECOVERY[1:]:
            per = [r["cpu_us_per_event"] / off[r["round"]]["cpu_us_per_event"] - 1 for r in rows
                   if r["kind"] == kind and r["name"] == f"service, recovery {recovery}"]
            print(f"recovery {recovery}, {kind}: {statistics.median(per) * 100:+.1f} % CPU per event over recovery off "
                  f"(per round {', '.join(f'{x * 100:+.1f}' for x in per)}; goal: at most +10 %)")


def report_latency(rows, rate):
    print(f"\nAdded latency: the pusher SDK (Node) publishing at {rate} events/s, open loop (batches at "
          f"{rate // BATCH}/s); latency from trigger() to its promise settling; medians over rounds")
    print(f"{'':<36}{'kind':<8}{'p50 ms':>8}{'p99 ms':>8}{'+p50 ms':>9}{'+p99 ms':>9}{'host CPU µs/pub':>17}"
          f"{'svc CPU µs/ev':>15}{'errors':>8}{'nginx conns/requests':>24}")
    for kind in KINDS:
        groups = {}
        for r in rows:
            if r["kind"] == kind:
                groups.setdefault(r["name"], []).append(r)
        for name, rs in groups.items():
            added = (f"{med(rs, 'added_p50_ms'):>9.2f}{med(rs, 'added_p99_ms'):>9.2f}" if "added_p50_ms" in rs[0]
                     else f"{'':>18}")
            svc = f"{med(rs, 'service_cpu_us_per_event'):>15.1f}" if "service_cpu_us_per_event" in rs[0] else f"{'':>15}"
            conns = f"{max(r['nginx_accepts'] for r in rs)}/{statistics.median(r['nginx_requests'] for r in rs):.0f}"
            print(f"{name:<36}{kind:<8}{med(rs, 'p50_ms'):>8.2f}{med(rs, 'p99_ms'):>8.2f}{added}"
                  f"{med(rs, 'host_cpu_us_per_publish'):>17.1f}{svc}{sum(r['errors'] + r['skipped'] for r in rs):>8}"
                  f"{conns:>24}")
    print("+p50/+p99: through the service minus direct to both apps, same percentile, same round and load "
          "(targets: <= 1 ms, <= 3 ms)")


def instructions(binary):
    """User-space instructions per publish and per event (callgrind, 1 worker, wrk -t1 -c8 for
    2 x DURATION s, startup subtracted): repeatable where CPU time is not. Single events and
    batches, recovery off, in memory and in Redis (the service's own instructions: Redis's
    are its own process)."""
    load.need("valgrind", "valgrind")
    load.need("redis-server", "redis-server")
    rows = []
    with World() as world:
        for recovery in RECOVERY:
            for kind in KINDS:
                totals = []
                for seconds in (0, DURATION * 2):
                    out = f"{world.work}/cg.out"
                    proc, port = world.service(binary, recovery, f"cg-{recovery}-{kind}-{seconds}", workers=1,
                                               wrap=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
                    publishes = 0
                    if seconds:
                        suffix, body = KINDS[kind]
                        url = f"http://127.0.0.1:{port}{signed_path('dual', suffix, body)}"
                        cmd = ["wrk", "-t1", "-c8", f"-d{seconds}s", "--latency", "-s",
                               os.path.join(ROOT, "bench/wrk-post.lua"), url]
                        r = load.parse(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                                      env={**os.environ, "BODY": body}).stdout)
                        publishes = r["requests"]
                    world.stop(proc)
                    if os.environ.get("CALLGRIND_DIR") and seconds:  # keep the profile, for callgrind_annotate
                        shutil.copy(out, os.path.join(os.environ["CALLGRIND_DIR"], f"publish-{recovery}-{kind}.callgrind"))
                    with open(out) as f:
                        total = next(int(line.split()[1]) for line in f if line.startswith(("summary:", "totals:")))
                    totals.append((publishes, total))
                (p0, i0), (p1, i1) = totals
                per = (i1 - i0) / (p1 - p0)
                rows.append((f"service, recovery {recovery}", kind, p1 - p0, per, per / PER_REQUEST[kind]))
    print(f"\nuser-space instructions per publish (callgrind, 1 worker, wrk -t1 -c8 -d{DURATION * 2}s)")
    off = {kind: ev for name, kind, _, _, ev in rows if name.endswith(" off")}
    print(f"{'':<30}{'kind':<8}{'per publish':>13}{'per event':>11}{'vs off':>8}   publishes")
    for name, kind, n, per, ev in rows:
        print(f"{name:<30}{kind:<8}{per:>13,.0f}{ev:>11,.0f}{ev / off[kind]:>8.3f}   {n}")
    print("json: " + json.dumps([{"name": n, "kind": k, "publishes": c, "instructions_per_publish": p,
                                  "instructions_per_event": e} for n, k, c, p, e in rows]))


def redis_floor():
    """Recovery in Redis at its cheapest: what redis-server's own CPU is per XADD of one
    event (the EVENT payload) onto a capped stream, sent by redis-benchmark alone, one
    command per round trip (a single publish's one call) and ten per round trip (a batch's).
    Medians of ROUNDS runs of 200,000 commands."""
    load.need("redis-server", "redis-server")
    data = EVENT["data"]
    rows = []
    with World() as world:
        pid = world.redis.pid
        for pipeline in (1, BATCH):
            per = []
            for _ in range(load.ROUNDS):
                cpu0 = load.cpu_seconds([pid])
                subprocess.run(["redis-benchmark", "-p", str(world.redis_port), "-q", "-n", "200000", "-c", "8",
                                "-P", str(pipeline), "XADD", "floor:recovery:{ch}", "MAXLEN", "~", "1000", "*",
                                "e", EVENT["name"], "d", data], check=True, capture_output=True)
                per.append((load.cpu_seconds([pid]) - cpu0) / 200000 * 1e6)
            rows.append((pipeline, statistics.median(per), per))
    print("\nredis-server CPU per XADD (redis-benchmark -c8 -n200000, a capped stream; medians)")
    for pipeline, med, per in rows:
        print(f"{pipeline:>3} per round trip   {med:6.2f} µs   runs: {', '.join(f'{x:.2f}' for x in per)}")
    print("json: " + json.dumps([{"pipeline": p, "cpu_us_per_xadd": m, "runs": r} for p, m, r in rows]))


def guard():
    """Debug build: the service (recovery in memory, single events) against the floor
    before and after it; its CPU per publish over the floor's, and its connections."""
    load.need("wrk", "wrk")
    load.need("nginx", "nginx-light")
    binary = load.service_binary("debug")
    seconds = 3
    # About twice the 120-166 x measured for the debug build (docs/performance.md): a change
    # that doubles the per-publish work trips it; a 10 % drift does not.
    limit = float(os.environ.get("PUBLISH_GUARD_RATIO", "320"))
    with World(redis=False) as world:
        before = floor(world, "single", seconds)
        proc, port = world.service(binary, "memory", "guard")
        url = f"http://127.0.0.1:{port}{signed_path('dual', *KINDS['single'])}"
        r = measure(world, "service, recovery memory", load.tree(proc.pid), url, "single", seconds, warmup=1)
        world.stop(proc)
        after = floor(world, "single", seconds)
    ratio = r["cpu_us_per_req"] / ((before["cpu_us_per_req"] + after["cpu_us_per_req"]) / 2)
    print(f"guard: service CPU/publish {r['cpu_us_per_req']:.1f} µs = {ratio:.1f} x the floor's "
          f"({before['cpu_us_per_req']:.1f}, {after['cpu_us_per_req']:.1f} µs; limit {limit:g}, debug build); "
          f"{r['requests']} publishes, nginx accepted {r['nginx_accepts']} connections for {r['nginx_requests']} requests")
    print("json: " + json.dumps({"service": r, "floor": [before, after], "ratio": ratio}))
    if r["non2xx"] or r["socket_errors"] != "none" or r["nginx_requests"] < 2 * r["requests"]:
        sys.exit(f"guard: publishes failed or were not forwarded to both apps ({r['non2xx']} non-2xx, "
                 f"socket errors {r['socket_errors']}, {r['nginx_requests']} forwarded)")
    # Kept-alive connections: at most one per in-flight request and app (2 x 64), never one per publish.
    if r["nginx_accepts"] > 4 * load.CONNECTIONS:
        sys.exit(f"guard: {r['nginx_accepts']} connections to the apps for {r['requests']} publishes: not kept alive")
    if ratio > limit:
        sys.exit(f"guard: the CPU per publish rose to {ratio:.1f} x the floor's (limit {limit:g})")


def main():
    # A SIGTERM (timeout, CI) unwinds like an error, so every process started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("publish bench: terminated"))
    if "--guard" in sys.argv:
        return guard()
    if "--redis-floor" in sys.argv:
        return redis_floor()
    load.need("wrk", "wrk")
    load.need("nginx", "nginx-light")
    load.need("redis-server", "redis-server")
    binary = load.service_binary("release")
    if "--instructions" in sys.argv:
        return instructions(binary)
    both = not ({"--throughput", "--latency"} & set(sys.argv))
    out = {}
    if both or "--throughput" in sys.argv:
        out["throughput"] = throughput(binary, load.ROUNDS, DURATION)
        print("json: " + json.dumps(out["throughput"]))
        report_throughput(out["throughput"])
    if both or "--latency" in sys.argv:
        out["latency"] = latency(binary, load.ROUNDS, DURATION, RATE)
        print("json: " + json.dumps(out["latency"]))
        report_latency(out["latency"], RATE)


if __name__ == "__main__":
    main()
