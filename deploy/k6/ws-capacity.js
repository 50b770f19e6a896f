// k6 WebSocket capacity against pricebeast: the streams of config/plans/ws-capacity.toml, plus
// connection churn beside them.
//
// Scenario `hold`: ramp to 5,000 users in 5 min, hold 5 min, drop to 0 in 30 s. Each user makes
// one session for 1 to 5 distinct random symbols (POST /v1/sessions), opens its stream
// (GET /v1/stream?session_id=, upgraded to a WebSocket) and reads it until the drop reaches it.
// Scenario `churn`, at the same time: a few users that close and reopen all along (a session, a
// stream of 1 to 5 s, a close frame, a pause of 0.5 to 1 s, again), as screens being reloaded.
// Checks: each session is made (200), each upgrade is 101, the first frame holds every symbol asked
// for, no held stream goes PRICEBEAST_QUIET_S without a frame, the server never closes one first.
//
//   k6 run -e PRICEBEAST_KEY="$PARTNER" deploy/k6/ws-capacity.js
//   k6 run -e PRICEBEAST_KEY="$PARTNER" -e PRICEBEAST_SCALE=0.05 deploy/k6/ws-capacity.js   # 250 streams, 32 s
//
// Use a partner key: a public key may hold only 10 streams at once, a partner key 20,000 by
// default (docs/protocol.md). k6 itself needs an open-file limit above the stream count
// (`ulimit -n`).
//
// Environment (every variable this script reads):
//   PRICEBEAST_BASE_URL     the public listener (default http://127.0.0.1:8080; https:// streams over wss://)
//   PRICEBEAST_KEY          API key sent as X-API-Key when making sessions
//   PRICEBEAST_SYMBOLS      comma-separated set sessions draw from (default the 8 simulated crypto pairs)
//   PRICEBEAST_SCALE        multiplies users and every duration, as `pricebeast stress --scale` (default 1)
//   PRICEBEAST_USERS        streams held at the plateau, before the scale (default 5000)
//   PRICEBEAST_CHURN_USERS  users that close and reopen all along, before the scale (default 100)
//   PRICEBEAST_QUIET_S      longest wait for a frame on a held stream, s (default 10)
//   PRICEBEAST_AGE_P99_MS   threshold on the p99 price age of pushed frames, ms (default 300)

import http from 'k6/http';
import ws from 'k6/ws';
import exec from 'k6/execution';
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
const USERS = Number(__ENV.PRICEBEAST_USERS || '5000');
const CHURN_USERS = Number(__ENV.PRICEBEAST_CHURN_USERS || '100');
const QUIET_MS = Number(__ENV.PRICEBEAST_QUIET_S || '10') * 1000;
const AGE_P99_MS = Number(__ENV.PRICEBEAST_AGE_P99_MS || '300');

const RAMP_S = Math.max(1, Math.round(300 * SCALE));
const HOLD_S = Math.max(1, Math.round(300 * SCALE));
const DROP_S = Math.max(1, Math.round(30 * SCALE));

const frames = new Counter('pricebeast_frames');
const failedAttempts = new Counter('pricebeast_failed_attempts');
const quietStreams = new Counter('pricebeast_quiet_streams');
const priceAge = new Trend('pricebeast_price_age_ms', true);

function users(n) {
  return n === 0 ? 0 : Math.max(1, Math.round(n * SCALE));
}

export const options = {
  scenarios: {
    hold: {
      executor: 'ramping-vus',
      exec: 'hold',
      startVUs: 0,
      stages: [
        { target: users(USERS), duration: `${RAMP_S}s` }, // ramp
        { target: users(USERS), duration: `${HOLD_S}s` }, // the plateau, held
        { target: 0, duration: `${DROP_S}s` }, // everyone leaves
      ],
      // A stream ends when the drop reaches its user, as in the built-in plan.
      gracefulRampDown: '0s',
    },
    churn: {
      executor: 'constant-vus',
      exec: 'churn',
      vus: users(CHURN_USERS),
      duration: `${RAMP_S + HOLD_S}s`,
      gracefulStop: '10s',
    },
  },
  thresholds: {
    checks: ['rate==1'],
    pricebeast_failed_attempts: ['count==0'],
    pricebeast_quiet_streams: ['count==0'],
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

// One session and its stream, read for `streamMs` (or until k6 stops the user).
function stream(streamMs, watchQuiet) {
  const symbols = distinctSymbols(Math.floor(between(1, 6)));
  const session = http.post(`${BASE}/v1/sessions`, JSON.stringify({ symbols: symbols }), {
    headers: { 'X-API-Key': KEY, 'Content-Type': 'application/json' },
    tags: { name: '/v1/sessions' },
  });
  if (!check(session, { 'session made (200)': (r) => r.status === 200 })) {
    failedAttempts.add(1, { kind: `session ${session.status}` });
    return;
  }
  const id = session.json('session_id');
  let received = 0;
  let lastFrameAt = Date.now();
  let closedByUs = false;
  const upgrade = ws.connect(
    `${WS_BASE}/v1/stream?session_id=${encodeURIComponent(id)}`,
    { tags: { name: '/v1/stream' } },
    function (socket) {
      socket.on('message', function (data) {
        const now = Date.now();
        let message = null;
        try {
          message = JSON.parse(data);
        } catch (e) {
          message = null;
        }
        if (message === null || message.type !== 'prices') {
          failedAttempts.add(1, { kind: 'bad frame' });
          return;
        }
        if (received === 0) {
          check(message, { 'first frame holds every symbol': (m) => covers(m, symbols) });
        } else {
          message.prices.forEach((p) => priceAge.add(now - p.ts));
        }
        received += 1;
        lastFrameAt = now;
        frames.add(1);
      });
      socket.on('close', function () {
        // The drop ends held streams on the client's side; only a close before it is the server's.
        const dropAt = exec.scenario.startTime + (RAMP_S + HOLD_S) * 1000;
        if (!closedByUs && Date.now() < dropAt) {
          failedAttempts.add(1, { kind: 'closed by server' });
        }
      });
      socket.on('error', function (e) {
        failedAttempts.add(1, { kind: 'io' });
      });
      if (watchQuiet) {
        // Checked as the stream goes: a held stream's iteration is cut by the drop, so nothing
        // after ws.connect would run for it.
        socket.setInterval(function () {
          if (Date.now() - lastFrameAt > QUIET_MS) {
            quietStreams.add(1);
            lastFrameAt = Date.now();
          }
        }, 1000);
      }
      socket.setTimeout(function () {
        closedByUs = true;
        socket.close();
      }, streamMs);
    },
  );
  if (!check(upgrade, { 'upgraded (101)': (r) => r !== null && r.status === 101 })) {
    failedAttempts.add(1, { kind: `upgrade ${upgrade ? upgrade.status : 'none'}` });
  }
}

export function hold() {
  // Until the end of the run: the drop stops the user, which ends its stream.
  stream((RAMP_S + HOLD_S + DROP_S + 60) * 1000, true);
  sleep(1);
}

export function churn() {
  stream(between(1, 5) * 1000, false);
  sleep(between(0.5, 1));
}
