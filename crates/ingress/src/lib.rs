//! The built-in HTTP ingress controller (ingress class `skiff`, controller `skiff.io/ingress`).
//!
//! Layout:
//! - [`route`]: the routing table, a pure function of Ingresses, IngressClasses, Services and
//!   EndpointSlices (class selection, host and path matching, precedence, backends).
//! - [`tls`]: certificates chosen by SNI from Ingress `spec.tls` Secrets, with a self-signed
//!   fallback.
//! - `proxy`: the hyper reverse proxy for one request.
//! - `server`: [`run`]/[`serve`]: reflectors, listeners and Ingress status.

mod proxy;
pub mod route;
mod server;
pub mod tls;

pub use route::{Backend, RoutingTable, CLASS_NAME, CONTROLLER};
pub use server::{run, serve, status_addresses, IngressConfig};

/// The `skiff` IngressClass, marked as the cluster default, for the server to create at
/// bootstrap.
pub fn skiff_ingress_class() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": CLASS_NAME,
            "annotations": { route::DEFAULT_CLASS_ANNOTATION: "true" },
        },
        "spec": { "controller": CONTROLLER },
    })
}
