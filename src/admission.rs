//! The decision every request with a key goes through, on both HTTP and UDP: who is asking
//! (key), may they now (rate limit), may they this month (quota). Counted for usage if admitted.

use crate::clock::{Now, SecondCache};
use crate::keys::{KeyEntry, KeyTable, Tier};
use crate::ratelimit::Decision;
use crate::usage::Channel;

/// What the RateLimit-* headers report for a public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    pub reset_s: u64,
}

/// Why a request was refused before any work was done for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No key, or a key this server does not know.
    Unknown,
    /// A key that was revoked.
    Revoked,
    /// A public key over its QPS/burst.
    RateLimited { retry_after_s: u64, rate: RateInfo },
    /// A public key over its monthly cap; `rate` is its limiter state (the request passed it).
    QuotaExceeded { retry_after_s: u64, rate: Option<RateInfo> },
    /// A public key's request while the shard's governor sheds public traffic (`crate::governor`):
    /// neither its rate limit nor its month's count is touched.
    Overloaded,
}

/// An admitted request: the key and, for public keys, its rate-limit state after this request.
#[derive(Clone, Copy, Debug)]
pub struct Admitted<'t> {
    pub key: &'t KeyEntry,
    pub rate: Option<RateInfo>,
}

/// Whether an admitted request counts towards the monthly usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// A billable request over this channel: counted, and refused once the cap is reached.
    Billable(Channel),
    /// A free request (the usage report itself): rate limited, never counted.
    Free,
}

/// Finds the key a request presented (empty: none was). The first step of every keyed request.
pub fn authenticate<'t>(table: &'t KeyTable, presented: &[u8]) -> Result<&'t KeyEntry, Refusal> {
    if presented.is_empty() {
        return Err(Refusal::Unknown);
    }
    let key = table.lookup(presented).ok_or(Refusal::Unknown)?;
    if key.revoked {
        return Err(Refusal::Revoked);
    }
    Ok(key)
}

/// [`admit`] on a shard: a public request is refused first while the shard's governor sheds.
#[inline]
pub fn admit_on<'t>(
    key: &'t KeyEntry,
    ctx: &crate::state::Context<'_>,
    charge: Charge,
) -> Result<Admitted<'t>, Refusal> {
    if ctx.shedding && key.tier == Tier::Public {
        return Err(Refusal::Overloaded);
    }
    admit(key, ctx.now, ctx.second, charge)
}

/// Applies the key's rate limit and monthly cap to one well-formed request, and counts it.
pub fn admit<'t>(key: &'t KeyEntry, now: Now, second: &SecondCache, charge: Charge) -> Result<Admitted<'t>, Refusal> {
    let (cap, rate) = match (key.tier, key.limits) {
        (Tier::Public, Some(limits)) => {
            let limit = limits.gcra.burst();
            match limits.gcra.check(&key.state.rate, now.mono_ns) {
                Decision::Allowed { remaining, reset_s } => {
                    (Some(limits.monthly_cap), Some(RateInfo { limit, remaining, reset_s }))
                }
                Decision::Limited { retry_after_s, reset_s } => {
                    let rate = RateInfo { limit, remaining: 0, reset_s };
                    return Err(Refusal::RateLimited { retry_after_s, rate });
                }
            }
        }
        _ => (None, None),
    };
    if let Charge::Billable(channel) = charge {
        if key.state.usage.consume(second.month(), cap, channel).is_err() {
            return Err(Refusal::QuotaExceeded { retry_after_s: second.seconds_to_next_month().max(1), rate });
        }
    }
    Ok(Admitted { key, rate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::file::ParsedKey;
    use crate::keys::secret;

    const NOW_MS: u64 = 1_795_413_600_000;

    fn table() -> KeyTable {
        let key = |name: &str, tier, limits, revoked| ParsedKey {
            name: name.into(),
            tier,
            hash: secret::hash(name.as_bytes()),
            limits,
            revoked,
            stress: false,
        };
        KeyTable::build(
            vec![
                key("public-key-0001", Tier::Public, Some((1, 2, 3)), false),
                key("partner-key-001", Tier::Partner, None, false),
                key("revoked-key-001", Tier::Partner, None, true),
            ],
            &KeyTable::default(),
        )
    }

    #[test]
    fn unknown_missing_and_revoked_keys_are_refused() {
        let table = table();
        assert_eq!(authenticate(&table, b"").err(), Some(Refusal::Unknown));
        assert_eq!(authenticate(&table, b"nope").err(), Some(Refusal::Unknown));
        assert_eq!(authenticate(&table, b"revoked-key-001").err(), Some(Refusal::Revoked));
    }

    #[test]
    fn public_keys_hit_the_rate_limit_then_the_quota() {
        let table = table();
        let second = SecondCache::new(Now::at(0, NOW_MS));
        let key = authenticate(&table, b"public-key-0001").expect("known key");
        let at = |s: u64| Now::at(s * 1_000_000_000, NOW_MS);
        let first = admit(key, at(1), &second, Charge::Billable(Channel::Http)).expect("first of burst");
        assert_eq!(first.rate, Some(RateInfo { limit: 2, remaining: 1, reset_s: 1 }));
        assert!(admit(key, at(1), &second, Charge::Billable(Channel::Http)).is_ok());
        assert!(matches!(
            admit(key, at(1), &second, Charge::Billable(Channel::Http)),
            Err(Refusal::RateLimited { retry_after_s: 1, .. })
        ));
        assert!(admit(key, at(10), &second, Charge::Billable(Channel::Http)).is_ok());
        let refused = admit(key, at(20), &second, Charge::Billable(Channel::Http));
        assert!(matches!(
            refused,
            Err(Refusal::QuotaExceeded { retry_after_s, rate: Some(_) }) if retry_after_s == second.seconds_to_next_month()
        ));
        // The usage report is free: still answered after the cap.
        assert!(admit(key, at(30), &second, Charge::Free).is_ok());
    }

    #[test]
    fn partners_are_never_limited_but_counted() {
        let table = table();
        let second = SecondCache::new(Now::at(0, NOW_MS));
        for _ in 0..100 {
            let key = authenticate(&table, b"partner-key-001").expect("known key");
            let admitted = admit(key, Now::at(1, NOW_MS), &second, Charge::Billable(Channel::Http)).expect("admitted");
            assert_eq!(admitted.rate, None);
        }
        let entry = table.lookup(b"partner-key-001").expect("known");
        assert_eq!(entry.state.usage.used(second.month()), 100);
    }
}
