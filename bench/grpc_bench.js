// bench/grpc_bench.js - load generator for keyward's gRPC endpoint (issue 13, item 6), on
// loopback, with @grpc/grpc-js from tests/grpc/node_modules (install: cd tests/grpc && npm
// install). Requests are encoded once with the official client's message types and sent
// as raw bytes, so the client's cost per call is the transport's, not protobuf-ts's.
//
//   node bench/grpc_bench.js HOST:PORT KEY check|bulk|lookup [options as env]
//   check:  CheckPermission, CONC concurrent calls (default 64) over CHANNELS channels
//           (default 4) for SECONDS (default 20); prints calls/s, p50, p99 (ms).
//   bulk:   CheckBulkPermissions of 100 items, CONC=16; prints items/s, p50, p99.
//   lookup: one LookupResources streaming all results; prints results and results/s.
//   The check/bulk queries are RES_TYPE:RES_ID#PERM@SUBJ_TYPE:SUBJ_ID, given as env QUERIES
//   (a file, one `type:id perm type:id` per line; picked at random), LOOKUP="type perm
//   type:id" for lookup.
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const mods = path.join(__dirname, '..', 'tests', 'grpc', 'node_modules');
const grpc = require(path.join(mods, '@grpc/grpc-js'));
const { v1 } = require(path.join(mods, '@authzed/authzed-node'));

const [endpoint, key, mode] = process.argv.slice(2);
const SECONDS = Number(process.env.SECONDS || 20);
const CHANNELS = Number(process.env.CHANNELS || 4);
const md = new grpc.Metadata();
md.set('authorization', 'Bearer ' + key);
const ident = (b) => b;
const channels = [];
for (let i = 0; i < CHANNELS; i++)
  channels.push(new grpc.Client(endpoint, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1, 'grpc.channel_id': i }));

const obj = (s) => { const [t, id] = s.split(':'); return v1.ObjectReference.create({ objectType: t, objectId: id }); };
function queries() {
  const lines = fs.readFileSync(process.env.QUERIES, 'utf8').trim().split('\n');
  return lines.map((l) => { const [r, p, s] = l.trim().split(/\s+/); return { r, p, s }; });
}
const pct = (a, q) => a[Math.min(a.length - 1, Math.floor(a.length * q))];

async function closedLoop(conc, method, makeReq, perCall) {
  const lat = [];
  let done = 0, i = 0;
  const end = Date.now() + SECONDS * 1000;
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: conc }, (_, w) => (async () => {
    const ch = channels[w % channels.length];
    while (Date.now() < end) {
      const req = makeReq(i++);
      const s = process.hrtime.bigint();
      await new Promise((resolve, reject) => ch.makeUnaryRequest(method, ident, ident, req, md,
        (e) => (e ? reject(e) : resolve())));
      lat.push(Number(process.hrtime.bigint() - s) / 1e6);
      done++;
    }
  })()));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  lat.sort((a, b) => a - b);
  return { calls: done, per_s: Math.round(done * perCall / secs), p50_ms: +pct(lat, 0.5).toFixed(2), p99_ms: +pct(lat, 0.99).toFixed(2) };
}

(async () => {
  if (mode === 'check') {
    const reqs = queries().map((q) => Buffer.from(v1.CheckPermissionRequest.toBinary(v1.CheckPermissionRequest.create({
      resource: obj(q.r), permission: q.p, subject: v1.SubjectReference.create({ object: obj(q.s) }) }))));
    const r = await closedLoop(Number(process.env.CONC || 64), '/authzed.api.v1.PermissionsService/CheckPermission',
      () => reqs[Math.floor(Math.random() * reqs.length)], 1);
    console.log(JSON.stringify({ mode, conc: Number(process.env.CONC || 64), channels: CHANNELS, ...r }));
  } else if (mode === 'bulk') {
    const qs = queries();
    const reqs = [];
    for (let k = 0; k < 200; k++) {
      const items = [];
      for (let j = 0; j < 100; j++) {
        const q = qs[Math.floor(Math.random() * qs.length)];
        items.push(v1.CheckBulkPermissionsRequestItem.create({ resource: obj(q.r), permission: q.p, subject: v1.SubjectReference.create({ object: obj(q.s) }) }));
      }
      reqs.push(Buffer.from(v1.CheckBulkPermissionsRequest.toBinary(v1.CheckBulkPermissionsRequest.create({ items }))));
    }
    const r = await closedLoop(Number(process.env.CONC || 16), '/authzed.api.v1.PermissionsService/CheckBulkPermissions',
      (i) => reqs[i % reqs.length], 100);
    console.log(JSON.stringify({ mode, conc: Number(process.env.CONC || 16), items_per_call: 100, ...r }));
  } else if (mode === 'lookup') {
    const [rt, perm, subj] = process.env.LOOKUP.split(/\s+/);
    const req = Buffer.from(v1.LookupResourcesRequest.toBinary(v1.LookupResourcesRequest.create({
      resourceObjectType: rt, permission: perm, subject: v1.SubjectReference.create({ object: obj(subj) }) })));
    const t0 = process.hrtime.bigint();
    let n = 0;
    await new Promise((resolve, reject) => {
      const s = channels[0].makeServerStreamRequest('/authzed.api.v1.PermissionsService/LookupResources', ident, ident, req, md);
      s.on('data', () => { n++; });
      s.on('error', reject);
      s.on('end', resolve);
    });
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(JSON.stringify({ mode, results: n, seconds: +secs.toFixed(2), per_s: Math.round(n / secs) }));
  }
  channels.forEach((c) => c.close());
})().catch((e) => { console.error(e); process.exit(1); });
