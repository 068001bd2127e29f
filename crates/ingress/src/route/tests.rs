use super::*;
use serde_json::{json, Value};

fn obj<T: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn ingress(name: &str, created: &str, spec: Value) -> Ingress {
    obj(json!({
        "metadata": { "name": name, "namespace": "default", "creationTimestamp": created },
        "spec": spec,
    }))
}

/// A Service `name` with port 80 named `http` and 8443 unnamed, and one slice with the ready
/// address `ip` (plus a not-ready one).
fn service(name: &str, ip: &str) -> (Service, EndpointSlice) {
    let svc = obj(json!({
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "ports": [
            { "name": "http", "port": 80, "targetPort": 8080 },
            { "name": "https", "port": 443, "targetPort": 8443 },
        ]},
    }));
    let slice = obj(json!({
        "metadata": { "name": format!("{name}-x"), "namespace": "default",
                      "labels": { "kubernetes.io/service-name": name } },
        "addressType": "IPv4",
        "endpoints": [
            { "addresses": [ip] },
            { "addresses": ["10.9.9.9"], "conditions": { "ready": false } },
        ],
        "ports": [
            { "name": "http", "port": 8080, "protocol": "TCP" },
            { "name": "https", "port": 8443, "protocol": "TCP" },
        ],
    }));
    (svc, slice)
}

fn backend(svc: &str) -> Value {
    json!({ "service": { "name": svc, "port": { "number": 80 } } })
}

fn path(p: &str, ty: &str, svc: &str) -> Value {
    json!({ "path": p, "pathType": ty, "backend": backend(svc) })
}

struct World {
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
}

fn world() -> World {
    let mut w = World {
        services: vec![],
        slices: vec![],
    };
    for (n, ip) in [
        ("a", "10.0.0.1"),
        ("b", "10.0.0.2"),
        ("c", "10.0.0.3"),
        ("d", "10.0.0.4"),
    ] {
        let (s, e) = service(n, ip);
        w.services.push(s);
        w.slices.push(e);
    }
    w
}

fn table(ings: &[Ingress]) -> RoutingTable {
    let w = world();
    RoutingTable::build(ings, &[], &w.services, &w.slices)
}

/// The endpoint a request reaches, or "" for no route.
fn hit(t: &RoutingTable, host: &str, p: &str) -> String {
    t.route(host, p)
        .map(|b| b.endpoints.join(","))
        .unwrap_or_default()
}

fn skiff(spec: Value) -> Value {
    let mut spec = spec;
    spec["ingressClassName"] = json!("skiff");
    spec
}

#[test]
fn class_selection() {
    let named = ingress(
        "a",
        "2024-01-01T00:00:00Z",
        json!({ "ingressClassName": "skiff" }),
    );
    let other = ingress(
        "b",
        "2024-01-01T00:00:00Z",
        json!({ "ingressClassName": "nginx" }),
    );
    let none = ingress("c", "2024-01-01T00:00:00Z", json!({}));
    let mut annotated = none.clone();
    annotated.metadata.annotations = Some([(CLASS_ANNOTATION.into(), "skiff".into())].into());
    let mut annotated_other = named.clone();
    annotated_other.metadata.annotations = Some([(CLASS_ANNOTATION.into(), "nginx".into())].into());

    assert!(is_ours(&named, &[]));
    assert!(!is_ours(&other, &[]));
    assert!(!is_ours(&none, &[]));
    assert!(is_ours(&annotated, &[]));
    // The deprecated annotation wins over the field, as in ingress-nginx.
    assert!(!is_ours(&annotated_other, &[]));

    let default: IngressClass = obj(crate::skiff_ingress_class());
    assert!(is_ours(&none, std::slice::from_ref(&default)));
    let mut not_default = default.clone();
    not_default.metadata.annotations = None;
    assert!(!is_ours(&none, &[not_default]));

    // A class of another name whose controller is ours is ours; `skiff` owned by another
    // controller is not.
    let mine: IngressClass = obj(json!({ "metadata": { "name": "nginx" },
                                         "spec": { "controller": CONTROLLER } }));
    assert!(is_ours(&other, &[mine]));
    let theirs: IngressClass = obj(json!({ "metadata": { "name": "skiff" },
                                           "spec": { "controller": "k8s.io/ingress-nginx" } }));
    assert!(!is_ours(&named, &[theirs]));
}

#[test]
fn other_classes_are_ignored() {
    let t = table(&[ingress(
        "x",
        "2024-01-01T00:00:00Z",
        json!({ "ingressClassName": "nginx", "rules": [{ "host": "a.test",
                "http": { "paths": [path("/", "Prefix", "a")] } }] }),
    )]);
    assert_eq!(hit(&t, "a.test", "/"), "");
}

#[test]
fn prefix_matches_element_wise() {
    // Cases from the upstream Ingress documentation's examples table.
    let cases = [
        ("/", "/anything", true),
        ("/foo", "/foo", true),
        ("/foo", "/foo/", true),
        ("/foo/", "/foo", true),
        ("/foo/", "/foo/", true),
        ("/aaa/bb", "/aaa/bbb", false),
        ("/aaa/bbb", "/aaa/bbb", true),
        ("/aaa/bbb/", "/aaa/bbb", true),
        ("/aaa/bbb", "/aaa/bbb/", true),
        ("/aaa/bbb", "/aaa/bbb/ccc", true),
        ("/aaa/bbb", "/aaa/bbbxyz", false),
        ("/foo", "/Foo", false),
    ];
    for (rule, req, want) in cases {
        let t = table(&[ingress(
            "x",
            "2024-01-01T00:00:00Z",
            skiff(json!({ "rules": [{ "http": { "paths": [path(rule, "Prefix", "a")] } }] })),
        )]);
        assert_eq!(
            !hit(&t, "h", req).is_empty(),
            want,
            "Prefix {rule} vs {req}"
        );
    }
}

#[test]
fn exact_and_implementation_specific() {
    let t = table(&[ingress(
        "x",
        "2024-01-01T00:00:00Z",
        skiff(json!({ "rules": [{ "http": { "paths": [
            path("/foo", "Exact", "a"),
            path("/bar", "ImplementationSpecific", "b"),
        ] } }] })),
    )]);
    assert_eq!(hit(&t, "h", "/foo"), "10.0.0.1:8080");
    assert_eq!(hit(&t, "h", "/foo/"), "");
    assert_eq!(hit(&t, "h", "/foo/x"), "");
    assert_eq!(hit(&t, "h", "/bar/x"), "10.0.0.2:8080");
}

#[test]
fn precedence() {
    let t = table(&[ingress(
        "x",
        "2024-01-01T00:00:00Z",
        skiff(json!({ "rules": [
            { "host": "*.foo.com", "http": { "paths": [path("/", "Prefix", "b")] } },
            { "host": "a.foo.com", "http": { "paths": [
                path("/", "Prefix", "a"),
                path("/api", "Prefix", "c"),
                path("/api", "Exact", "d"),
            ] } },
            { "http": { "paths": [path("/", "Prefix", "c")] } },
        ] })),
    )]);
    // Exact host beats wildcard; longest path wins; Exact beats Prefix at equal length.
    assert_eq!(hit(&t, "a.foo.com", "/"), "10.0.0.1:8080");
    assert_eq!(hit(&t, "A.Foo.Com:8080", "/x"), "10.0.0.1:8080");
    assert_eq!(hit(&t, "a.foo.com", "/api/v1"), "10.0.0.3:8080");
    assert_eq!(hit(&t, "a.foo.com", "/api"), "10.0.0.4:8080");
    // A wildcard covers exactly one label.
    assert_eq!(hit(&t, "b.foo.com", "/"), "10.0.0.2:8080");
    assert_eq!(hit(&t, "x.b.foo.com", "/"), "10.0.0.3:8080");
    assert_eq!(hit(&t, "foo.com", "/"), "10.0.0.3:8080");
    assert_eq!(hit(&t, ".foo.com", "/"), "10.0.0.3:8080");
}

#[test]
fn oldest_ingress_wins_ties_and_default_backend() {
    let newer = ingress(
        "new",
        "2024-02-01T00:00:00Z",
        skiff(json!({ "defaultBackend": backend("b"),
                      "rules": [{ "host": "h", "http": { "paths": [path("/", "Prefix", "b")] } }] })),
    );
    let older = ingress(
        "old",
        "2024-01-01T00:00:00Z",
        skiff(json!({ "defaultBackend": backend("a"),
                      "rules": [{ "host": "h", "http": { "paths": [path("/x", "Prefix", "a")] } },
                                { "host": "h", "http": { "paths": [path("/", "Prefix", "a")] } }] })),
    );
    let t = table(&[newer, older]);
    assert_eq!(hit(&t, "h", "/"), "10.0.0.1:8080");
    assert_eq!(hit(&t, "other", "/"), "10.0.0.1:8080");
}

#[test]
fn backends_resolve_ports_and_ready_endpoints() {
    let w = world();
    let by_name = json!({ "service": { "name": "a", "port": { "name": "https" } } });
    let missing_port = json!({ "service": { "name": "a", "port": { "number": 81 } } });
    let missing_svc = json!({ "service": { "name": "zz", "port": { "number": 80 } } });
    let ing = ingress(
        "x",
        "2024-01-01T00:00:00Z",
        skiff(json!({ "rules": [{ "http": { "paths": [
            { "path": "/name", "pathType": "Prefix", "backend": by_name },
            { "path": "/noport", "pathType": "Prefix", "backend": missing_port },
            { "path": "/nosvc", "pathType": "Prefix", "backend": missing_svc },
        ] } }] })),
    );
    // A second slice of `a` duplicates 10.0.0.1 and adds 10.0.0.5; endpoints are a set.
    let mut slices = w.slices.clone();
    slices.push(obj(json!({
        "metadata": { "name": "a-y", "namespace": "default",
                      "labels": { "kubernetes.io/service-name": "a" } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": ["10.0.0.1"] },
                      { "addresses": ["10.0.0.5"], "conditions": { "ready": true } }],
        "ports": [{ "name": "https", "port": 8443, "protocol": "TCP" }],
    })));
    let t = RoutingTable::build(&[ing], &[], &w.services, &slices);
    let b = t.route("h", "/name").unwrap();
    assert_eq!(b.endpoints, ["10.0.0.1:8443", "10.0.0.5:8443"]);
    // Round robin.
    let picks: Vec<_> = (0..4).map(|_| b.pick().unwrap().to_string()).collect();
    assert_eq!(
        picks,
        [
            "10.0.0.1:8443",
            "10.0.0.5:8443",
            "10.0.0.1:8443",
            "10.0.0.5:8443"
        ]
    );
    let none = t.route("h", "/noport").unwrap();
    assert!(none.endpoints.is_empty() && none.pick().is_none());
    assert!(t.route("h", "/nosvc").unwrap().endpoints.is_empty());
    // No rule matches and no default backend.
    assert!(t.route("h", "/other").is_none());
}

#[test]
fn host_normalization() {
    assert_eq!(normalize_host("A.Test:8080"), "a.test");
    assert_eq!(normalize_host("a.test."), "a.test");
    assert_eq!(normalize_host("[::1]:80"), "::1");
}
