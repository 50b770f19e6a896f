// k6 HTTP ramp against pricebeast's public path: closed-loop levels of virtual users, as the
// first levels of config/plans/ramp13.toml (30 to 1,500 connections), with the Locust file's mix:
//
//   70%  GET /v1/price?symbol=S            one random symbol of PRICEBEAST_SYMBOLS
//   20%  GET /v1/prices?symbols=A,B,...    PRICEBEAST_BATCH_SIZE distinct symbols
//   10%  GET /v1/usage
//
// Each level ramps to its user count in 5 s and holds it PRICEBEAST_LEVEL_S. Each user keeps a
// keep-alive connection and sends its next request when the last is answered. Thresholds: p95 of
// each route, and the share of failed requests (any status outside 200-399: a 429 or 503 counts,
// and `pricebeast_refusals` counts each by route, status and error code).
//
//   k6 run -e PRICEBEAST_KEY="$PARTNER" deploy/k6/http-ramp.js
//   k6 run -e PRICEBEAST_KEY="$PARTNER" -e PRICEBEAST_LEVELS=30,90,300 -e PRICEBEAST_LEVEL_S=10 deploy/k6/http-ramp.js
//
// Use a partner key (or a public key whose QPS is above what the ramp reaches), or the key's
// rate limit is what gets measured.
//
// Environment (every variable this script reads):
//   PRICEBEAST_BASE_URL        the public listener (default http://127.0.0.1:8080)
//   PRICEBEAST_KEY             API key sent as X-API-Key
//   PRICEBEAST_SYMBOLS         comma-separated symbols (default BTC-USD,ETH-USD,SOL-USD,XRP-USD)
//   PRICEBEAST_BATCH_SIZE      symbols per /v1/prices request, 1..=100 (default 4)
//   PRICEBEAST_LEVELS          comma-separated user counts, one level each (default 30,90,300,600,900,1500)
//   PRICEBEAST_LEVEL_S         how long each level is held, s (default 30)
//   PRICEBEAST_P95_PRICE_MS    p95 threshold of /v1/price, ms (default 100)
//   PRICEBEAST_P95_PRICES_MS   p95 threshold of /v1/prices, ms (default 150)
//   PRICEBEAST_P95_USAGE_MS    p95 threshold of /v1/usage, ms (default 100)
//   PRICEBEAST_FAIL_RATIO_MAX  failed requests / all requests at most (default 0.01)

import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';

const BASE = (__ENV.PRICEBEAST_BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const KEY = __ENV.PRICEBEAST_KEY || '';
const SYMBOLS = (__ENV.PRICEBEAST_SYMBOLS || 'BTC-USD,ETH-USD,SOL-USD,XRP-USD')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s.length > 0);
const BATCH_SIZE = Math.max(1, Math.min(100, Number(__ENV.PRICEBEAST_BATCH_SIZE || '4')));
const LEVELS = (__ENV.PRICEBEAST_LEVELS || '30,90,300,600,900,1500').split(',').map((n) => Number(n));
const LEVEL_S = Number(__ENV.PRICEBEAST_LEVEL_S || '30');
const P95_PRICE_MS = Number(__ENV.PRICEBEAST_P95_PRICE_MS || '100');
const P95_PRICES_MS = Number(__ENV.PRICEBEAST_P95_PRICES_MS || '150');
const P95_USAGE_MS = Number(__ENV.PRICEBEAST_P95_USAGE_MS || '100');
const FAIL_RATIO_MAX = Number(__ENV.PRICEBEAST_FAIL_RATIO_MAX || '0.01');

const PRICE = '/v1/price';
const PRICES = '/v1/prices';
const USAGE = '/v1/usage';

const refusals = new Counter('pricebeast_refusals');

function stages() {
  const out = [];
  LEVELS.forEach((users) => {
    out.push({ target: users, duration: '5s' });
    out.push({ target: users, duration: `${LEVEL_S}s` });
  });
  out.push({ target: 0, duration: '5s' });
  return out;
}

export const options = {
  scenarios: {
    ramp: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: stages(),
      gracefulRampDown: '5s',
    },
  },
  thresholds: {
    [`http_req_duration{name:${PRICE}}`]: [`p(95)<${P95_PRICE_MS}`],
    [`http_req_duration{name:${PRICES}}`]: [`p(95)<${P95_PRICES_MS}`],
    [`http_req_duration{name:${USAGE}}`]: [`p(95)<${P95_USAGE_MS}`],
    http_req_failed: [`rate<=${FAIL_RATIO_MAX}`],
  },
};

function distinctSymbols(count) {
  const pool = SYMBOLS.slice();
  const picked = [];
  while (picked.length < count && pool.length > 0) {
    picked.push(pool.splice(Math.floor(Math.random() * pool.length), 1)[0]);
  }
  return picked;
}

function errorCode(response) {
  try {
    return String(response.json('error') || '-');
  } catch (e) {
    return '-';
  }
}

function get(route, query) {
  const response = http.get(`${BASE}${route}${query}`, {
    headers: { 'X-API-Key': KEY },
    tags: { name: route },
  });
  const ok = check(response, { [`${route} answered 2xx`]: (r) => r.status >= 200 && r.status < 300 });
  if (!ok) {
    refusals.add(1, { route: route, status: String(response.status), error: errorCode(response) });
  }
}

export default function () {
  const roll = Math.random();
  if (roll < 0.7) {
    const symbol = SYMBOLS[Math.floor(Math.random() * SYMBOLS.length)];
    get(PRICE, `?symbol=${encodeURIComponent(symbol)}`);
  } else if (roll < 0.9) {
    get(PRICES, `?symbols=${distinctSymbols(BATCH_SIZE).map(encodeURIComponent).join(',')}`);
  } else {
    get(USAGE, '');
  }
}
