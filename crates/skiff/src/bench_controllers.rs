//! `skiff bench controllers`: a real `skiff server` process (API server, scheduler,
//! controller manager) with `skiff_sim` nodes in this process; times a Deployment of N
//! replicas until all are ready and a rolling update of it until the rollout is complete,
//! beside the floor: the same number of pods created directly over the API by concurrent
//! clients, scheduled and made ready by the same scheduler and simulator.
//!
//! Declared inside `bench` so that it shares that module's server process helpers.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff_sim::{Sim, SimConfig};

/// Flags of `skiff bench controllers`.
#[derive(Args, Debug)]
pub struct ControllersBench {
    /// Simulated nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Replicas of the Deployment (and pods of the baseline).
    #[arg(long, default_value_t = 1_000)]
    replicas: usize,
    /// Concurrent clients creating the baseline's pods.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

const BASELINE_NS: &str = "bench-baseline";
const NS: &str = "bench-controllers";

fn pod_spec(image: &str) -> serde_json::Value {
    json!({"containers": [{"name": "c", "image": image,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]})
}

/// Runs the measurements and prints them.
pub async fn run(args: ControllersBench) -> Result<()> {
    println!(
        "skiff bench controllers: {} simulated nodes, a Deployment of {} replicas \
         (RollingUpdate 25%/25%)",
        args.nodes, args.replicas
    );
    let (server, _) = super::start_server_with(&["--disable-agent"]).await?;
    let client = super::client_for(&server.kubeconfig).await?;
    let _sim = Sim::start(
        client.clone(),
        SimConfig {
            nodes: args.nodes,
            // Room for the baseline's pods, the Deployment's and its rollout surge at once.
            pods: (3 * args.replicas / args.nodes.max(1) + 20) as u32,
            ..SimConfig::default()
        },
    )
    .await
    .context("starting the simulated nodes")?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [BASELINE_NS, NS] {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        namespaces.create(&PostParams::default(), &obj).await?;
    }
    let timeout = Duration::from_secs(args.timeout_secs);

    let (created, ready) = baseline(&client, &args, timeout).await?;
    println!(
        "baseline: {} pods created directly ({} clients):  created in {:>7.2} s, all ready in {:>7.2} s",
        args.replicas,
        args.clients,
        created.as_secs_f64(),
        ready.as_secs_f64()
    );

    let deploys: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let dep: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"replicas": args.replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": pod_spec("registry.k8s.io/pause:3.10")}}
    }))?;
    let started = Instant::now();
    deploys.create(&PostParams::default(), &dep).await?;
    let n = args.replicas as i32;
    wait(timeout, "the Deployment to be ready", || async {
        let d = deploys.get("web").await?;
        Ok(d.status.and_then(|s| s.ready_replicas) == Some(n))
    })
    .await?;
    let ready = started.elapsed();
    println!(
        "Deployment of {} replicas: all ready in              {:>7.2} s   (goal < 5 s)",
        args.replicas,
        ready.as_secs_f64()
    );

    let started = Instant::now();
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "registry.k8s.io/pause:3.9"}]}}}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    wait(timeout, "the rollout to finish", || async {
        let d = deploys.get("web").await?;
        let gen = d.metadata.generation;
        let Some(st) = d.status else { return Ok(false) };
        if st.observed_generation < gen
            || st.updated_replicas != Some(n)
            || st.ready_replicas != Some(n)
            || st.replicas != Some(n)
        {
            return Ok(false);
        }
        // Every other ReplicaSet is scaled to zero and has no pods left.
        let image_new = |rs: &ReplicaSet| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.containers[0].image.as_deref())
                == Some("registry.k8s.io/pause:3.9")
        };
        let old_done = sets
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .all(|rs| {
                image_new(rs)
                    || (rs.spec.as_ref().and_then(|s| s.replicas) == Some(0)
                        && rs.status.as_ref().map(|s| s.replicas) == Some(0))
            });
        Ok(old_done)
    })
    .await?;
    let rolled = started.elapsed();
    println!(
        "rolling update (image change): complete in          {:>7.2} s   (goal < 15 s)",
        rolled.as_secs_f64()
    );
    Ok(())
}

/// Creates `replicas` pods straight through the API with `clients` concurrent clients and
/// waits for all to be ready: returns (time to create, time until all ready).
async fn baseline(
    client: &kube::Client,
    args: &ControllersBench,
    timeout: Duration,
) -> Result<(Duration, Duration)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), BASELINE_NS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let pods = pods.clone();
        let ids: Vec<usize> = (c..args.replicas).step_by(args.clients).collect();
        tasks.push(tokio::spawn(async move {
            for i in ids {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{i}"), "labels": {"app": "baseline"}},
                    "spec": pod_spec("registry.k8s.io/pause:3.10")
                }))?;
                pods.create(&PostParams::default(), &pod).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created = started.elapsed();
    let want = args.replicas;
    wait(timeout, "the baseline pods to be ready", || async {
        let list = pods.list(&ListParams::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        Ok(ready == want)
    })
    .await?;
    Ok((created, started.elapsed()))
}

/// Polls `check` every 20 ms until it is true, failing after `timeout`.
async fn wait<F, Fut>(timeout: Duration, what: &str, check: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
