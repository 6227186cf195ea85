// SpiceDB's conformance corpus through SpiceDB's official Node client: every validation
// file of KW_CONFORMANCE_DIR (its spicedb, spicedb-exhaustive and spicedb-caveats folders)
// gets a fresh `keyward serve`; its schema goes in with WriteSchema, its relationships
// (caveats and expirations included) with ImportBulkRelationships, and every assertion
// (assertTrue / assertFalse / assertCaveated, with its context) is asked as a
// CheckPermission over gRPC. The answers must be the ones the engine gives in-process:
// `keyward validate FILE` runs the same file first and must pass, so the in-process
// answers are the file's expectations, which the gRPC answers are then held to.
// Without KW_CONFORMANCE_DIR the test says "skipped". Run: KEYWARD_BIN=<path> node --test
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const YAML = require('yaml');
const { v1 } = require('@authzed/authzed-node');

const BIN = process.env.KEYWARD_BIN || path.join(__dirname, '..', '..', 'build', 'keyward');
const CORPUS = process.env.KW_CONFORMANCE_DIR || '';
const KEY = 'grpc-conformance-key';
const DIRS = ['spicedb', 'spicedb-exhaustive', 'spicedb-caveats'];
const SERVERS = 3;     // files run at once, each on its own server
const IN_FLIGHT = 32;  // CheckPermission calls at once per file
const IMPORT_BATCH = 500;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
    s.on('error', reject);
  });
}

async function startServer() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-grpc-conf-'));
  const port = await freePort();
  const proc = spawn(BIN, ['serve', '--db', `sqlite:${dir}/k.db`, '--listen', '127.0.0.1:0',
    '--grpc-listen', `127.0.0.1:${port}`], {
    env: { ...process.env, KEYWARD_V1_PRESHARED_KEYS: KEY },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('keyward did not start: ' + err)), 15000);
    proc.stdout.once('data', () => { clearTimeout(t); resolve(); });
    proc.once('exit', (c) => reject(new Error(`keyward exited ${c}: ${err}`)));
  });
  const stop = () => {
    proc.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { endpoint: `127.0.0.1:${port}`, stop };
}

// `[name]`, `[name:{json}]` and `[expiration:TIME]` after a relationship: a caveat and/or
// an expiry.
function parseSuffix(rest, where) {
  const out = {};
  let i = 0;
  while (i < rest.length) {
    if (rest[i] !== '[') throw new Error(`${where}: cannot read "${rest.slice(i)}"`);
    const colon = rest.indexOf(':', i);
    const close = rest.indexOf(']', i);
    if (close < 0) throw new Error(`${where}: unclosed [`);
    if (colon < 0 || colon > close) { // [caveat]
      out.caveat = { name: rest.slice(i + 1, close), context: null };
      i = close + 1;
      continue;
    }
    const name = rest.slice(i + 1, colon);
    if (name === 'expiration') {
      out.expiresAt = new Date(rest.slice(colon + 1, close));
      i = close + 1;
      continue;
    }
    // [caveat:{...}]: the JSON object runs to its matching brace.
    let depth = 0, j = colon + 1, inStr = false;
    for (; j < rest.length; j++) {
      const ch = rest[j];
      if (inStr) {
        if (ch === '\\') j++;
        else if (ch === '"') inStr = false;
      } else if (ch === '"') inStr = true;
      else if (ch === '{') depth++;
      else if (ch === '}' && --depth === 0) break;
    }
    out.caveat = { name, context: JSON.parse(rest.slice(colon + 1, j + 1)) };
    if (rest[j + 1] !== ']') throw new Error(`${where}: expected ] after the caveat context`);
    i = j + 2;
  }
  return out;
}

// `type:id#rel@stype:sid[#srel]` and what follows.
const REL = /^([^:#@\s]+):([^#@\s]+)#([^@\s]+)@([^:#@\s]+):([^#[\s]+)(?:#([^[\s]+))?(.*)$/;
function parseRelationship(line, where) {
  const m = REL.exec(line.trim());
  if (!m) throw new Error(`${where}: not a relationship: ${line}`);
  const sfx = parseSuffix(m[7].trim(), where);
  const r = {
    resource: v1.ObjectReference.create({ objectType: m[1], objectId: m[2] }),
    relation: m[3],
    subject: v1.SubjectReference.create({
      object: v1.ObjectReference.create({ objectType: m[4], objectId: m[5] }),
      optionalRelation: m[6] && m[6] !== '...' ? m[6] : '',
    }),
  };
  if (sfx.caveat) {
    r.optionalCaveat = v1.ContextualizedCaveat.create({
      caveatName: sfx.caveat.name,
      context: sfx.caveat.context ? v1.PbStruct.fromJson(sfx.caveat.context) : undefined,
    });
  }
  if (sfx.expiresAt) {
    const ms = sfx.expiresAt.getTime();
    r.optionalExpiresAt = { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
  }
  return v1.Relationship.create(r);
}

// `type:id#perm@stype:sid[#srel] [with {json}]`
function parseAssertion(text, where) {
  const s = text.trim();
  const w = s.indexOf(' with ');
  const rel = parseRelationship(w < 0 ? s : s.slice(0, w), where);
  const context = w < 0 ? undefined : v1.PbStruct.fromJson(JSON.parse(s.slice(w + 6)));
  return { text: s, rel, context };
}

// `keyward serve` needs the definitions its own API routes use (account, agent, ...)
// in every schema: the file's schema gets those of the server's default schema that it
// does not define itself (none of them is a type the corpus asserts on; the file's own
// `user` stands in for the default one).
function withApiDefinitions(schema, base) {
  const defined = new Set();
  for (const m of schema.matchAll(/(?:^|\s)(?:definition|caveat)\s+([A-Za-z0-9_/]+)/g)) defined.add(m[1]);
  const extra = [];
  const head = /(?:^|\n)\s*(definition|caveat)\s+([A-Za-z0-9_/]+)/g;
  let m;
  while ((m = head.exec(base))) {
    const open = base.indexOf('{', m.index);
    let depth = 0, j = open;
    for (; j < base.length; j++) {
      if (base[j] === '{') depth++;
      else if (base[j] === '}' && --depth === 0) break;
    }
    if (!defined.has(m[2])) extra.push(base.slice(m.index, j + 1).trim());
    head.lastIndex = j + 1;
  }
  return schema + '\n\n' + extra.join('\n\n') + '\n';
}

function importAll(client, rels) {
  return new Promise((resolve, reject) => {
    const s = client.importBulkRelationships((e, res) => (e ? reject(e) : resolve(res)));
    for (let i = 0; i < rels.length; i += IMPORT_BATCH)
      s.write(v1.ImportBulkRelationshipsRequest.create({ relationships: rels.slice(i, i + IMPORT_BATCH) }));
    s.end();
  });
}

const P = v1.CheckPermissionResponse_Permissionship;
const EXPECT = { assertTrue: P.HAS_PERMISSION, assertFalse: P.NO_PERMISSION, assertCaveated: P.CONDITIONAL_PERMISSION };
const NAME = { [P.HAS_PERMISSION]: 'HAS_PERMISSION', [P.NO_PERMISSION]: 'NO_PERMISSION',
  [P.CONDITIONAL_PERMISSION]: 'CONDITIONAL_PERMISSION' };

// keyward validate FILE: the in-process answers (exit 0: every assertion as the file says).
function validateInProcess(file) {
  return new Promise((resolve) => execFile(BIN, ['validate', file], (e, out) => resolve({ ok: !e, out })));
}

// One file: returns { checks, failures[] }.
async function runFile(file) {
  const where = path.relative(CORPUS, file);
  const inproc = await validateInProcess(file);
  if (!inproc.ok) return { checks: 0, failures: [`${where}: in-process validation fails:\n${inproc.out}`] };
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, 'utf8')).map((d) => d.toJS()).filter((d) => d && d.schema);
  const failures = [];
  let checks = 0;
  for (const doc of docs) {
    const srv = await startServer();
    const client = v1.NewClient(KEY, srv.endpoint, v1.ClientSecurity.INSECURE_PLAINTEXT_CREDENTIALS);
    try {
      const base = (await client.promises.readSchema(v1.ReadSchemaRequest.create({}))).schemaText;
      await client.promises.writeSchema(v1.WriteSchemaRequest.create({ schema: withApiDefinitions(doc.schema, base) }));
      const lines = String(doc.relationships || '').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('//'));
      // A relationship whose expiration has passed counts for nothing: the file lists it
      // to show that; the API refuses to write it (INVALID_ARGUMENT), so it is left out.
      const now = Date.now();
      const rels = lines.map((l) => parseRelationship(l, where))
        .filter((r) => !r.optionalExpiresAt || Number(r.optionalExpiresAt.seconds) * 1000 > now);
      const res = await importAll(client, rels);
      assert.equal(Number(res.numLoaded), rels.length, `${where}: relationships imported`);
      const asks = [];
      for (const [kind, list] of Object.entries(doc.assertions || {}))
        for (const a of list || []) asks.push({ kind, ...parseAssertion(a, where) });
      const full = v1.Consistency.create({ requirement: { oneofKind: 'fullyConsistent', fullyConsistent: true } });
      for (let i = 0; i < asks.length; i += IN_FLIGHT) {
        await Promise.all(asks.slice(i, i + IN_FLIGHT).map(async (a) => {
          const got = await client.promises.checkPermission(v1.CheckPermissionRequest.create({
            consistency: full, resource: a.rel.resource, permission: a.rel.relation, subject: a.rel.subject,
            context: a.context }));
          checks++;
          if (got.permissionship !== EXPECT[a.kind])
            failures.push(`${where}: ${a.kind} ${a.text}: gRPC answered ${NAME[got.permissionship] || got.permissionship}`);
        }));
      }
    } catch (e) {
      failures.push(`${where}: ${e.details || e.message}`);
    } finally {
      client.close();
      srv.stop();
    }
  }
  return { checks, failures };
}

test('conformance corpus through the Node client over gRPC', { skip: CORPUS ? false : 'skipped: KW_CONFORMANCE_DIR is not set' }, async () => {
  const files = [];
  for (const d of DIRS) {
    const dir = path.join(CORPUS, d);
    if (!fs.existsSync(dir)) continue;
    for (const f of fs.readdirSync(dir).sort())
      if (f.endsWith('.yaml')) files.push(path.join(dir, f));
  }
  assert.ok(files.length > 0, `no validation file under ${CORPUS} (${DIRS.join(', ')})`);
  const started = Date.now();
  const results = [];
  let next = 0;
  await Promise.all(Array.from({ length: SERVERS }, async () => {
    while (next < files.length) {
      const f = files[next++];
      results.push(await runFile(f));
    }
  }));
  const checks = results.reduce((n, r) => n + r.checks, 0);
  const failures = results.flatMap((r) => r.failures);
  console.log(`# conformance over gRPC: ${files.length} files, ${checks} CheckPermission answers, ` +
    `${failures.length} mismatches, ${((Date.now() - started) / 1000).toFixed(1)} s`);
  assert.deepEqual(failures, []);
});
