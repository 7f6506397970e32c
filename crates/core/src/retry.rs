//! Retry policy: when a failed attempt is retried, and when it is not.
//!
//! Every mode decides a failed attempt the same way, by
//! [`after_failure`], inside its consensus step: the decision (and the
//! drawn backoff) is part of the replicated record, so every node agrees on
//! when the task may run again. The random part of the backoff ("full
//! jitter": uniform in `[0, cap)`, where the cap doubles per failed attempt
//! up to a maximum) is drawn by the deciding node from its seeded RNG and
//! travels in the decided value; nothing here reads a clock or the OS RNG.
//!
//! Error classes: a handler error of the form `class: message`, where
//! `class` is 1 to [`ERROR_CLASS_BYTES_MAX`] bytes of `[a-z0-9_.-]`, is of
//! class `class`; any other error has no class. A task lists the classes
//! that must not be retried ([`RetryPolicy::non_retryable`]): an error of
//! such a class fails the task at once, whatever attempts are left.

use crate::task::Task;
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest error class, in bytes.
pub const ERROR_CLASS_BYTES_MAX: usize = 64;

/// Most non-retryable classes one task may list.
pub const NON_RETRYABLE_CLASSES_MAX: usize = 16;

/// Longest backoff a policy may ask for: one day.
pub const BACKOFF_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// How a task's failed attempts are retried. Part of the submitted task
/// (and so of its identity: a resubmit must carry the same policy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// The backoff cap after the first failed attempt; it doubles with
    /// every further failed attempt, up to `backoff_max_ms`. Zero retries
    /// at once (no backoff).
    pub backoff_initial_ms: u64,
    /// The largest backoff cap. At least `backoff_initial_ms`.
    pub backoff_max_ms: u64,
    /// Error classes that fail the task at once (see the module docs).
    pub non_retryable: Vec<String>,
}

impl RetryPolicy {
    /// Exponential backoff with full jitter from `initial_ms`, capped at `max_ms`.
    pub fn backoff(initial_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            backoff_initial_ms: initial_ms,
            backoff_max_ms: max_ms,
            non_retryable: Vec::new(),
        }
    }

    /// Why the policy is invalid, if it is. Changes nothing.
    pub fn validate(&self) -> Result<(), String> {
        if self.backoff_max_ms > BACKOFF_MS_MAX {
            return Err(format!(
                "retry.backoff_max_ms must be at most {BACKOFF_MS_MAX}"
            ));
        }
        if self.backoff_initial_ms > self.backoff_max_ms {
            return Err("retry.backoff_initial_ms must not exceed retry.backoff_max_ms".into());
        }
        if self.non_retryable.len() > NON_RETRYABLE_CLASSES_MAX {
            return Err(format!(
                "retry.non_retryable lists at most {NON_RETRYABLE_CLASSES_MAX} classes"
            ));
        }
        for class in &self.non_retryable {
            if !is_class(class) {
                return Err(format!(
                    "retry.non_retryable: {class:?} is not an error class (1..={ERROR_CLASS_BYTES_MAX} bytes of a-z, 0-9, '_', '.', '-')"
                ));
            }
        }
        Ok(())
    }

    /// The backoff cap after `failed` failed attempts (at least 1):
    /// `min(backoff_max_ms, backoff_initial_ms * 2^(failed - 1))`.
    pub fn cap(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(63);
        let ms = self
            .backoff_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_ms);
        Duration::from_millis(ms)
    }

    /// The backoff after `failed` failed attempts for a `jitter` drawn
    /// uniformly from the whole `u32` range: uniform in `[0, cap)`.
    pub fn delay(&self, failed: u32, jitter: u32) -> Duration {
        let cap_us = u64::try_from(self.cap(failed).as_micros()).unwrap_or(u64::MAX);
        let us = (u128::from(cap_us) * u128::from(jitter)) >> 32;
        Duration::from_micros(u64::try_from(us).expect("below cap"))
    }

    /// Whether `error` may be retried under this policy.
    pub fn retries(&self, error: &str) -> bool {
        match error_class(error) {
            Some(class) => !self.non_retryable.iter().any(|c| c == class),
            None => true,
        }
    }
}

fn is_class(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= ERROR_CLASS_BYTES_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// The class of a handler error: the text before the first `": "` when
/// it is a class name (see the module docs), else `None`.
pub fn error_class(error: &str) -> Option<&str> {
    let (class, _) = error.split_once(": ")?;
    is_class(class).then_some(class)
}

/// What becomes of a task whose attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Pending again, not to start before this instant.
    RetryAt(Time),
    /// Failed for good: no attempt is left, or the error is not retryable.
    Fail,
}

/// Decides a failed attempt of `task`, the `failed`-th (counting this
/// one), whose handler returned `error`, decided at `at` with `jitter`
/// drawn from the deciding node's RNG.
pub fn after_failure(task: &Task, failed: u32, error: &str, at: Time, jitter: u32) -> AfterFailure {
    assert!(failed >= 1, "a failed attempt counts itself");
    if failed >= task.max_attempts || !task.retry.retries(error) {
        return AfterFailure::Fail;
    }
    AfterFailure::RetryAt(at + task.retry.delay(failed, jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(max_attempts: u32, retry: RetryPolicy) -> Task {
        Task {
            kind: "echo".into(),
            payload: vec![],
            timeout_ms: 1,
            max_attempts,
            not_before: Time::ZERO,
            retry,
            schedule_to_start_ms: 0,
            priority: 0,
            heartbeat_timeout_ms: 0,
            labels: Vec::new(),
            limit: None,
            lease_grace_ms: 0,
            retry_of: None,
        }
    }

    #[test]
    fn the_backoff_cap_doubles_per_failed_attempt_up_to_its_maximum() {
        let p = RetryPolicy::backoff(100, 1_000);
        let caps: Vec<u64> = (1..=6).map(|f| p.cap(f).as_millis() as u64).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(p.cap(u32::MAX), Duration::from_millis(1_000), "no overflow");
    }

    #[test]
    fn full_jitter_spans_zero_to_the_cap() {
        let p = RetryPolicy::backoff(100, 1_000);
        assert_eq!(p.delay(3, 0), Duration::ZERO);
        assert_eq!(p.delay(3, u32::MAX / 2), Duration::from_micros(199_999));
        let top = p.delay(3, u32::MAX);
        assert!(top < Duration::from_millis(400) && top > Duration::from_micros(399_990));
        assert_eq!(RetryPolicy::default().delay(5, u32::MAX), Duration::ZERO);
    }

    #[test]
    fn an_error_class_is_a_short_lowercase_prefix() {
        assert_eq!(
            error_class("invalid_input: bad json"),
            Some("invalid_input")
        );
        assert_eq!(error_class("timeout: after 5 ms"), Some("timeout"));
        assert_eq!(error_class("Bad Thing: x"), None);
        assert_eq!(error_class("no class here"), None);
        assert_eq!(error_class(": empty"), None);
        let long = format!("{}: x", "a".repeat(ERROR_CLASS_BYTES_MAX + 1));
        assert_eq!(error_class(&long), None);
    }

    #[test]
    fn a_non_retryable_class_fails_at_once_and_others_back_off() {
        let mut p = RetryPolicy::backoff(1_000, 1_000);
        p.non_retryable = vec!["invalid_input".into()];
        let t = task(5, p);
        let at = Time::from_millis(10);
        assert_eq!(
            after_failure(&t, 1, "invalid_input: no", at, 7),
            AfterFailure::Fail
        );
        assert_eq!(
            after_failure(&t, 1, "io: disk", at, u32::MAX / 2),
            AfterFailure::RetryAt(Time::from_millis(10) + Duration::from_micros(499_999))
        );
        assert_eq!(
            after_failure(&t, 5, "io: disk", at, 0),
            AfterFailure::Fail,
            "no attempt left"
        );
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert!(RetryPolicy::backoff(2, 1).validate().is_err());
        assert!(RetryPolicy::backoff(1, BACKOFF_MS_MAX + 1)
            .validate()
            .is_err());
        let mut p = RetryPolicy {
            non_retryable: vec!["Not A Class".into()],
            ..RetryPolicy::default()
        };
        assert!(p.validate().is_err());
        p.non_retryable = vec!["ok".into(); NON_RETRYABLE_CLASSES_MAX + 1];
        assert!(p.validate().is_err());
        p.non_retryable = vec!["ok".into()];
        assert!(p.validate().is_ok());
    }
}
