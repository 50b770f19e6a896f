// k6 WebSocket spike against pricebeast: the users of config/plans/ws-spike.toml, as a k6 script.
//
// Ramp to 1,000 users in 3 min, hold 1 min, surge to 1,500 in 30 s, hold 1 min, drop to 0 in
// 10 s. Each user loops: POST /v1/sessions for 1 to 5 distinct random symbols, the stream
// (GET /v1/stream?session_id=, upgraded to a WebSocket) read for 5 to 20 s, a close frame, a pause
// of 1 to 3 s. Checks: the session is made (200), the upgrade is 101, the first frame holds every
// symbol asked for, frames arrive, and the server never closes the stream first.
//
//   k6 run -e PRICEBEAST_KEY="$PARTNER" deploy/k6/ws-spike.js
//   k6 run -e PRICEBEAST_KEY="$PARTNER" -e PRICEBEAST_SCALE=0.05 deploy/k6/ws-spike.js   # 50 to 75 users, 18 s
//
// Use a partner key: a public key may hold only 10 streams at once (docs/protocol.md).
//
// Environment (every variable this script reads):
//   PRICEBEAST_BASE_URL     the public listener (default http://127.0.0.1:8080; https:// streams over wss://)
//   PRICEBEAST_KEY          API key sent as X-API-Key when making sessions
//   PRICEBEAST_SYMBOLS      comma-separated set sessions draw from (default the 8 simulated crypto pairs)
//   PRICEBEAST_SCALE        multiplies users and every duration, as `pricebeast stress --scale` (default 1)
//   PRICEBEAST_AGE_P99_MS   threshold on the p99 price age of pushed frames, ms (default 300)
//
// Price age is a frame's arrival (this machine's clock) minus each of its prices' `ts`, a stream's
// first frame left out (its prices may be old): the built-in client's push latency, measured the
// same way, so run k6 on the server's machine or on one whose clock is synchronised with it.

import http from 'k6/http';
import ws from 'k6/ws';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const BASE = (__ENV.PRICEBEAST_BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const WS_BASE = BASE.replace(/^http/, 'ws');
const KEY = __ENV.PRICEBEAST_KEY || '';
const SYMBOLS = (__ENV.PRICEBEAST_SYMBOLS || 'BTC-USD,ETH-USD,SOL-USD,XRP-USD,DOGE-USD,ADA-USD,AVAX-USD,LTC-USD')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s.length > 0);
const SCALE = Number(__ENV.PRICEBEAST_SCALE || '1');
const AGE_P99_MS = Number(__ENV.PRICEBEAST_AGE_P99_MS || '300');

const frames = new Counter('pricebeast_frames');
const failedAttempts = new Counter('pricebeast_failed_attempts');
const priceAge = new Trend('pricebeast_price_age_ms', true);

function users(n) {
  return n === 0 ? 0 : Math.max(1, Math.round(n * SCALE));
}

function seconds(s) {
  return `${Math.max(1, Math.round(s * SCALE))}s`;
}

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { target: users(1000), duration: seconds(180) }, // ramp
        { target: users(1000), duration: seconds(60) }, // hold
        { target: users(1500), duration: seconds(30) }, // surge by half
        { target: users(1500), duration: seconds(60) }, // hold the surge
        { target: 0, duration: seconds(10) }, // everyone leaves
      ],
      // A user still streaming when the drop reaches it may finish its stream.
      gracefulRampDown: seconds(25),
    },
  },
  thresholds: {
    checks: ['rate==1'],
    pricebeast_failed_attempts: ['count==0'],
    pricebeast_price_age_ms: [`p(99)<${AGE_P99_MS}`],
  },
};

function between(min, max) {
  return min + Math.random() * (max - min);
}

function distinctSymbols(count) {
  const pool = SYMBOLS.slice();
  const picked = [];
  while (picked.length < count && pool.length > 0) {
    picked.push(pool.splice(Math.floor(Math.random() * pool.length), 1)[0]);
  }
  return picked;
}

// Every symbol asked for is in the frame, priced or listed as missing.
function covers(message, symbols) {
  const seen = {};
  (message.prices || []).forEach((p) => {
    seen[p.symbol] = true;
  });
  (message.missing || []).forEach((s) => {
    seen[s] = true;
  });
  return symbols.every((s) => seen[s] === true);
}

export default function () {
  const symbols = distinctSymbols(Math.floor(between(1, 6)));
  const session = http.post(`${BASE}/v1/sessions`, JSON.stringify({ symbols: symbols }), {
    headers: { 'X-API-Key': KEY, 'Content-Type': 'application/json' },
    tags: { name: '/v1/sessions' },
  });
  if (!check(session, { 'session made (200)': (r) => r.status === 200 })) {
    failedAttempts.add(1, { kind: `session ${session.status}` });
    sleep(between(1, 3) * SCALE);
    return;
  }
  const id = session.json('session_id');
  const streamMs = between(5, 20) * 1000 * SCALE;
  let received = 0;
  let firstCovers = false;
  let closedByUs = false;
  let badFrame = false;
  const upgrade = ws.connect(
    `${WS_BASE}/v1/stream?session_id=${encodeURIComponent(id)}`,
    { tags: { name: '/v1/stream' } },
    function (socket) {
      socket.on('message', function (data) {
        const now = Date.now();
        let message;
        try {
          message = JSON.parse(data);
        } catch (e) {
          badFrame = true;
          return;
        }
        if (message.type !== 'prices') {
          badFrame = true;
          return;
        }
        if (received === 0) {
          firstCovers = covers(message, symbols);
        } else {
          message.prices.forEach((p) => priceAge.add(now - p.ts));
        }
        received += 1;
        frames.add(1);
      });
      socket.on('close', function () {
        if (!closedByUs) {
          failedAttempts.add(1, { kind: 'closed by server' });
        }
      });
      socket.on('error', function (e) {
        failedAttempts.add(1, { kind: 'io' });
      });
      socket.setTimeout(function () {
        closedByUs = true;
        socket.close();
      }, streamMs);
    },
  );
  const upgraded = check(upgrade, { 'upgraded (101)': (r) => r !== null && r.status === 101 });
  if (!upgraded) {
    failedAttempts.add(1, { kind: `upgrade ${upgrade ? upgrade.status : 'none'}` });
  } else {
    check(null, {
      'frames arrived': () => received > 0,
      'first frame holds every symbol': () => firstCovers,
      'every frame is a prices frame': () => !badFrame,
    });
  }
  sleep(between(1, 3) * SCALE);
}
