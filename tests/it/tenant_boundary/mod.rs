//! The tenant boundary (issue 12), door by door: who may do what on NATS (`nats`: service
//! users, tenants through the auth callout, signed exec requests), which key logs in to a
//! device (`identity`: a tenant's own SSH identity and its rotation), and what never leaves
//! in clear (`secrets`: sealed env values and stdin, sensitive templates' output).
//! `ops/test -E 'test(/tenant_boundary/)'` runs them all.

mod identity;
mod nats;
mod secrets;
