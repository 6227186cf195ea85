"""/v1 streamed RPCs (issue 12 items 2-4): chunked `{"result": ...}` lines flushed as they are
produced, backpressure, cursors (every streamed RPC paged, resumed after a restart, tampered and
mismatched cursors refused with SpiceDB's errors), limits, error bodies with ErrorInfo, and the
preshared keys of KEYWARD_V1_PRESHARED_KEYS."""
import base64
import json
import socket
import time
import uuid

import pytest

from conftest import Admin, Client, Server, ndjson


def obj(s):
    t, i = s.split(":", 1)
    return {"objectType": t, "objectId": i}


def subj(s):
    t, i = s.split(":", 1)
    return {"object": {"objectType": t, "objectId": i}}


def ok(r):
    assert r.status_code == 200, (r.status_code, r.text)
    return r


def error(r, status, code, reason=None):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["details"], list), body
    if reason is None:
        assert all(d.get("@type") != "type.googleapis.com/google.rpc.ErrorInfo" for d in body["details"])
    else:
        infos = [d for d in body["details"] if d.get("@type") == "type.googleapis.com/google.rpc.ErrorInfo"]
        assert [i["reason"] for i in infos] == [reason], body
        assert infos[0]["domain"] == "authzed.com"
    return body


def _members(admin, acct, users):
    ups = [{"operation": "OPERATION_TOUCH", "relationship": {
        "resource": obj("account:" + acct), "relation": "member", "subject": subj("user:" + u)}}
        for u in users]
    for i in range(0, len(ups), 500):  # 500 long ids stay under the 1 MiB body limit
        ok(admin.post("/v1/relationships/write", json={"updates": ups[i:i + 500]}))


def _page_all(admin, route, body, limit_field, limit, key):
    """Pages through a streamed RPC with cursors; returns the keys of every result in order."""
    got, cursor, pages = [], None, 0
    while True:
        b = dict(body)
        b[limit_field] = limit
        if cursor:
            b["optionalCursor"] = cursor
        res = ndjson(ok(admin.post(route, json=b)))
        pages += 1
        assert len(res) <= limit
        for x in res:
            assert x["afterResultCursor"]["token"], x
            got.append(key(x))
        if len(res) < limit:
            return got, pages
        cursor = res[-1]["afterResultCursor"]
        assert pages < 1000


def test_every_streamed_rpc_pages_with_cursors(admin):
    acct = "pg-" + uuid.uuid4().hex[:8]
    users = ["u%03d-%s" % (i, acct) for i in range(23)]
    _members(admin, acct, users)
    # ReadRelationships: every page continues exactly after the last one, in Read order
    rd = {"relationshipFilter": {"resourceType": "account", "optionalResourceId": acct}}
    whole = [x["relationship"]["subject"]["object"]["objectId"]
             for x in ndjson(ok(admin.post("/v1/relationships/read", json=rd)))]
    assert whole == sorted(users)
    paged, pages = _page_all(admin, "/v1/relationships/read", rd, "optionalLimit", 5,
                             lambda x: x["relationship"]["subject"]["object"]["objectId"])
    assert paged == whole and pages == 5
    # LookupSubjects (optionalConcreteLimit is the page size), ordered by subject id
    ls = {"resource": obj("account:" + acct), "permission": "gate", "subjectObjectType": "user"}
    paged, _ = _page_all(admin, "/v1/permissions/subjects", ls, "optionalConcreteLimit", 4,
                         lambda x: x["subject"]["subjectObjectId"])
    assert paged == sorted(users)
    # LookupResources: one user member of many accounts
    user = "lr-" + uuid.uuid4().hex[:8]
    accts = ["%s-a%02d" % (user, i) for i in range(17)]
    ups = [{"operation": "OPERATION_TOUCH", "relationship": {
        "resource": obj("account:" + a), "relation": "member", "subject": subj("user:" + user)}}
        for a in accts]
    ok(admin.post("/v1/relationships/write", json={"updates": ups}))
    lr = {"resourceObjectType": "account", "permission": "gate", "subject": subj("user:" + user)}
    whole = [x["resourceObjectId"] for x in ndjson(ok(admin.post("/v1/permissions/resources", json=lr)))]
    assert whole == sorted(accts)
    for limit in (1, 3, 17, 100):
        paged, _ = _page_all(admin, "/v1/permissions/resources", lr, "optionalLimit", limit,
                             lambda x: x["resourceObjectId"])
        assert paged == sorted(accts), limit
    # a result's shape as the gateway writes it
    first = ndjson(ok(admin.post("/v1/permissions/resources", json=dict(lr, optionalLimit=1))))[0]
    assert set(first) == {"lookedUpAt", "resourceObjectId", "permissionship", "partialCaveatInfo",
                          "afterResultCursor"}
    assert first["permissionship"] == "LOOKUP_PERMISSIONSHIP_HAS_PERMISSION"
    assert first["partialCaveatInfo"] is None


def test_a_cursor_resumes_after_writes_at_the_current_revision(admin):
    acct = "rv-" + uuid.uuid4().hex[:8]
    _members(admin, acct, ["b", "d", "f"])
    rd = {"relationshipFilter": {"resourceType": "account", "optionalResourceId": acct},
          "optionalLimit": 2}
    page = ndjson(ok(admin.post("/v1/relationships/read", json=rd)))
    assert [x["relationship"]["subject"]["object"]["objectId"] for x in page] == ["b", "d"]
    # a relationship before the cursor and one after it are written meanwhile
    _members(admin, acct, ["a", "e"])
    rest = ndjson(ok(admin.post("/v1/relationships/read", json=dict(
        rd, optionalLimit=0, optionalCursor=page[-1]["afterResultCursor"]))))
    assert [x["relationship"]["subject"]["object"]["objectId"] for x in rest] == ["e", "f"]
    assert int(rest[0]["readAt"]["token"]) > int(page[0]["readAt"]["token"])


def test_tampered_and_mismatched_cursors_are_refused(admin):
    acct = "tc-" + uuid.uuid4().hex[:8]
    _members(admin, acct, ["x", "y"])
    rd = {"relationshipFilter": {"resourceType": "account", "optionalResourceId": acct},
          "optionalLimit": 1}
    cur = ndjson(ok(admin.post("/v1/relationships/read", json=rd)))[0]["afterResultCursor"]["token"]
    raw = bytearray(base64.urlsafe_b64decode(cur + "=" * (-len(cur) % 4)))
    # flip a bit of the position: the MAC no longer fits
    raw[30] ^= 1
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for bad in (forged, cur[:-4], "not*base64", "AAAA", cur + "AA"):
        r = admin.post("/v1/relationships/read", json=dict(rd, optionalCursor={"token": bad}))
        error(r, 400, 3, "ERROR_REASON_INVALID_CURSOR")
    # an authentic cursor for another request: FAILED_PRECONDITION, as SpiceDB says
    other = {"relationshipFilter": {"resourceType": "account", "optionalResourceId": acct + "z"}}
    body = error(admin.post("/v1/relationships/read", json=dict(other, optionalCursor={"token": cur})),
                 400, 9, "ERROR_REASON_INVALID_CURSOR")
    assert "same arguments" in body["message"]
    lr = {"resourceObjectType": "account", "permission": "gate", "subject": subj("user:x"),
          "optionalCursor": {"token": cur}}
    error(admin.post("/v1/permissions/resources", json=lr), 400, 9, "ERROR_REASON_INVALID_CURSOR")
    # the limit and the consistency are not part of the shape
    r = ok(admin.post("/v1/relationships/read", json=dict(
        rd, optionalLimit=5, optionalCursor={"token": cur}, consistency={"fullyConsistent": True})))
    assert [x["relationship"]["subject"]["object"]["objectId"] for x in ndjson(r)] == ["y"]


def test_limits_over_spicedbs_maximum_are_refused(admin):
    lr = {"resourceObjectType": "account", "permission": "gate", "subject": subj("user:x"),
          "optionalLimit": 1001}
    body = error(admin.post("/v1/permissions/resources", json=lr), 400, 3,
                 "ERROR_REASON_EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT")
    assert body["message"] == "provided limit 1001 is greater than maximum allowed of 1000"
    info = body["details"][0]["metadata"]
    assert info == {"limit_provided": "1001", "maximum_limit_allowed": "1000"}
    rd = {"relationshipFilter": {"resourceType": "account"}, "optionalLimit": "1001"}
    error(admin.post("/v1/relationships/read", json=rd), 400, 3,
          "ERROR_REASON_EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT")


def test_unknown_definition_is_failed_precondition(admin):
    lr = {"resourceObjectType": "nosuchtype", "permission": "gate", "subject": subj("user:x")}
    body = error(admin.post("/v1/permissions/resources", json=lr), 400, 9,
                 "ERROR_REASON_UNKNOWN_DEFINITION")
    assert "nosuchtype" in body["message"]
    chk = {"resource": obj("account:a"), "permission": "nosuchperm", "subject": subj("user:x")}
    error(admin.post("/v1/permissions/check", json=chk), 400, 9,
          "ERROR_REASON_UNKNOWN_RELATION_OR_PERMISSION")
    # malformed JSON is the gateway's 400 INVALID_ARGUMENT, not 422
    r = admin.post("/v1/permissions/check", data="{nope", headers={"Content-Type": "application/json"})
    error(r, 400, 3)


def test_empty_updates_are_accepted(admin):
    r = ok(admin.post("/v1/relationships/write", json={"updates": []}))
    assert r.json()["writtenAt"]["token"]
    ok(admin.post("/v1/relationships/write", json={}))


# ---- the wire: chunked lines, flushed as produced, backpressure, a client that leaves ----


def _request(srv, token, path, body):
    data = json.dumps(body).encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 262144)  # before connect: the window
    s.settimeout(20)
    s.connect(("127.0.0.1", srv.port))
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
              % (path.encode(), token.encode(), len(data)) + data)
    return s


def _read_until(s, buf, marker):
    while marker not in buf:
        chunk = s.recv(4096)
        assert chunk, "connection closed early"
        buf += chunk
    return buf


def test_lines_arrive_before_the_stream_ends_and_a_slow_reader_holds_the_producer(tmp_path):
    s = Server(tmp_path / "wire")
    s.start()
    try:
        tok = s.token("root-admin", admin=True)
        adm = Admin(s, tok)
        acct = "wire"
        n = 6000  # ~15 MB of lines (ids and cursors): more than the buffers on the way
        _members(adm, acct, ["user-%05d-%s" % (i, "x" * 900) for i in range(n)])
        sock = _request(s, tok, "/v1/relationships/read",
                        {"relationshipFilter": {"resourceType": "account", "optionalResourceId": acct}})
        buf = _read_until(sock, b"", b"\r\n\r\n")
        head, _, body = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding: chunked" in head.lower()
        assert b"content-length" not in head.lower()
        # the first line is here, and the handler has not finished: ~15 MB against a 256 KiB
        # queue, the server's socket buffer (4 MiB at most) and a 256 KiB receive window, so the producer waits for us (its access-log
        # line is written when it returns)
        body = _read_until(sock, body, b"\n")
        time.sleep(0.5)
        assert s.stderr_text().count('"route":"/v1/relationships/read"') == 0
        assert not body.endswith(b"0\r\n\r\n")
        # reading on brings the rest, then the last chunk
        body = bytearray(body)
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk
            body += chunk
        body = bytes(body)
        sock.close()
        deadline = time.time() + 5
        while s.stderr_text().count('"route":"/v1/relationships/read"') == 0:
            assert time.time() < deadline
            time.sleep(0.05)
        # de-chunk and count the lines
        parts, pos = [], 0
        while True:
            eol = body.index(b"\r\n", pos)
            size = int(body[pos:eol], 16)
            if size == 0:
                break
            parts.append(body[eol + 2:eol + 2 + size])
            pos = eol + 2 + size + 2
        lines = [json.loads(x) for x in b"".join(parts).splitlines()]
        assert len(lines) == n and all("result" in x for x in lines)
        # a client that leaves mid-stream: the server goes on serving others and stops cleanly
        sock = _request(s, tok, "/v1/relationships/read",
                        {"relationshipFilter": {"resourceType": "account", "optionalResourceId": acct}})
        _read_until(sock, b"", b"\n{")
        sock.close()
        assert ok(adm.post("/v1/permissions/check", json={
            "resource": obj("account:" + acct), "permission": "gate",
            "subject": subj("user:nobody")})).json()["permissionship"] == "PERMISSIONSHIP_NO_PERMISSION"
        assert s.stop() == 0
    finally:
        s.kill()


def test_cursor_survives_a_restart(tmp_path):
    s = Server(tmp_path / "restart")
    s.start()
    try:
        adm = Admin(s, s.token("root-admin", admin=True))
        _members(adm, "rs", ["a", "b", "c"])
        rd = {"relationshipFilter": {"resourceType": "account", "optionalResourceId": "rs"},
              "optionalLimit": 1}
        cur = ndjson(ok(adm.post("/v1/relationships/read", json=rd)))[0]["afterResultCursor"]
        assert s.stop() == 0
        s.start()
        adm = Admin(s, s.token("root-admin", admin=True))
        rest = ndjson(ok(adm.post("/v1/relationships/read", json=dict(rd, optionalLimit=0,
                                                                       optionalCursor=cur))))
        assert [x["relationship"]["subject"]["object"]["objectId"] for x in rest] == ["b", "c"]
    finally:
        s.kill()


def test_preshared_keys(tmp_path):
    s = Server(tmp_path / "psk", env_extra={"KEYWARD_V1_PRESHARED_KEYS": " first-key-123 ,second-key-456,"})
    s.start()
    try:
        for key in ("first-key-123", "second-key-456"):
            c = Client(s, key)
            ok(c.post("/v1/relationships/write", json={"updates": []}))
            ok(c.post("/v1/schema/read", json={}))
        for bad in ("first-key-12", "first-key-1234", "second-key-456,", "", "x"):
            r = Client(s, bad).post("/v1/schema/read", json={})
            assert r.status_code == 401, (bad, r.status_code, r.text)
            assert r.json()["code"] == 16
        # only /v1: keyward's own routes do not take them
        assert Client(s, "first-key-123").get("/agents").status_code == 401
        # and no key reaches the log
        s.stop()
        assert "first-key-123" not in s.stderr_text() and "second-key-456" not in s.stderr_text()
    finally:
        s.kill()


def test_lookup_resources_streams_in_chunks_with_exact_cursors(tmp_path):
    """An unlimited LookupResources over several engine chunks (1,024 ids, then 4x more each):
    every id once, in id order, and a cursor taken inside a chunk, at a chunk's edge and after
    a restart resumes exactly after it."""
    s = Server(tmp_path / "chunks")
    s.start()
    try:
        adm = Admin(s, s.token("root-admin", admin=True))
        n = 65536 + 1500
        accts = ["c%06d" % i for i in range(n)]
        for i in range(0, n, 1000):
            ok(adm.post("/v1/relationships/write", json={"updates": [
                {"operation": "OPERATION_TOUCH", "relationship": {
                    "resource": obj("account:" + a), "relation": "member",
                    "subject": subj("user:many")}} for a in accts[i:i + 1000]]}))
        lr = {"resourceObjectType": "account", "permission": "gate", "subject": subj("user:many")}
        raw = ok(adm.post("/v1/permissions/resources", json=lr)).text.splitlines()
        # each line is compact JSON in the message's field order (the hand-written encoder
        # of src/api/v1_permissions.c writes what jansson would)
        res = []
        for line in raw:
            x = json.loads(line)
            assert line == json.dumps(x, separators=(",", ":")), line
            assert list(x) == ["result"] and list(x["result"]) == [
                "lookedUpAt", "resourceObjectId", "permissionship", "partialCaveatInfo",
                "afterResultCursor"], line
            res.append(x["result"])
        assert {x["lookedUpAt"]["token"] for x in res} == {res[0]["lookedUpAt"]["token"]}
        assert [x["resourceObjectId"] for x in res] == accts
        for at in (100, 1023, 1024, 5119, 21503, 65536, n - 2):
            rest = ndjson(ok(adm.post("/v1/permissions/resources", json=dict(
                lr, optionalCursor=res[at]["afterResultCursor"]))))
            assert [x["resourceObjectId"] for x in rest] == accts[at + 1:], at
        cur = res[65530]["afterResultCursor"]
        assert s.stop() == 0
        s.start()
        adm = Admin(s, s.token("root-admin", admin=True))
        rest = ndjson(ok(adm.post("/v1/permissions/resources", json=dict(lr, optionalCursor=cur))))
        assert [x["resourceObjectId"] for x in rest] == accts[65531:]
        page = ndjson(ok(adm.post("/v1/permissions/resources",
                                  json=dict(lr, optionalCursor=cur, optionalLimit=1000))))
        assert [x["resourceObjectId"] for x in page] == accts[65531:66531]
    finally:
        s.kill()


def _dechunk(body):
    """The data of each HTTP chunk of a whole chunked body (up to the last chunk)."""
    parts, pos = [], 0
    while True:
        eol = body.index(b"\r\n", pos)
        size = int(body[pos:eol], 16)
        if size == 0:
            assert body[eol:] == b"\r\n\r\n", body[eol:]
            return parts
        assert body[eol + 2 + size:eol + 4 + size] == b"\r\n"
        parts.append(body[eol + 2:eol + 2 + size])
        pos = eol + 4 + size


def test_lookup_resources_first_line_alone_then_large_chunks_of_whole_lines(tmp_path):
    """The first result leaves at once, a chunk of its own; the others are written straight
    into ~60 KiB chunks of whole lines (one hand-over to the socket per chunk, not per line),
    and every line is byte for byte the compact JSON of its message."""
    s = Server(tmp_path / "bigchunks")
    s.start()
    try:
        tok = s.token("root-admin", admin=True)
        adm = Admin(s, tok)
        n = 3000  # ~250 bytes a line: a dozen chunks
        accts = ["k%06d" % i for i in range(n)]
        for i in range(0, n, 1000):
            ok(adm.post("/v1/relationships/write", json={"updates": [
                {"operation": "OPERATION_TOUCH", "relationship": {
                    "resource": obj("account:" + a), "relation": "member",
                    "subject": subj("user:chunky")}} for a in accts[i:i + 1000]]}))
        sock = _request(s, tok, "/v1/permissions/resources", {
            "resourceObjectType": "account", "permission": "gate", "subject": subj("user:chunky")})
        buf = bytearray(_read_until(sock, b"", b"\r\n\r\n"))
        while not buf.endswith(b"\r\n0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            buf += chunk
        sock.close()
        head, _, body = bytes(buf).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
        parts = _dechunk(body)
        assert parts[0].count(b"\n") == 1 and parts[0].endswith(b"\n"), parts[0][:200]
        assert len(parts) >= 4, [len(p) for p in parts]
        for p in parts[1:]:
            assert p.endswith(b"\n"), p[-200:]
        for p in parts[1:-1]:
            assert 60 * 1024 <= len(p) < 64 * 1024, [len(p) for p in parts]
        lines = b"".join(parts).decode().splitlines()
        assert len(lines) == n
        rev = json.loads(lines[0])["result"]["lookedUpAt"]["token"]
        for a, line in zip(accts, lines):
            cur = json.loads(line)["result"]["afterResultCursor"]["token"]
            assert line == (
                '{"result":{"lookedUpAt":{"token":"%s"},"resourceObjectId":"%s",'
                '"permissionship":"LOOKUP_PERMISSIONSHIP_HAS_PERMISSION",'
                '"partialCaveatInfo":null,"afterResultCursor":{"token":"%s"}}}' % (rev, a, cur))
        assert len({json.loads(x)["result"]["afterResultCursor"]["token"] for x in lines}) == n
    finally:
        s.kill()


def test_lookup_resources_over_http_1_0_is_the_lines_unframed_then_close(tmp_path):
    """An HTTP/1.0 client gets the same lines without chunked framing (the chunks' room for
    the framing is skipped, not sent), and the end of the body is the end of the
    connection."""
    s = Server(tmp_path / "http10")
    s.start()
    try:
        tok = s.token("root-admin", admin=True)
        adm = Admin(s, tok)
        n = 2500
        accts = ["h%06d" % i for i in range(n)]
        for i in range(0, n, 1000):
            ok(adm.post("/v1/relationships/write", json={"updates": [
                {"operation": "OPERATION_TOUCH", "relationship": {
                    "resource": obj("account:" + a), "relation": "member",
                    "subject": subj("user:old")}} for a in accts[i:i + 1000]]}))
        lr = {"resourceObjectType": "account", "permission": "gate", "subject": subj("user:old")}
        data = json.dumps(lr).encode()
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=20)
        sock.sendall(b"POST /v1/permissions/resources HTTP/1.0\r\nAuthorization: Bearer %s\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                     % (tok.encode(), len(data)) + data)
        buf = bytearray()
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        sock.close()
        head, _, body = bytes(buf).partition(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0] and b"chunked" not in head.lower(), head
        lines = body.decode().splitlines()
        assert body.endswith(b"\n") and len(lines) == n
        assert [json.loads(x)["result"]["resourceObjectId"] for x in lines] == accts
        chunked = ok(adm.post("/v1/permissions/resources", json=lr)).text.splitlines()
        assert [json.loads(x)["result"]["resourceObjectId"] for x in chunked] == accts
    finally:
        s.kill()


def test_lookup_resources_conditional_results_between_plain_ones(admin):
    """A CONDITIONAL result (written by jansson) between HAS_PERMISSION ones (written by hand)
    in one stream: each line is the compact JSON of its message, in the stream's order, and
    each cursor resumes after its own result."""
    cur = ok(admin.post("/v1/schema/read", json={})).json()["schemaText"]
    if "definition cvdoc" not in cur:
        ok(admin.post("/v1/schema/write", json={"schema": cur + """
caveat cv_weekday(day string) {
  day != "sat"
}

definition cvdoc {
  relation viewer: user | user with cv_weekday
  permission view = viewer
}
"""}))
    who = "cvuser-" + uuid.uuid4().hex[:8]
    ups = []
    for i, d in enumerate(["a", "b", "c", "d"]):
        rel = {"resource": obj("cvdoc:" + who + d), "relation": "viewer",
               "subject": subj("user:" + who)}
        if i % 2:
            rel["optionalCaveat"] = {"caveatName": "cv_weekday"}
        ups.append({"operation": "OPERATION_TOUCH", "relationship": rel})
    ok(admin.post("/v1/relationships/write", json={"updates": ups}))
    lr = {"resourceObjectType": "cvdoc", "permission": "view", "subject": subj("user:" + who)}
    raw = ok(admin.post("/v1/permissions/resources", json=lr)).text.splitlines()
    res = []
    for line in raw:
        x = json.loads(line)
        assert line == json.dumps(x, separators=(",", ":")), line
        assert list(x["result"]) == ["lookedUpAt", "resourceObjectId", "permissionship",
                                     "partialCaveatInfo", "afterResultCursor"], line
        res.append(x["result"])
    assert [x["resourceObjectId"] for x in res] == [who + d for d in "abcd"]
    assert [x["permissionship"] for x in res] == [
        "LOOKUP_PERMISSIONSHIP_HAS_PERMISSION", "LOOKUP_PERMISSIONSHIP_CONDITIONAL_PERMISSION"] * 2
    assert res[0]["partialCaveatInfo"] is None
    assert res[1]["partialCaveatInfo"] == {"missingRequiredContext": ["day"]}
    for i, x in enumerate(res):
        rest = ndjson(ok(admin.post("/v1/permissions/resources",
                                    json=dict(lr, optionalCursor=x["afterResultCursor"]))))
        assert [y["resourceObjectId"] for y in rest] == [who + d for d in "abcd"[i + 1:]]
