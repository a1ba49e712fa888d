#!/usr/bin/env python3
"""The metric names the shipped dashboard and alert rules query exist.

scripts/check-observability runs it (python3, standard library only):

  check-observability.py docs
      Checks docs/observability.md lists every alert with its runbook line,
      word for word as the rules have it (backticks aside).

  check-observability.py dashboard-rules OUT.yml
      Checks deploy/grafana/*.json are well-formed dashboards (a ${datasource}
      Prometheus variable, an `app` variable, every target with a non-empty
      expr) and writes every dashboard expression, Grafana variables filled in,
      as a recording rule to OUT.yml, so that `promtool check rules OUT.yml`
      parses each one with Prometheus's own parser.

  check-observability.py metrics --bin BIN
      Starts BIN on a config with every feature the dashboard shows (publish,
      webhooks with state = "redis" on a throwaway redis-server, rollout, status,
      recovery, failover, rate limit, a session-check cache) against a stand-in
      host and Pusher REST API on loopback, drives the
      requests that give each labelled family a series, scrapes /metrics, and
      fails unless every metric named by a rule or dashboard expression is there,
      every label a selector matches on is on that family's series, and every
      label value it matches is either in the scrape or a string literal in src/.

Families with no series are left out of /metrics entirely (the prometheus crate
writes no HELP line for a vector without children), so a name is accepted only
from a sample line or a HELP line of the scrape: a name the service never
exposes fails the check however much traffic it sees.
"""

import glob
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --- PromQL: the metric names and selectors an expression uses -------------

KEYWORDS = {
    # aggregations and their modifiers, binary-operator keywords, literals
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end",
}
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")')
# Labels Prometheus attaches at scrape time, never in /metrics.
TARGET_LABELS = {"job", "instance"}


def fill_grafana(expr):
    """A dashboard expression with Grafana's variables made concrete."""
    expr = re.sub(r"\$__rate_interval|\$\{__rate_interval\}|\$__interval|\$\{__interval\}|\$__range", "5m", expr)
    return re.sub(r"\$\{?[a-zA-Z_][a-zA-Z0-9_]*(?::[a-z]+)?\}?", ".+", expr)


def selectors(expr):
    """(metric name, [(label, op, value)]) for each vector selector in expr."""
    masked = STRING.sub(lambda m: "S" * len(m.group(0)), expr)  # same offsets, no strings
    # Label lists of by/without/on/ignoring/group_x: label names, not metrics.
    masked = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)",
        lambda m: m.group(1) + " " * (len(m.group(0)) - len(m.group(1))),
        masked,
    )
    braces = [(m.start(), m.end()) for m in re.finditer(r"\{[^{}]*\}", masked)]
    ranges = [(m.start(), m.end()) for m in re.finditer(r"\[[^\[\]]*\]", masked)]
    inside = lambda i, spans: any(a < i < b for a, b in spans)
    out = []
    for m in IDENT.finditer(masked):
        name, start, end = m.group(1), m.start(1), m.end(1)
        if inside(start, braces) or inside(start, ranges) or name.lower() in KEYWORDS:
            continue
        rest = masked[end:].lstrip()
        if rest.startswith("("):
            continue  # a function
        matchers = []
        if rest.startswith("{"):
            brace = end + (len(masked[end:]) - len(rest))
            close = masked.index("}", brace)
            matchers = [(l, op, json.loads(v)) for l, op, v in MATCHER.findall(expr[brace:close + 1])]
        out.append((name, matchers))
    return out


def self_test():
    """The extraction finds what it must, and a made-up name stays made up."""
    got = selectors(
        'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{app=~"x|y", result!="2xx"}[5m]))) > 1 '
        'and on (job) max(b_total offset 5m) - min without (instance) (c) or vector(1) '
        'unless count(count by (version) (d_info{job=~".+"}))'
    )
    names = [n for n, _ in got]
    assert names == ["a_bucket", "b_total", "c", "d_info"], names
    assert got[0][1] == [("app", "=~", "x|y"), ("result", "!=", "2xx")], got[0][1]
    missing = missing_names({"pusher_no_such_metric_total"}, {"pusher_auth_build_info"})
    assert missing == ["pusher_no_such_metric_total"], missing


def missing_names(wanted, present):
    return sorted(n for n in wanted if n not in present)


# --- the shipped files ------------------------------------------------------

def dashboard_exprs():
    """(where, expr as written) for every query in deploy/grafana/*.json."""
    out = []
    files = sorted(glob.glob(os.path.join(ROOT, "deploy/grafana/*.json")))
    if not files:
        sys.exit("no dashboard in deploy/grafana/")
    for path in files:
        rel = os.path.relpath(path, ROOT)
        with open(path) as f:
            dash = json.load(f)  # well-formed, or this fails with the line
        variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
        ds = variables.get("datasource")
        if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
            sys.exit(f"{rel}: no `datasource` variable of type datasource/prometheus")
        if "app" not in variables or "label_values(" not in json.dumps(variables["app"].get("query")):
            sys.exit(f"{rel}: no `app` variable from label_values")
        for v in variables.values():
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((.*),\s*[a-zA-Z_]+\s*\)\s*", q or "") if v.get("type") == "query" else None
            if v.get("type") == "query":
                if not m:
                    sys.exit(f"{rel}: variable {v.get('name')}: not a label_values(selector, label) query")
                out.append((f"{rel} variable {v['name']}", m.group(1)))
        for a in dash.get("annotations", {}).get("list", []):
            if a.get("expr"):
                out.append((f"{rel} annotation {a.get('name')!r}", a["expr"]))
        panels = list(dash.get("panels", []))
        while panels:
            p = panels.pop(0)
            panels.extend(p.get("panels", []))
            if p.get("type") == "row":
                continue
            where = f"{rel} panel {p.get('title')!r}"
            uid = (p.get("datasource") or {}).get("uid")
            if uid != "${datasource}":
                sys.exit(f"{where}: datasource is {uid!r}, not ${{datasource}}")
            targets = p.get("targets") or []
            if not targets:
                sys.exit(f"{where}: no query")
            for t in targets:
                if not (t.get("expr") or "").strip():
                    sys.exit(f"{where} target {t.get('refId')}: empty expr")
                if (t.get("datasource") or {}).get("uid") != "${datasource}":
                    sys.exit(f"{where} target {t.get('refId')}: not on ${{datasource}}")
                out.append((f"{where} target {t.get('refId')}", t["expr"]))
    return out


def rule_exprs():
    """(where, expr) for every rule in deploy/prometheus/*.rules.yml; promtool has parsed them."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy/prometheus/*.rules.yml"))):
        rel = os.path.relpath(path, ROOT)
        name, lines, block = None, [], None
        # A tiny reader for this layout (`- alert:`/`- record:`, then `expr: |` or `expr: X`).
        for raw in open(path):
            line = raw.rstrip("\n")
            m = re.match(r"\s*- (alert|record): (\S+)", line)
            if m:
                name = m.group(2)
                continue
            if block is not None:
                if line.strip() and len(line) - len(line.lstrip()) <= block:
                    out.append((f"{rel} {name}", " ".join(lines)))
                    block, lines = None, []
                else:
                    lines.append(line.strip())
                    continue
            m = re.match(r"(\s*)expr: (.*)", line)
            if m:
                if m.group(2).strip() in ("|", ">", "|-", ">-"):
                    block, lines = len(m.group(1)), []
                else:
                    out.append((f"{rel} {name}", m.group(2).strip().strip("'\"")))
        if block is not None:
            out.append((f"{rel} {name}", " ".join(lines)))
        rules = len(re.findall(r"(?m)^\s*- (?:alert|record): ", open(path).read()))
        if sum(1 for w, _ in out if w.startswith(rel + " ")) != rules:
            sys.exit(f"{rel}: {rules} rules, but their exprs were not all read (keep `expr:` on its own key)")
    if not out:
        sys.exit("no rule in deploy/prometheus/")
    return out


def check_docs():
    """docs/observability.md names every alert with its runbook line as the rules have it."""
    doc = open(os.path.join(ROOT, "docs/observability.md"), encoding="utf-8").read()
    norm = lambda t: re.sub(r"\s+", " ", t.replace("`", "").replace("\\|", "|"))
    problems = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy/prometheus/*.rules.yml"))):
        text = open(path, encoding="utf-8").read()
        for alert, body in re.findall(r"(?m)^\s*- alert: (\S+)\n((?:(?!\s*- (?:alert|record):).*\n?)*)", text):
            m = re.search(r'(?m)^\s*runbook: (?:"((?:[^"\\]|\\.)*)"|(.*))$', body)
            runbook = json.loads(f'"{m.group(1)}"') if m and m.group(1) is not None else (m.group(2) if m else "")
            if f"`{alert}`" not in doc:
                problems.append(f"docs/observability.md does not list {alert}")
            elif norm(runbook) not in norm(doc):
                problems.append(f"docs/observability.md: {alert}'s runbook line is not the rules' one: {runbook}")
    if problems:
        sys.exit("\n".join(problems))
    print("docs/observability.md lists every alert with its runbook line")


def write_dashboard_rules(out_path):
    exprs = dashboard_exprs()
    with open(out_path, "w") as f:
        f.write("groups:\n  - name: dashboard-exprs\n    rules:\n")
        for i, (where, expr) in enumerate(exprs):
            f.write(f"      # {where}\n      - record: dashboard:expr{i}\n        expr: {json.dumps(fill_grafana(expr))}\n")
    print(f"{len(exprs)} dashboard expressions written to {out_path} for promtool")


# --- a running service ------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Host(BaseHTTPRequestHandler):
    """The host's session check and webhook receiver, and both apps' Pusher REST API."""

    webhooks = 0

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if self.headers.get("x-check-id"):
            self.send_header("x-check-id", self.headers["x-check-id"])
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/session":
            check = json.loads(body or b"{}")
            if "deny" in (check.get("channel_name") or ""):
                return self.answer(403, {})
            if "slow" in (check.get("channel_name") or ""):
                time.sleep(0.05)
            return self.answer(200, {"user_id": "1", "user_info": {"name": "check"}})
        if self.path == "/webhook":
            Host.webhooks += 1
            return self.answer(200, {})
        if re.fullmatch(r"/apps/\w+/batch_events(\?.*)?", self.path):
            return self.answer(200, {"batch": []})
        if re.fullmatch(r"/apps/\w+/events(\?.*)?", self.path):
            return self.answer(200, {})
        self.answer(404, {})

    def do_GET(self):
        if re.match(r"/apps/\w+/channels/[^/]+/users", self.path):
            return self.answer(200, {"users": []})
        if re.match(r"/apps/\w+/channels", self.path):
            return self.answer(200, {"channels": {}})
        self.answer(404, {})


def config(listen, admin, host, dead, redis, percent):
    apps = ""
    for name, app_id in (("old", "1111"), ("new", "2222")):
        apps += f"""
[apps.{name}]
app_id = "{app_id}"
key = "{name}-key"
secret = "{name}-secret"
rest_url = "http://127.0.0.1:{host}"
client_options = {{ wsHost = "127.0.0.1", wsPort = {dead}, forceTLS = false, enabledTransports = ["ws"] }}
"""
    return f"""
[server]
listen = "127.0.0.1:{listen}"
admin_listen = "127.0.0.1:{admin}"
shutdown_timeout_secs = 1

[session_check]
url = "http://127.0.0.1:{host}/session"
timeout_ms = 2000
cache_ttl_ms = 60000
{apps}
[publish]
app_id = "dual"
key = "pub-key"
secret = "pub-secret"
targets = ["old", "new"]
timeout_ms = 1000
retries = 0

[webhooks]
forward_url = "http://127.0.0.1:{host}/webhook"
key = "old-key"
secret = "old-secret"
state = "redis"
redis_url = "redis://127.0.0.1:{redis}/0"
redis_prefix = "check-observability"

[rollout]
from = "old"
to = "new"
percent = {percent}

[status]
old_app = "old"

[recovery]

[failover]
enabled = true
probe_secs = 1
fail_after_secs = 2
return = "manual"

[rate_limit]
enabled = true
per_second = 1
burst = 12

[log]
format = "json"
level = "warn"
"""


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sign(secret, text):
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def publish(base):
    body = json.dumps({"name": "tick", "channel": "news", "data": "{}"})
    params = {
        "auth_key": "pub-key",
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body.encode()).hexdigest(),
    }
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    path = "/apps/dual/events"
    query += "&auth_signature=" + sign("pub-secret", f"POST\n{path}\n{query}")
    return http("POST", f"{base}{path}?{query}", body.encode(), {"content-type": "application/json"})


def drive(base, admin, cfg_path, write_cfg):
    """The requests that give every family the dashboard and rules use a series."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    steps = []

    def step(what, got, ok):
        steps.append(f"  {what}: {got[0]}")
        if not ok(got[0]):
            sys.exit(f"driving the service: {what} answered {got[0]}: {got[1][:300]}")

    step("auth signed", http("POST", f"{base}/auth/old", b"socket_id=1.1&channel_name=private-a", form), lambda s: s == 200)
    step("auth signed (new)", http("POST", f"{base}/auth/new", b"socket_id=1.2&channel_name=private-slow", form), lambda s: s == 200)
    step("auth again (cache)", http("POST", f"{base}/auth/old", b"socket_id=1.3&channel_name=private-a", form), lambda s: s == 200)
    step("auth denied", http("POST", f"{base}/auth/old", b"socket_id=1.1&channel_name=private-deny", form), lambda s: s == 403)
    step("publish", publish(base), lambda s: s == 200)
    now = str(int(time.time() * 1000))
    hook = json.dumps({"time_ms": int(now), "events": [{"name": "channel_occupied", "channel": "private-a"}]})
    step(
        "webhook",
        http("POST", f"{base}/webhooks", hook.encode(),
             {"content-type": "application/json", "x-pusher-key": "old-key", "x-pusher-signature": sign("old-secret", hook)}),
        lambda s: s == 200,
    )
    step("recover", http("POST", f"{base}/recover/old", json.dumps({"socket_id": "1.1", "channels": [{"channel": "news"}]}).encode(),
                          {"content-type": "application/json"}), lambda s: s == 200)
    step("failover: an operator fails app old", http("POST", f"{admin}/admin/failover", b'{"action":"fail","app":"old"}',
                                                     {"content-type": "application/json"}), lambda s: s == 200)
    step("client-config (redirected)", http("GET", f"{base}/client-config?uid=u1"), lambda s: s == 200)
    write_cfg(10)  # a rollout step: reloaded from the watched file, announced on both apps
    codes = [http("POST", f"{base}/auth/new", f"socket_id=2.{i}&channel_name=private-r{i}".encode(), form)[0] for i in range(20)]
    step("auth flood (rate limited)", (max(codes), str(codes)), lambda s: 429 in codes)
    deadline = time.time() + 20
    text = ""
    while time.time() < deadline:
        text = http("GET", f"{admin}/metrics")[1]
        if ('pusher_rollout_announcements_total{' in text and 'pusher_webhook_deliveries_total{' in text
                and 'pusher_failover_probe_seconds_bucket{' in text and 'result="success"} 2' in text
                and '\npusher_redis_reachable ' in text):  # after the first fleet flush
            break
        time.sleep(0.5)
    print("\n".join(steps))
    return text


def scrape_names(text):
    """Sample names and HELP names in an exposition, and each sample's labels."""
    names, series = set(), {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            names.add(line.split()[2])
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s", line)
        if m:
            names.add(m.group(1))
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            series.setdefault(m.group(1), []).append(labels)
    return names, series


def src_literals():
    lits = set()
    for path in glob.glob(os.path.join(ROOT, "src/**/*.rs"), recursive=True):
        # Word-like literals only: a stray pairing across two strings never matches.
        lits.update(re.findall(r'"([A-Za-z0-9_+.\-]+)"', open(path, encoding="utf-8").read()))
    return lits


def check(text, exprs):
    names, series = scrape_names(text)
    literals = src_literals()
    problems, used = [], set()
    for where, expr in exprs:
        for name, matchers in selectors(fill_grafana(expr)):
            used.add(name)
            if name not in names:
                problems.append(f"{where}: metric {name} is not in the service's /metrics")
                continue
            rows = series.get(name, [])
            for label, op, value in matchers:
                if label in TARGET_LABELS:
                    continue
                if not any(label in r for r in rows):
                    problems.append(f"{where}: {name} has no label {label!r} in /metrics")
                    continue
                values = value.split("|") if op in ("=~", "!~") else [value]
                for v in values:
                    if v in (".+", ".*") or not re.fullmatch(r"[A-Za-z0-9_+.\-]+", v):
                        continue
                    if not any(r.get(label) == v for r in rows) and v not in literals:
                        problems.append(f"{where}: {name}{{{label}{op}\"{value}\"}}: value {v!r} is neither in /metrics nor a literal in src/")
    return used, problems


def start_redis(work, port):
    """A throwaway redis-server on loopback (the fleet's shared state), as tests/common/redis_server.rs starts one."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", work],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            sys.exit(f"redis-server did not start on port {port}")
        time.sleep(0.05)


def run_metrics(binary):
    self_test()
    exprs = rule_exprs() + dashboard_exprs()
    host_port, listen, admin, dead, redis_port = free_port(), free_port(), free_port(), free_port(), free_port()
    server = ThreadingHTTPServer(("127.0.0.1", host_port), Host)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tempfile.mkdtemp(prefix="check-observability.")
    cfg_path = os.path.join(work, "config.toml")

    def write_cfg(percent):
        tmp = cfg_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(config(listen, admin, host_port, dead, redis_port, percent))
        os.replace(tmp, cfg_path)

    redis = start_redis(work, redis_port)
    write_cfg(0)
    log = open(os.path.join(work, "service.log"), "w+")
    proc = subprocess.Popen([binary, "serve", "--config", cfg_path], stdout=log, stderr=subprocess.STDOUT)
    try:
        base, adm = f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{admin}"
        deadline = time.time() + 30
        while True:
            try:
                if http("GET", f"{adm}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                sys.exit(f"the service did not become ready:\n{log.read()[-3000:]}")
            time.sleep(0.1)
        text = drive(base, adm, cfg_path, write_cfg)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.shutdown()
        redis.terminate()
        redis.wait(timeout=10)
        log.seek(0)
        service_log = log.read()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    used, problems = check(text, exprs)
    present = scrape_names(text)[0]
    print(f"{len(exprs)} expressions (rules, dashboard queries, variables) name {len(used)} metrics; "
          f"the /metrics of {binary} has {len(present)} names")
    for n in sorted(used):
        print(f"  {'ok' if n in present else 'MISSING'} {n}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        print(f"service log (tail):\n{service_log[-2000:]}", file=sys.stderr)
        sys.exit(f"{len(problems)} problem(s)")
    print("every metric, label and label value the rules and the dashboard use is in /metrics (or src/)")


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "docs":
        check_docs()
    elif len(sys.argv) == 3 and sys.argv[1] == "dashboard-rules":
        self_test()
        write_dashboard_rules(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "metrics" and sys.argv[2] == "--bin":
        run_metrics(sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
