//! End-to-end tests: each drives the real `pricebeast` binary on port-0 listeners in its own
//! temporary directory, speaking raw HTTP and UDP bytes. One test binary;
//! the modules below are its parts, as rustls mounts its tests.
//!
//! `support` starts and stops servers, `wire` speaks the protocols, `clock` is an independent
//! calendar to check months against, `stress` runs `pricebeast stress` against such servers. Scenarios that touch the shards run under both monoio
//! drivers: `on_both_drivers!` turns a `fn scenario(driver: Driver)` into `scenario::io_uring`
//! and `scenario::epoll`.

mod e2e {
    #[macro_use]
    mod support;
    mod clock;
    mod pg;
    mod redis;
    mod wire;

    mod admin;
    mod cli;
    mod cluster;
    mod command_center;
    mod connections;
    mod counters;
    mod doctor;
    mod errors;
    mod events;
    mod fallback;
    mod feeds;
    mod http;
    mod http_clients;
    mod https;
    mod keys;
    mod ledger;
    mod loadtools;
    mod notify;
    mod postgres;
    mod price_quality;
    mod profiles;
    mod prometheus;
    mod shutdown;
    mod slow;
    mod streams;
    mod stress;
    mod suite;
    mod systemd;
    mod tls_certs;
    mod tls_clients;
    mod udp;
}
