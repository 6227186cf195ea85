// keyward's gRPC endpoint driven by SpiceDB's official Node client (@authzed/authzed-node):
// every RPC keyward serves over gRPC, cursors across pages, deadlines, cancellation, error
// codes with SpiceDB's ErrorInfo, authentication, health. Run: KEYWARD_BIN=<path> node --test
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const { v1 } = require('@authzed/authzed-node');

const BIN = process.env.KEYWARD_BIN || path.join(__dirname, '..', '..', 'build', 'keyward');
const KEY = 'grpc-e2e-preshared-key';

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

async function startServer(extra = [], dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-grpc-'))) {
  const port = await freePort();
  const proc = spawn(BIN, ['serve', '--db', `sqlite:${dir}/k.db`, '--listen', '127.0.0.1:0',
    '--grpc-listen', `127.0.0.1:${port}`, ...extra], {
    env: { ...process.env, KEYWARD_V1_PRESHARED_KEYS: KEY },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  let http = '';
  proc.stderr.on('data', (d) => { err += d; });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('keyward did not start: ' + err)), 15000);
    proc.stdout.once('data', (d) => {
      clearTimeout(t);
      http = (/listening on (http:\/\/\S+)/.exec(String(d)) || [])[1] || '';
      resolve();
    });
    proc.once('exit', (c) => reject(new Error(`keyward exited ${c}: ${err}`)));
  });
  return { proc, dir, endpoint: `127.0.0.1:${port}`, http, stderr: () => err };
}

// google.rpc.Status / ErrorInfo from grpc-status-details-bin, decoded by hand (the
// client does not ship those messages).
function fields(buf) {
  const out = [];
  let i = 0;
  const varint = () => {
    let v = 0n, s = 0n;
    for (;;) {
      const b = buf[i++];
      v |= BigInt(b & 0x7f) << s;
      if (!(b & 0x80)) return v;
      s += 7n;
    }
  };
  while (i < buf.length) {
    const key = Number(varint());
    const no = key >> 3, wt = key & 7;
    if (wt === 0) out.push([no, varint()]);
    else if (wt === 2) {
      const n = Number(varint());
      out.push([no, buf.subarray(i, i + n)]);
      i += n;
    } else throw new Error('unexpected wire type ' + wt);
  }
  return out;
}
function errorInfo(e) {
  const bin = e.metadata && e.metadata.get('grpc-status-details-bin')[0];
  if (!bin) return null;
  const st = fields(Buffer.from(bin));
  const status = { code: 0, message: '', info: null };
  for (const [no, v] of st) {
    if (no === 1) status.code = Number(v);
    if (no === 2) status.message = Buffer.from(v).toString();
    if (no === 3) {
      const any = fields(v);
      const url = Buffer.from(any.find((f) => f[0] === 1)[1]).toString();
      assert.equal(url, 'type.googleapis.com/google.rpc.ErrorInfo');
      const info = { reason: '', domain: '', metadata: {} };
      for (const [n2, v2] of fields(any.find((f) => f[0] === 2)[1])) {
        if (n2 === 1) info.reason = Buffer.from(v2).toString();
        if (n2 === 2) info.domain = Buffer.from(v2).toString();
        if (n2 === 3) {
          const kv = fields(v2);
          info.metadata[Buffer.from(kv[0][1]).toString()] = Buffer.from(kv[1][1]).toString();
        }
      }
      status.info = info;
    }
  }
  return status;
}

const obj = (t, id) => v1.ObjectReference.create({ objectType: t, objectId: id });
const subj = (t, id) => v1.SubjectReference.create({ object: obj(t, id) });
const full = () => v1.Consistency.create({ requirement: { oneofKind: 'fullyConsistent', fullyConsistent: true } });
const rel = (docId, user, relation = 'viewer') => v1.Relationship.create({
  resource: obj('doc', docId), relation, subject: subj('user', user) });
const touch = (r) => v1.RelationshipUpdate.create({ operation: v1.RelationshipUpdate_Operation.TOUCH, relationship: r });

async function rejects(p, code) {
  try {
    await p;
  } catch (e) {
    assert.equal(e.code, code, `expected code ${code}, got ${e.code}: ${e.details}`);
    return e;
  }
  assert.fail(`expected gRPC code ${code}, the call succeeded`);
}

test('keyward over gRPC with the official Node client', async (t) => {
  const srv = await startServer();
  const client = v1.NewClient(KEY, srv.endpoint, v1.ClientSecurity.INSECURE_PLAINTEXT_CREDENTIALS);
  const p = client.promises;
  t.after(() => {
    client.close();
    srv.proc.kill('SIGTERM');
    fs.rmSync(srv.dir, { recursive: true, force: true });
  });

  await t.test('health: grpc.health.v1 Check answers SERVING without credentials', async () => {
    const raw = new grpc.Client(srv.endpoint, grpc.credentials.createInsecure());
    const call = (service) => new Promise((resolve, reject) => {
      const req = service ? Buffer.concat([Buffer.from([0x0a, service.length]), Buffer.from(service)]) : Buffer.alloc(0);
      raw.makeUnaryRequest('/grpc.health.v1.Health/Check', (b) => b, (b) => b, req,
        (e, res) => (e ? reject(e) : resolve(res)));
    });
    assert.deepEqual([...(await call(''))], [0x08, 0x01]);
    assert.deepEqual([...(await call('authzed.api.v1.PermissionsService'))], [0x08, 0x01]);
    await rejects(call('no.such.Service'), grpc.status.NOT_FOUND);
    raw.close();
  });

  await t.test('schema: write then read back', async () => {
    const before = await p.readSchema(v1.ReadSchemaRequest.create({}));
    const schema = before.schemaText + '\ndefinition doc {\n  relation viewer: user\n  relation editor: user\n  permission edit = editor\n  permission view = viewer + edit\n}\n';
    const w = await p.writeSchema(v1.WriteSchemaRequest.create({ schema }));
    assert.match(w.writtenAt.token, /^[0-9]+$/);
    const r = await p.readSchema(v1.ReadSchemaRequest.create({}));
    assert.ok(r.schemaText.includes('definition doc'));
    const e = await rejects(p.writeSchema(v1.WriteSchemaRequest.create({ schema: 'definition {' })), grpc.status.INVALID_ARGUMENT);
    assert.equal(errorInfo(e).code, grpc.status.INVALID_ARGUMENT);
  });

  await t.test('write, check, check bulk, expand, delete', async () => {
    const ups = [];
    for (let i = 0; i < 25; i++) ups.push(touch(rel('d' + String(i).padStart(2, '0'), 'alice')));
    ups.push(touch(rel('d00', 'bob', 'editor')));
    const w = await p.writeRelationships(v1.WriteRelationshipsRequest.create({ updates: ups }));
    const token = w.writtenAt.token;
    const fresh = v1.Consistency.create({ requirement: { oneofKind: 'atLeastAsFresh', atLeastAsFresh: v1.ZedToken.create({ token }) } });
    const yes = await p.checkPermission(v1.CheckPermissionRequest.create({
      consistency: fresh, resource: obj('doc', 'd00'), permission: 'view', subject: subj('user', 'bob') }));
    assert.equal(yes.permissionship, v1.CheckPermissionResponse_Permissionship.HAS_PERMISSION);
    assert.ok(BigInt(yes.checkedAt.token) >= BigInt(token));
    const no = await p.checkPermission(v1.CheckPermissionRequest.create({
      consistency: full(), resource: obj('doc', 'd01'), permission: 'view', subject: subj('user', 'bob') }));
    assert.equal(no.permissionship, v1.CheckPermissionResponse_Permissionship.NO_PERMISSION);

    const bulk = await p.checkBulkPermissions(v1.CheckBulkPermissionsRequest.create({
      consistency: full(),
      items: [
        v1.CheckBulkPermissionsRequestItem.create({ resource: obj('doc', 'd03'), permission: 'view', subject: subj('user', 'alice') }),
        v1.CheckBulkPermissionsRequestItem.create({ resource: obj('doc', 'd03'), permission: 'edit', subject: subj('user', 'alice') }),
        v1.CheckBulkPermissionsRequestItem.create({ resource: obj('nosuchtype', 'x'), permission: 'view', subject: subj('user', 'alice') }),
      ] }));
    assert.equal(bulk.pairs.length, 3);
    assert.equal(bulk.pairs[0].response.oneofKind, 'item');
    assert.equal(bulk.pairs[0].response.item.permissionship, v1.CheckPermissionResponse_Permissionship.HAS_PERMISSION);
    assert.equal(bulk.pairs[1].response.item.permissionship, v1.CheckPermissionResponse_Permissionship.NO_PERMISSION);
    assert.equal(bulk.pairs[2].response.oneofKind, 'error');
    assert.equal(bulk.pairs[2].response.error.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(bulk.pairs[2].request.resource.objectType, 'nosuchtype');

    const ex = await p.expandPermissionTree(v1.ExpandPermissionTreeRequest.create({
      consistency: full(), resource: obj('doc', 'd00'), permission: 'view' }));
    assert.equal(ex.treeRoot.treeType.oneofKind, 'intermediate');
    assert.equal(ex.treeRoot.expandedObject.objectId, 'd00');
    const text = JSON.stringify(ex.treeRoot);
    assert.ok(text.includes('"alice"') && text.includes('"bob"'));

    await p.writeRelationships(v1.WriteRelationshipsRequest.create({ updates: [touch(rel('gone1', 'carol')), touch(rel('gone2', 'carol'))] }));
    const del = await p.deleteRelationships(v1.DeleteRelationshipsRequest.create({
      relationshipFilter: v1.RelationshipFilter.create({ resourceType: 'doc', optionalSubjectFilter: v1.SubjectFilter.create({ subjectType: 'user', optionalSubjectId: 'carol' }) }) }));
    assert.equal(del.relationshipsDeletedCount, '2');
    assert.equal(del.deletionProgress, v1.DeleteRelationshipsResponse_DeletionProgress.COMPLETE);
  });

  await t.test('atExactSnapshot at an older revision: answered as then; before a schema write: OUT_OF_RANGE', async () => {
    // the service layer is the HTTP gateway's (docs/API.md "atExactSnapshot's window")
    const at = (token) => v1.Consistency.create({ requirement: { oneofKind: 'atExactSnapshot', atExactSnapshot: v1.ZedToken.create({ token }) } });
    const t1 = (await p.writeRelationships(v1.WriteRelationshipsRequest.create({ updates: [touch(rel('snap1', 'dora'))] }))).writtenAt.token;
    await p.deleteRelationships(v1.DeleteRelationshipsRequest.create({
      relationshipFilter: v1.RelationshipFilter.create({ resourceType: 'doc', optionalResourceId: 'snap1' }) }));
    const chk = (c) => p.checkPermission(v1.CheckPermissionRequest.create({
      consistency: c, resource: obj('doc', 'snap1'), permission: 'view', subject: subj('user', 'dora') }));
    const old = await chk(at(t1));
    assert.equal(old.permissionship, v1.CheckPermissionResponse_Permissionship.HAS_PERMISSION);
    assert.equal(old.checkedAt.token, t1);
    assert.equal((await chk(full())).permissionship, v1.CheckPermissionResponse_Permissionship.NO_PERMISSION);
    const lr = await p.lookupResources(v1.LookupResourcesRequest.create({
      consistency: at(t1), resourceObjectType: 'doc', permission: 'view', subject: subj('user', 'dora') }));
    assert.deepEqual(lr.map((r) => r.resourceObjectId), ['snap1']);
    assert.ok(lr.every((r) => r.lookedUpAt.token === t1));
    const schema = (await p.readSchema(v1.ReadSchemaRequest.create({}))).schemaText + '\ndefinition snapextra {}\n';
    await p.writeSchema(v1.WriteSchemaRequest.create({ schema }));
    const e = await rejects(chk(at(t1)), grpc.status.OUT_OF_RANGE);
    assert.match(e.details, /invalid revision: revision has expired/);
    assert.match(e.details, /schema was written/);
  });

  await t.test('withTracing: debug_trace over gRPC is the HTTP gateway\'s debugTrace', async () => {
    // proto3 JSON of the gRPC answer against the gateway's JSON for the same check; the
    // durations differ between two runs and unpopulated fields are written by the gateway
    // only, so both drop them (nodes keep their shape: subProblems, or wasCachedResult).
    const strip = (v) => {
      if (Array.isArray(v)) return v.map(strip);
      if (v === null || typeof v !== 'object') return v;
      const o = {};
      for (const [k, x] of Object.entries(v)) {
        if (k === 'duration' || x === null || x === '' || (Array.isArray(x) && x.length === 0)) continue;
        o[k] = strip(x);
      }
      return o;
    };
    const gateway = async (route, body) => {
      const r = await fetch(`${srv.http}/v1/permissions/${route}`, {
        method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify(body) });
      assert.equal(r.status, 200);
      return r.json();
    };
    const durations = (n, out = []) => {
      out.push(n.duration);
      if (n.resolution.oneofKind === 'subProblems') for (const c of n.resolution.subProblems.traces) durations(c, out);
      return out;
    };
    const nodes = (n) => [n].concat(...((n.subProblems && n.subProblems.traces) || []).map(nodes));
    const cases = [['d00', 'view', 'bob'], ['d01', 'view', 'bob'], ['d03', 'edit', 'alice'], ['d00', 'view', 'alice']];
    for (const [id, perm, user] of cases) {
      const g = await p.checkPermission(v1.CheckPermissionRequest.create({
        consistency: full(), resource: obj('doc', id), permission: perm, subject: subj('user', user), withTracing: true }));
      assert.ok(g.debugTrace, `no debugTrace for doc:${id}#${perm}@user:${user}`);
      const root = g.debugTrace.check;
      assert.equal(root.resource.objectType, 'doc');
      assert.equal(root.resource.objectId, id);
      assert.equal(root.permission, perm);
      assert.equal(root.subject.object.objectId, user);
      assert.equal(root.result, g.permissionship); // the root is the answer
      assert.equal(root.resolution.oneofKind, 'subProblems');
      assert.ok(g.debugTrace.schemaUsed.includes('definition doc'));
      for (const d of durations(root)) assert.ok(d && Number(d.nanos) >= 0 && BigInt(d.seconds) >= 0n);
      const h = await gateway('check', { consistency: { fullyConsistent: true },
        resource: { objectType: 'doc', objectId: id }, permission: perm,
        subject: { object: { objectType: 'user', objectId: user } }, withTracing: true });
      const gj = strip(v1.CheckPermissionResponse.toJson(g).debugTrace);
      assert.deepEqual(gj, strip(h.debugTrace));
      assert.ok(nodes(gj.check).length >= 2, JSON.stringify(gj));
    }
    const hasBob = strip(v1.CheckPermissionResponse.toJson(await p.checkPermission(v1.CheckPermissionRequest.create({
      consistency: full(), resource: obj('doc', 'd00'), permission: 'view', subject: subj('user', 'bob'), withTracing: true }))).debugTrace);
    assert.equal(hasBob.check.result, 'PERMISSIONSHIP_HAS_PERMISSION');
    assert.equal(hasBob.check.permissionType, 'PERMISSION_TYPE_PERMISSION');
    assert.deepEqual(hasBob.check.subProblems.traces.map((n) => [n.permission, n.permissionType, n.result]),
      [['viewer', 'PERMISSION_TYPE_RELATION', 'PERMISSIONSHIP_NO_PERMISSION'],
        ['edit', 'PERMISSION_TYPE_PERMISSION', 'PERMISSIONSHIP_HAS_PERMISSION']]);

    // an arrow and a caveat: CONDITIONAL nodes carry CaveatEvalInfo with the missing context
    const sch = (await p.readSchema(v1.ReadSchemaRequest.create({}))).schemaText;
    await p.writeSchema(v1.WriteSchemaRequest.create({ schema: sch + '\ncaveat only_if(ok bool) {\n  ok\n}\n' +
      'definition memo {\n  relation reader: user | user with only_if\n  relation parent: doc\n  permission read = reader + parent->view\n}\n' }));
    await p.writeRelationships(v1.WriteRelationshipsRequest.create({ updates: [
      touch(v1.Relationship.create({ resource: obj('memo', 'm1'), relation: 'reader', subject: subj('user', 'zed'),
        optionalCaveat: v1.ContextualizedCaveat.create({ caveatName: 'only_if' }) })),
      touch(v1.Relationship.create({ resource: obj('memo', 'm1'), relation: 'parent', subject: subj('doc', 'd00') }))] }));
    for (const [user, want] of [['zed', 'PERMISSIONSHIP_CONDITIONAL_PERMISSION'], ['bob', 'PERMISSIONSHIP_HAS_PERMISSION']]) {
      const g = v1.CheckPermissionResponse.toJson(await p.checkPermission(v1.CheckPermissionRequest.create({
        consistency: full(), resource: obj('memo', 'm1'), permission: 'read', subject: subj('user', user), withTracing: true })));
      const h = await gateway('check', { consistency: { fullyConsistent: true },
        resource: { objectType: 'memo', objectId: 'm1' }, permission: 'read',
        subject: { object: { objectType: 'user', objectId: user } }, withTracing: true });
      assert.equal(g.debugTrace.check.result, want);
      assert.deepEqual(strip(g.debugTrace), strip(h.debugTrace));
      const all = nodes(strip(g.debugTrace).check);
      if (user === 'zed') {
        assert.deepEqual(all[0].caveatEvaluationInfo,
          { result: 'RESULT_MISSING_SOME_CONTEXT', partialCaveatInfo: { missingRequiredContext: ['ok'] } });
      } else {
        assert.ok(all.some((n) => n.resource.objectType === 'doc' && n.permission === 'view' &&
          n.result === 'PERMISSIONSHIP_HAS_PERMISSION'), JSON.stringify(all)); // through parent->view
      }
    }

    // without withTracing: no trace
    const plain = await p.checkPermission(v1.CheckPermissionRequest.create({
      consistency: full(), resource: obj('doc', 'd00'), permission: 'view', subject: subj('user', 'bob') }));
    assert.equal(plain.debugTrace, undefined);

    // CheckBulkPermissions: every answered item carries its trace, an item's error none
    const items = cases.map(([id, perm, user]) => ({ resource: obj('doc', id), permission: perm, subject: subj('user', user) }));
    items.push({ resource: obj('nosuchtype', 'x'), permission: 'view', subject: subj('user', 'alice') });
    const bulk = await p.checkBulkPermissions(v1.CheckBulkPermissionsRequest.create({
      consistency: full(), withTracing: true, items: items.map((i) => v1.CheckBulkPermissionsRequestItem.create(i)) }));
    const hb = await gateway('checkbulk', { consistency: { fullyConsistent: true }, withTracing: true,
      items: items.map((i) => ({ resource: { objectType: i.resource.objectType, objectId: i.resource.objectId },
        permission: i.permission, subject: { object: { objectType: 'user', objectId: i.subject.object.objectId } } })) });
    assert.equal(bulk.pairs.length, items.length);
    const bj = v1.CheckBulkPermissionsResponse.toJson(bulk);
    for (let i = 0; i < cases.length; i++) {
      assert.equal(bulk.pairs[i].response.oneofKind, 'item');
      const it = bulk.pairs[i].response.item;
      assert.ok(it.debugTrace, `bulk item ${i} has no debugTrace`);
      assert.equal(it.debugTrace.check.result, it.permissionship);
      assert.ok(it.debugTrace.schemaUsed.includes('definition doc'));
      assert.deepEqual(strip(bj.pairs[i].item.debugTrace), strip(hb.pairs[i].item.debugTrace));
    }
    assert.equal(bulk.pairs[cases.length].response.oneofKind, 'error');
  });

  await t.test('ReadRelationships and LookupResources page with cursors', async () => {
    const filter = v1.RelationshipFilter.create({ resourceType: 'doc', optionalRelation: 'viewer' });
    const seen = [];
    let cursor;
    for (let page = 0; page < 20; page++) {
      const res = await p.readRelationships(v1.ReadRelationshipsRequest.create({
        consistency: full(), relationshipFilter: filter, optionalLimit: 7, optionalCursor: cursor }));
      if (res.length === 0) break;
      assert.ok(res.length <= 7);
      for (const r of res) seen.push(r.relationship.resource.objectId);
      cursor = res[res.length - 1].afterResultCursor;
      assert.ok(cursor && cursor.token.length > 0);
    }
    assert.equal(seen.length, 25);
    assert.deepEqual(seen, [...seen].sort());

    const ids = [];
    cursor = undefined;
    for (let page = 0; page < 20; page++) {
      const res = await p.lookupResources(v1.LookupResourcesRequest.create({
        consistency: full(), resourceObjectType: 'doc', permission: 'view', subject: subj('user', 'alice'),
        optionalLimit: 10, optionalCursor: cursor }));
      if (res.length === 0) break;
      for (const r of res) {
        assert.equal(r.permissionship, v1.LookupPermissionship.HAS_PERMISSION);
        ids.push(r.resourceObjectId);
      }
      cursor = res[res.length - 1].afterResultCursor;
    }
    assert.equal(ids.length, 25);
    assert.equal(new Set(ids).size, 25);

    const subs = await p.lookupSubjects(v1.LookupSubjectsRequest.create({
      consistency: full(), resource: obj('doc', 'd00'), permission: 'view', subjectObjectType: 'user' }));
    assert.deepEqual(subs.map((s) => s.subject.subjectObjectId).sort(), ['alice', 'bob']);

    const bad = await rejects(p.readRelationships(v1.ReadRelationshipsRequest.create({
      relationshipFilter: filter, optionalCursor: v1.Cursor.create({ token: 'not-a-cursor' }) })), grpc.status.INVALID_ARGUMENT);
    assert.equal(errorInfo(bad).info.reason, 'ERROR_REASON_INVALID_CURSOR');
  });

  await t.test('Watch sees what another client writes, then is cancelled', async () => {
    const writer = v1.NewClient(KEY, srv.endpoint, v1.ClientSecurity.INSECURE_PLAINTEXT_CREDENTIALS);
    const got = [];
    const w = client.watch(v1.WatchRequest.create({ optionalObjectTypes: ['doc'] }));
    const seen = new Promise((resolve, reject) => {
      w.on('data', (ev) => {
        for (const u of ev.updates) got.push(`${u.operation}:${u.relationship.resource.objectId}@${u.relationship.subject.object.objectId}`);
        assert.match(ev.changesThrough.token, /^[0-9]+$/);
        if (got.length >= 3) resolve();
      });
      w.on('error', (e) => { if (e.code !== grpc.status.CANCELLED) reject(e); });
    });
    await new Promise((r) => setTimeout(r, 300)); // the watch is registered
    await writer.promises.writeRelationships(v1.WriteRelationshipsRequest.create({
      updates: [touch(rel('w1', 'dave')), touch(rel('w2', 'dave'))] }));
    await writer.promises.deleteRelationships(v1.DeleteRelationshipsRequest.create({
      relationshipFilter: v1.RelationshipFilter.create({ resourceType: 'doc', optionalResourceId: 'w1' }) }));
    await Promise.race([seen, new Promise((_, rej) => setTimeout(() => rej(new Error('watch saw ' + JSON.stringify(got))), 5000))]);
    const T = v1.RelationshipUpdate_Operation.TOUCH, D = v1.RelationshipUpdate_Operation.DELETE;
    assert.deepEqual(got.slice(0, 3), [`${T}:w1@dave`, `${T}:w2@dave`, `${D}:w1@dave`]);
    w.cancel();
    writer.close();
  });

  await t.test('errors carry SpiceDB codes and ErrorInfo', async () => {
    const e = await rejects(p.checkPermission(v1.CheckPermissionRequest.create({
      resource: obj('nosuchtype', 'x'), permission: 'view', subject: subj('user', 'alice') })), grpc.status.FAILED_PRECONDITION);
    const st = errorInfo(e);
    assert.equal(st.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(st.info.domain, 'authzed.com');
    assert.equal(st.info.reason, 'ERROR_REASON_UNKNOWN_DEFINITION');
    await rejects(p.checkPermission(v1.CheckPermissionRequest.create({ permission: 'view', subject: subj('user', 'a') })), grpc.status.INVALID_ARGUMENT);
    const lim = await rejects(p.readRelationships(v1.ReadRelationshipsRequest.create({
      relationshipFilter: v1.RelationshipFilter.create({ resourceType: 'doc' }), optionalLimit: 5000 })), grpc.status.INVALID_ARGUMENT);
    assert.equal(errorInfo(lim).info.reason, 'ERROR_REASON_EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT');
    await rejects(p.writeRelationships(v1.WriteRelationshipsRequest.create({
      updates: [v1.RelationshipUpdate.create({ operation: v1.RelationshipUpdate_Operation.CREATE, relationship: rel('d00', 'alice') })] })), grpc.status.ALREADY_EXISTS);
    await rejects(p.checkPermission(v1.CheckPermissionRequest.create({
      consistency: v1.Consistency.create({ requirement: { oneofKind: 'atLeastAsFresh', atLeastAsFresh: v1.ZedToken.create({ token: '999999999' }) } }),
      resource: obj('doc', 'd00'), permission: 'view', subject: subj('user', 'alice') })), grpc.status.OUT_OF_RANGE);
  });

  await t.test('names and ids that do not match SpiceDB\'s patterns are INVALID_ARGUMENT with its message', async () => {
    const TYPE = '`^([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9]$`';
    const REL = '`^[a-z][a-z0-9_]{1,62}[a-z0-9]$`';
    const REL_OPT = '`^([a-z][a-z0-9_]{1,62}[a-z0-9])?$`';
    const ID = '`^(([a-zA-Z0-9/_|\\-=+]{1,})|\\*)$`';
    const TYPE_OPT = '`^(([a-z][a-z0-9_]{1,61}[a-z0-9]/)*[a-z][a-z0-9_]{1,62}[a-z0-9])?$`';
    const msg = (...errs) => (errs.length === 1 ? 'validation error: ' + errs[0]
      : 'validation errors:' + errs.map((x) => '\n - ' + x).join(''));
    const pat = (f, re) => `${f}: does not match regex pattern ${re}`;
    // the message as SpiceDB v1.54 gives it (checked with the real-SpiceDB oracle)
    let e = await rejects(p.checkPermission(v1.CheckPermissionRequest.create({
      resource: obj('Doc', 'd00'), permission: 'view', subject: subj('user', 'alice') })), grpc.status.INVALID_ARGUMENT);
    assert.equal(e.details, msg(pat('resource.object_type', TYPE)));
    e = await rejects(p.checkPermission(v1.CheckPermissionRequest.create({
      resource: obj('doc', 'd 0'), permission: 'View', subject: v1.SubjectReference.create({ object: obj('user', 'alice'), optionalRelation: 'X' }) })),
    grpc.status.INVALID_ARGUMENT);
    assert.equal(e.details, msg(pat('resource.object_id', ID), pat('permission', REL_OPT), pat('subject.optional_relation', REL_OPT)));
    e = await rejects(p.writeRelationships(v1.WriteRelationshipsRequest.create({ updates: [touch(rel('dn1', 'alice')), touch(rel('dn2', 'alice', 'Viewer'))] })),
      grpc.status.INVALID_ARGUMENT);
    assert.equal(e.details, msg(pat('updates[1].relationship.relation', REL)));
    e = await rejects(p.readRelationships(v1.ReadRelationshipsRequest.create({
      relationshipFilter: v1.RelationshipFilter.create({ resourceType: 'Doc' }) })), grpc.status.INVALID_ARGUMENT);
    assert.equal(e.details, msg(pat('relationship_filter.resource_type', TYPE_OPT)));
    e = await rejects(p.lookupResources(v1.LookupResourcesRequest.create({
      resourceObjectType: 'doc', permission: 'v', subject: subj('user', 'alice') })), grpc.status.INVALID_ARGUMENT);
    assert.equal(e.details, msg(pat('permission', REL)));
    e = await rejects(p.lookupSubjects(v1.LookupSubjectsRequest.create({
      resource: obj('doc', 'd00'), permission: 'view', subjectObjectType: 'User' })), grpc.status.INVALID_ARGUMENT);
    assert.equal(e.details, msg(pat('subject_object_type', TYPE)));
    // nothing of the refused write was written
    const r = await p.readRelationships(v1.ReadRelationshipsRequest.create({
      consistency: full(), relationshipFilter: v1.RelationshipFilter.create({ resourceType: 'doc', optionalResourceId: 'dn1' }) }));
    assert.equal(r.length, 0);
  });

  await t.test('authentication: a wrong or missing key is UNAUTHENTICATED', async () => {
    const bad = v1.NewClient('not-the-key', srv.endpoint, v1.ClientSecurity.INSECURE_PLAINTEXT_CREDENTIALS);
    await rejects(bad.promises.readSchema(v1.ReadSchemaRequest.create({})), grpc.status.UNAUTHENTICATED);
    bad.close();
    const raw = new grpc.Client(srv.endpoint, grpc.credentials.createInsecure());
    await rejects(new Promise((resolve, reject) => raw.makeUnaryRequest('/authzed.api.v1.SchemaService/ReadSchema',
      (b) => b, (b) => b, Buffer.alloc(0), (e, r) => (e ? reject(e) : resolve(r)))), grpc.status.UNAUTHENTICATED);
    // Hostile sizes: a 5 MiB request message (over the 4 MiB limit) and a 20 KiB header.
    const big = Buffer.alloc(5 * 1024 * 1024, 0x41);
    const authMd = new grpc.Metadata();
    authMd.set('authorization', 'Bearer ' + KEY);
    await rejects(new Promise((resolve, reject) => raw.makeUnaryRequest('/authzed.api.v1.SchemaService/WriteSchema',
      (b) => b, (b) => b, big, authMd, (e, r) => (e ? reject(e) : resolve(r)))), grpc.status.RESOURCE_EXHAUSTED);
    const fat = new grpc.Metadata();
    fat.set('x-padding', 'p'.repeat(20 * 1024));
    const fatErr = await new Promise((resolve) => raw.makeUnaryRequest('/grpc.health.v1.Health/Check',
      (b) => b, (b) => b, Buffer.alloc(0), fat, (e, r) => resolve(e || r)));
    assert.ok(fatErr instanceof Error, 'a 20 KiB header list must be refused');
    // ... and the connection still serves.
    await new Promise((resolve, reject) => raw.makeUnaryRequest('/grpc.health.v1.Health/Check',
      (b) => b, (b) => b, Buffer.alloc(0), (e, r) => (e ? reject(e) : resolve(r))));
    await rejects(new Promise((resolve, reject) => raw.makeUnaryRequest('/authzed.api.v1.NoSuchService/Nope',
      (b) => b, (b) => b, Buffer.alloc(0), (e, r) => (e ? reject(e) : resolve(r)))), grpc.status.UNIMPLEMENTED);
    raw.close();
  });

  await t.test('deadlines and cancellation of a large LookupResources', async () => {
    // 20,000 documents alice can view.
    for (let b = 0; b < 20; b++) {
      const ups = [];
      for (let i = 0; i < 1000; i++) ups.push(touch(rel(`big${b}_${i}`, 'alice')));
      await p.writeRelationships(v1.WriteRelationshipsRequest.create({ updates: ups }));
    }
    const req = v1.LookupResourcesRequest.create({ consistency: full(), resourceObjectType: 'doc', permission: 'view', subject: subj('user', 'alice') });
    // The whole stream arrives without a deadline.
    const all = await p.lookupResources(req);
    assert.equal(all.length, 20025);
    // Cancel after the first result: the stream ends CANCELLED and the server goes on.
    await new Promise((resolve, reject) => {
      const s = client.lookupResources(req);
      let n = 0;
      s.on('data', () => { if (++n === 1) s.cancel(); });
      s.on('error', (e) => { try { assert.equal(e.code, grpc.status.CANCELLED); resolve(); } catch (x) { reject(x); } });
      s.on('end', () => reject(new Error('stream ended without cancellation')));
    });
    // A deadline too short for 20,000 results while the client reads slowly.
    await new Promise((resolve, reject) => {
      const s = client.lookupResources(req, new grpc.Metadata(), { deadline: Date.now() + 300 });
      s.on('data', () => { s.pause(); setTimeout(() => s.resume(), 50); });
      s.on('error', (e) => { try { assert.equal(e.code, grpc.status.DEADLINE_EXCEEDED); resolve(); } catch (x) { reject(x); } });
      s.on('end', () => reject(new Error('the stream finished within its deadline')));
    });
    const after = await p.checkPermission(v1.CheckPermissionRequest.create({
      consistency: full(), resource: obj('doc', 'big3_3'), permission: 'view', subject: subj('user', 'alice') }));
    assert.equal(after.permissionship, v1.CheckPermissionResponse_Permissionship.HAS_PERMISSION);
  });
});

test('TLS: --grpc-tls-cert/--grpc-tls-key serve gRPC over TLS with ALPN h2', async (t) => {
  const { execFileSync } = require('node:child_process');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-grpc-tls-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore' });
  const srv = await startServer(['--grpc-tls-cert', path.join(dir, 'cert.pem'), '--grpc-tls-key', path.join(dir, 'key.pem')], dir);
  const cert = fs.readFileSync(path.join(dir, 'cert.pem'));
  const client = v1.NewClientWithCustomCert(KEY, srv.endpoint.replace('127.0.0.1', 'localhost'), cert);
  const plain = v1.NewClient(KEY, srv.endpoint, v1.ClientSecurity.INSECURE_PLAINTEXT_CREDENTIALS);
  t.after(() => {
    client.close();
    plain.close();
    srv.proc.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const r = await client.promises.readSchema(v1.ReadSchemaRequest.create({}));
  assert.ok(r.schemaText.includes('definition user'));
  const ck = await client.promises.checkPermission(v1.CheckPermissionRequest.create({
    resource: obj('account', 'a1'), permission: 'manage', subject: subj('user', 'nobody') }));
  assert.equal(ck.permissionship, v1.CheckPermissionResponse_Permissionship.NO_PERMISSION);
  // A cleartext client cannot talk to the TLS port.
  const e = await new Promise((resolve) => plain.readSchema(v1.ReadSchemaRequest.create({}), new grpc.Metadata(),
    { deadline: Date.now() + 3000 }, (err, res) => resolve(err || res)));
  assert.ok(e instanceof Error, 'a cleartext call to the TLS port must fail');
  assert.equal(e.code, grpc.status.UNAVAILABLE);
  console.log(`# cleartext client on the TLS port: ${grpc.status[e.code]} (${e.details})`);
});

// ImportBulk (client streaming), ExportBulk (server streaming with cursors), the schema
// reflection RPCs, the ExperimentalService aliases and gRPC server reflection.
test('bulk import/export, schema reflection, experimental aliases, server reflection', async (t) => {
  const srv = await startServer();
  const client = v1.NewClient(KEY, srv.endpoint, v1.ClientSecurity.INSECURE_PLAINTEXT_CREDENTIALS);
  const p = client.promises;
  t.after(() => {
    client.close();
    srv.proc.kill('SIGTERM');
    fs.rmSync(srv.dir, { recursive: true, force: true });
  });
  const base = (await p.readSchema(v1.ReadSchemaRequest.create({}))).schemaText;
  const ours = '\n/** a folder */\ndefinition folder {\n  relation owner: user\n  permission admin = owner\n}\n' +
    '\ncaveat in_hours(hour int) {\n  hour >= 9 && hour < 17\n}\n' +
    '\n/** a document */\ndefinition doc {\n  relation parent: folder\n  relation viewer: user | user:* | user with in_hours\n' +
    '  relation editor: user\n  permission edit = editor + parent->admin\n  permission view = viewer + edit\n}\n';
  await p.writeSchema(v1.WriteSchemaRequest.create({ schema: base + ours }));

  // Writes `msgs` ImportBulk messages; resolves with the response or rejects with the error.
  const importBulk = (msgs, alias = false) => new Promise((resolve, reject) => {
    const cb = (e, res) => (e ? reject(e) : resolve(res));
    const s = alias ? client.bulkImportRelationships(cb) : client.importBulkRelationships(cb);
    for (const m of msgs) s.write(m);
    s.end();
  });
  const exportAll = async (limit, alias = false, filter = undefined) => {
    const ids = [];
    let cursor, pages = 0;
    for (;;) {
      const req = { consistency: full(), optionalLimit: limit, optionalCursor: cursor, optionalRelationshipFilter: filter };
      const res = alias
        ? await p.bulkExportRelationships(v1.BulkExportRelationshipsRequest.create(req))
        : await p.exportBulkRelationships(v1.ExportBulkRelationshipsRequest.create(req));
      if (res.length === 0) break;
      for (const b of res) {
        assert.ok(b.relationships.length <= limit);
        for (const r of b.relationships) ids.push(`${r.resource.objectId}#${r.relation}@${r.subject.object.objectId}`);
        cursor = b.afterResultCursor;
        pages++;
      }
      // One call streams every batch; a call resumed from the last cursor finds nothing.
      if (pages > 1000) throw new Error('export never ended');
    }
    return { ids, pages };
  };

  await t.test('ImportBulkRelationships: 5,000 relationships in 50 messages', async () => {
    const msgs = [];
    for (let m = 0; m < 50; m++) {
      const rels = [];
      for (let i = 0; i < 100; i++) rels.push(rel(`imp${String(m * 100 + i).padStart(5, '0')}`, 'ann'));
      msgs.push(v1.ImportBulkRelationshipsRequest.create({ relationships: rels }));
    }
    const res = await importBulk(msgs);
    assert.equal(res.numLoaded, '5000');
    const ck = await p.checkPermission(v1.CheckPermissionRequest.create({
      consistency: full(), resource: obj('doc', 'imp04999'), permission: 'view', subject: subj('user', 'ann') }));
    assert.equal(ck.permissionship, v1.CheckPermissionResponse_Permissionship.HAS_PERMISSION);
  });

  await t.test('ExportBulkRelationships pages with cursors, in key order', async () => {
    const { ids, pages } = await exportAll(700);
    assert.equal(ids.length, 5000);
    assert.ok(pages >= 8, `${pages} pages of at most 700`);
    assert.deepEqual(ids, [...ids].sort());
    assert.equal(new Set(ids).size, 5000);
    // A filter, and a cursor that resumes strictly after the batch it came with.
    const filter = v1.RelationshipFilter.create({ resourceType: 'doc', optionalResourceIdPrefix: 'imp000' });
    const first = await p.exportBulkRelationships(v1.ExportBulkRelationshipsRequest.create({
      consistency: full(), optionalLimit: 60, optionalRelationshipFilter: filter }));
    assert.deepEqual(first.map((b) => b.relationships.length), [60, 40]);
    const rest = await p.exportBulkRelationships(v1.ExportBulkRelationshipsRequest.create({
      consistency: full(), optionalLimit: 60, optionalRelationshipFilter: filter, optionalCursor: first[0].afterResultCursor }));
    assert.equal(rest[0].relationships[0].resource.objectId, 'imp00060');
    // A cursor minted for another filter is refused.
    const other = await rejects(p.exportBulkRelationships(v1.ExportBulkRelationshipsRequest.create({
      consistency: full(), optionalLimit: 60, optionalCursor: first[0].afterResultCursor })), grpc.status.FAILED_PRECONDITION);
    assert.equal(errorInfo(other).info.reason, 'ERROR_REASON_INVALID_CURSOR');
    const lim = await rejects(p.exportBulkRelationships(v1.ExportBulkRelationshipsRequest.create({ optionalLimit: 20000 })),
      grpc.status.INVALID_ARGUMENT);
    assert.equal(errorInfo(lim).info.reason, 'ERROR_REASON_EXCEEDS_MAXIMUM_ALLOWABLE_LIMIT');
  });

  await t.test('an import that fails half way changes nothing', async () => {
    const before = (await exportAll(1000)).ids;
    const ok = (k) => v1.ImportBulkRelationshipsRequest.create({ relationships: [rel(`half${k}a`, 'bo'), rel(`half${k}b`, 'bo')] });
    // An existing relationship in the third message: ALREADY_EXISTS, and nothing of the first two stays.
    const dup = v1.ImportBulkRelationshipsRequest.create({ relationships: [rel('half3a', 'bo'), rel('imp00007', 'ann')] });
    await rejects(importBulk([ok(1), ok(2), dup, ok(4)]), grpc.status.ALREADY_EXISTS);
    // A relationship the schema refuses (an unknown relation).
    const bad = v1.ImportBulkRelationshipsRequest.create({ relationships: [rel('half9', 'bo', 'nosuchrelation')] });
    const e = await rejects(importBulk([ok(5), bad]), grpc.status.FAILED_PRECONDITION);
    assert.equal(errorInfo(e).code, grpc.status.FAILED_PRECONDITION);
    // A relationship that is not one (no resource).
    const empty = v1.ImportBulkRelationshipsRequest.create({ relationships: [v1.Relationship.create({ relation: 'viewer', subject: subj('user', 'x') })] });
    await rejects(importBulk([ok(6), empty]), grpc.status.INVALID_ARGUMENT);
    assert.deepEqual((await exportAll(1000)).ids, before);
    // An empty import loads nothing, and the stream can be the alias's.
    assert.equal((await importBulk([])).numLoaded, '0');
    assert.equal((await importBulk([ok(7)], true)).numLoaded, '2');
    const check = await p.checkPermission(v1.CheckPermissionRequest.create({
      consistency: full(), resource: obj('doc', 'half7b'), permission: 'view', subject: subj('user', 'bo') }));
    assert.equal(check.permissionship, v1.CheckPermissionResponse_Permissionship.HAS_PERMISSION);
  });

  await t.test('an import cut by the server deadline changes nothing; a cancel is all or nothing', async () => {
    const cx = async () => (await exportAll(1000)).ids.filter((x) => x.startsWith('cx'));
    const msg = (k) => v1.ImportBulkRelationshipsRequest.create({ relationships: [rel(`cx${k}a`, 'cy'), rel(`cx${k}b`, 'cy')] });
    // The server's deadline (grpc-timeout) passes while it waits for the rest of a stream
    // the client keeps open (a raw HTTP/2 request: grpc-js would end its stream itself).
    const http2 = require('node:http2');
    const sess = http2.connect('http://' + srv.endpoint);
    const status = await new Promise((resolve, reject) => {
      const req = sess.request({ ':method': 'POST', ':path': '/authzed.api.v1.PermissionsService/ImportBulkRelationships',
        'content-type': 'application/grpc', te: 'trailers', authorization: 'Bearer ' + KEY, 'grpc-timeout': '400m' });
      for (const k of [1, 2]) {
        const body = Buffer.from(v1.ImportBulkRelationshipsRequest.toBinary(msg(k)));
        const pre = Buffer.alloc(5);
        pre.writeUInt32BE(body.length, 1);
        req.write(Buffer.concat([pre, body]));
      }
      req.on('trailers', (tr) => resolve(tr));
      req.on('response', (h) => { if (h['grpc-status']) resolve(h); });
      req.on('error', reject);
    });
    sess.close();
    assert.equal(status['grpc-status'], String(grpc.status.DEADLINE_EXCEEDED));
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await cx(), []);
    // A client's cancel: grpc-js half-closes the stream, then sends RST_STREAM, so the server
    // may take the stream as complete before the cancel arrives (any server would): the
    // import is then wholly written, else not at all, never in part.
    await rejects(new Promise((resolve, reject) => {
      const s = client.importBulkRelationships((e, r) => (e ? reject(e) : resolve(r)));
      s.write(msg(3));
      s.write(msg(4));
      setTimeout(() => s.cancel(), 300);
    }), grpc.status.CANCELLED);
    await new Promise((r) => setTimeout(r, 300));
    const got = await cx();
    assert.ok(got.length === 0 || got.length === 4, JSON.stringify(got));
    // ... and the write path was let go: the next import goes through.
    assert.equal((await importBulk([msg(5)])).numLoaded, '2');
    assert.ok((await cx()).includes('cx5a#viewer@cy'));
  });

  await t.test('an import the client cancels mid-stream is rolled back, whatever it had sent', async () => {
    // 100,000 relationships: the server is still reading when the cancel comes (at once, or
    // after 200 ms with some 1,000-relationship chunks already written in the transaction).
    // (grpc-js cancels a stream it has fully sent by END_STREAM then RST_STREAM: the server
    // asks right before its commit and rolls back if the RST arrived by then; one arriving
    // after that is too late for any server. tests/unit/api/v1svc_import_test.c pins that
    // last check down.)
    const cm = async () => (await exportAll(1000)).ids.filter((x) => x.startsWith('cm'));
    const msg = (k) => v1.ImportBulkRelationshipsRequest.create({
      relationships: Array.from({ length: 1000 }, (_, i) => rel(`cm${k}_${i}`, 'cz')) });
    for (const wait of [0, 200]) {
      await rejects(new Promise((resolve, reject) => {
        const s = client.importBulkRelationships((e, r) => (e ? reject(e) : resolve(r)));
        for (let k = 0; k < 100; k++) s.write(msg(k));
        // no end(): the client's cancel (RST_STREAM) comes while its stream is open
        setTimeout(() => s.cancel(), wait);
      }), grpc.status.CANCELLED);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(await cm(), [], `cancelled after ${wait} ms`);
    }
    // the write path is free again: the next import commits
    assert.equal((await importBulk([msg(100)])).numLoaded, '1000');
    assert.equal((await cm()).length, 1000);
  });

  await t.test('HTTP/2 flow control holds an import client the server is not reading', async () => {
    // Import A takes the write path and keeps its stream open; import B, behind it, is not
    // read meanwhile: of B's ~3 MB only its stream window (1 MiB) may leave the client.
    const http2 = require('node:http2');
    const sess = http2.connect('http://' + srv.endpoint);
    const frame = (m) => {
      const body = Buffer.from(v1.ImportBulkRelationshipsRequest.toBinary(m));
      const pre = Buffer.alloc(5);
      pre.writeUInt32BE(body.length, 1);
      return Buffer.concat([pre, body]);
    };
    const open = () => {
      const req = sess.request({ ':method': 'POST', ':path': '/authzed.api.v1.PermissionsService/ImportBulkRelationships',
        'content-type': 'application/grpc', te: 'trailers', authorization: 'Bearer ' + KEY });
      const done = new Promise((resolve, reject) => {
        let st = null;
        req.on('response', (h) => { if (h['grpc-status']) st = h; });
        req.on('trailers', (tr) => { st = tr; });
        req.on('close', () => resolve(st));
        req.on('error', reject);
        req.resume();
      });
      return { req, done };
    };
    const a = open();
    a.req.write(frame(v1.ImportBulkRelationshipsRequest.create({ relationships: [rel('fcA', 'fc')] })));
    await new Promise((r) => setTimeout(r, 300)); // A holds the write path
    const b = open();
    let sent = 0;
    for (let m = 0; m < 40; m++) {
      const rels = [];
      for (let i = 0; i < 1500; i++) rels.push(rel(`fc${m}_${i}_${'x'.repeat(20)}`, 'fc'));
      const f = frame(v1.ImportBulkRelationshipsRequest.create({ relationships: rels }));
      sent += f.length;
      b.req.write(f);
    }
    b.req.end();
    await new Promise((r) => setTimeout(r, 1000));
    const held = b.req.writableLength;
    assert.ok(sent > 3e6, `${sent} bytes`);
    assert.ok(held >= sent - 1.2 * 1024 * 1024, `the client sent ${sent - held} of ${sent} bytes while the server read nothing`);
    a.req.end(); // A commits; B is read, its window given back as it goes, and commits
    const sa = await a.done, sb = await b.done;
    sess.close();
    assert.equal(sa['grpc-status'], '0');
    assert.equal(sb['grpc-status'], '0', sb['grpc-message']);
    const ck = await p.checkPermission(v1.CheckPermissionRequest.create({
      consistency: full(), resource: obj('doc', `fc39_1499_${'x'.repeat(20)}`), permission: 'view', subject: subj('user', 'fc') }));
    assert.equal(ck.permissionship, v1.CheckPermissionResponse_Permissionship.HAS_PERMISSION);
    console.log(`# flow control: the client could hand ${sent - held} of ${sent} bytes to HTTP/2 while the import waited`);
  });

  await t.test('an import without credentials is refused before it reads anything', async () => {
    const bad = v1.NewClient('not-the-key', srv.endpoint, v1.ClientSecurity.INSECURE_PLAINTEXT_CREDENTIALS);
    await rejects(new Promise((resolve, reject) => {
      const s = bad.importBulkRelationships((e, r) => (e ? reject(e) : resolve(r)));
      s.write(v1.ImportBulkRelationshipsRequest.create({ relationships: [rel('nokey', 'x')] }));
      s.end();
    }), grpc.status.UNAUTHENTICATED);
    bad.close();
  });

  await t.test('ReflectSchema, ComputablePermissions, DependentRelations, DiffSchema', async () => {
    const r = await p.reflectSchema(v1.ReflectSchemaRequest.create({
      consistency: full(), optionalFilters: [v1.ReflectionSchemaFilter.create({ optionalDefinitionNameFilter: 'doc' })] }));
    assert.deepEqual(r.definitions.map((d) => d.name), ['doc']);
    const doc = r.definitions[0];
    assert.equal(doc.comment, '/** a document */');
    assert.deepEqual(doc.relations.map((x) => x.name), ['parent', 'viewer', 'editor']);
    assert.deepEqual(doc.permissions.map((x) => x.name), ['edit', 'view']);
    const viewer = doc.relations[1];
    assert.equal(viewer.parentDefinitionName, 'doc');
    assert.deepEqual(viewer.subjectTypes.map((s) => [s.subjectDefinitionName, s.typeref.oneofKind, s.optionalCaveatName]),
      [['user', 'isTerminalSubject', ''], ['user', 'isPublicWildcard', ''], ['user', 'isTerminalSubject', 'in_hours']]);
    assert.match(r.readAt.token, /^[0-9]+$/);
    const all = await p.reflectSchema(v1.ReflectSchemaRequest.create({}));
    assert.ok(all.definitions.some((d) => d.name === 'folder'));
    const cav = all.caveats.find((c) => c.name === 'in_hours');
    assert.deepEqual(cav.parameters.map((x) => [x.name, x.type, x.parentCaveatName]), [['hour', 'int', 'in_hours']]);

    const cp = await p.computablePermissions(v1.ComputablePermissionsRequest.create({ definitionName: 'folder', relationName: 'owner' }));
    assert.deepEqual(cp.permissions.map((x) => `${x.definitionName}#${x.relationName}:${x.isPermission}`),
      ['doc#edit:true', 'doc#view:true', 'folder#admin:true']);
    const dr = await p.dependentRelations(v1.DependentRelationsRequest.create({ definitionName: 'doc', permissionName: 'edit' }));
    assert.deepEqual(dr.relations.map((x) => `${x.definitionName}#${x.relationName}`),
      ['doc#editor', 'doc#parent', 'folder#admin', 'folder#owner']);
    const df = await p.diffSchema(v1.DiffSchemaRequest.create({
      comparisonSchema: base + ours.replace('  relation editor: user\n', '  relation editor: user\n  relation owner: user\n') + '\ndefinition extra {}\n' }));
    const kinds = df.diffs.map((d) => d.diff.oneofKind);
    assert.ok(kinds.includes('definitionAdded'), JSON.stringify(kinds));
    assert.ok(kinds.includes('relationAdded'), JSON.stringify(kinds));
    assert.equal(df.diffs.find((d) => d.diff.oneofKind === 'relationAdded').diff.relationAdded.name, 'owner');

    const u = await rejects(p.computablePermissions(v1.ComputablePermissionsRequest.create({ definitionName: 'nosuch', relationName: 'x' })),
      grpc.status.FAILED_PRECONDITION);
    assert.equal(errorInfo(u).info.reason, 'ERROR_REASON_UNKNOWN_DEFINITION');
    await rejects(p.dependentRelations(v1.DependentRelationsRequest.create({ definitionName: 'doc', permissionName: 'viewer' })),
      grpc.status.INVALID_ARGUMENT);
    const pe = await rejects(p.diffSchema(v1.DiffSchemaRequest.create({ comparisonSchema: 'definition {' })), grpc.status.INVALID_ARGUMENT);
    assert.equal(errorInfo(pe).info.reason, 'ERROR_REASON_SCHEMA_PARSE_ERROR');
  });

  await t.test('ExperimentalService aliases answer as the RPCs they alias', async () => {
    const items = [
      { resource: obj('doc', 'imp00001'), permission: 'view', subject: subj('user', 'ann') },
      { resource: obj('doc', 'imp00001'), permission: 'edit', subject: subj('user', 'ann') },
      { resource: obj('nosuchtype', 'x'), permission: 'view', subject: subj('user', 'ann') },
    ];
    const bc = await p.bulkCheckPermission(v1.BulkCheckPermissionRequest.create({
      consistency: full(), items: items.map((i) => v1.BulkCheckPermissionRequestItem.create(i)) }));
    assert.deepEqual(bc.pairs.map((x) => x.response.oneofKind), ['item', 'item', 'error']);
    assert.equal(bc.pairs[0].response.item.permissionship, v1.CheckPermissionResponse_Permissionship.HAS_PERMISSION);
    assert.equal(bc.pairs[1].response.item.permissionship, v1.CheckPermissionResponse_Permissionship.NO_PERMISSION);
    assert.equal(bc.pairs[2].request.resource.objectType, 'nosuchtype');

    const er = await p.experimentalReflectSchema(v1.ExperimentalReflectSchemaRequest.create({
      optionalFilters: [v1.ExpSchemaFilter.create({ optionalDefinitionNameFilter: 'folder' })] }));
    assert.deepEqual(er.definitions.map((d) => [d.name, d.comment, d.relations[0].subjectTypes[0].subjectDefinitionName]),
      [['folder', '/** a folder */', 'user']]);
    const ecp = await p.experimentalComputablePermissions(v1.ExperimentalComputablePermissionsRequest.create({ definitionName: 'folder', relationName: 'owner' }));
    assert.equal(ecp.permissions.length, 3);
    const edr = await p.experimentalDependentRelations(v1.ExperimentalDependentRelationsRequest.create({ definitionName: 'doc', permissionName: 'edit' }));
    assert.equal(edr.relations.length, 4);
    const eds = await p.experimentalDiffSchema(v1.ExperimentalDiffSchemaRequest.create({ comparisonSchema: base + ours + '\ndefinition extra2 {}\n' }));
    assert.deepEqual(eds.diffs.map((d) => [d.diff.oneofKind, d.diff.definitionAdded && d.diff.definitionAdded.name]),
      [['definitionAdded', 'extra2']]);
    const { ids } = await exportAll(5000, true);
    assert.deepEqual(ids, (await exportAll(5000)).ids);
    assert.ok(ids.length >= 5004);
    const uc = await rejects(p.experimentalCountRelationships(v1.ExperimentalCountRelationshipsRequest.create({ name: 'docs' })),
      grpc.status.UNIMPLEMENTED);
    assert.match(uc.details, /relationship counters/);
    await rejects(p.experimentalRegisterRelationshipCounter(v1.ExperimentalRegisterRelationshipCounterRequest.create({ name: 'docs' })),
      grpc.status.UNIMPLEMENTED);
  });

  await t.test('server reflection (v1 and v1alpha) with grpc-js-reflection-client', async () => {
    const { GrpcReflection } = require('grpc-js-reflection-client');
    for (const version of ['v1', 'v1alpha']) {
      const r = new GrpcReflection(srv.endpoint, grpc.credentials.createInsecure(), {}, version);
      const services = await r.listServices();
      assert.deepEqual([...services].sort(), ['authzed.api.v1.ExperimentalService', 'authzed.api.v1.PermissionsService',
        'authzed.api.v1.SchemaService', 'authzed.api.v1.WatchService', 'grpc.health.v1.Health',
        'grpc.reflection.v1.ServerReflection', 'grpc.reflection.v1alpha.ServerReflection']);
      const methods = await r.listMethods('authzed.api.v1.PermissionsService');
      const imp = methods.find((m) => m.name === 'ImportBulkRelationships');
      assert.ok(imp, JSON.stringify(methods.map((m) => m.name)));
      assert.equal(methods.length, 10);
    }
    // As grpcurl does: learn SchemaService by reflection alone, then call it.
    const r = new GrpcReflection(srv.endpoint, grpc.credentials.createInsecure());
    const d = await r.getDescriptorBySymbol('authzed.api.v1.SchemaService');
    const pkg = d.getPackageObject({ keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
    const Schema = pkg.authzed.api.v1.SchemaService;
    const sc = new Schema(srv.endpoint, grpc.credentials.createInsecure());
    const md = new grpc.Metadata();
    md.set('authorization', 'Bearer ' + KEY);
    const rs = await new Promise((resolve, reject) => sc.ReadSchema({}, md, (e, x) => (e ? reject(e) : resolve(x))));
    assert.ok(rs.schema_text.includes('definition folder'));
    const rf = await new Promise((resolve, reject) => sc.ReflectSchema({ optional_filters: [{ optional_definition_name_filter: 'folder' }] }, md,
      (e, x) => (e ? reject(e) : resolve(x))));
    assert.equal(rf.definitions[0].name, 'folder');
    sc.close();
    // Symbols inside files: a message, a nested enum, a method; the file by name.
    for (const sym of ['authzed.api.v1.Relationship', 'authzed.api.v1.CheckPermissionResponse.Permissionship',
      'authzed.api.v1.PermissionsService.CheckPermission', 'grpc.health.v1.Health']) {
      const x = await r.getDescriptorBySymbol(sym);
      assert.ok(x.getProtobufJsRoot().lookup(sym), sym);
    }
    const byName = await r.getDescriptorByFileName('authzed/api/v1/core.proto');
    assert.ok(byName.getProtobufJsRoot().lookup('authzed.api.v1.ObjectReference'));
    const ext = await r.getAllExtensionNumbersOfType('authzed.api.v1.Relationship');
    assert.equal(ext.baseTypeName || ext.base_type_name, 'authzed.api.v1.Relationship');
    await assert.rejects(r.getDescriptorBySymbol('no.such.Symbol'));
  });
});

test('serve-testing --evict-lru: an instance is idle again once its gRPC call ends', async (t) => {
  const port = await freePort();
  const proc = spawn(BIN, ['serve-testing', '--grpc-addr', `127.0.0.1:${port}`, '--readonly-grpc-addr',
    '127.0.0.1:0', '--http-enabled', 'false', '--max-instances', '1', '--evict-lru', 'true'],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  t.after(() => proc.kill('SIGTERM'));
  await new Promise((resolve, reject) => {
    let out = '';
    const tm = setTimeout(() => reject(new Error('serve-testing did not start: ' + err)), 15000);
    proc.stdout.on('data', (d) => { out += d; if (out.includes('grpc-readonly://')) { clearTimeout(tm); resolve(); } });
    proc.once('exit', (c) => reject(new Error(`serve-testing exited ${c}: ${err}`)));
  });
  const as = (token) => v1.NewClient(token, `127.0.0.1:${port}`, v1.ClientSecurity.INSECURE_PLAINTEXT_CREDENTIALS);
  const a = as('token-a');
  const b = as('token-b');
  t.after(() => { a.close(); b.close(); });
  await a.promises.writeSchema(v1.WriteSchemaRequest.create({ schema: 'definition user {}' }));
  // A's call is over, so its instance is idle: B's new token drops it (the bound is 1) ...
  await rejects(b.promises.readSchema(v1.ReadSchemaRequest.create({})), grpc.status.NOT_FOUND);
  // ... and A comes back to a new, empty instance (B's dropped in turn).
  await rejects(a.promises.readSchema(v1.ReadSchemaRequest.create({})), grpc.status.NOT_FOUND);
  assert.match(err, /instance dropped \(least recently used\)/);
});
