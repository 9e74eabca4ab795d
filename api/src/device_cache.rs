//! The devices exec requests name, cached per API process.
//!
//! A submit needs the device's configuration (status, address, pinned host key) and its
//! heartbeat presence: two last-per-subject reads of the log. Under load those two round trips
//! were most of what a submit cost the API and nats-server. This cache keeps both per device.
//! One core NATS subscription to every device event drops a device's entry as soon as the
//! device changes, and every entry expires after [`TTL`] anyway, which bounds staleness if a
//! notice is lost (a reconnect drops core messages).
//!
//! A change that races a submit can therefore be missed by that submit, for at most the time
//! the notice takes to arrive. That is safe because the worker reads the device again right
//! before it runs anything and ends a job whose device was deleted, rejected or re-keyed since
//! as `device_changed`, without running it. Reads that must be exact (the device routes,
//! optimistic concurrency on updates) do not use this cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::usecase::devices::{Device, Presence};

/// The longest an entry is used without a notice.
pub const TTL: Duration = Duration::from_secs(5);
/// More entries than this and the cache starts over (a crude but bounded policy).
const CAPACITY: usize = 100_000;

#[derive(Default)]
pub struct DeviceCache {
    entries: Mutex<HashMap<String, (Instant, Device, Presence)>>,
    /// Bumped by every notice, so a read that raced a notice is not cached.
    generation: AtomicU64,
    closed: AtomicBool,
}

impl DeviceCache {
    /// The cached device and presence under `key` (the device's config subject).
    pub fn get(&self, key: &str) -> Option<(Device, Presence)> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().expect("not poisoned");
        let (at, device, presence) = entries.get(key)?;
        (at.elapsed() < TTL).then(|| (device.clone(), presence.clone()))
    }

    /// Read before fetching, and handed back to [`DeviceCache::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches what was fetched, unless a device notice arrived since `generation` was read.
    pub fn put(&self, key: String, generation: u64, device: Device, presence: Presence) {
        let mut entries = self.entries.lock().expect("not poisoned");
        if self.generation.load(Ordering::Acquire) != generation
            || self.closed.load(Ordering::Acquire)
        {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), device, presence));
    }

    /// A device's config or presence changed: forget it.
    pub fn invalidate(&self, subject: &str) {
        let mut entries = self.entries.lock().expect("not poisoned");
        self.generation.fetch_add(1, Ordering::AcqRel);
        let key = match subject.strip_suffix(".presence") {
            Some(device) => format!("{device}.config"),
            None => subject.to_owned(),
        };
        entries.remove(&key);
    }

    /// Applies notices from `subscriber` (every device event) until it ends.
    pub async fn follow(self: std::sync::Arc<Self>, mut subscriber: async_nats::Subscriber) {
        while let Some(message) = subscriber.next().await {
            self.invalidate(&message.subject);
        }
        // Without notices the cache could only go stale: stop using it.
        self.closed.store(true, Ordering::Release);
        self.entries.lock().expect("not poisoned").clear();
        tracing::error!("device notices ended; the exec device cache is off");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{DeviceConfig, DeviceId, DeviceStatus, SshTarget};

    fn device() -> (Device, Presence) {
        let config = DeviceConfig {
            device_id: DeviceId::new(),
            name: "d".into(),
            target: SshTarget {
                host: "127.0.0.1".into(),
                port: 22,
                username: "u".into(),
                host_key: "k".into(),
            },
            tags: vec![],
            status: DeviceStatus::Accepted,
            allowed_usernames: vec![],
        };
        let device = Device {
            config,
            seq: 1,
            updated_at: chrono::Utc::now(),
        };
        let presence = Presence {
            state: schemas::DevicePresence::Unknown,
            last_seen: None,
        };
        (device, presence)
    }

    #[test]
    fn a_notice_drops_the_entry_for_config_and_presence_alike() {
        let cache = DeviceCache::default();
        let key = "p.evt.t.device.d1.config".to_owned();
        for notice in ["p.evt.t.device.d1.config", "p.evt.t.device.d1.presence"] {
            let (d, p) = device();
            cache.put(key.clone(), cache.generation(), d, p);
            assert!(cache.get(&key).is_some());
            cache.invalidate("p.evt.t.device.d2.config");
            assert!(cache.get(&key).is_some(), "another device's notice");
            cache.invalidate(notice);
            assert!(cache.get(&key).is_none(), "{notice}");
        }
    }

    #[test]
    fn a_read_that_raced_a_notice_is_not_cached() {
        let cache = DeviceCache::default();
        let generation = cache.generation();
        cache.invalidate("p.evt.t.device.d1.config");
        let (d, p) = device();
        cache.put("p.evt.t.device.d1.config".into(), generation, d, p);
        assert!(cache.get("p.evt.t.device.d1.config").is_none());
    }
}
