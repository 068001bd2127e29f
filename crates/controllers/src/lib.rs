//! The controller manager: the control loops that keep actual state equal to desired state.
//!
//! # Layout
//! - [`runtime`]: machinery shared by every controller — shared informers (one watch-fed
//!   cache per resource type, with change handlers), the rate-limited work queue, the
//!   worker pool, [`runtime::Expectations`], and the [`runtime::Control`] trait through which
//!   controllers write to the API (a real implementation on `kube` and a recording fake).
//! - Workload controllers: [`replicaset`] (also ReplicationController), [`deployment`],
//!   [`statefulset`], [`daemonset`], [`job`], [`cronjob`], and [`hpa`] (pure computation).
//! - Cluster controllers: [`namespace`], [`serviceaccount`], [`endpoints`],
//!   [`endpointslice`], [`gc`] (garbage collector), [`nodelifecycle`] (with IPAM), [`podgc`].
//!
//! # Controller shape
//! Every controller follows upstream's shape: informer change handlers only compute keys
//! (`namespace/name`) and add them to a [`runtime::WorkQueue`]; workers pop keys and call
//! a `sync` function that reads only the caches and writes only through a
//! [`runtime::Control`]. Unit tests fill [`runtime::SharedInformers`] caches by hand, pass a
//! [`runtime::RecordingControl`], call `sync` directly and inspect the recorded actions.
//!
//! # Entry points
//! Each controller module exposes `pub async fn run(ctx: Arc<runtime::Context>) ->
//! anyhow::Result<()>`: it registers the caches and handlers it needs (via
//! `ctx.informers.cache::<K>()`), waits for them to sync (`ctx.informers.wait_for_sync()`),
//! then runs its workers until the future is dropped. [`run`] builds one shared
//! [`runtime::Context`], starts every enabled controller and drops them all on shutdown.

pub mod runtime;

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod hpa;
pub mod job;
pub mod replicaset;
pub mod statefulset;

pub mod endpoints;
pub mod endpointslice;
pub mod gc;
pub mod namespace;
pub mod nodelifecycle;
pub mod podgc;
pub mod serviceaccount;

mod manager;

pub use manager::{run, ControllerManagerConfig};
