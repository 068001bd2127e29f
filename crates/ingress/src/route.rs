//! The routing table: a pure function of the Ingresses, IngressClasses, Services and
//! EndpointSlices in the cache, answering "which endpoint serves this host and path".
//!
//! Precedence follows upstream's Ingress documentation and the Gateway API's ordering: an exact
//! host beats a wildcard host, which beats a rule without a host; within those, the longest path
//! wins and an `Exact` path beats a `Prefix` path of the same length. Requests no rule matches go
//! to the oldest `spec.defaultBackend` of a served Ingress.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

/// The name of skiff's IngressClass.
pub const CLASS_NAME: &str = "skiff";
/// The `spec.controller` of skiff's IngressClass.
pub const CONTROLLER: &str = "skiff.io/ingress";
/// The deprecated annotation that names an Ingress's class.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The annotation marking an IngressClass as the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Whether this controller serves `ing`: its class is `skiff` (by `spec.ingressClassName` or the
/// deprecated annotation, which wins as in ingress-nginx), or it names no class and an
/// IngressClass of this controller is the cluster default.
pub fn is_ours(ing: &Ingress, classes: &[IngressClass]) -> bool {
    if let Some(class) = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLASS_ANNOTATION))
    {
        return class == CLASS_NAME;
    }
    let controller_of = |name: &str| {
        classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .map(|c| c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER))
    };
    match ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
    {
        // A class named `skiff` is ours unless an IngressClass of that name says otherwise.
        Some(name) => controller_of(name).unwrap_or(name == CLASS_NAME),
        None => classes.iter().any(|c| {
            c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
                && c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .map(String::as_str)
                    == Some("true")
        }),
    }
}

/// Where one Ingress backend points, resolved to the ready endpoints it has now.
#[derive(Debug)]
pub struct Backend {
    /// Namespace of the Ingress (and so of the Service).
    pub namespace: String,
    /// The Service's name; empty for a `resource` backend, which this controller does not serve.
    pub service: String,
    /// Ready endpoints as `host:port` authorities, sorted.
    pub endpoints: Vec<String>,
    next: AtomicUsize,
}

impl Backend {
    /// The next endpoint in round-robin order, or `None` when there is no ready endpoint.
    pub fn pick(&self) -> Option<&str> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        Some(&self.endpoints[i])
    }
}

/// How a rule's path matches, per `networking.k8s.io/v1` `pathType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path, case-sensitively.
    Exact,
    /// An element-wise prefix on `/`-separated segments (also `ImplementationSpecific`).
    Prefix,
}

#[derive(Debug)]
struct PathRule {
    kind: PathMatch,
    /// The path as written, for `Exact`.
    path: String,
    /// Non-empty segments, for `Prefix`; a trailing `/` does not count.
    segments: Vec<String>,
    /// The precedence length: the path without a trailing `/`.
    len: usize,
    backend: Arc<Backend>,
}

impl PathRule {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            PathMatch::Exact => path == self.path,
            PathMatch::Prefix => {
                let mut req = segments(path);
                self.segments.iter().all(|s| req.next() == Some(s.as_str()))
            }
        }
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// The routing table of every served Ingress.
#[derive(Debug, Default)]
pub struct RoutingTable {
    exact: HashMap<String, Vec<PathRule>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Vec<PathRule>>,
    any_host: Vec<PathRule>,
    default_backend: Option<Arc<Backend>>,
}

impl RoutingTable {
    /// Builds the table from the cache. Ingresses of other classes are ignored; ties between
    /// Ingresses go to the oldest, then by namespace and name, as ingress-nginx does.
    pub fn build(
        ingresses: &[Ingress],
        classes: &[IngressClass],
        services: &[Service],
        slices: &[EndpointSlice],
    ) -> Self {
        let resolver = Resolver::new(services, slices);
        let mut table = RoutingTable::default();
        for ing in served(ingresses, classes) {
            let ns = ing.metadata.namespace.clone().unwrap_or_default();
            let Some(spec) = &ing.spec else { continue };
            if table.default_backend.is_none() {
                if let Some(b) = &spec.default_backend {
                    table.default_backend = Some(resolver.backend(&ns, b));
                }
            }
            for rule in spec.rules.iter().flatten() {
                let host = rule.host.as_deref().unwrap_or("").to_ascii_lowercase();
                let list = if host.is_empty() {
                    &mut table.any_host
                } else if let Some(suffix) = host.strip_prefix("*.") {
                    table.wildcard.entry(suffix.to_string()).or_default()
                } else {
                    table.exact.entry(host).or_default()
                };
                for p in rule.http.iter().flat_map(|h| &h.paths) {
                    let path = p.path.clone().unwrap_or_else(|| "/".into());
                    let kind = if p.path_type == "Exact" {
                        PathMatch::Exact
                    } else {
                        PathMatch::Prefix
                    };
                    let len = if path.len() > 1 {
                        path.trim_end_matches('/').len()
                    } else {
                        path.len()
                    };
                    list.push(PathRule {
                        kind,
                        segments: segments(&path).map(String::from).collect(),
                        path,
                        len,
                        backend: resolver.backend(&ns, &p.backend),
                    });
                }
            }
        }
        // A stable sort keeps the oldest Ingress first among equals.
        let order = |l: &mut Vec<PathRule>| {
            l.sort_by_key(|r| (std::cmp::Reverse(r.len), r.kind != PathMatch::Exact))
        };
        table.exact.values_mut().for_each(order);
        table.wildcard.values_mut().for_each(order);
        order(&mut table.any_host);
        table
    }

    /// The backend for a request to `host` (a Host header value; any port is ignored) and
    /// `path`, or `None` when nothing matches and there is no default backend.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        let host = normalize_host(host);
        fn first<'t>(rules: Option<&'t Vec<PathRule>>, path: &str) -> Option<&'t Arc<Backend>> {
            rules
                .into_iter()
                .flatten()
                .find(|r| r.matches(path))
                .map(|r| &r.backend)
        }
        // A wildcard covers exactly one label: `*.foo.com` matches `a.foo.com`, not `foo.com`
        // or `a.b.foo.com`.
        let wildcard = host
            .split_once('.')
            .filter(|(label, _)| !label.is_empty())
            .and_then(|(_, rest)| self.wildcard.get(rest));
        first(self.exact.get(&host), path)
            .or_else(|| first(wildcard, path))
            .or_else(|| first(Some(&self.any_host), path))
            .or(self.default_backend.as_ref())
    }
}

/// The served Ingresses, oldest first (then by namespace and name).
pub fn served<'a>(ingresses: &'a [Ingress], classes: &[IngressClass]) -> Vec<&'a Ingress> {
    let mut ours: Vec<&Ingress> = ingresses.iter().filter(|i| is_ours(i, classes)).collect();
    ours.sort_by(|a, b| {
        let key = |i: &'a Ingress| {
            (
                i.metadata.creation_timestamp.as_ref().map(|t| t.0),
                i.metadata.namespace.as_deref(),
                i.metadata.name.as_deref(),
            )
        };
        key(a).cmp(&key(b))
    });
    ours
}

/// The host part of a Host header: lower-case, without port or trailing dot.
pub fn normalize_host(host: &str) -> String {
    let host = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal keeps its brackets off; it never matches a rule host anyway.
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Resolves Ingress backends to ready endpoints through Services and their EndpointSlices.
struct Resolver<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> Resolver<'a> {
    fn new(services: &'a [Service], slices: &'a [EndpointSlice]) -> Self {
        let services = services
            .iter()
            .filter_map(|s| {
                Some((
                    (
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?,
                    ),
                    s,
                ))
            })
            .collect();
        let mut by_service: HashMap<_, Vec<_>> = HashMap::new();
        for s in slices {
            let svc = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if let (Some(ns), Some(svc)) = (s.metadata.namespace.as_deref(), svc) {
                by_service.entry((ns, svc.as_str())).or_default().push(s);
            }
        }
        Resolver {
            services,
            slices: by_service,
        }
    }

    fn backend(&self, ns: &str, b: &IngressBackend) -> Arc<Backend> {
        let service = b
            .service
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let endpoints = b
            .service
            .as_ref()
            .map(|s| self.endpoints(ns, s))
            .unwrap_or_default();
        Arc::new(Backend {
            namespace: ns.to_string(),
            service,
            endpoints,
            next: AtomicUsize::new(0),
        })
    }

    fn endpoints(
        &self,
        ns: &str,
        backend: &k8s_openapi::api::networking::v1::IngressServiceBackend,
    ) -> Vec<String> {
        let Some(svc) = self.services.get(&(ns, backend.name.as_str())) else {
            return Vec::new();
        };
        let Some(spec) = &svc.spec else {
            return Vec::new();
        };
        let wanted = backend.port.as_ref();
        let port = spec.ports.iter().flatten().find(|p| match wanted {
            Some(w) if w.name.as_deref().is_some_and(|n| !n.is_empty()) => {
                p.name.as_deref() == w.name.as_deref()
            }
            Some(w) => Some(p.port) == w.number,
            None => false,
        });
        let Some(port) = port else {
            return Vec::new();
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            return spec
                .external_name
                .iter()
                .map(|h| format!("{}:{}", h.trim_end_matches('.'), port.port))
                .collect();
        }
        let port_name = port.name.as_deref().unwrap_or("");
        let mut out = BTreeSet::new();
        for slice in self
            .slices
            .get(&(ns, backend.name.as_str()))
            .into_iter()
            .flatten()
        {
            if slice.address_type == "FQDN" {
                continue;
            }
            let target = slice.ports.iter().flatten().find(|p| {
                p.name.as_deref().unwrap_or("") == port_name
                    && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            });
            let Some(target) = target.and_then(|p| p.port) else {
                continue;
            };
            for ep in &slice.endpoints {
                // An unset `ready` means ready, per the EndpointSlice API.
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for addr in &ep.addresses {
                    out.insert(if addr.contains(':') {
                        format!("[{addr}]:{target}")
                    } else {
                        format!("{addr}:{target}")
                    });
                }
            }
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
#[path = "route/tests.rs"]
mod tests;
