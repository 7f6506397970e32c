//! What concurrency and rate limits count: per limit key, the tasks
//! running and the latest starts. A coordinator keeps one [`LimitCounts`]
//! beside its tasks (in leader mode inside the replicated state, so every
//! node counts the same) and asks it before each start.
//!
//! Deterministic: ordered maps only, and times are the coordinator's
//! stamps, handed in.

use crate::task::{TaskLimit, RATE_MAX, RATE_WINDOW_MS_MAX};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// One key's use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct KeyUse {
    /// Tasks of the key running now.
    running: u32,
    /// Starts of rate-limited tasks of the key, in the order they were
    /// decided: at most [`RATE_MAX`], none older than
    /// [`RATE_WINDOW_MS_MAX`] once swept.
    starts: VecDeque<Time>,
}

/// Running tasks and recent starts per limit key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitCounts {
    keys: BTreeMap<String, KeyUse>,
    /// The key [`LimitCounts::sweep`] looked at last.
    swept: Option<String>,
}

impl LimitCounts {
    /// How many more tasks of `limit` may start at `at`, with `extra` of
    /// its key already on their way (decided by the caller, not yet
    /// counted here): 0 when either limit is reached, `u32::MAX` when
    /// neither binds.
    pub fn room(&self, limit: &TaskLimit, at: Time, extra: u32) -> u32 {
        let used = self.keys.get(&limit.key);
        let mut room = u32::MAX;
        if limit.concurrency_max > 0 {
            let running = used.map_or(0, |u| u.running).saturating_add(extra);
            room = room.min(limit.concurrency_max.saturating_sub(running));
        }
        if limit.rate_max > 0 {
            let started = used
                .map_or(0, |u| in_window(&u.starts, at, limit.rate_window_ms))
                .saturating_add(extra);
            room = room.min(limit.rate_max.saturating_sub(started));
        }
        room
    }

    /// Whether one more task of `limit` may start at `at`.
    pub fn allows(&self, limit: &TaskLimit, at: Time) -> bool {
        self.room(limit, at, 0) > 0
    }

    /// Counts a start of a task of `limit` at `at`: it runs until
    /// [`LimitCounts::stopped`].
    pub fn started(&mut self, limit: &TaskLimit, at: Time) {
        let used = self.keys.entry(limit.key.clone()).or_default();
        used.running += 1;
        if limit.rate_max > 0 {
            used.starts.push_back(at);
            if used.starts.len() > RATE_MAX as usize {
                used.starts.pop_front();
            }
        }
    }

    /// A running task of `limit` stopped (its outcome, or its runner lost).
    pub fn stopped(&mut self, limit: &TaskLimit) {
        let used = self
            .keys
            .get_mut(&limit.key)
            .expect("a running task of the key was counted");
        assert!(used.running > 0, "a key's running count never goes below 0");
        used.running -= 1;
        if used.running == 0 && used.starts.is_empty() {
            self.keys.remove(&limit.key);
        }
    }

    /// Tasks of `key` running.
    pub fn running(&self, key: &str) -> u32 {
        self.keys.get(key).map_or(0, |u| u.running)
    }

    /// When a task of `limit` held back by its rate limit at `now` may
    /// start (the window has dropped enough starts), if that is what holds
    /// it back.
    pub fn rate_frees_at(&self, limit: &TaskLimit, now: Time) -> Option<Time> {
        if limit.rate_max == 0 {
            return None;
        }
        let used = self.keys.get(&limit.key)?;
        let window = Duration::from_millis(limit.rate_window_ms);
        let mut live: Vec<Time> = used
            .starts
            .iter()
            .copied()
            .filter(|s| *s + window > now)
            .collect();
        let over = (live.len() + 1).checked_sub(limit.rate_max as usize)?;
        if over == 0 {
            return None;
        }
        live.sort_unstable();
        Some(live[over - 1] + window)
    }

    /// Forgets, for one key per call (in turn), the starts no window can
    /// still count at `at`, and the key once nothing of it is left: keys
    /// no task names any more do not stay for ever.
    pub fn sweep(&mut self, at: Time) {
        use std::ops::Bound;
        let from = self
            .swept
            .as_ref()
            .map_or(Bound::Unbounded, |k| Bound::Excluded(k.clone()));
        let next = self
            .keys
            .range::<String, _>((from, Bound::Unbounded))
            .next()
            .or_else(|| self.keys.iter().next())
            .map(|(k, _)| k.clone());
        let Some(key) = next else {
            self.swept = None;
            return;
        };
        // Kept while the longest window still counts it (as `in_window`).
        let longest = Duration::from_millis(RATE_WINDOW_MS_MAX);
        let used = self.keys.get_mut(&key).expect("found above");
        used.starts.retain(|s| *s + longest > at);
        if used.running == 0 && used.starts.is_empty() {
            self.keys.remove(&key);
        }
        self.swept = Some(key);
    }

    /// Keys counted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is counted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Starts still inside a window of `window_ms` ending at `at`: those
/// after `at - window` (a start stamped later than `at`, by a coordinator
/// whose clock ran ahead, counts too).
fn in_window(starts: &VecDeque<Time>, at: Time, window_ms: u64) -> u32 {
    let window = Duration::from_millis(window_ms);
    let n = starts.iter().filter(|s| **s + window > at).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(concurrency_max: u32, rate_max: u32, rate_window_ms: u64) -> TaskLimit {
        TaskLimit {
            key: "k".into(),
            concurrency_max,
            rate_max,
            rate_window_ms,
        }
    }

    fn ms(v: u64) -> Time {
        Time::from_millis(v)
    }

    #[test]
    fn a_concurrency_limit_counts_running_tasks_of_the_key() {
        let mut c = LimitCounts::default();
        let l = limit(2, 0, 0);
        assert_eq!(c.room(&l, ms(0), 0), 2);
        assert_eq!(c.room(&l, ms(0), 1), 1);
        c.started(&l, ms(0));
        c.started(&l, ms(1));
        assert!(!c.allows(&l, ms(2)));
        let other = TaskLimit {
            key: "other".into(),
            ..l.clone()
        };
        assert!(c.allows(&other, ms(2)), "another key has its own count");
        c.stopped(&l);
        assert!(c.allows(&l, ms(3)));
        assert_eq!(c.running("k"), 1);
        c.stopped(&l);
        assert!(c.is_empty(), "a key with nothing counted is forgotten");
    }

    #[test]
    fn a_rate_limit_counts_starts_in_a_sliding_window() {
        let mut c = LimitCounts::default();
        let l = limit(0, 2, 100);
        c.started(&l, ms(10));
        c.stopped(&l);
        c.started(&l, ms(50));
        c.stopped(&l);
        assert!(!c.allows(&l, ms(60)), "two starts within 100 ms");
        assert_eq!(c.rate_frees_at(&l, ms(60)), Some(ms(110)));
        assert!(!c.allows(&l, ms(109)));
        assert!(c.allows(&l, ms(110)), "the start at 10 left the window");
        assert_eq!(c.rate_frees_at(&l, ms(110)), None);
        // A start stamped ahead of `at` (a clock that ran ahead) counts.
        c.started(&l, ms(300));
        c.stopped(&l);
        assert_eq!(c.room(&l, ms(120), 0), 0);
    }

    #[test]
    fn a_sweep_forgets_starts_no_window_counts_and_then_the_key() {
        let mut c = LimitCounts::default();
        let l = limit(0, 5, 1000);
        c.started(&l, ms(1));
        c.stopped(&l);
        c.sweep(ms(2));
        assert_eq!(c.len(), 1, "a start inside the longest window stays");
        c.sweep(ms(1) + Duration::from_millis(RATE_WINDOW_MS_MAX));
        assert!(c.is_empty());
    }

    /// Found by the static coordinator's scripted rate test: the sweep
    /// dropped starts stamped at the clock's zero at once.
    #[test]
    fn a_sweep_keeps_a_start_stamped_at_time_zero() {
        let mut c = LimitCounts::default();
        let l = limit(0, 1, 1000);
        c.started(&l, Time::ZERO);
        c.stopped(&l);
        c.sweep(ms(500));
        assert!(!c.allows(&l, ms(500)), "the start at 0 still counts");
        assert!(c.allows(&l, ms(1000)));
    }

    #[test]
    fn the_starts_kept_per_key_are_bounded() {
        let mut c = LimitCounts::default();
        let l = limit(0, RATE_MAX, RATE_WINDOW_MS_MAX);
        for i in 0..u64::from(RATE_MAX) + 10 {
            c.started(&l, ms(i));
            c.stopped(&l);
        }
        assert_eq!(c.keys["k"].starts.len(), RATE_MAX as usize);
        assert!(!c.allows(&l, ms(u64::from(RATE_MAX) + 10)));
    }
}
