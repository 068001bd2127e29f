//! Machinery shared by every controller, after upstream's client-go tools and kube-runtime.
//!
//! - [`informers`]: [`SharedInformers`], one watch-fed [`Cache`] per resource type shared
//!   by all controllers, with change handlers.
//! - [`queue`]: [`WorkQueue`], keys with dedup, per-item exponential backoff and an overall
//!   token bucket, and [`run_workers`], the worker pool.
//! - [`expectations`]: [`Expectations`], so a lagging cache never causes duplicate
//!   creates or deletes.
//! - [`control`]: [`Control`], every write a controller makes, with [`KubeControl`] (real)
//!   and [`RecordingControl`] (fake for tests); pod helpers.

pub mod claim;
pub mod control;
pub mod expectations;
pub mod informers;
pub mod podutil;
pub mod queue;

use std::sync::Arc;

pub use claim::claim;
pub use control::{
    controller_ref, create_pod_from_template, delete_pod, get_controller_of, object_reference,
    Action, ApiError, Control, KubeControl, RecordingControl, Verb,
};
pub use expectations::Expectations;
pub use informers::{key_of, split_key, Cache, Change, SharedInformers};
pub use queue::{run_workers, RateLimiter, WorkQueue};

use crate::ControllerManagerConfig;

/// Everything a controller's `run` needs: shared by all controllers of one manager.
#[derive(Clone)]
pub struct Context {
    /// The API client, for controllers that need more than [`Context::control`].
    pub client: kube::Client,
    /// Shared caches; register the ones a controller needs before it syncs.
    pub informers: SharedInformers,
    /// Writes to the API server (a [`KubeControl`] on `client`).
    pub control: Arc<dyn Control>,
    /// Manager-wide settings (worker counts, node-lifecycle timings, CIDRs).
    pub config: ControllerManagerConfig,
}

impl Context {
    /// A context on `client` with fresh shared informers.
    pub fn new(client: kube::Client, config: ControllerManagerConfig) -> Context {
        Context {
            informers: SharedInformers::new(Some(client.clone())),
            control: Arc::new(KubeControl::new(client.clone())),
            client,
            config,
        }
    }
}
