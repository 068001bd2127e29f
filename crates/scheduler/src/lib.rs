//! skiff's scheduler: binds pods without a node to a node that can run them, with upstream's
//! plugin framework, plugins and messages.
//!
//! # Layout
//! - `framework`: statuses, per-cycle state, one trait per extension point.
//! - `plugins`: the in-tree plugins, one module each.
//! - `config`: `KubeSchedulerConfiguration` profiles and the plugin registry.
//! - `types`: `PodInfo`, `NodeInfo` and the `Snapshot` cycles read.
//! - `algorithm`: one scheduling cycle (filter a sample, score, pick; `FitError`).
//! - `queue`: activeQ, backoffQ and unschedulable pods.
//! - `scheduler`: the loop: watches into the snapshot, queue, assume, concurrent binds,
//!   status and events.

pub mod algorithm;
pub mod config;
mod events;
pub mod framework;
pub mod plugins;
pub mod queue;
pub mod resource;
mod scheduler;
pub mod selectors;
pub mod types;

#[cfg(test)]
mod testutil;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

pub use config::SchedulerConfig;
pub use scheduler::run;
pub use types::Snapshot;

use algorithm::{Algorithm, Outcome};
use types::PodInfo;

/// Schedules pods one after another with the default profile, assuming each onto its node
/// so later pods see it; the chosen node per pod (`None` when unschedulable). No API calls:
/// the measure of the scheduling core for benchmarks.
pub fn schedule_many(snapshot: &mut Snapshot, pods: Vec<Pod>) -> Vec<Option<String>> {
    let fw = config::default_framework();
    let mut alg = Algorithm::default();
    let mut out = Vec::with_capacity(pods.len());
    for p in pods {
        let info = Arc::new(PodInfo::new(Arc::new(p)));
        match alg.schedule(&fw, &info, snapshot) {
            Outcome::Scheduled { node } => {
                snapshot.add_pod(&node, info);
                out.push(Some(node));
            }
            _ => out.push(None),
        }
    }
    out
}
