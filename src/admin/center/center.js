// The command center: polls this listener once a second and draws what it answers. Every path
// is relative to /admin/, so the page works through a tunnel or behind a prefix.
'use strict';
(() => {
  const TOKEN_KEY = 'pricebeast.admin_token';
  const POLL_MS = 1000;
  // The default book.stale_after_ms: a venue this quiet no longer counts towards a price.
  const STALE_MS = 5000;
  const WINDOW_MS = 5 * 60 * 1000;
  const CLUSTER_RECHECK_MS = 30000;
  // The 24 counters in the order DESIGN.md gives them; any other the server adds follows.
  const COUNTERS = ['tcp_requests', 'udp_requests', 'responses_2xx', 'responses_4xx', 'responses_5xx',
    'auth_failures', 'rate_limit_hits', 'quota_hits', 'book_hits', 'cache_hits', 'cache_misses',
    'rest_fallbacks', 'udp_packets_received', 'udp_packets_sent', 'udp_dropped', 'bg_submitted',
    'bg_completed', 'bg_dropped', 'usage_rows_queued', 'batch_flushes', 'batch_flush_errors',
    'feed_messages', 'feed_reconnects', 'usage_report_requests'];

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
  const whole = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const tenth = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const num = (v) => (v == null ? '–' : whole.format(v));
  const perSecond = (v) => (v == null ? '–' : (Math.abs(v) < 100 ? tenth : whole).format(v) + '/s');
  const pct = (v) => (v == null ? '–' : tenth.format(v) + ' %');
  const micros = (us) => {
    if (us == null) return '–';
    if (us === Infinity) return '> 1 s';
    if (us < 1000) return whole.format(us) + ' µs';
    return us < 1e6 ? tenth.format(us / 1000) + ' ms' : tenth.format(us / 1e6) + ' s';
  };
  const duration = (seconds) => {
    const s = Math.floor(seconds), d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
  };
  const age = (ms) => (ms == null ? 'never' : ms < 1000 ? whole.format(ms) + ' ms' : ms < 60000 ? tenth.format(ms / 1000) + ' s' : duration(ms / 1000));

  // Text for people, data-value for machines (no separators to strip).
  function put(el, text, value) {
    if (!el) return;
    el.textContent = text;
    if (value !== undefined) el.dataset.value = value == null ? '' : String(value);
  }
  function cell(row, field) {
    const td = document.createElement('td');
    td.dataset.field = field;
    row.append(td);
    return td;
  }

  class Unauthorized extends Error {}

  let token = sessionStorage.getItem(TOKEN_KEY);
  let generation = 0;
  let previous = null;
  let previousLatency = null;
  let cluster = { on: false, nextCheck: 0 };
  const series = { requests: [], errors: [], errors4: [], latency: [], streams: [] };

  async function call(path) {
    const headers = token ? { Authorization: 'Bearer ' + token } : {};
    const response = await fetch(path, { headers, cache: 'no-store' });
    if (response.status === 401) throw new Unauthorized();
    return response;
  }

  function showLogin(message) {
    generation++;
    document.body.dataset.state = 'login';
    $('#board').hidden = true;
    $('#login').hidden = false;
    put($('#login-message'), message);
    $('#token').value = '';
    $('#token').focus();
  }

  function showBoard() {
    document.body.dataset.state = 'live';
    $('#login').hidden = true;
    $('#board').hidden = false;
  }

  function start() {
    previous = null;
    previousLatency = null;
    const mine = ++generation;
    poll(mine);
  }

  async function poll(mine) {
    const began = performance.now();
    try {
      const askCluster = cluster.on || began >= cluster.nextCheck;
      const [stats, metrics, clusterResponse] = await Promise.all([
        call('stress-stats'),
        call('../metrics').catch((e) => { if (e instanceof Unauthorized) throw e; return null; }),
        askCluster ? call('cluster-stats').catch((e) => { if (e instanceof Unauthorized) throw e; return null; }) : null,
      ]);
      if (!stats.ok) throw new Error(`stress-stats answered ${stats.status}`);
      const doc = await stats.json();
      const text = metrics && metrics.ok ? await metrics.text() : null;
      const clusterDoc = clusterResponse ? await readCluster(clusterResponse) : undefined;
      if (mine !== generation) return;
      render(doc, text, Date.now());
      if (clusterDoc !== undefined) renderCluster(clusterDoc);
      const status = $('#status');
      status.className = 'ok';
      put(status, 'live · ' + new Date().toLocaleTimeString('en-GB'));
    } catch (e) {
      if (mine !== generation) return;
      if (e instanceof Unauthorized) {
        const had = token;
        token = null;
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin(had ? 'Wrong token: the listener answered 401 Unauthorized. Enter it again.'
          : 'This listener asks for its admin token.');
        return;
      }
      const status = $('#status');
      status.className = 'bad';
      put(status, 'disconnected: ' + (e.message || e));
      document.body.dataset.state = 'error';
    }
    if (mine === generation) setTimeout(() => poll(mine), Math.max(0, POLL_MS - (performance.now() - began)));
  }

  async function readCluster(response) {
    if (response.status === 404) {
      cluster = { on: false, nextCheck: performance.now() + CLUSTER_RECHECK_MS };
      return null;
    }
    cluster.on = true;
    const doc = await response.json().catch(() => ({}));
    return response.ok ? doc : { error: doc.message || `cluster-stats answered ${response.status}` };
  }

  function render(doc, metricsText, now) {
    showBoard();
    const dt = previous ? (now - previous.at) / 1000 : 0;
    const rateOf = (section, name) => {
      if (!previous || dt <= 0 || !previous[section] || previous[section][name] == null) return null;
      return Math.max(0, (doc[section][name] - previous[section][name]) / dt);
    };
    put($('[data-field="node"]'), doc.node, doc.node);
    put($('[data-field="uptime"]'), duration(doc.uptime_s), doc.uptime_s);
    put($('[data-field="mode"]'), doc.mode, doc.mode);
    const governor = doc.governor || {};
    const shedding = governor.shedding_shards || 0;
    const governorEl = $('[data-field="governor"]');
    put(governorEl, !governor.enabled ? 'off' : shedding ? `shedding on ${shedding} shard(s)` : 'on, not shedding',
      !governor.enabled ? 'off' : shedding ? 'shedding' : 'on');
    governorEl.className = shedding ? 'bad' : '';

    renderCounters(doc.counters, (name) => rateOf('counters', name));
    for (const el of $$('[data-gauge]')) put(el, num(doc.gauges[el.dataset.gauge]), doc.gauges[el.dataset.gauge]);
    for (const el of $$('[data-stream]')) put(el, num(doc.streams[el.dataset.stream]), doc.streams[el.dataset.stream]);
    for (const el of $$('[data-stream-rate]')) {
      const r = rateOf('streams', el.dataset.streamRate);
      put(el, perSecond(r), r);
    }
    for (const el of $$('[data-derived]')) {
      const name = el.dataset.derived, v = doc.derived[name];
      put(el, name.endsWith('_pct') ? pct(v) : perSecond(v), v);
    }

    const push = doc.streams.push_latency_us || {};
    put($('[data-latency="push_p50"]'), push.p50_us == null ? '–' : '≤ ' + micros(push.p50_us), push.p50_us);
    put($('[data-latency="push_p99"]'), push.p99_us == null ? '–' : '≤ ' + micros(push.p99_us), push.p99_us);
    const lateness = Math.max(0, ...(governor.shards || []).map((s) => s.lateness_us || 0));
    put($('[data-latency="lateness"]'), micros(lateness), lateness);
    const histogram = parseHistogram(metricsText, 'pricebeast_request_latency_seconds');
    const request = gained(histogram, previousLatency);
    previousLatency = histogram;
    for (const q of ['p50', 'p90', 'p99']) {
      const us = request && request[q];
      put($(`[data-latency="request_${q}"]`), us == null ? '–' : us === Infinity ? micros(us) : '≤ ' + micros(us), us);
    }
    put($('[data-latency="request_mean"]'), micros(request && request.mean), request && request.mean);

    renderVenues(doc.feeds || {});

    record('requests', now, doc.derived.total_rps);
    record('errors', now, rateOf('counters', 'responses_5xx'));
    record('errors4', now, rateOf('counters', 'responses_4xx'));
    record('latency', now, request && request.p99 !== Infinity ? request.p99 : null);
    record('streams', now, doc.gauges.open_websocket_sessions);
    draw('requests', [['requests', '']], now, perSecond);
    draw('errors', [['errors4', 'warn'], ['errors', 'bad']], now, perSecond);
    draw('latency', [['latency', '']], now, micros);
    draw('streams', [['streams', '']], now, num);
    put($('[data-chart-now="requests"]'), perSecond(doc.derived.total_rps), doc.derived.total_rps);
    put($('[data-chart-now="errors"]'), perSecond(rateOf('counters', 'responses_5xx')));
    put($('[data-chart-now="errors4"]'), perSecond(rateOf('counters', 'responses_4xx')));
    put($('[data-chart-now="latency"]'), request && request.p99 != null ? '≤ ' + micros(request.p99) : '–');
    put($('[data-chart-now="streams"]'), num(doc.gauges.open_websocket_sessions));

    previous = { at: now, counters: doc.counters, streams: doc.streams };
  }

  function renderCounters(counters, rateOf) {
    const grid = $('#counters');
    const names = COUNTERS.filter((n) => n in counters).concat(Object.keys(counters).filter((n) => !COUNTERS.includes(n)));
    if (grid.childElementCount !== names.length) {
      grid.replaceChildren(...names.map((name) => {
        const row = document.createElement('div');
        row.className = 'counter';
        row.dataset.counterRow = name;
        for (const [cls, hook] of [['name', null], ['value', 'counter'], ['rate', 'rate']]) {
          const span = document.createElement('span');
          span.className = cls;
          if (hook) span.dataset[hook] = name; else span.textContent = name;
          row.append(span);
        }
        return row;
      }));
    }
    for (const name of names) {
      const r = rateOf(name);
      put($(`[data-counter="${name}"]`), num(counters[name]), counters[name]);
      put($(`[data-rate="${name}"]`), perSecond(r), r);
      $(`[data-counter-row="${name}"]`).classList.toggle('zero', !counters[name]);
    }
  }

  function renderVenues(feeds) {
    const body = $('#venues tbody');
    const names = Object.keys(feeds).sort();
    $('#no-venues').hidden = names.length > 0;
    const rows = new Map($$('tr[data-venue]', body).map((r) => [r.dataset.venue, r]));
    for (const name of names) {
      const feed = feeds[name];
      let row = rows.get(name);
      rows.delete(name);
      if (!row) {
        row = document.createElement('tr');
        row.dataset.venue = name;
        for (const field of ['venue', 'state', 'connections', 'last_message_age_ms', 'messages', 'prices', 'reconnects', 'parse_errors', 'venue_errors']) cell(row, field);
        put($('[data-field="venue"]', row), name);
        body.append(row);
      }
      const quiet = feed.last_message_age_ms == null || feed.last_message_age_ms > STALE_MS;
      const state = !feed.connected ? 'down' : quiet ? 'stale' : 'live';
      row.dataset.state = state;
      const badge = document.createElement('span');
      badge.className = 'state ' + state;
      badge.textContent = state;
      $('[data-field="state"]', row).replaceChildren(badge);
      put($('[data-field="last_message_age_ms"]', row), age(feed.last_message_age_ms), feed.last_message_age_ms);
      for (const field of ['connections', 'messages', 'prices', 'reconnects', 'parse_errors', 'venue_errors']) {
        put($(`[data-field="${field}"]`, row), num(feed[field]), feed[field]);
      }
    }
    for (const row of rows.values()) row.remove();
  }

  function renderCluster(doc) {
    const section = $('#cluster');
    section.hidden = doc === null;
    if (doc === null) return;
    const error = $('#cluster-error');
    error.hidden = !doc.error;
    put(error, doc.error ? 'cluster unavailable: ' + doc.error : '');
    if (doc.error) return;
    const line = (row, name, figures) => {
      put(cell(row, 'node'), name);
      for (const [field, text, value] of figures) put(cell(row, field), text, value);
    };
    const figures = (n) => [
      ['tcp_rps', perSecond(n.derived.tcp_rps), n.derived.tcp_rps],
      ['udp_rps', perSecond(n.derived.udp_rps), n.derived.udp_rps],
      ...['tcp_requests', 'udp_requests', 'responses_2xx', 'responses_4xx', 'responses_5xx'].map((c) => [c, num(n.counters[c]), n.counters[c]]),
      ...['open_connections', 'open_websocket_sessions'].map((g) => [g, num(n.gauges[g]), n.gauges[g]]),
    ];
    $('tbody', section).replaceChildren(...doc.nodes.map((n) => {
      const row = document.createElement('tr');
      row.dataset.clusterNode = n.node;
      row.dataset.state = n.age_ms > 10000 ? 'stale' : 'live';
      line(row, n.node, [['age_ms', age(n.age_ms), n.age_ms], ...figures(n)]);
      return row;
    }));
    const sum = document.createElement('tr');
    sum.dataset.clusterNode = 'sum';
    line(sum, `sum of ${doc.nodes.length} node(s)`, [['age_ms', '', null], ...figures(doc.sum)]);
    $('tfoot', section).replaceChildren(sum);
    put($('[data-field="cluster_read"]'), `read from Redis in ${micros(doc.read_us)}`, doc.read_us);
  }

  // Summed over label sets, in case the histogram is ever split by one.
  function parseHistogram(text, name) {
    if (!text) return null;
    const buckets = new Map();
    let sum = 0, count = 0;
    const pattern = new RegExp(`^${name}_(bucket|sum|count)(\\{[^}]*\\})?\\s+(\\S+)`);
    for (const line of text.split('\n')) {
      const m = pattern.exec(line);
      if (!m) continue;
      const v = parseFloat(m[3]);
      if (m[1] === 'sum') sum += v;
      else if (m[1] === 'count') count += v;
      else {
        const le = /le="([^"]+)"/.exec(m[2] || '');
        if (!le) continue;
        const bound = le[1] === '+Inf' ? Infinity : parseFloat(le[1]) * 1e6;
        buckets.set(bound, (buckets.get(bound) || 0) + v);
      }
    }
    return buckets.size ? { buckets: [...buckets].sort((a, b) => a[0] - b[0]), sum, count } : null;
  }

  // Quantiles of what the histogram gained since the last poll: upper bucket bounds, in µs.
  function gained(now, before) {
    if (!now || !before) return null;
    const total = now.count - before.count;
    if (total <= 0) return { p50: null, p90: null, p99: null, mean: null };
    const earlier = new Map(before.buckets);
    const q = (p) => {
      for (const [bound, n] of now.buckets) if (n - (earlier.get(bound) || 0) >= p * total) return bound;
      return Infinity;
    };
    return { p50: q(0.5), p90: q(0.9), p99: q(0.99), mean: ((now.sum - before.sum) * 1e6) / total };
  }

  function record(name, at, value) {
    const points = series[name];
    points.push([at, value]);
    while (points.length && points[0][0] < at - WINDOW_MS) points.shift();
  }

  function draw(chart, lines, now, format) {
    const figure = $(`[data-chart="${chart}"]`);
    const svg = $('svg', figure);
    const known = lines.map(([name, cls]) => [series[name].filter((p) => p[1] != null), cls]);
    // The whole width is the last 5 minutes once the page has watched that long; until then, what it saw.
    const first = Math.min(...lines.map(([name]) => (series[name].length ? series[name][0][0] : now)));
    const span = Math.max(10000, Math.min(WINDOW_MS, now - first));
    const top = niceCeiling(Math.max(0, ...known.flatMap(([points]) => points.map((p) => p[1]))));
    const ns = 'http://www.w3.org/2000/svg';
    const children = [0.25, 0.5, 0.75].map((f) => {
      const grid = document.createElementNS(ns, 'line');
      for (const [k, v] of [['x1', 0], ['x2', 300], ['y1', 60 * f], ['y2', 60 * f]]) grid.setAttribute(k, v);
      return grid;
    });
    for (const [points, cls] of known) {
      const line = document.createElementNS(ns, 'polyline');
      if (cls) line.setAttribute('class', cls);
      const xy = points.map(([t, v]) => `${(300 - ((now - t) / span) * 300).toFixed(1)},${(59 - (v / top) * 57).toFixed(1)}`);
      line.setAttribute('points', xy.join(' '));
      children.push(line);
    }
    svg.replaceChildren(...children);
    figure.dataset.points = known[known.length - 1][0].length;
    put($(`[data-chart-max="${chart}"]`), 'max ' + format(top), top);
    put($(`[data-chart-span="${chart}"]`), '−' + duration(span / 1000), span);
  }

  function niceCeiling(v) {
    if (!(v > 0)) return 1;
    const step = 10 ** Math.floor(Math.log10(v));
    return [1, 2, 2.5, 5, 10].map((m) => m * step).find((c) => c >= v);
  }

  $('#login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const entered = $('#token').value.trim();
    if (!entered) {
      put($('#login-message'), 'Enter the token.');
      return;
    }
    token = entered;
    sessionStorage.setItem(TOKEN_KEY, entered);
    put($('#login-message'), '');
    start();
  });
  $('#signout').addEventListener('click', () => {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin('Token forgotten: enter it to watch again.');
  });
  start();
})();
