"""Locust load for pricebeast's public HTTP path (docs/protocol.md).

Each simulated user keeps one keep-alive connection and loops, with no think time unless set:

    70%  GET /v1/price?symbol=S            one random symbol of PRICEBEAST_SYMBOLS
    20%  GET /v1/prices?symbols=A,B,...    PRICEBEAST_BATCH_SIZE distinct symbols
    10%  GET /v1/usage

Run it headless against the server's public listener:

    PRICEBEAST_KEY=$KEY locust -f deploy/locust/locustfile.py --headless -u 50 -r 10 -t 60s \
        --stop-timeout 5 --host http://127.0.0.1:8080 --json-file run --csv run --only-summary

`--stop-timeout` lets every request in flight finish when the time is up, so Locust's count
matches the server's `tcp_requests`. `--json-file run` writes the final figures to run.json;
the CSV files are rewritten once a second while Locust runs and may miss its last second.

Environment (every variable this file reads):

    PRICEBEAST_KEY              API key sent as X-API-Key (required)
    PRICEBEAST_SYMBOLS          comma-separated symbols (default BTC-USD,ETH-USD,SOL-USD,XRP-USD)
    PRICEBEAST_BATCH_SIZE       symbols per /v1/prices request, 1..=100 (default 4)
    PRICEBEAST_WAIT_MIN_S       think time between requests, seconds (default 0: a closed loop)
    PRICEBEAST_WAIT_MAX_S       (default PRICEBEAST_WAIT_MIN_S)
    PRICEBEAST_P95_PRICE_MS     p95 target of /v1/price, ms (default 100)
    PRICEBEAST_P95_PRICES_MS    p95 target of /v1/prices, ms (default 150)
    PRICEBEAST_P95_USAGE_MS     p95 target of /v1/usage, ms (default 100)
    PRICEBEAST_FAIL_RATIO_MAX   failed requests / all requests at most (default 0.01)

Locust has no thresholds of its own: when the run ends, a route whose p95 is over its target, a
failure ratio over PRICEBEAST_FAIL_RATIO_MAX, or no request at all sets the exit code to 1 and
logs which; otherwise the exit code is 0, even with failures within the ratio. The targets
are the client's view: they include Locust's own time in Python, so they sit well above what the
server itself takes (see `pricebeast stress` for the server's latency).

A non-2xx answer is a failure recorded under its route, status and error code, e.g.
`/v1/price 429 rate_limited` (a public key over its QPS/burst) or `/v1/price 503 overloaded`, so
each cause is a row of its own in the statistics. The p95 targets apply to the answered requests
of each route (the rows without a status); failures count against the failure ratio.
"""

import logging
import os
import random
import time
from urllib.parse import quote

import requests
from locust import User, between, events, task

PRICE = "/v1/price"
PRICES = "/v1/prices"
USAGE = "/v1/usage"

KEY = os.environ.get("PRICEBEAST_KEY", "")
SYMBOLS = [s.strip() for s in os.environ.get("PRICEBEAST_SYMBOLS", "BTC-USD,ETH-USD,SOL-USD,XRP-USD").split(",") if s.strip()]
BATCH_SIZE = max(1, min(100, int(os.environ.get("PRICEBEAST_BATCH_SIZE", "4"))))
WAIT_MIN_S = float(os.environ.get("PRICEBEAST_WAIT_MIN_S", "0"))
WAIT_MAX_S = float(os.environ.get("PRICEBEAST_WAIT_MAX_S", str(WAIT_MIN_S)))
P95_TARGETS_MS = {
    PRICE: float(os.environ.get("PRICEBEAST_P95_PRICE_MS", "100")),
    PRICES: float(os.environ.get("PRICEBEAST_P95_PRICES_MS", "150")),
    USAGE: float(os.environ.get("PRICEBEAST_P95_USAGE_MS", "100")),
}
FAIL_RATIO_MAX = float(os.environ.get("PRICEBEAST_FAIL_RATIO_MAX", "0.01"))

if not KEY:
    raise SystemExit("set PRICEBEAST_KEY to an API key (pricebeast keys new ...)")
if not SYMBOLS:
    raise SystemExit("PRICEBEAST_SYMBOLS names no symbol")


class PriceBeastUser(User):
    """One subscriber: a keep-alive session sending the 70/20/10 mix."""

    # The server's default listener; --host replaces it.
    host = "http://127.0.0.1:8080"
    wait_time = between(WAIT_MIN_S, max(WAIT_MIN_S, WAIT_MAX_S))

    def on_start(self):
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = KEY

    def on_stop(self):
        self.session.close()

    @task(70)
    def price(self):
        self.get(PRICE, "?symbol=" + quote(random.choice(SYMBOLS), safe=""))

    @task(20)
    def prices(self):
        batch = random.sample(SYMBOLS, min(BATCH_SIZE, len(SYMBOLS)))
        self.get(PRICES, "?symbols=" + ",".join(quote(s, safe="") for s in batch))

    @task(10)
    def usage(self):
        self.get(USAGE, "")

    def get(self, route, query):
        """Sends one request and records it under `route`, or under route, status and error code
        when refused, through Locust's request event (the documented way for a client of one's own)."""
        name, exception, length = route, None, 0
        start = time.perf_counter()
        try:
            response = self.session.get(self.host.rstrip("/") + route + query, timeout=10)
            length = len(response.content)
            if not 200 <= response.status_code < 300:
                code = error_code(response)
                name = f"{route} {response.status_code} {code}"
                exception = Refused(f"{response.status_code} {code}")
        except requests.RequestException as e:
            exception = e
        elapsed_ms = (time.perf_counter() - start) * 1000
        self.environment.events.request.fire(
            request_type="GET",
            name=name,
            response_time=elapsed_ms,
            response_length=length,
            exception=exception,
            context={},
        )


class Refused(Exception):
    """A request the server answered with a status outside 2xx."""


def error_code(response):
    """The `error` of the JSON error body (docs/protocol.md), or `-` when there is none."""
    try:
        return str(response.json().get("error", "-"))
    except ValueError:
        return "-"


@events.quitting.add_listener
def check_targets(environment, **_kwargs):
    """Turns the targets into the exit code: 1 when one is missed, with the reason logged."""
    missed = []
    for route, target_ms in P95_TARGETS_MS.items():
        if (route, "GET") not in environment.stats.entries:
            continue
        entry = environment.stats.get(route, "GET")
        p95 = entry.get_response_time_percentile(0.95)
        if p95 > target_ms:
            missed.append(f"{route} p95 {p95:g} ms > target {target_ms:g} ms")
    total = environment.stats.total
    if total.num_requests == 0:
        missed.append("no request was made")
    elif total.fail_ratio > FAIL_RATIO_MAX:
        missed.append(
            f"failure ratio {total.fail_ratio:.4f} ({total.num_failures} of {total.num_requests}) > target {FAIL_RATIO_MAX:g}"
        )
    runner = environment.runner
    if runner is not None and runner.exceptions:
        missed.append(f"the locustfile raised {len(runner.exceptions)} kind(s) of exception (logged above)")
    for reason in missed:
        logging.error("target missed: %s", reason)
    # Set either way: Locust's own rule (exit 1 on any failure at all) would ignore the ratio.
    environment.process_exit_code = 1 if missed else 0
