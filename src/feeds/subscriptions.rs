//! Which of one connection plan's symbols the venue has taken: the bookkeeping behind
//! "subscribed" and "refused". No I/O and no clock reads (times come in), so every rule is tested
//! here alone; the supervisor sends what this says to send and reports what it says changed.
//!
//! A symbol is asked for when a connection starts; its ack (or the request's, for venues that ack
//! once) makes it subscribed. A refusal makes it refused, on every later connection too, until a
//! retry on the slow schedule is acked. When the ack deadline passes with symbols unanswered, a
//! connection the venue never acked at all has failed; on one it did ack, the unanswered symbols
//! count as refused, so a venue that silently ignores one symbol costs that symbol, not the
//! connection.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not asked for on the current connection: none yet, or the last one ended.
    Idle,
    /// Asked for; the answer is due by `deadline`.
    Pending {
        deadline: Instant,
    },
    Subscribed,
    /// Refused; asked for again from `retry_at`.
    Refused {
        retry_at: Instant,
    },
}

/// What an ack deadline found.
#[derive(Debug, PartialEq, Eq)]
pub enum Expired {
    /// Nothing was due.
    Nothing,
    /// The venue has acked nothing on this connection: it has failed.
    Failed { unanswered: usize },
    /// The venue acked others but not these: they now count as refused.
    Refused(Vec<String>),
}

/// One connection plan's symbols (venue spellings) and what the venue made of each.
#[derive(Debug)]
pub struct Subscriptions {
    symbols: Vec<String>,
    states: Vec<State>,
    ack_deadline: Duration,
    retry_every: Duration,
    /// Whether the venue has acked anything on the current connection.
    acked: bool,
    /// The earliest pending deadline and retry time, kept so that a frame costs no scan.
    next_deadline: Option<Instant>,
    next_retry: Option<Instant>,
}

impl Subscriptions {
    pub fn new(symbols: Vec<String>, ack_deadline: Duration, retry_every: Duration) -> Self {
        let states = vec![State::Idle; symbols.len()];
        Self { symbols, states, ack_deadline, retry_every, acked: false, next_deadline: None, next_retry: None }
    }

    /// A connection starts: the symbols to subscribe on it, now pending. Refused symbols wait for
    /// their retry time.
    pub fn begin(&mut self, now: Instant) -> Vec<String> {
        self.acked = false;
        self.ask(now, |state| !matches!(state, State::Refused { retry_at } if retry_at > now))
    }

    /// The connection ended: nothing is subscribed any more; refusals stand.
    pub fn end(&mut self) {
        for state in &mut self.states {
            if matches!(state, State::Pending { .. } | State::Subscribed) {
                *state = State::Idle;
            }
        }
        self.acked = false;
        self.recompute();
    }

    /// When every symbol is refused and none is due, the time the first becomes due: a
    /// connection made before then would subscribe nothing.
    pub fn nothing_to_ask_until(&self, now: Instant) -> Option<Instant> {
        if self.states.is_empty() || !self.states.iter().all(|s| matches!(s, State::Refused { .. })) {
            return None;
        }
        self.next_retry.filter(|at| *at > now)
    }

    /// An ack: of `symbol`, or of everything pending when the venue acks a whole request. Returns
    /// the symbols it subscribed. A late ack of a symbol counted refused still subscribes it.
    pub fn ack(&mut self, symbol: Option<&str>) -> Vec<String> {
        self.acked = true;
        let mut subscribed = Vec::new();
        for (state, name) in self.states.iter_mut().zip(&self.symbols) {
            let take = match symbol {
                None => matches!(state, State::Pending { .. }),
                Some(acked) => acked == name && !matches!(state, State::Subscribed | State::Idle),
            };
            if take {
                *state = State::Subscribed;
                subscribed.push(name.clone());
            }
        }
        self.recompute();
        subscribed
    }

    /// A refusal: of `symbol` where the venue named one of ours, else of the only pending symbol
    /// if there is just one. Returns the symbol refused, if any could be told.
    pub fn refuse(&mut self, symbol: Option<&str>, now: Instant) -> Option<String> {
        let index = match symbol {
            Some(named) => self.symbols.iter().position(|s| s == named)?,
            None => {
                let mut pending = self.states.iter().enumerate().filter(|(_, s)| matches!(s, State::Pending { .. }));
                match (pending.next(), pending.next()) {
                    (Some((only, _)), None) => only,
                    _ => return None,
                }
            }
        };
        self.states[index] = State::Refused { retry_at: now + self.retry_every };
        self.recompute();
        Some(self.symbols[index].clone())
    }

    /// How long a refused symbol waits before it is asked for again.
    pub fn retry_every(&self) -> Duration {
        self.retry_every
    }

    /// The earliest time an ack falls due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_deadline
    }

    /// The earliest time a refused symbol is asked for again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.next_retry
    }

    /// Deals with every ack due by `now`.
    pub fn expire(&mut self, now: Instant) -> Expired {
        let due = |s: &State| matches!(s, State::Pending { deadline } if *deadline <= now);
        let unanswered = self.states.iter().filter(|s| due(s)).count();
        if unanswered == 0 {
            return Expired::Nothing;
        }
        if !self.acked {
            return Expired::Failed { unanswered };
        }
        let retry_at = now + self.retry_every;
        let mut refused = Vec::new();
        for (state, symbol) in self.states.iter_mut().zip(&self.symbols) {
            if due(state) {
                *state = State::Refused { retry_at };
                refused.push(symbol.clone());
            }
        }
        self.recompute();
        Expired::Refused(refused)
    }

    /// The refused symbols due by `now`, now pending again: to subscribe on the live connection.
    pub fn retry_due(&mut self, now: Instant) -> Vec<String> {
        self.ask(now, |state| matches!(state, State::Refused { retry_at } if retry_at <= now))
    }

    /// The symbols in a state `which` picks, now pending with their answer due an ack deadline
    /// after `now`.
    fn ask(&mut self, now: Instant, which: impl Fn(State) -> bool) -> Vec<String> {
        let deadline = now + self.ack_deadline;
        let mut asked = Vec::new();
        for (state, symbol) in self.states.iter_mut().zip(&self.symbols) {
            if which(*state) {
                *state = State::Pending { deadline };
                asked.push(symbol.clone());
            }
        }
        self.recompute();
        asked
    }

    /// Whether no symbol awaits an answer.
    pub fn settled(&self) -> bool {
        self.next_deadline.is_none()
    }

    pub fn subscribed(&self) -> usize {
        self.states.iter().filter(|s| matches!(s, State::Subscribed)).count()
    }

    pub fn refused(&self) -> impl Iterator<Item = &str> {
        self.states
            .iter()
            .zip(&self.symbols)
            .filter(|(s, _)| matches!(s, State::Refused { .. }))
            .map(|(_, n)| n.as_str())
    }

    fn recompute(&mut self) {
        let mut deadline = None::<Instant>;
        let mut retry = None::<Instant>;
        for state in &self.states {
            match *state {
                State::Pending { deadline: at } => deadline = Some(deadline.map_or(at, |d| d.min(at))),
                State::Refused { retry_at } => retry = Some(retry.map_or(retry_at, |r| r.min(retry_at))),
                State::Idle | State::Subscribed => {}
            }
        }
        self.next_deadline = deadline;
        self.next_retry = retry;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ACK: Duration = Duration::from_secs(10);
    const RETRY: Duration = Duration::from_secs(300);

    fn three() -> Subscriptions {
        Subscriptions::new(vec!["A".into(), "B".into(), "C".into()], ACK, RETRY)
    }

    fn refused(subs: &Subscriptions) -> Vec<&str> {
        subs.refused().collect()
    }

    #[test]
    fn acks_per_symbol_subscribe_each_and_a_refusal_waits_for_its_retry() {
        let t0 = Instant::now();
        let mut subs = three();
        assert_eq!(subs.begin(t0), vec!["A", "B", "C"]);
        assert_eq!(subs.next_deadline(), Some(t0 + ACK));
        assert_eq!(subs.ack(Some("A")), vec!["A"]);
        assert_eq!(subs.refuse(Some("B"), t0), Some("B".into()));
        assert!(!subs.settled());
        assert_eq!(subs.ack(Some("C")), vec!["C"]);
        assert!(subs.settled());
        assert_eq!((subs.subscribed(), refused(&subs)), (2, vec!["B"]));
        assert_eq!(subs.next_retry(), Some(t0 + RETRY));
        // Not yet due: nothing to ask, on this connection or the next.
        assert!(subs.retry_due(t0 + RETRY / 2).is_empty());
        subs.end();
        assert_eq!(subs.begin(t0 + RETRY / 2), vec!["A", "C"]);
        // Due: asked again, and a yes makes it subscribed.
        assert_eq!(subs.retry_due(t0 + RETRY), vec!["B"]);
        assert!(refused(&subs).is_empty());
        assert_eq!(subs.ack(None), vec!["A", "B", "C"]);
        assert_eq!(subs.next_retry(), None);
    }

    #[test]
    fn a_connection_never_acked_has_failed_at_the_deadline() {
        let t0 = Instant::now();
        let mut subs = three();
        subs.begin(t0);
        assert_eq!(subs.expire(t0 + ACK / 2), Expired::Nothing);
        assert_eq!(subs.expire(t0 + ACK), Expired::Failed { unanswered: 3 });
        // A refusal is an answer, but not an ack.
        let mut subs = three();
        subs.begin(t0);
        subs.refuse(Some("A"), t0);
        assert_eq!(subs.expire(t0 + ACK), Expired::Failed { unanswered: 2 });
        subs.end();
        assert_eq!(subs.begin(t0 + ACK), vec!["B", "C"], "the refused symbol is left out of the next connection");
    }

    #[test]
    fn symbols_left_unanswered_on_an_acked_connection_count_as_refused() {
        let t0 = Instant::now();
        let mut subs = three();
        subs.begin(t0);
        subs.ack(Some("B"));
        assert_eq!(subs.expire(t0 + ACK), Expired::Refused(vec!["A".into(), "C".into()]));
        assert_eq!(refused(&subs), vec!["A", "C"]);
        assert!(subs.settled());
        // A late ack still counts.
        assert_eq!(subs.ack(Some("C")), vec!["C"]);
        assert_eq!(refused(&subs), vec!["A"]);
    }

    #[test]
    fn a_whole_request_ack_takes_every_pending_symbol_and_a_later_refusal_one() {
        let t0 = Instant::now();
        let mut subs = three();
        subs.begin(t0);
        assert_eq!(subs.ack(None).len(), 3);
        assert_eq!(subs.refuse(Some("C"), t0), Some("C".into()));
        assert_eq!((subs.subscribed(), refused(&subs)), (2, vec!["C"]));
    }

    #[test]
    fn an_anonymous_refusal_is_the_only_pending_symbols_or_nobodys() {
        let t0 = Instant::now();
        let mut subs = three();
        subs.begin(t0);
        assert_eq!(subs.refuse(None, t0), None);
        assert_eq!(subs.refuse(Some("NOT-OURS"), t0), None);
        subs.ack(Some("A"));
        subs.ack(Some("B"));
        assert_eq!(subs.refuse(None, t0), Some("C".into()));
        assert_eq!(subs.refuse(None, t0), None);
    }

    #[test]
    fn with_everything_refused_the_next_connection_waits_for_the_first_retry() {
        let t0 = Instant::now();
        let mut subs = Subscriptions::new(vec!["A".into(), "B".into()], ACK, RETRY);
        subs.begin(t0);
        subs.refuse(Some("A"), t0);
        subs.refuse(Some("B"), t0 + Duration::from_secs(1));
        subs.end();
        assert_eq!(subs.nothing_to_ask_until(t0), Some(t0 + RETRY));
        assert_eq!(subs.nothing_to_ask_until(t0 + RETRY), None);
        assert_eq!(subs.begin(t0 + RETRY), vec!["A"]);
        assert_eq!(Subscriptions::new(Vec::new(), ACK, RETRY).nothing_to_ask_until(t0), None);
    }

    #[derive(Clone, Debug)]
    enum Event {
        Begin,
        End,
        Ack(Option<u8>),
        Refuse(Option<u8>),
        Expire,
        Retry,
        Wait(u16),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Begin),
            Just(Event::End),
            proptest::option::of(0u8..5).prop_map(Event::Ack),
            proptest::option::of(0u8..5).prop_map(Event::Refuse),
            Just(Event::Expire),
            Just(Event::Retry),
            (0u16..400).prop_map(Event::Wait),
        ]
    }

    proptest! {
        /// Whatever the venue answers and whenever: every symbol is in exactly one state, the
        /// kept deadlines are the true minima, nothing is ever asked for while it waits out a
        /// refusal, and a deadline never passes unnoticed.
        #[test]
        fn any_sequence_of_answers_keeps_the_books_straight(events in proptest::collection::vec(event(), 0..60)) {
            let t0 = Instant::now();
            let mut now = t0;
            let names: Vec<String> = (0..4).map(|i| format!("S{i}")).collect();
            let mut subs = Subscriptions::new(names.clone(), Duration::from_secs(10), Duration::from_secs(60));
            let name = |i: u8| names.get(usize::from(i)).map_or("OTHER", String::as_str).to_owned();
            for event in events {
                match event {
                    Event::Begin => {
                        let waiting: Vec<String> = subs
                            .states
                            .iter()
                            .zip(&subs.symbols)
                            .filter(|(s, _)| matches!(s, State::Refused { retry_at } if *retry_at > now))
                            .map(|(_, n)| n.clone())
                            .collect();
                        let asked = subs.begin(now);
                        prop_assert!(asked.iter().all(|a| !waiting.contains(a)));
                        prop_assert_eq!(asked.len() + waiting.len(), names.len());
                    }
                    Event::End => subs.end(),
                    Event::Ack(i) => { subs.ack(i.map(name).as_deref()); }
                    Event::Refuse(i) => { subs.refuse(i.map(name).as_deref(), now); }
                    Event::Expire => {
                        if let Expired::Failed { .. } = subs.expire(now) {
                            subs.end();
                        }
                    }
                    Event::Retry => {
                        let asked = subs.retry_due(now);
                        prop_assert!(subs.refused().all(|r| !asked.iter().any(|a| a == r)));
                    }
                    Event::Wait(s) => now += Duration::from_secs(u64::from(s)),
                }
                let pending: Vec<Instant> = subs.states.iter().filter_map(|s| match s {
                    State::Pending { deadline } => Some(*deadline),
                    _ => None,
                }).collect();
                let retries: Vec<Instant> = subs.states.iter().filter_map(|s| match s {
                    State::Refused { retry_at } => Some(*retry_at),
                    _ => None,
                }).collect();
                prop_assert_eq!(subs.next_deadline(), pending.iter().min().copied());
                prop_assert_eq!(subs.next_retry(), retries.iter().min().copied());
                prop_assert_eq!(subs.settled(), pending.is_empty());
                prop_assert!(subs.subscribed() + retries.len() + pending.len() <= names.len());
                prop_assert!(retries.iter().all(|at| *at <= now + Duration::from_secs(60)));
            }
        }
    }
}
