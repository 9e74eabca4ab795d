//! Fair sharing of one worker process between tenants and devices.
//!
//! A worker holds a bounded number of requests at once (pulled, connecting, waiting for a
//! device's channel, running). Without per-owner caps one tenant flooding a dead address fills
//! all of them and everyone else waits. So each request, before anything else is done for it,
//! takes a [`Share`]: one of its tenant's `tenant_concurrency` and one of its device's
//! `device_concurrency`. A request over either cap is handed back to JetStream with a short
//! jittered delay ([`deferral`]); that is not an attempt (the job's attempt number comes from
//! its `ExecAttemptFailed` events in the log, not from the delivery count), and the workers'
//! consumer has no `max_deliver`, so deferrals can never use a job's deliveries up.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use schemas::{DeviceId, TenantId};

/// Requests held per tenant and per device, with their caps.
pub struct Shares {
    tenant_cap: usize,
    device_cap: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    tenants: HashMap<TenantId, usize>,
    devices: HashMap<DeviceId, usize>,
}

/// One request's place in its tenant's and device's caps; dropping it gives the place back.
pub struct Share {
    shares: Arc<Shares>,
    tenant: TenantId,
    device: DeviceId,
}

impl Shares {
    pub fn new(tenant_cap: usize, device_cap: usize) -> Arc<Self> {
        Arc::new(Self {
            tenant_cap: tenant_cap.max(1),
            device_cap: device_cap.max(1),
            held: Mutex::default(),
        })
    }

    /// A share for a request of `tenant` on `device`, unless either is at its cap.
    pub fn try_take(self: &Arc<Self>, tenant: &TenantId, device: DeviceId) -> Option<Share> {
        let mut held = self.held.lock().expect("not poisoned");
        let by_tenant = held.tenants.get(tenant).copied().unwrap_or(0);
        let by_device = held.devices.get(&device).copied().unwrap_or(0);
        if by_tenant >= self.tenant_cap || by_device >= self.device_cap {
            return None;
        }
        *held.tenants.entry(tenant.clone()).or_default() += 1;
        *held.devices.entry(device).or_default() += 1;
        Some(Share {
            shares: self.clone(),
            tenant: tenant.clone(),
            device,
        })
    }

    /// Requests of `tenant` held now.
    pub fn held_by(&self, tenant: &TenantId) -> usize {
        let held = self.held.lock().expect("not poisoned");
        held.tenants.get(tenant).copied().unwrap_or(0)
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.shares.held.lock().expect("not poisoned");
        release(&mut held.tenants, &self.tenant);
        release(&mut held.devices, &self.device);
    }
}

fn release<K: Eq + Hash>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// How long a request over a cap waits before it is delivered again: growing with how often
/// it was delivered (so a long backlog does not spin), from about 500 ms to about 5 s,
/// jittered by ±50 % so deferred requests do not come back in lockstep. Only the deferred
/// tenant waits longer for it: its free places are filled by whatever the queue holds next.
pub fn deferral(delivered: u64) -> Duration {
    let base = 500u64.saturating_mul(delivered.clamp(1, 10));
    let jitter = rand::rng().random_range(0.5..1.5);
    Duration::from_millis((base as f64 * jitter) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_tenant_and_per_device_and_come_back_on_drop() {
        let shares = Shares::new(2, 1);
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        let (d1, d2, d3) = (DeviceId::new(), DeviceId::new(), DeviceId::new());
        let first = shares.try_take(&a, d1).expect("room");
        assert!(shares.try_take(&a, d1).is_none(), "device cap");
        let second = shares.try_take(&a, d2).expect("room");
        assert!(shares.try_take(&a, d3).is_none(), "tenant cap");
        assert!(
            shares.try_take(&b, d3).is_some(),
            "another tenant is not affected"
        );
        drop(first);
        assert_eq!(shares.held_by(&a), 1);
        assert!(shares.try_take(&a, d1).is_some());
        drop(second);
    }

    #[test]
    fn deferrals_grow_and_stay_bounded() {
        assert!(deferral(1) <= Duration::from_millis(750));
        assert!(deferral(1_000) <= Duration::from_millis(7_500));
        assert!(deferral(1_000) >= Duration::from_millis(2_500));
    }
}
