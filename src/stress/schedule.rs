//! The ws user schedule: how many users a plan wants at each millisecond of the run, and so when
//! each user is active. Pure integer arithmetic, so the count and the users' windows always agree.
//!
//! Users are numbered from 0. Within a stage the wanted count is
//! `floor(from + (to - from) * elapsed / length)`, and user `j` is active exactly while that count
//! is above `j`: a ramp up starts users in order, a ramp down stops them in reverse order, so the
//! first users are the longest-lived, as in a real audience.

use crate::stress::plan::Stage;

/// The whole run's user count over time, from the plan's stages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Breakpoints (ms from the start, users), the first one `(0, 0)`; consecutive times differ.
    points: Vec<(u64, u32)>,
}

impl Schedule {
    pub fn new(stages: &[Stage]) -> Self {
        let mut points = vec![(0u64, 0u32)];
        let mut t = 0u64;
        for stage in stages {
            // Stages are at least a millisecond long (the plan refuses 0), so times only grow.
            t = t.saturating_add(stage.over_ms.max(1));
            points.push((t, stage.users));
        }
        Self { points }
    }

    /// When the last stage ends, in ms from the start; every user is gone by then.
    pub fn end_ms(&self) -> u64 {
        self.points.last().map_or(0, |p| p.0)
    }

    /// When each stage ends, in ms from the start.
    pub fn stage_ends_ms(&self) -> Vec<u64> {
        self.points.iter().skip(1).map(|p| p.0).collect()
    }

    /// The most users wanted at once.
    pub fn peak(&self) -> u32 {
        self.points.iter().map(|p| p.1).max().unwrap_or(0)
    }

    /// Users wanted at `t_ms` from the start (0 from the end on).
    pub fn users_at(&self, t_ms: u64) -> u32 {
        for pair in self.points.windows(2) {
            let ((ta, ua), (tb, ub)) = (pair[0], pair[1]);
            if (ta..tb).contains(&t_ms) {
                let (d, e) = (u128::from(tb - ta), u128::from(t_ms - ta));
                let (ua, ub) = (u128::from(ua), u128::from(ub));
                // from + (to - from) * e / d, floored, kept in unsigned terms on both slopes.
                let scaled = if ub >= ua { ua * d + (ub - ua) * e } else { ua * d - (ua - ub) * e };
                return (scaled / d) as u32;
            }
        }
        0
    }

    /// The half-open spans `[start, end)` of ms from the start during which user `j` is active,
    /// in order, touching spans merged.
    pub fn windows(&self, j: u32) -> Vec<(u64, u64)> {
        let need = u128::from(j) + 1;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for pair in self.points.windows(2) {
            let ((ta, ua), (tb, ub)) = (pair[0], pair[1]);
            let (d, from, to) = (u128::from(tb - ta), u128::from(ua), u128::from(ub));
            // Active while from*d + (to - from)*e >= need*d, for e = t - ta in [0, d).
            let span = if from >= need && to >= need {
                Some((ta, tb))
            } else if to > from && to >= need {
                // Rising through `need`: from the first e with (to - from)*e >= (need - from)*d.
                let e = ((need - from) * d).div_ceil(to - from);
                Some((ta + e as u64, tb))
            } else if from > to && from >= need {
                // Falling through `need`: through the last e with (from - to)*e <= (from - need)*d.
                let e = (from - need) * d / (from - to);
                Some((ta, (ta + e as u64 + 1).min(tb)))
            } else {
                None
            };
            let Some((start, end)) = span.filter(|(s, e)| s < e) else { continue };
            match out.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => out.push((start, end)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn stages(spec: &[(u32, u64)]) -> Vec<Stage> {
        let mut previous = 0;
        spec.iter()
            .enumerate()
            .map(|(i, &(users, over_ms))| {
                let stage = Stage { number: i + 1, users_from: previous, users, over_ms };
                previous = users;
                stage
            })
            .collect()
    }

    #[test]
    fn ramp_hold_surge_and_drop() {
        // ws-spike's shape, in ms: to 1000 over 180 s, hold 60 s, to 1500 over 30 s, hold, to 0 in 10 s.
        let s = Schedule::new(&stages(&[(1000, 180_000), (1000, 60_000), (1500, 30_000), (1500, 60_000), (0, 10_000)]));
        assert_eq!(s.end_ms(), 340_000);
        assert_eq!(s.peak(), 1500);
        assert_eq!(s.stage_ends_ms(), vec![180_000, 240_000, 270_000, 330_000, 340_000]);
        assert_eq!(s.users_at(0), 0);
        assert_eq!(s.users_at(90_000), 500);
        assert_eq!(s.users_at(179_999), 999);
        assert_eq!(s.users_at(180_000), 1000);
        assert_eq!(s.users_at(255_000), 1250);
        assert_eq!(s.users_at(300_000), 1500);
        assert_eq!(s.users_at(335_000), 750);
        assert_eq!(s.users_at(339_999), 0);
        assert_eq!(s.users_at(340_000), 0);
        // The first user starts after 180 ms and stays until the drop's last 10 ms; the last of
        // the surge only lives through its hold.
        assert_eq!(s.windows(0), vec![(180, 339_994)]);
        assert_eq!(s.windows(1499), vec![(270_000, 330_001)]);
        assert_eq!(s.windows(1500), vec![]);
    }

    #[test]
    fn a_user_can_come_back() {
        // Up to 4, down to 1, up to 4 again: user 2 leaves in the dip and comes back.
        let s = Schedule::new(&stages(&[(4, 10), (1, 10), (4, 10)]));
        assert_eq!(s.windows(2), vec![(8, 14), (27, 30)]);
        // User 0 stays throughout, from its start to the end.
        assert_eq!(s.windows(0), vec![(3, 30)]);
    }

    proptest! {
        /// The users' windows and the count agree at every millisecond.
        #[test]
        fn windows_agree_with_the_count(spec in prop::collection::vec((0u32..40, 1u64..60), 1..5)) {
            let s = Schedule::new(&stages(&spec));
            let windows: Vec<Vec<(u64, u64)>> = (0..=s.peak()).map(|j| s.windows(j)).collect();
            for t in 0..=s.end_ms() {
                let active = windows.iter().filter(|w| w.iter().any(|(a, b)| (*a..*b).contains(&t))).count();
                prop_assert_eq!(active as u32, s.users_at(t), "t = {}", t);
            }
        }
    }
}
