//! A tenant's own templates: stored in the log, read per tenant, cached per API process.
//!
//! An owner adds and removes templates through `/v1/templates`; each is a registry event
//! (`TemplateAdded`, `TemplateRemoved`) on the template's own subject
//! (`Topology::template_subject`), whose last event is the template's current state. Reading a
//! tenant's set is one ordered consumer that delivers the last message of every subject under
//! `Topology::tenant_templates_filter`, so it costs one round trip however many templates
//! there are. Every exec request needs its tenant's set, so [`TenantTemplates`] keeps the
//! policy built from it per tenant, like `device_cache` does for devices: one core NATS
//! subscription to every template event drops a tenant's entry as soon as its set changes,
//! and entries expire after [`TTL`] anyway, which bounds staleness if a notice is lost.
//!
//! A template added while a request was being judged may be missed by that request, and one
//! removed may still be matched by requests judged within the notice's flight time; both are
//! ordinary races with the owner's call. A stored definition that this release no longer
//! parses is skipped with a warning rather than failing every request of the tenant.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use schemas::{Event, EventBody, TemplateAdded, TenantId, Topology};

use super::Policy;
use super::syntax::{Extras, Origin, Template};

/// The longest an entry is used without a notice.
pub const TTL: Duration = Duration::from_secs(5);
/// More tenants than this and the cache starts over (bounded, like the device cache).
const CAPACITY: usize = 10_000;
/// How long reading a tenant's templates may take before the log counts as unavailable.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A tenant's template as the log holds it: the definition, and the stream sequence of its
/// last event (for an exact add or remove).
pub struct Stored {
    pub seq: u64,
    pub template: Template,
}

/// Why a tenant's templates could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the tenant's templates from the log: {0}")]
pub struct ReadError(String);

/// The template a `TemplateAdded` event defines, checked like any definition.
pub fn from_event(added: &TemplateAdded) -> Result<Template, super::InvalidTemplate> {
    from_definition(added, false)
}

/// The template a `TemplateAdded` or `TemplateDefined` event defines.
pub fn from_definition(
    added: &TemplateAdded,
    sensitive: bool,
) -> Result<Template, super::InvalidTemplate> {
    Template::define(
        &added.name,
        &added.template,
        &added.description,
        Extras {
            env: added.env.clone(),
            pty: added.pty,
            stdin: added.stdin,
            sensitive,
        },
        Origin::Tenant,
    )
}

/// Every current template of `tenant`, in the order they were added, read from the log.
pub async fn read(
    topology: &Topology,
    stream: &stream::Stream,
    tenant: &TenantId,
) -> Result<Vec<Stored>, ReadError> {
    let err = |e: &dyn std::fmt::Display| ReadError(e.to_string());
    let work = async {
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: topology.tenant_templates_filter(tenant),
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        let mut pending = consumer.cached_info().num_pending;
        let mut found = Vec::new();
        if pending == 0 {
            return Ok(found);
        }
        let mut messages = consumer.messages().await.map_err(|e| err(&e))?;
        while pending > 0 {
            let Some(message) = messages.next().await else {
                return Err(ReadError("the ordered consumer ended".into()));
            };
            let message = message.map_err(|e| err(&e))?;
            let info = message.info().map_err(|e| err(&e))?;
            pending = info.pending;
            let seq = info.stream_sequence;
            let definition = match Event::decode(&message.payload).map(|e| e.body) {
                Ok(EventBody::TemplateAdded(added)) => Ok(Some((added, false))),
                Ok(EventBody::TemplateDefined(defined)) => {
                    Ok(Some((defined.definition, defined.sensitive)))
                }
                Ok(_) => Ok(None),
                Err(error) => Err(error),
            };
            match definition {
                Ok(Some((added, sensitive))) => match from_definition(&added, sensitive) {
                    Ok(template) => found.push(Stored { seq, template }),
                    Err(error) => {
                        tracing::warn!(%tenant, name = %added.name, %error, "a stored template no longer parses; skipped");
                    }
                },
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%tenant, seq, %error, "an undecodable template event; skipped");
                }
            }
        }
        found.sort_by_key(|s| s.seq);
        Ok(found)
    };
    tokio::time::timeout(READ_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(ReadError("timed out".into())))
}

/// The policy per tenant (built-ins plus the tenant's own), cached per process.
#[derive(Default)]
pub struct TenantTemplates {
    entries: Mutex<HashMap<String, (Instant, Arc<Policy>)>>,
    /// Bumped by every notice, so a read that raced a notice is not cached.
    generation: AtomicU64,
    closed: AtomicBool,
}

impl TenantTemplates {
    /// The policy for `tenant`: from the cache, or built from `base` and the tenant's
    /// templates read from the log.
    pub async fn policy(
        &self,
        base: &Policy,
        topology: &Topology,
        stream: &stream::Stream,
        tenant: &TenantId,
    ) -> Result<Arc<Policy>, ReadError> {
        if let Some(policy) = self.get(tenant.as_str()) {
            return Ok(policy);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let own = read(topology, stream, tenant).await?;
        let policy = Arc::new(base.with_tenant(own.into_iter().map(|s| s.template)));
        self.put(tenant.as_str(), generation, policy.clone());
        Ok(policy)
    }

    fn get(&self, tenant: &str) -> Option<Arc<Policy>> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().expect("not poisoned");
        let (at, policy) = entries.get(tenant)?;
        (at.elapsed() < TTL).then(|| policy.clone())
    }

    fn put(&self, tenant: &str, generation: u64, policy: Arc<Policy>) {
        let mut entries = self.entries.lock().expect("not poisoned");
        if self.generation.load(Ordering::Acquire) != generation
            || self.closed.load(Ordering::Acquire)
        {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(tenant.to_owned(), (Instant::now(), policy));
    }

    /// A tenant's templates changed: forget its policy.
    pub fn invalidate(&self, tenant: &str) {
        let mut entries = self.entries.lock().expect("not poisoned");
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(tenant);
    }

    /// Applies notices from `subscriber` (every template event) until it ends.
    pub async fn follow(
        self: Arc<Self>,
        topology: Topology,
        mut subscriber: async_nats::Subscriber,
    ) {
        while let Some(message) = subscriber.next().await {
            if let Some(tenant) = topology.template_subject_tenant(&message.subject) {
                self.invalidate(tenant);
            }
        }
        // Without notices the cache could only go stale: stop using it.
        self.closed.store(true, Ordering::Release);
        self.entries.lock().expect("not poisoned").clear();
        tracing::error!("template notices ended; the template cache is off");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CommandPolicy;

    #[test]
    fn a_notice_drops_only_its_tenants_entry_and_a_raced_read_is_not_cached() {
        let cache = TenantTemplates::default();
        let policy = Arc::new(Policy::builtin(CommandPolicy::Templates));
        cache.put(
            "a",
            cache.generation.load(Ordering::Acquire),
            policy.clone(),
        );
        cache.put(
            "b",
            cache.generation.load(Ordering::Acquire),
            policy.clone(),
        );
        cache.invalidate("a");
        assert!(cache.get("a").is_none());
        assert!(cache.get("b").is_some());
        let generation = cache.generation.load(Ordering::Acquire);
        cache.invalidate("c");
        cache.put("a", generation, policy);
        assert!(cache.get("a").is_none(), "a read that raced a notice");
    }
}
