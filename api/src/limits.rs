//! Rate limiting (sshreach.me's "too many API calls"): token buckets per key id and per client
//! address in each API process. A caller over its rate gets `429` with `Retry-After` in seconds.
//!
//! The per-address buckets are checked before authentication, so a flood of made-up keys from
//! one address is cut off before any key is parsed or looked up; the per-key buckets after it.
//! One address may hold many keys (a NAT, an automation host), so its default rate is well
//! above a key's. The address is the connection's peer: behind a reverse proxy every request
//! comes from the proxy, and the proxy should limit instead (set the address rate to 0).
//!
//! Keyed buckets grow by one entry per key ever seen; [`sweep`] drops the entries of keys that
//! are back to a full bucket (indistinguishable from a fresh one) on a timer, so memory
//! follows the keys active within about one burst's refill time.

use std::hash::Hash;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Weak;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::AppState;
use crate::error::{ApiError, ErrorCode};

pub struct RateLimiter<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    clock: DefaultClock,
    /// What one bucket is for, in the 429 message ("key", "address").
    what: &'static str,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_second` requests a second with bursts up to `burst`, per `what`; zero turns
    /// limiting off.
    pub fn new(per_second: u32, burst: u32, what: &'static str) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            clock: DefaultClock::default(),
            what,
        }
    }

    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                format!(
                    "too many API calls for this {}; retry in {retry_after} s",
                    self.what
                ),
            );
            error.retry_after = Some(retry_after.max(1));
            error
        })
    }

    /// Forgets the buckets that are full again.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many buckets are held now.
    pub fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// The per-address limit, before anything else of a request runs. A request without a peer
/// address (a router driven in-process, not through [`crate::Application::serve`]) is not
/// limited by address.
pub async fn limit_address(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        && let Err(error) = state.address_limiter.check(&peer.ip())
    {
        return error.into_response();
    }
    next.run(request).await
}

/// Forgets idle buckets of both limiters every `every`, until the application is dropped.
pub async fn sweep(state: Weak<crate::Shared>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        state.limiter.forget_idle();
        state.address_limiter.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_of_idle_callers_are_forgotten() {
        let limiter = RateLimiter::<u32>::new(1000, 1000, "key");
        for key in 0..500 {
            limiter.check(&key).unwrap();
        }
        assert_eq!(limiter.tracked(), 500);
        // One request's token is back within a millisecond at 1000/s.
        std::thread::sleep(Duration::from_millis(20));
        limiter.forget_idle();
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn over_the_rate_is_429_with_retry_after() {
        let limiter = RateLimiter::<u32>::new(1, 2, "address");
        assert!(limiter.check(&7).is_ok());
        assert!(limiter.check(&7).is_ok());
        let error = limiter.check(&7).unwrap_err();
        assert_eq!(error.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error.retry_after, Some(1));
        assert!(error.error_message.contains("this address"));
        assert!(
            limiter.check(&8).is_ok(),
            "another caller has its own bucket"
        );
        assert!(
            RateLimiter::<u32>::new(0, 0, "key").check(&7).is_ok(),
            "0 is off"
        );
    }
}
