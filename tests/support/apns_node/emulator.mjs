// An APNs provider-API emulator for load tests, on Node.js's built-in http2 module
// (nghttp2 underneath: an HTTP/2 implementation independent of the gateway's own and of
// Python's h2), for the call bench: about two thirds of the CPU per push of the Python
// emulator (tests/support/apns_emulator.py, which stays for the tests that script errors,
// hold answers or send GOAWAY): 0.36 against 0.53 ms at 1000 pushes/s on the two-core
// test machine, most of it Node's own http2 stream machinery and the wake-ups of a
// virtual machine, not these checks.
//
//   node emulator.mjs CONFIG.json
//
// CONFIG: {"host", "port" (0: any free), "cert", "key" (PEM files of the TLS server
// certificate), "keys": {kid: [team, public key PEM]}, "devices": {token: topic},
// "environment" (of this host, default "production"; devices may name theirs),
// "unregistered": {token: ms timestamp}, "max_streams"}.
// It prints "url https://HOST:PORT" once it listens. On stdin, the line "dump" makes it
// print one JSON line per request answered since the last dump -- {"t": arrival in
// CLOCK_MONOTONIC ns (process.hrtime.bigint(), the clock of Python's time.monotonic_ns()),
// "status", "reason", "token", "push_type", "topic", "apns_id", "payload" (the parsed
// JSON body, accepted pushes only)} -- then "end". Nothing is printed while the load
// runs. It exits when stdin closes (its parent is gone) or on SIGTERM.
//
// What it checks, in the order of the Python emulator (and of Apple's table): TLS with
// ALPN h2 only (no HTTP/1.1); :method POST (405 MethodNotAllowed); :path /3/device/TOKEN
// (404 BadPath, 400 MissingDeviceToken); no repeated header (400 DuplicateHeaders); a
// canonical UUID apns-id (BadMessageId); apns-priority 1, 5 or 10 (BadPriority, and 10 is
// refused for background pushes); a numeric apns-expiration (BadExpirationDate);
// apns-collapse-id at most 64 bytes (BadCollapseId); a known apns-push-type
// (InvalidPushType); apns-topic present (MissingTopic) and ending in ".voip" exactly for
// voip pushes (TopicDisallowed); the provider token (below); the device token hex and
// registered for this environment (BadDeviceToken) and for that topic
// (DeviceTokenNotForTopic); not unregistered (410 Unregistered with a timestamp); the
// payload not empty (PayloadEmpty), at most 4096 bytes, 5120 for voip (413
// PayloadTooLarge), and a JSON object (400 BadPayload: Apple's table names no reason for
// it, so the emulator's own word, which the gateway counts as a plain rejection).
//
// Provider token: "bearer JWT" (403 MissingProviderToken); the JWT's header says alg
// ES256 and a registered kid, its claims say iss = that key's team and a numeric iat,
// its signature verifies with that key (node's crypto.verify, IEEE P1363 r||s as JWS
// writes it) (403 InvalidProviderToken for any of these); iat at most an hour old (403
// ExpiredProviderToken) and not more than a minute ahead of this clock
// (InvalidProviderToken). As APNs does, a verified token is cached per connection (the
// next requests with the same token only have its age checked), a connection keeps the
// team of its first token (InvalidProviderToken for another), a new token within 20
// minutes of the connection's previous one is 429 TooManyProviderTokenUpdates, and a
// connection allows one stream until a request carried a valid token, then
// max_streams. Answers: 200 with apns-id (the request's or a new UUID) and no body;
// errors with apns-id, content-type application/json and {"reason": ...}.
//
// Uses only Node's standard library (no npm package), so CI installs nothing but the
// Debian package `nodejs`.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import readline from 'node:readline';

const PUSH_TYPES = new Set(['alert', 'background', 'voip', 'location', 'complication',
  'fileprovider', 'mdm', 'liveactivity', 'pushtotalk']);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const HEX = /^[0-9a-fA-F]+$/;
const DIGITS = /^[0-9]+$/;
const PREFIX = '/3/device/';
const TOKEN_MAX_AGE = 3600;  // seconds: older is ExpiredProviderToken
const TOKEN_AHEAD = 60;  // seconds of clock skew tolerated for a token's iat
const TOKEN_UPDATE_EVERY = 20 * 60;  // a new token on a connection sooner is 429

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const environment = config.environment || 'production';
const maxStreams = config.max_streams || 1000;
const keys = new Map();  // kid -> {team, key}
for (const [kid, [team, pem]] of Object.entries(config.keys || {})) {
  keys.set(kid, { team, key: crypto.createPublicKey(pem) });
}
const devices = new Map();  // token -> {topic, environment}
for (const [token, device] of Object.entries(config.devices || {})) {
  devices.set(token, typeof device === 'string' ? { topic: device, environment } : device);
}
const unregistered = new Map(Object.entries(config.unregistered || {}));
let records = [];  // what was answered since the last dump

const now = () => Date.now() / 1000;

function decodePart(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

// null when the request may go on, else [status, reason]
function checkAuth(session, authorization) {
  if (typeof authorization !== 'string' || !authorization.startsWith('bearer ')) {
    return [403, 'MissingProviderToken'];
  }
  const token = authorization.slice(7);
  if (token.length === 0) return [403, 'MissingProviderToken'];
  const state = session.apns;
  if (token === state.token && state.iat !== null) {
    // verified on this connection already: only its age can have changed
    return now() - state.iat > TOKEN_MAX_AGE ? [403, 'ExpiredProviderToken'] : null;
  }
  const parts = token.split('.');
  if (parts.length !== 3) return [403, 'InvalidProviderToken'];
  let header, claims;
  try {
    header = decodePart(parts[0]);
    claims = decodePart(parts[1]);
  } catch {
    return [403, 'InvalidProviderToken'];
  }
  const entry = header && typeof header.kid === 'string' ? keys.get(header.kid) : undefined;
  if (!entry || header.alg !== 'ES256' || !claims || typeof claims !== 'object') {
    return [403, 'InvalidProviderToken'];
  }
  const signature = Buffer.from(parts[2], 'base64url');
  const signed = crypto.verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`),
    { key: entry.key, dsaEncoding: 'ieee-p1363' }, signature);
  if (!signed || claims.iss !== entry.team || !Number.isInteger(claims.iat)) {
    return [403, 'InvalidProviderToken'];
  }
  if (state.team !== null && state.team !== entry.team) return [403, 'InvalidProviderToken'];
  const t = now();
  if (t - claims.iat > TOKEN_MAX_AGE) return [403, 'ExpiredProviderToken'];
  if (claims.iat - t > TOKEN_AHEAD) return [403, 'InvalidProviderToken'];
  if (state.token !== null && t - state.tokenSince < TOKEN_UPDATE_EVERY) {
    return [429, 'TooManyProviderTokenUpdates'];
  }
  state.token = token;
  state.tokenSince = t;
  state.iat = claims.iat;
  state.team = entry.team;
  return null;
}

// [status, reason, the payload's text when accepted]
function check(session, headers, rawHeaders, body, size) {
  if (headers[':method'] !== 'POST') return [405, 'MethodNotAllowed'];
  const path = headers[':path'] || '';
  if (!path.startsWith(PREFIX)) return [404, 'BadPath'];
  const token = path.slice(PREFIX.length);
  if (token.length === 0) return [400, 'MissingDeviceToken'];
  const seen = new Set();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (seen.has(rawHeaders[i])) return [400, 'DuplicateHeaders'];
    seen.add(rawHeaders[i]);
  }
  const apnsId = headers['apns-id'];
  if (apnsId !== undefined && !UUID.test(apnsId)) return [400, 'BadMessageId'];
  const priority = headers['apns-priority'] || '10';
  if (priority !== '10' && priority !== '5' && priority !== '1') return [400, 'BadPriority'];
  const expiration = headers['apns-expiration'];
  if (expiration !== undefined && !DIGITS.test(expiration)) return [400, 'BadExpirationDate'];
  const collapse = headers['apns-collapse-id'];
  if (collapse !== undefined && Buffer.byteLength(collapse) > 64) return [400, 'BadCollapseId'];
  const pushType = headers['apns-push-type'] || '';
  if (!PUSH_TYPES.has(pushType)) return [400, 'InvalidPushType'];
  if (pushType === 'background' && priority === '10') return [400, 'BadPriority'];
  const topic = headers['apns-topic'] || '';
  if (topic.length === 0) return [400, 'MissingTopic'];
  if ((pushType === 'voip') !== topic.endsWith('.voip')) return [400, 'TopicDisallowed'];
  const refused = checkAuth(session, headers.authorization);
  if (refused !== null) return refused;
  const device = HEX.test(token) ? devices.get(token) : undefined;
  if (device === undefined || device.environment !== environment) return [400, 'BadDeviceToken'];
  if (device.topic !== topic) return [400, 'DeviceTokenNotForTopic'];
  if (size === 0) return [400, 'PayloadEmpty'];
  if (size > (pushType === 'voip' ? 5120 : 4096)) return [413, 'PayloadTooLarge'];
  if (unregistered.has(token)) return [410, 'Unregistered'];
  const text = body.toString('utf8');
  let payload;
  try {
    payload = JSON.parse(text);
  } catch {
    return [400, 'BadPayload'];
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
    return [400, 'BadPayload'];
  }
  return [200, '', text];
}

function answer(stream, headers, rawHeaders, chunks, size, arrived) {
  const session = stream.session;
  const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
  const [status, reason, payload] = check(session, headers, rawHeaders, body, size);
  const path = headers[':path'] || '';
  const apnsId = UUID.test(headers['apns-id'] || '') ? headers['apns-id'] : crypto.randomUUID();
  records.push({
    t: arrived, status, reason, apns_id: apnsId,
    token: path.startsWith(PREFIX) ? path.slice(PREFIX.length) : '',
    push_type: headers['apns-push-type'] || '', topic: headers['apns-topic'] || '',
    // the text, parsed again only when dumped: one string per push for the collector
    // to keep, not a tree of objects
    payload: payload || null,
  });
  if (stream.destroyed || stream.closed) return;  // the client reset it meanwhile
  if (status === 200) {
    stream.respond({ ':status': 200, 'apns-id': apnsId }, { endStream: true });
  } else {
    const error = { reason };
    if (status === 410) error.timestamp = Number(unregistered.get(path.slice(PREFIX.length)));
    stream.respond({ ':status': status, 'apns-id': apnsId, 'content-type': 'application/json' });
    stream.end(JSON.stringify(error));
  }
  if (!session.apns.authorized && status !== 403) {
    // APNs lifts the one-stream limit once a request carried a valid token
    session.apns.authorized = true;
    session.settings({ maxConcurrentStreams: maxStreams });
  }
}

const server = http2.createSecureServer({
  cert: fs.readFileSync(config.cert),
  key: fs.readFileSync(config.key),
  ALPNProtocols: ['h2'],
  allowHTTP1: false,
  minVersion: 'TLSv1.2',
  settings: { maxConcurrentStreams: 1 },  // until a valid token, as APNs does
});

server.on('session', (session) => {
  session.apns = { token: null, tokenSince: 0, iat: null, team: null, authorized: false };
  session.on('error', () => {});  // a client gone mid-write: its streams just end
});
server.on('tlsClientError', () => {});
server.on('unknownProtocol', (socket) => socket.destroy());  // no ALPN h2: not APNs's client

server.on('stream', (stream, headers, flags, rawHeaders) => {
  // the arrival: when the request's last bytes were handed to us, before any check
  let arrived = process.hrtime.bigint();
  const chunks = [];
  let size = 0;
  stream.on('error', () => {});
  stream.on('data', (chunk) => {
    arrived = process.hrtime.bigint();
    size += chunk.length;
    if (size <= 8192) chunks.push(chunk);  // enough to judge; a bigger one is only measured
  });
  stream.on('end', () => answer(stream, headers, rawHeaders, chunks, size, arrived));
});

function dump() {
  const out = [];
  for (const r of records) {
    if (r.payload !== null) r.payload = JSON.parse(r.payload);
    // the arrival as a decimal string: a Number would round it after 104 days of uptime
    out.push(JSON.stringify(r, (k, v) => (typeof v === 'bigint' ? v.toString() : v)));
  }
  records = [];
  out.push('end');
  process.stdout.write(out.join('\n') + '\n');
}

const control = readline.createInterface({ input: process.stdin });
control.on('line', (line) => {
  if (line.trim() === 'dump') dump();
});
control.on('close', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));

server.listen(config.port || 0, config.host || '127.0.0.1', () => {
  const { address, port } = server.address();
  const host = address.includes(':') ? `[${address}]` : address;
  process.stdout.write(`url https://${host}:${port}\n`);
});
