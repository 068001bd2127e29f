//! `skiff server`: the control plane on one machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use skiff_store::{SqliteOptions, SqliteStore, Store};

/// Flags of `skiff server`.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Directory for the datastore, certificates and kubeconfig
    /// [default: /var/lib/skiff as root, else $XDG_DATA_HOME/skiff]
    #[arg(long, env = "SKIFF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTPS port of the API server (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Address the API server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Address advertised to the cluster as the API server's (the `kubernetes` Service's
    /// endpoint) [default: the host's first non-loopback address, else 127.0.0.1]
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Extra subject alternative names (IPs or DNS names) for the serving certificate.
    #[arg(long = "tls-san", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Static bearer tokens, in upstream's token file format (`token,user,uid,"group1,group2"`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Do not run a node agent on this machine (a control-plane-only server; agents join with
    /// `skiff agent --server URL --token TOKEN`).
    #[arg(long)]
    pub disable_agent: bool,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    pub disable_scheduler: bool,
    /// Do not run the controller manager in this process.
    #[arg(long)]
    pub disable_controller_manager: bool,
    /// Seconds a node may go without renewing its Lease before it is marked unreachable.
    #[arg(long, default_value = "40s", value_parser = parse_go_duration)]
    pub node_monitor_grace_period: Duration,
    /// Seconds a pod tolerates a not-ready node unless it says otherwise.
    #[arg(long, default_value_t = 300)]
    pub default_not_ready_toleration_seconds: i64,
    /// Seconds a pod tolerates an unreachable node unless it says otherwise.
    #[arg(long, default_value_t = 300)]
    pub default_unreachable_toleration_seconds: i64,
    /// How long events live after their last update (Go duration syntax, e.g. `1h`, `30m`,
    /// `1h30m`).
    #[arg(long, default_value = "1h", value_parser = parse_go_duration)]
    pub event_ttl: Duration,
    /// Revisions of history the datastore keeps for watchers before compacting (SQLite; etcd
    /// keeps one compaction interval of history, as upstream does).
    #[arg(long, default_value_t = 10_000)]
    pub datastore_history: i64,
    /// How often etcd is compacted (Go duration syntax; `0` disables it).
    #[arg(long, default_value = "5m", value_parser = parse_go_duration)]
    pub etcd_compaction_interval: Duration,
    #[command(flatten)]
    pub datastore: crate::datastore::DatastoreArgs,
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(args: ServerArgs) -> Result<()> {
    let started = Instant::now();
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(crate::default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let store: Arc<dyn Store> = if args.datastore.is_etcd() {
        let every = Some(args.etcd_compaction_interval).filter(|d| !d.is_zero());
        args.datastore.connect_etcd(every).await?
    } else {
        let db = crate::datastore::sqlite_path(&data_dir);
        std::fs::create_dir_all(db.parent().expect("db dir"))?;
        let mut sopts = SqliteOptions::new(db);
        sopts.compaction_keep = args.datastore_history;
        sopts.compaction_interval = Duration::from_secs(60);
        SqliteStore::open(sopts).context("opening the datastore")?
    };

    let pki_opts = skiff_pki::PkiOptions::for_this_host(args.tls_san.clone());
    let advertise = args.advertise_address.unwrap_or_else(|| {
        pki_opts
            .host_addresses
            .iter()
            .find(|a| a.is_ipv4() && !a.is_loopback())
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    });
    let mut pki_opts = pki_opts;
    if !pki_opts.host_addresses.contains(&advertise) {
        pki_opts.host_addresses.push(advertise);
    }
    let pki = skiff_pki::ensure(&data_dir.join("tls"), &pki_opts)
        .context("setting up the cluster PKI")?;
    let tls = skiff_pki::server_tls_config(&pki).context("TLS configuration")?;
    let pki = std::sync::Arc::new(pki);
    let tokens = match &args.token_file {
        Some(p) => Some(
            skiff_pki::TokenFile::load(p)
                .with_context(|| format!("loading token file {}", p.display()))?,
        ),
        None => None,
    };

    let listener =
        tokio::net::TcpListener::bind(SocketAddr::new(args.bind_address, args.https_listen_port))
            .await
            .with_context(|| format!("binding {}:{}", args.bind_address, args.https_listen_port))?;
    // Port 0 picks a free port (tests); everything below uses the real one.
    let port = listener.local_addr()?.port();
    let server = skiff_apiserver::ApiServer::new(skiff_apiserver::Config {
        store,
        advertise_address: advertise,
        port,
        tokens,
        event_ttl: args.event_ttl,
        insecure_anonymous_admin: false,
        default_toleration_seconds: (
            args.default_not_ready_toleration_seconds,
            args.default_unreachable_toleration_seconds,
        ),
    })
    .await
    .context("starting the API server")?;
    // Writes <data-dir>/token for agents joining, and the API server's client identity towards
    // the agents.
    let join_token = skiff_apiserver::join::enable_nodes(&server, &data_dir, pki.clone())
        .context("setting up node joining")?;

    let kubeconfig = data_dir.join("kubeconfig.yaml");
    let url = format!("https://127.0.0.1:{port}");
    pki.write_admin_kubeconfig(&kubeconfig, &url)
        .context("writing the kubeconfig")?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(skiff_apiserver::serve(server, listener, Some(tls), async {
        let _ = stop_rx.await;
    }));
    tracing::info!(
        address = %format!("{}:{port}", args.bind_address),
        ready_ms = started.elapsed().as_secs_f64() * 1000.0,
        "API server ready"
    );
    // The other control-plane components are clients of the API server, as upstream's are; in
    // this process they reach it over loopback with the admin credentials.
    let (comp_tx, comp_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = comp_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut components = Vec::new();
    if !args.disable_scheduler || !args.disable_controller_manager {
        let client = self_client(&kubeconfig).await?;
        if !args.disable_scheduler {
            let (c, stop) = (client.clone(), stopped());
            components.push(tokio::spawn(async move {
                if let Err(e) =
                    skiff_scheduler::run(c, skiff_scheduler::SchedulerConfig::default(), stop).await
                {
                    tracing::error!(error = format!("{e:#}"), "scheduler failed");
                }
            }));
        }
        if !args.disable_controller_manager {
            let config = skiff_controllers::ControllerManagerConfig {
                node_monitor_grace_period: args.node_monitor_grace_period,
                default_toleration_seconds: args.default_unreachable_toleration_seconds,
                ..Default::default()
            };
            let (c, stop) = (client.clone(), stopped());
            components.push(tokio::spawn(async move {
                if let Err(e) = skiff_controllers::run(c, config, stop).await {
                    tracing::error!(error = format!("{e:#}"), "controller manager failed");
                }
            }));
        }
    }
    if args.disable_agent {
        tracing::info!("--disable-agent: no node agent on this machine");
    } else {
        // This machine's agent joins like any other, over loopback.
        let mut config = skiff_agent::AgentConfig::new(data_dir.clone());
        config.node_ip = Some(advertise);
        let (token, stop, url) = (join_token.to_string(), stopped(), url.clone());
        components.push(tokio::spawn(async move {
            if let Err(e) = crate::agent::run_with_token(&url, &token, config, stop).await {
                tracing::error!(error = format!("{e:#}"), "node agent failed");
            }
        }));
    }
    println!("skiff server is ready: API at {url}");
    println!("export KUBECONFIG={}", kubeconfig.display());

    crate::shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = comp_tx.send(true);
    for c in components {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
    let _ = stop_tx.send(());
    let _ = serving.await;
    Ok(())
}

/// A client of this server with the admin credentials it wrote.
async fn self_client(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Parses a Go-style duration (`1h30m`, `90s`, `500ms`), as upstream's flags take them.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration \"{s}\""))?;
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration \"{s}\""))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            u => return Err(format!("unknown unit \"{u}\" in duration \"{s}\"")),
        };
        total += Duration::from_secs_f64(value * secs);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("3d").is_err());
    }
}
