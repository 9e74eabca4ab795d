//! Per-key rate limiting (sshreach.me's "too many API calls"): a token bucket per key id in
//! each API process. A caller over its rate gets `429` with `Retry-After` in seconds.

use std::num::NonZeroU32;

use axum::http::StatusCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use schemas::KeyId;

use crate::error::{ApiError, ErrorCode};

pub struct RateLimiter {
    limiter: Option<DefaultKeyedRateLimiter<KeyId>>,
    clock: DefaultClock,
}

impl RateLimiter {
    /// `per_second` requests a second with bursts up to `burst`; zero turns limiting off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            clock: DefaultClock::default(),
        }
    }

    pub fn check(&self, key: &KeyId) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                format!("too many API calls for this key; retry in {retry_after} s"),
            );
            error.retry_after = Some(retry_after.max(1));
            error
        })
    }
}
