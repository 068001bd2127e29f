//! The pure part of cluster DNS: a snapshot of the cluster and the answer for one question.
//!
//! Names follow the Kubernetes DNS specification (as served by CoreDNS's `kubernetes` plugin
//! with `pods insecure`): `<svc>.<ns>.svc.<zone>`, `<endpoint>.<svc>.<ns>.svc.<zone>`,
//! `_<port>._<proto>.<svc>.<ns>.svc.<zone>` and `<dashed-ip>.<ns>.pod.<zone>`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// TTL of every cluster record, as CoreDNS's default `ttl 5`.
pub const TTL: u32 = 5;

/// A named or unnamed port of a Service or an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortEntry {
    /// The port's name; empty when unnamed (no SRV record is published for it).
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub port: u16,
}

/// A ready endpoint of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    pub ip: IpAddr,
    /// `hostname` from the EndpointSlice (set for StatefulSet pods behind their governing service).
    pub hostname: Option<String>,
    pub ports: Vec<PortEntry>,
}

/// What DNS needs to know about one Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceEntry {
    pub cluster_ips: Vec<IpAddr>,
    /// `clusterIP: None`: the name answers with the endpoints' addresses.
    pub headless: bool,
    /// Set for `type: ExternalName`: the name is a CNAME to it.
    pub external_name: Option<String>,
    pub ports: Vec<PortEntry>,
    /// Ready endpoints, without duplicates.
    pub endpoints: Vec<EndpointEntry>,
}

/// A snapshot of everything DNS answers from.
#[derive(Clone, Debug)]
pub struct ClusterState {
    /// The cluster domain, e.g. `cluster.local.`.
    pub domain: Name,
    pub namespaces: BTreeSet<String>,
    /// Keyed by (namespace, name).
    pub services: BTreeMap<(String, String), ServiceEntry>,
}

/// The outcome of [`resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An authoritative answer from the cluster zone. NODATA is `NoError` with no answers.
    Cluster {
        code: ResponseCode,
        answers: Vec<Record>,
        /// The zone's SOA for negative answers (RFC 2308), empty otherwise.
        authorities: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// Not in the cluster domain: ask the upstream resolvers.
    Forward,
}

impl ClusterState {
    /// An empty snapshot for `domain` (e.g. `cluster.local`).
    pub fn new(domain: &str) -> anyhow::Result<Self> {
        let mut domain = Name::from_ascii(domain)?.to_lowercase();
        domain.set_fqdn(true);
        Ok(Self {
            domain,
            namespaces: BTreeSet::new(),
            services: BTreeMap::new(),
        })
    }

    /// Builds the snapshot from the watched objects.
    pub fn from_objects<'a>(
        domain: &str,
        namespaces: impl IntoIterator<Item = &'a Namespace>,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> anyhow::Result<Self> {
        let mut state = Self::new(domain)?;
        for ns in namespaces {
            if let Some(name) = &ns.metadata.name {
                state.namespaces.insert(name.clone());
            }
        }
        for svc in services {
            let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
                continue;
            };
            state
                .services
                .insert((ns.clone(), name.clone()), service_entry(svc));
        }
        for slice in slices {
            let Some(ns) = &slice.metadata.namespace else {
                continue;
            };
            let Some(svc_name) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
            else {
                continue;
            };
            let Some(entry) = state.services.get_mut(&(ns.clone(), svc_name.clone())) else {
                continue;
            };
            let ports: Vec<PortEntry> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(PortEntry {
                        name: p.name.clone().unwrap_or_default(),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port: u16::try_from(p.port?).ok()?,
                    })
                })
                .collect();
            for ep in &slice.endpoints {
                // A nil `ready` means unknown, which consumers must treat as ready.
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for addr in &ep.addresses {
                    let Ok(ip) = addr.parse::<IpAddr>() else {
                        continue;
                    };
                    if entry.endpoints.iter().any(|e| e.ip == ip) {
                        continue;
                    }
                    entry.endpoints.push(EndpointEntry {
                        ip,
                        hostname: ep.hostname.clone(),
                        ports: ports.clone(),
                    });
                }
            }
        }
        Ok(state)
    }
}

fn service_entry(svc: &Service) -> ServiceEntry {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut entry = ServiceEntry::default();
    if spec.type_.as_deref() == Some("ExternalName") {
        entry.external_name = spec.external_name.clone();
        return entry;
    }
    let ips: Vec<String> = match spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips,
        _ => spec.cluster_ip.into_iter().collect(),
    };
    entry.headless = ips.iter().any(|ip| ip == "None");
    entry.cluster_ips = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
    entry.ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(PortEntry {
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    entry
}

/// Answers one question from the snapshot. Names outside the cluster domain are forwarded;
/// names inside it never are.
pub fn resolve(name: &Name, qtype: RecordType, state: &ClusterState) -> Answer {
    let name = name.to_lowercase();
    if !state.domain.zone_of(&name) {
        return Answer::Forward;
    }
    let zone_labels = state.domain.num_labels() as usize;
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    // Relative labels, most significant first: e.g. ["svc", "default", "web"].
    let rel: Vec<&str> = labels[..labels.len() - zone_labels]
        .iter()
        .rev()
        .map(String::as_str)
        .collect();
    let mut out = Out::new(&name, qtype, state);
    match rel.as_slice() {
        [] => out.nodata(),
        ["svc"] | ["pod"] => out.nodata(),
        ["svc", ns] | ["pod", ns] => {
            if state.namespaces.contains(*ns) {
                out.nodata()
            } else {
                out.nxdomain()
            }
        }
        ["pod", _ns, ip] => match pod_ip(ip) {
            Some(ip) => out.address(&name, [ip]),
            None => out.nxdomain(),
        },
        ["svc", ns, svc] => match lookup(state, ns, svc) {
            Some(entry) => out.service(&name, entry),
            None => out.nxdomain(),
        },
        ["svc", ns, svc, proto] if proto.starts_with('_') => match lookup(state, ns, svc) {
            // `_<proto>.<svc>…` exists as an empty non-terminal when some port uses the protocol.
            Some(entry) if entry.ports.iter().any(|p| is_proto(p, &proto[1..])) => out.nodata(),
            _ => out.nxdomain(),
        },
        ["svc", ns, svc, endpoint] => match lookup(state, ns, svc) {
            Some(entry) if entry.headless => {
                let ips: Vec<IpAddr> = entry
                    .endpoints
                    .iter()
                    .filter(|e| endpoint_label(e) == *endpoint)
                    .map(|e| e.ip)
                    .collect();
                if ips.is_empty() {
                    out.nxdomain()
                } else {
                    out.address(&name, ips)
                }
            }
            _ => out.nxdomain(),
        },
        ["svc", ns, svc, proto, port] if proto.starts_with('_') && port.starts_with('_') => {
            match lookup(state, ns, svc) {
                Some(entry) => out.srv_port(ns, svc, entry, &port[1..], &proto[1..]),
                None => out.nxdomain(),
            }
        }
        _ => out.nxdomain(),
    }
    out.finish()
}

fn lookup<'a>(state: &'a ClusterState, ns: &str, svc: &str) -> Option<&'a ServiceEntry> {
    state.services.get(&(ns.to_string(), svc.to_string()))
}

fn is_proto(p: &PortEntry, proto: &str) -> bool {
    p.protocol.eq_ignore_ascii_case(proto)
}

/// The label an endpoint is published under: its hostname, else its dashed address.
fn endpoint_label(e: &EndpointEntry) -> String {
    match &e.hostname {
        Some(h) if !h.is_empty() => h.to_lowercase(),
        _ => dashed(e.ip),
    }
}

fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// Parses `10-1-2-3` or `fd00--1` back to an address, as "pods insecure" mode does.
fn pod_ip(label: &str) -> Option<IpAddr> {
    if label.matches('-').count() == 3 {
        if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
            return Some(IpAddr::V4(v4));
        }
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

struct Out<'a> {
    qtype: RecordType,
    state: &'a ClusterState,
    code: ResponseCode,
    answers: Vec<Record>,
    additionals: Vec<Record>,
    name: Name,
}

impl<'a> Out<'a> {
    fn new(name: &Name, qtype: RecordType, state: &'a ClusterState) -> Self {
        Self {
            qtype,
            state,
            code: ResponseCode::NoError,
            answers: Vec::new(),
            additionals: Vec::new(),
            name: name.clone(),
        }
    }

    fn nodata(&mut self) {
        self.code = ResponseCode::NoError;
    }

    fn nxdomain(&mut self) {
        self.code = ResponseCode::NXDomain;
    }

    fn address(&mut self, name: &Name, ips: impl IntoIterator<Item = IpAddr>) {
        let recs = address_records(name, self.qtype, ips);
        self.answers.extend(recs);
    }

    fn service(&mut self, name: &Name, entry: &ServiceEntry) {
        if let Some(target) = &entry.external_name {
            // CoreDNS answers every type on an ExternalName service with the CNAME.
            if let Ok(mut target) = Name::from_ascii(target) {
                target.set_fqdn(true);
                self.answers.push(Record::from_rdata(
                    name.clone(),
                    TTL,
                    RData::CNAME(CNAME(target)),
                ));
            }
            return;
        }
        if self.qtype == RecordType::SRV {
            let (ns, svc) = svc_of(name, self.state);
            self.srv_all(&ns, &svc, entry, None);
            return;
        }
        if entry.headless {
            let ips: Vec<IpAddr> = entry.endpoints.iter().map(|e| e.ip).collect();
            self.address(name, ips);
        } else {
            self.address(name, entry.cluster_ips.clone());
        }
    }

    fn srv_port(&mut self, ns: &str, svc: &str, entry: &ServiceEntry, port: &str, proto: &str) {
        let matches = |p: &PortEntry| !p.name.is_empty() && p.name == port && is_proto(p, proto);
        if entry.external_name.is_some() || !entry.ports.iter().any(matches) {
            self.nxdomain();
            return;
        }
        if self.qtype != RecordType::SRV {
            return;
        }
        self.srv_all(ns, svc, entry, Some(&matches));
    }

    /// SRV records (and their targets' addresses as additionals) for the service's named
    /// ports, restricted by `filter` when given.
    fn srv_all(
        &mut self,
        ns: &str,
        svc: &str,
        entry: &ServiceEntry,
        filter: Option<&dyn Fn(&PortEntry) -> bool>,
    ) {
        let keep = |p: &PortEntry| !p.name.is_empty() && filter.is_none_or(|f| f(p));
        let Ok(svc_name) = Name::from_ascii(format!("{svc}.{ns}.svc"))
            .and_then(|n| n.append_domain(&self.state.domain))
        else {
            return;
        };
        let mut targets: Vec<(u16, Name, IpAddr)> = Vec::new();
        if entry.headless {
            for e in &entry.endpoints {
                let Ok(target) = svc_name.prepend_label(endpoint_label(e)) else {
                    continue;
                };
                for p in e.ports.iter().filter(|p| keep(p)) {
                    targets.push((p.port, target.clone(), e.ip));
                }
            }
        } else {
            for p in entry.ports.iter().filter(|p| keep(p)) {
                for ip in &entry.cluster_ips {
                    targets.push((p.port, svc_name.clone(), *ip));
                }
            }
        }
        let weight = if targets.is_empty() {
            0
        } else {
            (100 / targets.len()).max(1) as u16
        };
        for (port, target, ip) in targets {
            let srv = SRV::new(0, weight, port, target.clone());
            let rec = Record::from_rdata(self.name.clone(), TTL, RData::SRV(srv));
            if !self.answers.contains(&rec) {
                self.answers.push(rec);
            }
            let qtype = if ip.is_ipv4() {
                RecordType::A
            } else {
                RecordType::AAAA
            };
            for add in address_records(&target, qtype, [ip]) {
                if !self.additionals.contains(&add) {
                    self.additionals.push(add);
                }
            }
        }
    }

    fn finish(self) -> Answer {
        let authorities = if self.answers.is_empty() {
            vec![soa(&self.state.domain)]
        } else {
            Vec::new()
        };
        Answer::Cluster {
            code: self.code,
            answers: self.answers,
            authorities,
            additionals: self.additionals,
        }
    }
}

fn svc_of(name: &Name, state: &ClusterState) -> (String, String) {
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let n = labels.len() - state.domain.num_labels() as usize;
    (labels[n - 2].clone(), labels[n - 3].clone())
}

/// A and AAAA records of `ips` that match `qtype` (an IPv4-only name has NODATA for AAAA).
fn address_records(
    name: &Name,
    qtype: RecordType,
    ips: impl IntoIterator<Item = IpAddr>,
) -> Vec<Record> {
    let mut out = Vec::new();
    for ip in ips {
        let rdata = match (qtype, ip) {
            (RecordType::A | RecordType::ANY, IpAddr::V4(v4)) => RData::A(A(v4)),
            (RecordType::AAAA | RecordType::ANY, IpAddr::V6(v6)) => RData::AAAA(AAAA(v6)),
            _ => continue,
        };
        let rec = Record::from_rdata(name.clone(), TTL, rdata);
        if !out.contains(&rec) {
            out.push(rec);
        }
    }
    out
}

/// The zone's SOA, shaped like CoreDNS's (`ns.dns.<zone>`, `hostmaster.<zone>`).
fn soa(domain: &Name) -> Record {
    let mname = Name::from_ascii("ns.dns")
        .and_then(|n| n.append_domain(domain))
        .unwrap_or_else(|_| domain.clone());
    let rname = Name::from_ascii("hostmaster")
        .and_then(|n| n.append_domain(domain))
        .unwrap_or_else(|_| domain.clone());
    let serial = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1);
    Record::from_rdata(
        domain.clone(),
        TTL,
        RData::SOA(SOA::new(mname, rname, serial, 7200, 1800, 86400, TTL)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state() -> ClusterState {
        let ns: Vec<Namespace> = ["default", "kube-system"]
            .iter()
            .map(|n| serde_json::from_value(json!({"metadata": {"name": n}})).unwrap())
            .collect();
        let svcs: Vec<Service> = [
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
                "clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                          {"port": 81, "protocol": "TCP"}]}}),
            json!({"metadata": {"name": "db", "namespace": "default"}, "spec": {
                "clusterIP": "None", "clusterIPs": ["None"],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}}),
            json!({"metadata": {"name": "empty", "namespace": "default"}, "spec": {
                "clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
            json!({"metadata": {"name": "ext", "namespace": "default"}, "spec": {
                "type": "ExternalName", "externalName": "example.com"}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        let slices: Vec<EndpointSlice> = [json!({
            "metadata": {"name": "db-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.42.1.6"], "hostname": "db-1"},
                {"addresses": ["10.42.1.7"], "conditions": {"ready": true}},
                {"addresses": ["10.42.2.8"], "hostname": "db-2", "conditions": {"ready": false}}
            ]
        })]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        ClusterState::from_objects("cluster.local", &ns, &svcs, &slices).unwrap()
    }

    fn ask(name: &str, qtype: RecordType) -> (ResponseCode, Vec<RData>, Vec<Record>, usize) {
        match resolve(&Name::from_ascii(name).unwrap(), qtype, &state()) {
            Answer::Cluster {
                code,
                answers,
                authorities,
                additionals,
            } => {
                if answers.is_empty() {
                    assert_eq!(authorities.len(), 1, "negative answers carry the SOA");
                    assert_eq!(authorities[0].record_type(), RecordType::SOA);
                }
                let data = answers.iter().map(|r| r.data.clone()).collect();
                (code, data, additionals, answers.len())
            }
            Answer::Forward => panic!("{name} was forwarded"),
        }
    }

    fn a(ip: &str) -> RData {
        RData::A(A(ip.parse().unwrap()))
    }

    fn name(n: &str) -> Name {
        Name::from_ascii(n).unwrap()
    }

    #[test]
    fn cluster_ip_service() {
        let (code, data, _, _) = ask("web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(data, vec![a("10.43.0.20")]);
        // Case-insensitive, and without the trailing dot.
        let (_, data, _, _) = ask("WEB.Default.svc.cluster.local", RecordType::A);
        assert_eq!(data, vec![a("10.43.0.20")]);
    }

    #[test]
    fn aaaa_of_ipv4_service_is_nodata() {
        let (code, data, _, _) = ask("web.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(code, ResponseCode::NoError);
        assert!(data.is_empty());
        let (code, data, _, _) = ask("web.default.svc.cluster.local.", RecordType::TXT);
        assert_eq!((code, data.len()), (ResponseCode::NoError, 0));
    }

    #[test]
    fn headless_service_lists_ready_endpoints() {
        let (code, mut data, _, _) = ask("db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(code, ResponseCode::NoError);
        data.sort_by_key(|d| d.to_string());
        // Not-ready db-2 is left out; unknown readiness (db-1) counts as ready.
        assert_eq!(data, vec![a("10.42.0.5"), a("10.42.1.6"), a("10.42.1.7")]);
        // A headless service without endpoints exists: NODATA, not NXDOMAIN.
        let (code, data, _, _) = ask("empty.default.svc.cluster.local.", RecordType::A);
        assert_eq!((code, data.len()), (ResponseCode::NoError, 0));
    }

    #[test]
    fn endpoint_hostnames() {
        let (code, data, _, _) = ask("db-0.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!((code, data), (ResponseCode::NoError, vec![a("10.42.0.5")]));
        // Endpoints without a hostname are published under their dashed address.
        let (_, data, _, _) = ask("10-42-1-7.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(data, vec![a("10.42.1.7")]);
        let (code, _, _, _) = ask("db-2.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(code, ResponseCode::NXDomain);
        let (code, _, _, _) = ask("x.web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(code, ResponseCode::NXDomain);
    }

    #[test]
    fn srv_for_named_ports() {
        let (code, data, additionals, _) =
            ask("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(
            data,
            vec![RData::SRV(SRV::new(
                0,
                100,
                80,
                name("web.default.svc.cluster.local.")
            ))]
        );
        assert_eq!(additionals.len(), 1);
        assert_eq!(additionals[0].data, a("10.43.0.20"));

        // Headless: one record per ready endpoint, targeting its own name.
        let (_, data, additionals, _) =
            ask("_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV);
        let mut targets: Vec<String> = data
            .iter()
            .map(|d| match d {
                RData::SRV(s) => format!("{}:{}", s.target, s.port),
                other => panic!("{other:?}"),
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            vec![
                "10-42-1-7.db.default.svc.cluster.local.:5432",
                "db-0.db.default.svc.cluster.local.:5432",
                "db-1.db.default.svc.cluster.local.:5432",
            ]
        );
        assert_eq!(additionals.len(), 3);

        // Unknown port name or protocol: NXDOMAIN; the right name with type A: NODATA.
        let (code, _, _, _) = ask("_nope._tcp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(code, ResponseCode::NXDomain);
        let (code, _, _, _) = ask("_http._udp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(code, ResponseCode::NXDomain);
        let (code, n, _, _) = ask("_http._tcp.web.default.svc.cluster.local.", RecordType::A);
        assert_eq!((code, n.len()), (ResponseCode::NoError, 0));
        let (code, n, _, _) = ask("_tcp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!((code, n.len()), (ResponseCode::NoError, 0));

        // SRV on the service name itself lists every named port (unnamed 81 has none).
        let (_, data, _, _) = ask("web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(data.len(), 1);
    }

    #[test]
    fn external_name_is_cname() {
        let (code, data, _, _) = ask("ext.default.svc.cluster.local.", RecordType::A);
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(data, vec![RData::CNAME(CNAME(name("example.com.")))]);
    }

    #[test]
    fn pod_names_from_the_address() {
        let (code, data, _, _) = ask("10-42-0-9.default.pod.cluster.local.", RecordType::A);
        assert_eq!((code, data), (ResponseCode::NoError, vec![a("10.42.0.9")]));
        let (code, data, _, _) = ask("fd00--9.default.pod.cluster.local.", RecordType::AAAA);
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(data, vec![RData::AAAA(AAAA("fd00::9".parse().unwrap()))]);
        let (code, _, _, _) = ask("not-an-ip.default.pod.cluster.local.", RecordType::A);
        assert_eq!(code, ResponseCode::NXDomain);
    }

    #[test]
    fn nxdomain_versus_nodata() {
        for (n, code) in [
            ("cluster.local.", ResponseCode::NoError),
            ("svc.cluster.local.", ResponseCode::NoError),
            ("default.svc.cluster.local.", ResponseCode::NoError),
            ("nosuchns.svc.cluster.local.", ResponseCode::NXDomain),
            ("missing.default.svc.cluster.local.", ResponseCode::NXDomain),
            ("web.other.svc.cluster.local.", ResponseCode::NXDomain),
            ("foo.cluster.local.", ResponseCode::NXDomain),
            ("a.b.c.d.e.svc.cluster.local.", ResponseCode::NXDomain),
        ] {
            let (got, data, _, _) = ask(n, RecordType::A);
            assert_eq!((got, data.len()), (code, 0), "{n}");
        }
    }

    #[test]
    fn other_names_are_forwarded_and_cluster_names_never() {
        let s = state();
        for n in [
            "example.com.",
            "local.",
            "notcluster.local.",
            "cluster.local.com.",
        ] {
            assert_eq!(resolve(&name(n), RecordType::A, &s), Answer::Forward, "{n}");
        }
        assert_ne!(
            resolve(&name("anything.cluster.local."), RecordType::A, &s),
            Answer::Forward
        );
    }
}
