//! Per-tenant request limit of `--throttle-per-tenant`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::cli::ThrottleLimit;

/// Sliding-window log of the Graph requests admitted per tenant.
pub struct Throttle {
    limit: Option<ThrottleLimit>,
    admitted: HashMap<String, VecDeque<Instant>>,
}

impl Throttle {
    pub fn new(limit: Option<ThrottleLimit>) -> Self {
        Throttle {
            limit,
            admitted: HashMap::new(),
        }
    }

    /// Admits a request of `tenant` at `now`, or returns how long the tenant
    /// must wait until the oldest admitted request leaves the window.
    /// Rejected requests do not take a slot.
    pub fn admit(&mut self, tenant: &str, now: Instant) -> Result<(), Duration> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let admitted = self.admitted.entry(tenant.to_owned()).or_default();
        while admitted
            .front()
            .is_some_and(|time| now.duration_since(*time) >= limit.window)
        {
            admitted.pop_front();
        }
        if admitted.len() < limit.max_requests as usize {
            admitted.push_back(now);
            return Ok(());
        }
        let oldest = admitted[0];
        Err(limit.window - now.duration_since(oldest))
    }
}

/// Rounds a wait up to whole seconds for a Retry-After header, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_above_limit_until_window_frees() {
        let limit = ThrottleLimit {
            max_requests: 2,
            window: Duration::from_secs(10),
        };
        let mut throttle = Throttle::new(Some(limit));
        let start = Instant::now();
        assert!(throttle.admit("t.com", start).is_ok());
        let second = start + Duration::from_secs(4);
        assert!(throttle.admit("t.com", second).is_ok());
        let third = start + Duration::from_secs(7);
        assert_eq!(throttle.admit("t.com", third), Err(Duration::from_secs(3)));
        assert!(throttle.admit("other.com", third).is_ok());
        let after = start + Duration::from_secs(10);
        assert!(throttle.admit("t.com", after).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
