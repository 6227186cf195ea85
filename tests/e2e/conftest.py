"""End-to-end fixtures: run the real `keyward serve` binary and talk to it over HTTP.

Everything here is written against docs/API.md (the contract), never against the
implementation. Only the standard library, pytest and requests are used.

- KEYWARD_BIN: the binary (default <repo>/build/keyward).
- KEYWARD_TEST_PG_URL: a PostgreSQL server URL (postgres://postgres@127.0.0.1:PORT/postgres, e.g.
  from scripts/pg-test-cluster.sh). When set, the suite runs in PostgreSQL mode: every Server
  gets a FRESH database (CREATE DATABASE kw_<random> through psql) instead of a SQLite file;
  the databases are dropped at the end of the session. Unset: SQLite (the default).
- Server(...) starts `keyward serve --db sqlite:<tmp>/k.db --listen 127.0.0.1:0` (or
  `--db postgres://.../kw_<random>`), reads the one stdout line `listening on http://HOST:PORT`,
  and captures stderr to a file. Server(dir, db=other.db) shares a database (PostgreSQL mode:
  several instances over one database).
- mint(): a tiny HS256 JWT minter (hmac/hashlib/base64).
- Client: a caller with one credential; Admin adds the SpiceDB v1 relationship helpers.
- new_tenant(): a fresh account with unique users (alice admin; bob, gina, dave, erin members)
  so tests never see each other's objects on the shared session server.
"""
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import select
import signal
import subprocess
import time
import urllib.parse
import uuid

import pytest
import requests

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The default schema and its validation file (schema, relationships, assertions); both in
# the repository (tests/unit/api/default_schema_test.c keeps them one schema).
DEFAULT_SCHEMA = os.path.join(REPO, "src", "api", "agentex.zed")
VALIDATION_FILE = os.path.join(REPO, "tests", "fixtures", "agentex.validation.yaml")

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|\+00:00)$")
KEY_RE = re.compile(r"^kw_[A-Za-z0-9_-]{43}$")

AGENT_404 = {"detail": "Agent not found."}
KEY_404 = {"detail": "Agent api_key not found."}
UNAUTH = {"detail": "Unauthorized"}


# ---------------------------------------------------------------------------------------------
# PostgreSQL mode

PG_URL = os.environ.get("KEYWARD_TEST_PG_URL") or None
_pg_created = []  # databases made by this session (dropped at its end)


def pg_mode():
    return PG_URL is not None


def _pg_strip(url):
    """`url` without keyward's own query parameters (pool=N), which psql/libpq refuse."""
    u = urllib.parse.urlsplit(url)
    q = [(k, v) for k, v in urllib.parse.parse_qsl(u.query) if k != "pool"]
    return urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q)))


def pg_db_url(name, base=None):
    """The URL of database `name` on the server of `base` (default KEYWARD_TEST_PG_URL)."""
    u = urllib.parse.urlsplit(base or PG_URL)
    return urllib.parse.urlunsplit(u._replace(path="/" + name))


def psql(sql, url=None, timeout=30, check=True):
    """Runs `sql` with psql (unaligned, tuples only) on `url` (default: the server URL);
    returns the output rows as lists of strings (fields split on '|')."""
    cmd = ["psql", _pg_strip(url or PG_URL), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
           "-c", sql]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        pytest.fail("psql failed (%d) on %r: %s" % (p.returncode, sql,
                                                    p.stderr.decode(errors="replace")),
                    pytrace=False)
    return [line.split("|") for line in p.stdout.decode().splitlines() if line != ""]


def pg_fresh_db():
    """CREATE DATABASE kw_<random> on the test server; returns its URL (keeps the query of
    KEYWARD_TEST_PG_URL, e.g. pool=N)."""
    name = "kw_" + secrets.token_hex(8)
    psql("CREATE DATABASE %s" % name)
    _pg_created.append(name)
    return pg_db_url(name)


def pg_drop_created():
    while _pg_created:
        name = _pg_created.pop()
        psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name, check=False)


def keyward_bin():
    path = os.environ.get("KEYWARD_BIN") or os.path.join(REPO, "build", "keyward")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("keyward binary not found at %s (set KEYWARD_BIN)" % path, pytrace=False)
    return path


# ---------------------------------------------------------------------------------------------
# JWT (HS256)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    pad = "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(text + pad)


def mint(secret, sub, principal_type=None, account=None, admin=False, ttl=3600, exp=True,
         nbf=None, extra=None, alg="HS256"):
    """Returns a compact HS256 JWT signed with `secret` (the raw bytes of the string)."""
    now = int(time.time())
    claims = {"iat": now}
    if sub is not None:
        claims["sub"] = sub
    if exp:
        claims["exp"] = now + ttl
    if principal_type is not None:
        claims["principal_type"] = principal_type
    if account is not None:
        claims["account"] = account
    if admin:
        claims["admin"] = True
    if nbf is not None:
        claims["nbf"] = nbf
    if extra:
        claims.update(extra)
    header = {"alg": alg, "typ": "JWT"}
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    sig = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def verify_hs256(token, secret):
    """Verifies a compact JWT with `secret`; returns (header, claims) or raises AssertionError."""
    parts = token.split(".")
    assert len(parts) == 3, "not a compact JWT: %r" % token
    want = hmac.new(secret.encode(), (parts[0] + "." + parts[1]).encode("ascii"),
                    hashlib.sha256).digest()
    assert hmac.compare_digest(want, b64url_decode(parts[2])), "HS256 signature does not verify"
    return json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1]))


# ---------------------------------------------------------------------------------------------
# The server process


class Server:
    """One `keyward serve` process over a SQLite file, or in PostgreSQL mode a fresh database
    of its own; stderr goes to `<dir>/stderr.N.log`.

    db: None (a new database), a PATH (SQLite file) or a postgres:// URL (e.g. another
    Server's .db, to run several instances over one database)."""

    def __init__(self, workdir, db=None, secret="__random__", extra_args=(), env_extra=None):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        if db is not None and re.match(r"^postgres(ql)?://", db):
            self.db_path = None
            self.db = db
        elif db is None and pg_mode():
            self.db_path = None
            self.db = pg_fresh_db()
        else:
            self.db_path = db or os.path.join(self.workdir, "k.db")
            self.db = "sqlite:" + self.db_path
        self.secret = secrets.token_urlsafe(32) if secret == "__random__" else secret
        self.extra_args = list(extra_args)
        self.env_extra = dict(env_extra or {})
        self.proc = None
        self.url = None
        self.stderr_path = None
        self.extra_stdout = b""
        self.starts = 0

    def env(self):
        env = dict(os.environ)
        for k in ("KEYWARD_DB", "KEYWARD_LISTEN", "KEYWARD_SCHEMA", "KEYWARD_JWT_SECRET"):
            env.pop(k, None)
        if self.secret is not None:
            env["KEYWARD_JWT_SECRET"] = self.secret
        env.update(self.env_extra)
        return env

    def start(self, timeout=20):
        self.starts += 1
        self.stderr_path = os.path.join(self.workdir, "stderr.%d.log" % self.starts)
        errf = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [keyward_bin(), "serve", "--db", self.db, "--listen", "127.0.0.1:0"] + self.extra_args,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf, env=self.env(),
            cwd=self.workdir)
        errf.close()
        line = b""
        deadline = time.time() + timeout
        while not line.endswith(b"\n"):
            left = deadline - time.time()
            if left <= 0 or self.proc.poll() is not None:
                break
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                ch = os.read(self.proc.stdout.fileno(), 1)
                if not ch:
                    break
                line += ch
        m = re.match(rb"^listening on (http://127\.0\.0\.1:(\d+))\n$", line)
        if not m:
            self.kill()
            pytest.fail("server did not print 'listening on http://HOST:PORT' (got %r); stderr:\n%s"
                        % (line, self.stderr_text()[-4000:]), pytrace=False)
        self.url = m.group(1).decode()
        self.port = int(m.group(2))
        return self

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Sends `sig`, waits, returns the exit status; any further stdout is kept."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = "timeout"
                self._drain()
                self.proc = None
                return rc
        rc = self.proc.returncode
        self._drain()
        self.proc = None
        return rc

    def _drain(self):
        try:
            self.extra_stdout += self.proc.stdout.read() or b""
        except (OSError, ValueError):
            pass
        self.proc.stdout.close()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self._drain()
        self.proc = None

    def token(self, sub, **kw):
        return mint(self.secret, sub, **kw)


# ---------------------------------------------------------------------------------------------
# Clients


class Client:
    """A caller of the server with one credential (or none)."""

    def __init__(self, server, token=None, headers=None, sub=None):
        self.server = server
        self.sub = sub
        self.headers = {}
        if token:
            self.headers["Authorization"] = "Bearer " + token
        if headers:
            self.headers.update(headers)
        self.http = requests.Session()

    def req(self, method, path, headers=None, **kw):
        h = dict(self.headers)
        if headers:
            h.update(headers)
        kw.setdefault("timeout", 15)
        return self.http.request(method, self.server.url + path, headers=h, **kw)

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, **kw):
        return self.req("POST", path, **kw)

    def delete(self, path, **kw):
        return self.req("DELETE", path, **kw)

    # --- convenience wrappers for the API; each asserts success

    def create_agent(self, name, description=None, **kw):
        body = {"name": name}
        if description is not None:
            body["description"] = description
        r = self.post("/agents", json=body, **kw)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def create_key(self, agent_id, name, api_key_type=None, api_key=None, **kw):
        body = {"agent_id": agent_id, "name": name}
        if api_key_type is not None:
            body["api_key_type"] = api_key_type
        if api_key is not None:
            body["api_key"] = api_key
        r = self.post("/agent_api_keys", json=body, **kw)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()


def rel(resource, relation, subject):
    """rel("agent:x", "owner", "user:bob") or subject "account:a#member" -> v1 JSON relationship."""
    rt, rid = resource.split(":", 1)
    srel = None
    if "#" in subject:
        subject, srel = subject.split("#", 1)
    st, sid = subject.split(":", 1)
    sub = {"object": {"objectType": st, "objectId": sid}}
    if srel:
        sub["optionalRelation"] = srel
    return {"resource": {"objectType": rt, "objectId": rid}, "relation": relation, "subject": sub}


def ndjson(resp):
    """Streamed v1 results: one JSON object per line `{"result": {...}}`; empty body = none."""
    out = []
    for line in resp.text.splitlines():
        line = line.strip()
        if line:
            obj = json.loads(line)
            assert "result" in obj, "stream line without 'result': %r" % line
            out.append(obj["result"])
    return out


class Admin(Client):
    """A caller with claim admin: true, managing the graph via SpiceDB's v1 HTTP/JSON API."""

    def write(self, updates, preconditions=None, expect=200):
        body = {"updates": updates}
        if preconditions:
            body["optionalPreconditions"] = preconditions
        r = self.post("/v1/relationships/write", json=body)
        assert r.status_code == expect, (r.status_code, r.text)
        return r

    def touch(self, *triples):
        return self.write([{"operation": "OPERATION_TOUCH", "relationship": rel(*t)} for t in triples])

    def remove(self, *triples):
        return self.write([{"operation": "OPERATION_DELETE", "relationship": rel(*t)} for t in triples])

    def read_rels(self, resource_type, resource_id=None, relation=None, subject=None):
        f = {"resourceType": resource_type}
        if resource_id is not None:
            f["optionalResourceId"] = resource_id
        if relation is not None:
            f["optionalRelation"] = relation
        if subject is not None:
            st, _, sid = subject.partition(":")
            sf = {"subjectType": st}
            if sid:
                sf["optionalSubjectId"] = sid
            f["optionalSubjectFilter"] = sf
        r = self.post("/v1/relationships/read", json={"relationshipFilter": f})
        assert r.status_code == 200, (r.status_code, r.text)
        return [x["relationship"] for x in ndjson(r)]

    def check(self, resource, permission, subject):
        rt, rid = resource.split(":", 1)
        st, sid = subject.split(":", 1)
        r = self.post("/v1/permissions/check", json={
            "resource": {"objectType": rt, "objectId": rid}, "permission": permission,
            "subject": {"object": {"objectType": st, "objectId": sid}}})
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()["permissionship"] == "PERMISSIONSHIP_HAS_PERMISSION"


class Tenant:
    """A fresh account with unique users: alice (admin), bob, gina, dave, erin (members)."""

    def __init__(self, server, admin, label="acme"):
        self.server = server
        self.admin = admin
        sfx = uuid.uuid4().hex[:10]
        self.account = "%s-%s" % (label, sfx)
        self.ids = {n: "%s-%s" % (n, sfx) for n in ("alice", "bob", "gina", "dave", "erin", "zed")}
        admin.touch(("account:" + self.account, "admin", "user:" + self.ids["alice"]),
                    *[("account:" + self.account, "member", "user:" + self.ids[n])
                      for n in ("bob", "gina", "dave", "erin")])

    def uid(self, name):
        return self.ids[name]

    def user(self, name, account="__mine__", **kw):
        """A client for user `name` whose token selects this account (or `account`)."""
        sub = self.ids.get(name, name)
        acct = self.account if account == "__mine__" else account
        return Client(self.server, self.server.token(sub, account=acct, **kw), sub=sub)


def agent_key_client(server, key, scheme="x-agent-api-key"):
    if scheme == "x-agent-api-key":
        return Client(server, headers={"x-agent-api-key": key})
    return Client(server, headers={"Authorization": "%s %s" % (scheme, key)})


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session", autouse=True)
def _pg_cleanup():
    """PostgreSQL mode: drops the databases this session created (servers are stopped by then:
    the session server's fixture depends on this one, so it finalizes first)."""
    yield
    if pg_mode():
        pg_drop_created()


@pytest.fixture(scope="session")
def srv(tmp_path_factory, _pg_cleanup):
    s = Server(tmp_path_factory.mktemp("session"))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def admin(srv):
    return Admin(srv, srv.token("root-admin", admin=True), sub="root-admin")


@pytest.fixture
def tenant(srv, admin):
    return Tenant(srv, admin)


@pytest.fixture
def new_tenant(srv, admin):
    return lambda label="acme": Tenant(srv, admin, label)


@pytest.fixture
def anon(srv):
    return Client(srv)


def same_404(a, b):
    """Asserts two responses are indistinguishable: status, body bytes, headers but Date/X-Request-Id."""
    assert a.status_code == b.status_code, (a.status_code, b.status_code, a.text, b.text)
    assert a.content == b.content, (a.content, b.content)
    skip = {"date", "x-request-id"}
    ha = {k.lower(): v for k, v in a.headers.items() if k.lower() not in skip}
    hb = {k.lower(): v for k, v in b.headers.items() if k.lower() not in skip}
    assert ha == hb, (ha, hb)


def raw_request(server, data, timeout=10):
    """Sends raw bytes on a fresh connection; returns (status, {lower-name: value}, body) or
    (None, {}, b"") if the server closed the connection without answering."""
    import socket
    s = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            buf += chunk
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
                if m and len(rest) >= int(m.group(1)):
                    break
    finally:
        s.close()
    if not buf:
        return None, {}, b""
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


def snapshot(client):
    """What `client` can see: its agents and each agent's keys (for 'changes nothing' checks)."""
    r = client.get("/agents?limit=1000")
    assert r.status_code == 200, r.text
    agents = r.json()
    keys = {}
    for a in agents:
        r = client.get("/agent_api_keys?limit=1000&agent_id=" + a["id"])
        assert r.status_code == 200, r.text
        keys[a["id"]] = r.json()
    return agents, keys
