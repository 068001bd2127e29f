//! The DNS server against an in-process API server: answers follow API changes, other names go
//! to the upstream resolver.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

async fn api_server() -> Client {
    let addr = skiff_apiserver::serve_for_tests().await;
    Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap()
}

/// A stand-in for the host's resolver: answers every A question with 192.0.2.1.
async fn fake_upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let req = Message::from_vec(&buf[..n]).unwrap();
            let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
            resp.add_queries(req.queries.clone());
            let q = &req.queries[0];
            resp.add_answer(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
            ));
            sock.send_to(&resp.to_vec().unwrap(), from).await.unwrap();
        }
    });
    addr
}

fn free_port() -> u16 {
    // A port free for both UDP and TCP right now.
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn query_bytes(name: &str, qtype: RecordType) -> (u16, Vec<u8>) {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    (msg.metadata.id, msg.to_vec().unwrap())
}

async fn udp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let (id, bytes) = query_bytes(name, qtype);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&bytes, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("dns answer within 5s")
        .unwrap();
    let msg = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(msg.metadata.id, id);
    msg
}

async fn tcp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let (_, bytes) = query_bytes(name, qtype);
    let mut s = TcpStream::connect(server).await.unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&bytes).await.unwrap();
    let len = s.read_u16().await.unwrap() as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// Polls until `check` accepts the answer, or fails after `within`.
async fn wait_answer(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    within: Duration,
    check: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = Instant::now() + within;
    loop {
        let msg = udp_query(server, name, qtype).await;
        if check(&msg) {
            return msg;
        }
        assert!(Instant::now() < deadline, "{name}: last answer {msg:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_cluster_names_from_the_api_and_forwards_the_rest() {
    let client = api_server().await;
    let upstream = fake_upstream().await;
    let listen: SocketAddr = ("127.0.0.1".parse::<Ipv4Addr>().unwrap(), free_port()).into();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let dns = tokio::spawn(skiff_dns::run(
        client.clone(),
        skiff_dns::DnsConfig {
            listen,
            domain: "cluster.local".into(),
            upstreams: vec![upstream],
        },
        async {
            let _ = stop_rx.await;
        },
    ));

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))
    .unwrap();
    let web = services.create(&pp, &web).await.unwrap();
    let cluster_ip: Ipv4Addr = web.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    let db: Service = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
    }))
    .unwrap();
    services.create(&pp, &db).await.unwrap();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.42.0.6"], "hostname": "db-1", "conditions": {"ready": false}}
        ]
    }))
    .unwrap();
    slices.create(&pp, &slice).await.unwrap();
    let ext: Service = serde_json::from_value(json!({
        "metadata": {"name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "example.org"}
    }))
    .unwrap();
    services.create(&pp, &ext).await.unwrap();

    let a = |ip: Ipv4Addr| RData::A(A(ip));
    let answers = |m: &Message| m.answers.iter().map(|r| r.data.clone()).collect::<Vec<_>>();

    // A for a ClusterIP service, once the watch cache has it.
    let msg = wait_answer(
        listen,
        "web.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(10),
        |m| !m.answers.is_empty(),
    )
    .await;
    assert_eq!(answers(&msg), vec![a(cluster_ip)]);
    assert!(msg.metadata.authoritative);

    // The same over TCP.
    let msg = tcp_query(listen, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&msg), vec![a(cluster_ip)]);

    // Headless: only the ready endpoint; and its hostname record.
    let msg = wait_answer(
        listen,
        "db.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(10),
        |m| !m.answers.is_empty(),
    )
    .await;
    assert_eq!(answers(&msg), vec![a("10.42.0.5".parse().unwrap())]);
    let msg = udp_query(listen, "db-0.db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&msg), vec![a("10.42.0.5".parse().unwrap())]);

    // SRV for a named port, with the target's address as additional.
    let msg = udp_query(
        listen,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    match &msg.answers[..] {
        [r] => match &r.data {
            RData::SRV(srv) => {
                assert_eq!(srv.port, 80);
                assert_eq!(srv.target.to_string(), "web.default.svc.cluster.local.");
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let additionals: Vec<RData> = msg.additionals.iter().map(|r| r.data.clone()).collect();
    assert_eq!(additionals, vec![a(cluster_ip)]);

    // ExternalName as CNAME.
    let msg = udp_query(listen, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        answers(&msg),
        vec![RData::CNAME(CNAME(
            Name::from_ascii("example.org.").unwrap()
        ))]
    );

    // NXDOMAIN with the zone's SOA; NODATA for AAAA of an IPv4 service.
    let msg = udp_query(listen, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(msg.authorities.len(), 1);
    let msg = udp_query(listen, "web.default.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert!(msg.answers.is_empty());

    // Other names go upstream.
    let msg = udp_query(listen, "example.com.", RecordType::A).await;
    assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers(&msg), vec![a(Ipv4Addr::new(192, 0, 2, 1))]);
    assert!(!msg.metadata.authoritative);

    // Deleting the service turns its name into NXDOMAIN within a second.
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_answer(
        listen,
        "web.default.svc.cluster.local.",
        RecordType::A,
        Duration::from_secs(1),
        |m| m.metadata.response_code == ResponseCode::NXDomain,
    )
    .await;

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), dns)
        .await
        .expect("dns server stops on shutdown")
        .unwrap()
        .unwrap();
}

#[test]
fn kube_dns_service_is_a_valid_service() {
    let svc: Service = serde_json::from_value(skiff_dns::kube_dns_service()).unwrap();
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.43.0.10"));
    let ports: Vec<(String, i32, String)> = spec
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap()))
        .collect();
    assert_eq!(
        ports,
        vec![
            ("dns".into(), 53, "UDP".into()),
            ("dns-tcp".into(), 53, "TCP".into()),
            ("metrics".into(), 9153, "TCP".into()),
        ]
    );
    assert_eq!(
        svc.metadata.labels.unwrap()["kubernetes.io/cluster-service"],
        "true"
    );
}
