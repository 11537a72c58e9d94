//! Limits on what one client may ask of the gateway: requests per minute
//! per user and per client address (GCRA buckets from `governor`; past the
//! limit a `429` with `Retry-After`), and live event streams per user.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// A rate: `per_minute` sustained, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

struct Keyed<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(rate: Rate) -> Self {
        let per_minute = NonZeroU32::new(rate.per_minute.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(rate.burst.max(1)).expect("at least 1");
        Keyed {
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_minute(per_minute).allow_burst(burst),
            ),
        }
    }

    /// `Err(wait)` when `key` is over its rate.
    fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Every limit the gateway enforces, shared by all requests.
pub struct Limits {
    user: Keyed<String>,
    client: Keyed<IpAddr>,
    /// Logins and refreshes, per client address: slows password guessing
    /// across many accounts, which the per-account lockout cannot.
    login: Keyed<IpAddr>,
    streams: StreamCounter,
}

impl Limits {
    pub fn new(user: Rate, client: Rate, login: Rate, max_streams_per_user: usize) -> Self {
        Limits {
            user: Keyed::new(user),
            client: Keyed::new(client),
            login: Keyed::new(login),
            streams: StreamCounter::new(max_streams_per_user),
        }
    }

    pub fn check_user(&self, user: &str) -> Result<(), Duration> {
        self.user.check(&user.to_owned())
    }

    pub fn check_client(&self, addr: IpAddr) -> Result<(), Duration> {
        self.client.check(&addr)
    }

    pub fn check_login(&self, addr: IpAddr) -> Result<(), Duration> {
        self.login.check(&addr)
    }

    pub fn streams(&self) -> &StreamCounter {
        &self.streams
    }

    /// Forgets buckets that are full again, so memory follows the clients
    /// active in the last minutes, not every client ever seen.
    pub fn forget_idle(&self) {
        self.user.limiter.retain_recent();
        self.client.limiter.retain_recent();
        self.login.limiter.retain_recent();
    }
}

/// Live event streams per user.
#[derive(Clone)]
pub struct StreamCounter {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl StreamCounter {
    fn new(max: usize) -> Self {
        StreamCounter {
            max: max.max(1),
            open: Arc::default(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for one more stream of `user`, released when the guard
    /// drops; `None` when they have `max` open already.
    pub fn open(&self, user: &str) -> Option<StreamGuard> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(user.to_owned()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        metrics::gauge!(aida_core::metrics::names::SSE_CONNECTIONS_ACTIVE).increment(1.0);
        Some(StreamGuard {
            counter: self.clone(),
            user: user.to_owned(),
        })
    }
}

/// Holds one stream slot.
pub struct StreamGuard {
    counter: StreamCounter,
    user: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        metrics::gauge!(aida_core::metrics::names::SSE_CONNECTIONS_ACTIVE).decrement(1.0);
        let mut open = self.counter.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_next_request_waits() {
        let limits = Limits::new(
            Rate {
                per_minute: 60,
                burst: 3,
            },
            Rate {
                per_minute: 600,
                burst: 100,
            },
            Rate {
                per_minute: 60,
                burst: 1,
            },
            2,
        );
        for _ in 0..3 {
            assert!(limits.check_user("alice").is_ok());
        }
        let wait = limits.check_user("alice").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limits.check_user("bob").is_ok(), "buckets are per user");
    }

    #[test]
    fn streams_are_counted_per_user_and_released() {
        let counter = StreamCounter::new(2);
        let a = counter.open("alice").unwrap();
        let _b = counter.open("alice").unwrap();
        assert!(counter.open("alice").is_none());
        assert!(counter.open("bob").is_some());
        drop(a);
        assert!(counter.open("alice").is_some());
    }
}
