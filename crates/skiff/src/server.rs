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
    /// endpoint) [default: --node-ip, else the host's first non-loopback address, else
    /// 127.0.0.1]
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
    /// The address this machine's agent reports as its Node's InternalIP and the cluster DNS
    /// listens on [default: the advertise address].
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// The cluster's pod network: nodes' pod CIDRs are allocated from it, and pod traffic leaving
    /// it is masqueraded.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// The CNI bridge of this machine's agent.
    #[arg(long, default_value = "skiff0")]
    pub bridge_name: String,
    /// Do not run the service proxy in this machine's agent.
    #[arg(long)]
    pub disable_kube_proxy: bool,
    /// Do not enforce NetworkPolicies in this machine's agent.
    #[arg(long)]
    pub disable_network_policy: bool,
    /// Do not run the built-in ingress controller (ingressClass `skiff`) in this machine's agent.
    #[arg(long)]
    pub disable_ingress: bool,
    /// The ingress controller's HTTP port.
    #[arg(long, default_value_t = 80)]
    pub ingress_http_port: u16,
    /// The ingress controller's HTTPS port.
    #[arg(long, default_value_t = 443)]
    pub ingress_https_port: u16,
    /// Do not serve cluster DNS (the `kube-dns` Service) from this process.
    #[arg(long)]
    pub disable_dns: bool,
    /// UDP and TCP port of the cluster DNS on the node address (0 picks a free one); the
    /// `kube-dns` Service's endpoints point at it.
    #[arg(long, default_value_t = 53)]
    pub dns_port: u16,
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
    // As k3s: the advertise address defaults to the node IP.
    let advertise = args.advertise_address.or(args.node_ip).unwrap_or_else(|| {
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
    // Pods get upstream's projected service-account token volume; the controller manager
    // publishes the `kube-root-ca.crt` ConfigMap it reads.
    server.set_mount_service_account_token(true);
    // Writes <data-dir>/token for agents joining, and the API server's client identity towards
    // the agents.
    let join_token = skiff_apiserver::join::enable_nodes(&server, &data_dir, pki.clone())
        .context("setting up node joining")?;

    let kubeconfig = data_dir.join("kubeconfig.yaml");
    let url = format!("https://127.0.0.1:{port}");
    pki.write_admin_kubeconfig(&kubeconfig, &url)
        .context("writing the kubeconfig")?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let local = server.clone();
    let serving = tokio::spawn(skiff_apiserver::serve(server, listener, Some(tls), async {
        let _ = stop_rx.await;
    }));
    tracing::info!(
        address = %format!("{}:{port}", args.bind_address),
        ready_ms = started.elapsed().as_secs_f64() * 1000.0,
        "API server ready"
    );
    // The other control-plane components are clients of the API server, as upstream's are; in
    // this process the scheduler and controller manager reach it without a network, with the
    // admin identity the loopback credentials carry.
    let (comp_tx, comp_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = comp_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut components = Vec::new();
    if !args.disable_scheduler || !args.disable_controller_manager {
        let client = crate::client::local_client(local, skiff_apiserver::UserInfo::admin());
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
                cluster_cidr: args.cluster_cidr.clone(),
                default_toleration_seconds: args.default_unreachable_toleration_seconds,
                root_ca_pem: Some(pki.ca_cert_pem().to_string()),
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
    let node_ip = args.node_ip.unwrap_or(advertise);
    if args.disable_dns {
        tracing::info!("--disable-dns: no cluster DNS from this server");
    } else {
        let client = self_client(&kubeconfig).await?;
        components.extend(start_dns(client, node_ip, args.dns_port, &stopped)?);
    }
    if !args.disable_ingress {
        // The cluster's default IngressClass, as k3s installs traefik's.
        let client = self_client(&kubeconfig).await?;
        components.push(tokio::spawn(ensure_ingress_class(client)));
    }
    if args.disable_agent {
        tracing::info!("--disable-agent: no node agent on this machine");
    } else {
        // This machine's agent joins like any other, over loopback.
        let mut config = skiff_agent::AgentConfig::new(data_dir.clone());
        config.node_ip = Some(node_ip);
        config.cluster_cidr = args.cluster_cidr.clone();
        config.pod_cidr = first_node_cidr(&args.cluster_cidr);
        config.bridge_name = args.bridge_name.clone();
        config.kube_proxy = !args.disable_kube_proxy;
        config.network_policy = !args.disable_network_policy;
        config.ingress = crate::agent::ingress_listen(
            args.disable_ingress,
            args.ingress_http_port,
            args.ingress_https_port,
        );
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

/// The pod CIDR this machine's agent claims when the node IPAM has not given its Node one yet:
/// the first `/24` of the cluster CIDR (the whole CIDR when it is smaller), as the IPAM would.
fn first_node_cidr(cluster_cidr: &str) -> String {
    match skiff_agent::net::Cidr::parse(cluster_cidr) {
        Some(c) if c.addr.is_ipv4() && c.prefix <= 24 => format!("{}/24", c.addr),
        Some(c) => c.to_string(),
        None => cluster_cidr.to_string(),
    }
}

/// The field manager and `managed-by` value of the objects the server keeps for its DNS.
const DNS_MANAGER: &str = "skiff-server";

/// How often the `kube-dns` objects are re-applied, so they come back if deleted.
const DNS_RESYNC: Duration = Duration::from_secs(30);

/// Serves cluster DNS on `ip:port` (port 0: a free one) and keeps `kube-system/kube-dns`
/// pointing at it, so the service proxy sends `10.43.0.10:53` there.
fn start_dns<F, S>(
    client: kube::Client,
    ip: IpAddr,
    port: u16,
    stopped: &S,
) -> Result<Vec<tokio::task::JoinHandle<()>>>
where
    S: Fn() -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let port = if port == 0 { free_dns_port(ip)? } else { port };
    let listen = SocketAddr::new(ip, port);
    let config = skiff_dns::DnsConfig {
        listen,
        domain: "cluster.local".into(),
        upstreams: skiff_dns::read_resolv_conf("/etc/resolv.conf").unwrap_or_default(),
    };
    let (c, stop) = (client.clone(), stopped());
    let serve = tokio::spawn(async move {
        if let Err(e) = skiff_dns::run(c, config, stop).await {
            tracing::error!(error = format!("{e:#}"), "cluster dns failed");
        }
    });
    let stop = stopped();
    let objects = tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            let wait = match ensure_kube_dns(&client, listen).await {
                Ok(()) => DNS_RESYNC,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "updating the kube-dns service");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
    Ok(vec![serve, objects])
}

/// A port free for both UDP and TCP on `ip`; the DNS server binds it right after.
fn free_dns_port(ip: IpAddr) -> Result<u16> {
    for _ in 0..32 {
        let udp =
            std::net::UdpSocket::bind((ip, 0)).with_context(|| format!("binding udp on {ip}"))?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no port free for both udp and tcp on {ip}")
}

/// The EndpointSlice of `kube-system/kube-dns` pointing at the server's DNS.
fn kube_dns_endpoint_slice(listen: SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kube-dns-skiff",
            "namespace": "kube-system",
            "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": DNS_MANAGER,
            },
        },
        "addressType": if listen.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{
            "addresses": [listen.ip().to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
        }],
        "ports": [
            {"name": "dns", "port": listen.port(), "protocol": "UDP"},
            {"name": "dns-tcp", "port": listen.port(), "protocol": "TCP"},
        ],
    })
}

/// The Endpoints of `kube-system/kube-dns`, for clients still reading the core API; marked so
/// that EndpointSlice mirroring skips it, as the API server does for `default/kubernetes`.
fn kube_dns_endpoints(listen: SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": [{
            "addresses": [{"ip": listen.ip().to_string()}],
            "ports": [
                {"name": "dns", "port": listen.port(), "protocol": "UDP"},
                {"name": "dns-tcp", "port": listen.port(), "protocol": "TCP"},
            ],
        }],
    })
}

/// Creates the `skiff` IngressClass unless it exists, retrying until the API answers.
async fn ensure_ingress_class(client: kube::Client) {
    use k8s_openapi::api::networking::v1::IngressClass;
    use kube::api::{Api, PostParams};

    let classes: Api<IngressClass> = Api::all(client);
    loop {
        let class: IngressClass = match serde_json::from_value(skiff_ingress::skiff_ingress_class())
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the skiff IngressClass does not parse");
                return;
            }
        };
        match classes.create(&PostParams::default(), &class).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => return,
            Err(e) => tracing::warn!(error = %e, "creating the skiff IngressClass"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Creates the selector-less `kube-dns` Service (dropping a selector an older one had) and
/// applies its EndpointSlice and Endpoints.
async fn ensure_kube_dns(client: &kube::Client, listen: SocketAddr) -> Result<()> {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Api, Patch, PatchParams, PostParams};

    let services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    match services.get_opt("kube-dns").await? {
        None => {
            let svc: Service = serde_json::from_value(skiff_dns::kube_dns_service())?;
            match services.create(&PostParams::default(), &svc).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e).context("creating kube-system/kube-dns"),
            }
        }
        Some(svc) if svc.spec.as_ref().is_some_and(|s| s.selector.is_some()) => {
            let patch = serde_json::json!({"spec": {"selector": null}});
            services
                .patch("kube-dns", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .context("removing the selector of kube-system/kube-dns")?;
        }
        Some(_) => {}
    }
    let pp = PatchParams::apply(DNS_MANAGER).force();
    Api::<EndpointSlice>::namespaced(client.clone(), "kube-system")
        .patch(
            "kube-dns-skiff",
            &pp,
            &Patch::Apply(kube_dns_endpoint_slice(listen)),
        )
        .await
        .context("applying the kube-dns EndpointSlice")?;
    Api::<Endpoints>::namespaced(client.clone(), "kube-system")
        .patch("kube-dns", &pp, &Patch::Apply(kube_dns_endpoints(listen)))
        .await
        .context("applying the kube-dns Endpoints")?;
    Ok(())
}

/// A client of this server with the admin credentials it wrote.
async fn self_client(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    crate::client::api_client(cfg)
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
    fn kube_dns_endpoints_point_at_the_listen_address() {
        use k8s_openapi::api::core::v1::Endpoints;
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        let listen: SocketAddr = "192.0.2.7:5353".parse().unwrap();
        let slice: EndpointSlice = serde_json::from_value(kube_dns_endpoint_slice(listen)).unwrap();
        let labels = slice.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/service-name"], "kube-dns");
        assert_eq!(
            labels["endpointslice.kubernetes.io/managed-by"],
            "skiff-server"
        );
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.endpoints[0].addresses, vec!["192.0.2.7".to_string()]);
        let ports: Vec<_> = slice
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port.unwrap(), p.protocol.unwrap()))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("dns".to_string(), 5353, "UDP".to_string()),
                ("dns-tcp".to_string(), 5353, "TCP".to_string())
            ]
        );
        let ep: Endpoints = serde_json::from_value(kube_dns_endpoints(listen)).unwrap();
        let subset = &ep.subsets.unwrap()[0];
        assert_eq!(subset.addresses.as_ref().unwrap()[0].ip, "192.0.2.7");
        assert_eq!(subset.ports.as_ref().unwrap()[1].port, 5353);
    }

    #[test]
    fn free_dns_port_is_free_for_udp_and_tcp() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = free_dns_port(ip).unwrap();
        assert_ne!(port, 0);
        let _udp = std::net::UdpSocket::bind((ip, port)).unwrap();
        let _tcp = std::net::TcpListener::bind((ip, port)).unwrap();
    }

    #[test]
    fn agent_claims_the_first_node_cidr() {
        assert_eq!(first_node_cidr("10.42.0.0/16"), "10.42.0.0/24");
        assert_eq!(first_node_cidr("10.123.4.5/16"), "10.123.0.0/24");
        assert_eq!(first_node_cidr("10.9.9.0/26"), "10.9.9.0/26");
    }

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
