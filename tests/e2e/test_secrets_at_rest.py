"""Secrets at rest (issue 9, item 7): the SQLite database keeps the token secret and the master
key unless they come from elsewhere, so its files are private (0600), a database file that
group or others may access is refused unless explicitly allowed, and both secrets can come from
files (KEYWARD_JWT_SECRET_FILE / KEYWARD_MASTER_KEY_FILE) instead of the database.

Every test here runs on its own SQLite file, whatever the suite's backend: file modes are the
SQLite backend's business."""
import os
import secrets
import sqlite3
import stat
import subprocess

from conftest import Admin, Client, Server, agent_key_client, keyward_bin, mint

SECRET_ENV = ("KEYWARD_DB", "KEYWARD_JWT_SECRET", "KEYWARD_JWT_SECRET_FILE", "KEYWARD_MASTER_KEY",
              "KEYWARD_MASTER_KEY_FILE", "KEYWARD_ALLOW_INSECURE_DB_MODE")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def clean_env(**extra):
    env = dict(os.environ)
    for k in SECRET_ENV:
        env.pop(k, None)
    env.update(extra)
    return env


def run(args, env, timeout=30):
    """Runs `keyward ARGS...` to its end (a refused start exits by itself)."""
    p = subprocess.run([keyward_bin()] + args, env=env, capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def serve_refused(db_path, env):
    """`keyward serve` over db_path must exit 1 before listening; returns its stderr."""
    rc, out, err = run(["serve", "--db", "sqlite:" + db_path, "--listen", "127.0.0.1:0"], env)
    assert rc == 1, (rc, out, err)
    assert "listening on" not in out, out
    return err


def write_private(path, data, file_mode=0o600):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, file_mode)
    return path


def meta_keys(db_path):
    c = sqlite3.connect(db_path, timeout=10)
    try:
        return {r[0] for r in c.execute("SELECT key FROM meta")}
    finally:
        c.close()


def make_db(tmp_path):
    """A database made by `keyward serve` (started once, stopped), for the mode tests."""
    s = Server(tmp_path / "made", db=str(tmp_path / "k.db")).start()
    assert s.stop() == 0
    return str(tmp_path / "k.db")


def test_database_wal_and_shm_are_created_0600(tmp_path):
    old = os.umask(0o022)  # the usual umask: SQLite alone creates 0644 files under it
    try:
        s = Server(tmp_path, db=str(tmp_path / "k.db")).start()
    finally:
        os.umask(old)
    try:
        Admin(s, s.token("ops", admin=True)).touch(("account:acme", "admin", "user:alice"))
        db = str(tmp_path / "k.db")
        # While the server runs, the write sits in the WAL and the -shm exists: all private.
        assert mode(db) == 0o600
        assert mode(db + "-wal") == 0o600
        assert mode(db + "-shm") == 0o600
    finally:
        assert s.stop() == 0


def test_database_open_to_group_or_others_is_refused_unless_allowed(tmp_path):
    db = make_db(tmp_path)
    os.chmod(db, 0o644)
    err = serve_refused(db, clean_env())
    assert db in err and "0644" in err, err
    assert "chmod 600" in err, err
    assert "--allow-insecure-db-mode" in err and "KEYWARD_ALLOW_INSECURE_DB_MODE=1" in err, err
    assert mode(db) == 0o644  # refused: nothing changed
    # `keyward token` opens the same database, and refuses it the same way.
    rc, out, err = run(["token", "--db", "sqlite:" + db, "--sub", "x"], clean_env())
    assert rc == 1 and out == "", (rc, out, err)
    assert "chmod 600" in err, err
    # Group access alone is refused too (the file can be rewritten: admin relationships).
    os.chmod(db, 0o660)
    assert "0660" in serve_refused(db, clean_env())
    # Allowed explicitly, by the flag or by the environment, it serves (with a warning).
    s = Server(tmp_path / "flag", db=db, extra_args=["--allow-insecure-db-mode"]).start()
    try:
        assert Client(s).get("/healthz").status_code == 200
    finally:
        assert s.stop() == 0
    assert "allowed explicitly" in s.stderr_text()
    s = Server(tmp_path / "env", db=db, env_extra={"KEYWARD_ALLOW_INSECURE_DB_MODE": "1"}).start()
    try:
        assert Client(s).get("/healthz").status_code == 200
    finally:
        assert s.stop() == 0
    rc, out, err = run(["token", "--db", "sqlite:" + db, "--sub", "x", "--allow-insecure-db-mode"],
                       clean_env())
    assert rc == 0 and out.count(".") == 2, (rc, out, err)
    assert mode(db) == 0o660  # allowing does not change the operator's mode
    # The fix the message names works without any flag.
    os.chmod(db, 0o600)
    s = Server(tmp_path / "fixed", db=db).start()
    assert s.stop() == 0


def test_wal_open_to_others_is_refused(tmp_path):
    db = make_db(tmp_path)
    write_private(db + "-wal", b"", 0o604)  # a leftover WAL, readable by anyone
    err = serve_refused(db, clean_env())
    assert db + "-wal" in err and "chmod 600" in err, err


def test_secrets_from_files_are_used_and_never_stored(tmp_path):
    jwt_secret = secrets.token_urlsafe(32)
    master = secrets.token_hex(32)
    jf = write_private(str(tmp_path / "jwt"), (jwt_secret + "\n").encode())  # newline: ignored
    mf = write_private(str(tmp_path / "master"), master.encode(), 0o400)
    db = str(tmp_path / "k.db")
    files = {"KEYWARD_JWT_SECRET_FILE": jf, "KEYWARD_MASTER_KEY_FILE": mf}
    s = Server(tmp_path / "a", db=db, secret=None, env_extra=files).start()
    try:
        # Tokens signed with the file's secret (without its newline) are accepted.
        admin = Admin(s, mint(jwt_secret, "ops", admin=True))
        admin.touch(("account:acme", "admin", "user:alice"))
        alice = Client(s, mint(jwt_secret, "alice", account="acme"))
        agent = alice.create_agent("files-bot")
        key = alice.create_key(agent["id"], "k1", api_key_type="internal")["api_key"]
        assert agent_key_client(s, key).get("/agents/" + agent["id"]).status_code == 200
        # A token signed with anything else is not.
        assert Client(s, mint(jwt_secret + "x", "alice", account="acme")).get(
            "/agents?limit=1&page_number=1").status_code == 401
        # `keyward token` reads the same file and never opens the database (none exists there).
        rc, out, err = run(["token", "--db", "sqlite:" + str(tmp_path / "no" / "such.db"),
                            "--sub", "alice", "--account", "acme"], clean_env(**files))
        assert rc == 0, (rc, err)
        assert Client(s, out.strip()).get("/agents/" + agent["id"]).status_code == 200
    finally:
        assert s.stop() == 0
    # Neither secret reached the database.
    keys = meta_keys(db)
    assert "jwt_secret" not in keys and "master_key" not in keys, keys
    # After a restart with the same files the agent key (hashed with the file's master key)
    # still authenticates.
    s = Server(tmp_path / "b", db=db, secret=None, env_extra=files).start()
    try:
        assert agent_key_client(s, key).get("/agents/" + agent["id"]).status_code == 200
    finally:
        assert s.stop() == 0


def test_secret_file_rules(tmp_path):
    db = make_db(tmp_path)
    good = write_private(str(tmp_path / "good"), secrets.token_urlsafe(32).encode())
    # A secret file others can read is refused, naming the file and the fix.
    loose = write_private(str(tmp_path / "loose"), secrets.token_urlsafe(32).encode(), 0o644)
    err = serve_refused(db, clean_env(KEYWARD_JWT_SECRET_FILE=loose))
    assert loose in err and "chmod 600" in err, err
    rc, out, err = run(["token", "--sub", "x"], clean_env(KEYWARD_MASTER_KEY_FILE=loose,
                                                          KEYWARD_DB="sqlite:" + db))
    assert rc == 1 and loose in err, (rc, out, err)
    # Too short, missing, a directory: refused.
    short = write_private(str(tmp_path / "short"), b"tooshort")
    assert "shorter than 16" in serve_refused(db, clean_env(KEYWARD_JWT_SECRET_FILE=short))
    missing = str(tmp_path / "missing")
    assert missing in serve_refused(db, clean_env(KEYWARD_MASTER_KEY_FILE=missing))
    os.mkdir(tmp_path / "dir", 0o700)
    assert "not a regular file" in serve_refused(
        db, clean_env(KEYWARD_JWT_SECRET_FILE=str(tmp_path / "dir")))
    # The variable and its _FILE together are ambiguous: refused.
    err = serve_refused(db, clean_env(KEYWARD_JWT_SECRET_FILE=good,
                                      KEYWARD_JWT_SECRET=secrets.token_urlsafe(32)))
    assert "KEYWARD_JWT_SECRET" in err and "set one" in err, err
    # The good file alone is accepted.
    s = Server(tmp_path / "srv", db=db, secret=None,
               env_extra={"KEYWARD_JWT_SECRET_FILE": good}).start()
    assert s.stop() == 0
