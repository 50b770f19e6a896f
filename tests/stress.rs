//! `pricebeast stress` end to end: small plans (seconds each) against the real server binary on
//! port-0 listeners, and against a deliberately stalling local server.

mod stress {
    pub mod harness;
    mod runs;
}
