//! The API's use cases: what a request does, independent of the route that carries it.
//!
//! Routes are thin adapters (extract, call a use case, map the result to a response); the
//! domain work lives here once, so a second entry point (fan-out, a drop-in API) calls the
//! same code rather than growing a second execution path. [`exec`] runs a command on a
//! device; [`devices`] reads one device and its presence from the log; [`jobs`] reads one job.

pub mod batch_follow;
pub mod batches;
pub mod devices;
pub mod exec;
pub mod follow;
pub mod identity;
pub mod jobs;
pub mod sessions;
pub mod shells;
