//! The network side: a watch cache kept by reflectors, a hickory-server request handler over
//! UDP and TCP, and a small forwarder for names outside the cluster domain.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::Record;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;

use crate::resolve::{resolve, Answer, ClusterState};

/// How long one upstream may take before the next one is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle timeout of a TCP client connection.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// The EDNS UDP payload size advertised in answers (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// Where and how the cluster DNS serves.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// UDP and TCP listen address.
    pub listen: SocketAddr,
    /// The cluster domain, without a trailing dot.
    pub domain: String,
    /// Resolvers for names outside the cluster domain, tried in order.
    pub upstreams: Vec<SocketAddr>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        let listen = SocketAddr::new(crate::CLUSTER_DNS_IP.parse().expect("valid address"), 53);
        Self {
            listen,
            domain: "cluster.local".into(),
            upstreams: read_resolv_conf("/etc/resolv.conf").unwrap_or_default(),
        }
    }
}

/// The `nameserver` entries of a resolv.conf file, on port 53.
pub fn read_resolv_conf(path: &str) -> std::io::Result<Vec<SocketAddr>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            // Link-local IPv6 resolvers carry a zone (`fe80::1%eth0`) we cannot use here.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect())
}

type Shared = Arc<RwLock<Option<Arc<ClusterState>>>>;

/// Serves cluster DNS on `config.listen` (UDP and TCP) until `shutdown` completes.
pub async fn run(
    client: Client,
    config: DnsConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let udp = UdpSocket::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding udp {}: {e}", config.listen))?;
    let tcp = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding tcp {}: {e}", config.listen))?;
    let shared: Shared = Arc::new(RwLock::new(None));
    let cache = tokio::spawn(watch_cache(client, config.domain.clone(), shared.clone()));

    // Never forward to ourselves: that would loop until the timeout.
    let upstreams: Vec<SocketAddr> = config
        .upstreams
        .iter()
        .copied()
        .filter(|u| *u != config.listen)
        .collect();
    let handler = Handler {
        state: shared,
        empty: ClusterState::new(&config.domain)?,
        upstreams: Arc::new(upstreams),
    };
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT, 64);
    tracing::info!(listen = %config.listen, domain = %config.domain, "cluster dns serving");

    let token = server.shutdown_token().clone();
    let result = tokio::select! {
        r = server.block_until_done() => r.map_err(|e| anyhow::anyhow!("dns server: {e}")),
        _ = shutdown => {
            token.cancel();
            server
                .block_until_done()
                .await
                .map_err(|e| anyhow::anyhow!("dns server: {e}"))
        }
    };
    cache.abort();
    result
}

/// Keeps `shared` equal to the reflectors' contents; rebuilds are coalesced so a burst of
/// events costs one rebuild.
async fn watch_cache(client: Client, domain: String, shared: Shared) {
    let (ns_reader, ns_writer) = reflector::store::<Namespace>();
    let (svc_reader, svc_writer) = reflector::store::<Service>();
    let (eps_reader, eps_writer) = reflector::store::<EndpointSlice>();
    let changed = Arc::new(Notify::new());

    let ns = reflector::reflector(
        ns_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .boxed();
    let svc = reflector::reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .boxed();
    let eps = reflector::reflector(
        eps_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .boxed();
    let notify = changed.clone();
    let events = tokio::spawn(async move {
        let mut all = futures::stream::select_all([
            ns.map(|e| e.err().map(|e| e.to_string())).boxed(),
            svc.map(|e| e.err().map(|e| e.to_string())).boxed(),
            eps.map(|e| e.err().map(|e| e.to_string())).boxed(),
        ]);
        while let Some(err) = all.next().await {
            if let Some(err) = err {
                tracing::warn!(error = %err, "cluster dns watch");
            }
            notify.notify_one();
        }
    });

    let ready = async {
        ns_reader.wait_until_ready().await?;
        svc_reader.wait_until_ready().await?;
        eps_reader.wait_until_ready().await
    };
    if ready.await.is_err() {
        events.abort();
        return;
    }
    loop {
        rebuild(&domain, &ns_reader, &svc_reader, &eps_reader, &shared);
        changed.notified().await;
    }
}

fn rebuild(
    domain: &str,
    ns: &Store<Namespace>,
    svc: &Store<Service>,
    eps: &Store<EndpointSlice>,
    shared: &Shared,
) {
    let (ns, svc, eps) = (ns.state(), svc.state(), eps.state());
    match ClusterState::from_objects(
        domain,
        ns.iter().map(|o| o.as_ref()),
        svc.iter().map(|o| o.as_ref()),
        eps.iter().map(|o| o.as_ref()),
    ) {
        Ok(state) => *shared.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(state)),
        Err(e) => tracing::warn!(error = %e, "cluster dns state"),
    }
}

struct Handler {
    state: Shared,
    /// An empty snapshot, to tell cluster names from others before the cache has synced.
    empty: ClusterState,
    upstreams: Arc<Vec<SocketAddr>>,
}

/// What one request gets back.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn error(code: ResponseCode) -> Self {
        Self {
            code,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

impl Handler {
    async fn answer(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query
            || request.metadata.message_type != MessageType::Query
        {
            return Reply::error(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return Reply::error(ResponseCode::FormErr);
        };
        let name = info.query.name().into();
        let qtype = info.query.query_type();
        let state = self.state.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(state) = state else {
            // The cache has not synced yet; a wrong NXDOMAIN would be cached by clients.
            return match resolve(&name, qtype, &self.empty) {
                Answer::Forward => self.forward(&name, qtype, info.query).await,
                _ => Reply::error(ResponseCode::ServFail),
            };
        };
        match resolve(&name, qtype, &state) {
            Answer::Cluster {
                code,
                answers,
                authorities,
                additionals,
            } => Reply {
                code,
                authoritative: true,
                answers,
                authorities,
                additionals,
            },
            Answer::Forward => self.forward(&name, qtype, info.query).await,
        }
    }

    async fn forward(
        &self,
        name: &hickory_proto::rr::Name,
        qtype: hickory_proto::rr::RecordType,
        query: &hickory_proto::op::LowerQuery,
    ) -> Reply {
        let mut q = Query::query(name.clone(), qtype);
        q.set_query_class(query.query_class());
        match forward(&q, &self.upstreams, UPSTREAM_TIMEOUT).await {
            Ok(msg) => Reply {
                code: msg.metadata.response_code,
                authoritative: false,
                answers: msg.answers,
                authorities: msg.authorities,
                additionals: msg.additionals,
            },
            Err(e) => {
                tracing::debug!(error = %e, name = %name, "cluster dns forward");
                Reply::error(ResponseCode::ServFail)
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let reply = self.answer(request).await;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = true;
        let mut builder = MessageResponseBuilder::from_message_request(request);
        let edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(EDNS_PAYLOAD);
            e
        });
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cluster dns send");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                hickory_proto::op::Header {
                    metadata,
                    counts: Default::default(),
                }
                .into()
            }
        }
    }
}

/// Asks `upstreams` in order (UDP, then TCP when the answer is truncated) and returns the first
/// response.
pub async fn forward(
    query: &Query,
    upstreams: &[SocketAddr],
    timeout: Duration,
) -> anyhow::Result<Message> {
    let mut last = anyhow::anyhow!("no upstream resolvers");
    for upstream in upstreams {
        match tokio::time::timeout(timeout, exchange(query, *upstream)).await {
            Ok(Ok(msg)) => return Ok(msg),
            Ok(Err(e)) => last = e.context(format!("upstream {upstream}")),
            Err(_) => last = anyhow::anyhow!("upstream {upstream}: timed out"),
        }
    }
    Err(last)
}

async fn exchange(query: &Query, upstream: SocketAddr) -> anyhow::Result<Message> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    msg.set_edns(edns);
    let id = msg.metadata.id;
    let bytes = msg.to_vec()?;

    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(upstream).await?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 65535];
    let reply = loop {
        let n = sock.recv(&mut buf).await?;
        // Ignore stray or spoofed datagrams: only the matching id and question count.
        if let Ok(reply) = Message::from_vec(&buf[..n]) {
            if reply.metadata.id == id && reply.queries.first() == Some(query) {
                break reply;
            }
        }
    };
    if !reply.metadata.truncation {
        return Ok(reply);
    }
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len())?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(&bytes).await?;
    let len = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    let reply = Message::from_vec(&buf)?;
    anyhow::ensure!(reply.metadata.id == id, "upstream answered another query");
    Ok(reply)
}
