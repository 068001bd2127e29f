//! What a request path and method address, as upstream's `RequestInfoFactory` resolves them.

use skiff_api::registry::{self, ResourceInfo};

use crate::error::{ApiError, ApiResult};

/// The verbs of resource requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl Verb {
    /// Lower-case name, as in metrics and RBAC.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// A request for a resource.
#[derive(Clone, Debug)]
pub struct ResourceRequest {
    /// The addressed resource.
    pub resource: &'static ResourceInfo,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name from the path.
    pub name: Option<String>,
    /// Subresource from the path.
    pub subresource: Option<String>,
    /// The verb.
    pub verb: Verb,
}

/// What a path addresses.
#[derive(Clone, Debug)]
pub enum Target {
    /// `/api`.
    ApiVersions,
    /// `/apis`.
    ApiGroups,
    /// `/apis/<group>`.
    ApiGroup(String),
    /// `/api/v1` or `/apis/<group>/<version>`.
    ResourceList(String, String),
    /// A resource or object.
    Resource(ResourceRequest),
}

/// Resolves an `/api` or `/apis` path. `watch` is the `watch` query parameter.
pub fn resolve(method: &http::Method, path: &str, watch: bool) -> ApiResult<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.first().copied() {
        Some("api") => {
            if parts.len() == 1 {
                return Ok(Target::ApiVersions);
            }
            ("", &parts[1..])
        }
        Some("apis") => {
            if parts.len() == 1 {
                return Ok(Target::ApiGroups);
            }
            if parts.len() == 2 {
                return Ok(Target::ApiGroup(parts[1].to_string()));
            }
            (parts[1], &parts[2..])
        }
        _ => return Err(ApiError::path_not_found()),
    };
    let version = rest[0];
    let mut rest = &rest[1..];
    if rest.is_empty() {
        return Ok(Target::ResourceList(group.to_string(), version.to_string()));
    }
    if rest.iter().any(|p| p.is_empty()) {
        return Err(ApiError::path_not_found());
    }
    let mut namespace = None;
    if rest[0] == "namespaces" && rest.len() > 1 {
        // `/namespaces/<ns>/<resource>...` unless the third part is a namespace subresource.
        if rest.len() > 2 && rest[2] != "status" && rest[2] != "finalize" {
            namespace = Some(rest[1].to_string());
            rest = &rest[2..];
        }
    }
    let plural = rest[0];
    let resource = registry::find(group, version, plural).ok_or_else(ApiError::path_not_found)?;
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return Err(ApiError::path_not_found());
    }
    if let Some(sub) = &subresource {
        if !resource.has_subresource(sub) {
            return Err(ApiError::path_not_found());
        }
    }
    if resource.namespaced && namespace.is_none() && name.is_some() {
        // A namespaced object must be addressed inside its namespace.
        return Err(ApiError::path_not_found());
    }
    if !resource.namespaced && namespace.is_some() {
        return Err(ApiError::path_not_found());
    }
    let verb = match (method.as_str(), name.is_some()) {
        ("GET", true) => Verb::Get,
        ("GET", false) if watch => Verb::Watch,
        ("GET", false) => Verb::List,
        ("POST", false) => Verb::Create,
        // POST to a subresource (binding, eviction) creates it.
        ("POST", true) if subresource.is_some() => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) if subresource.is_none() => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return Err(ApiError::method_not_allowed()),
    };
    if subresource.is_some()
        && matches!(verb, Verb::Get)
        && subresource.as_deref() == Some("binding")
    {
        return Err(ApiError::method_not_allowed());
    }
    Ok(Target::Resource(ResourceRequest {
        resource,
        namespace,
        name,
        subresource,
        verb,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn res(m: Method, p: &str) -> ResourceRequest {
        match resolve(&m, p, false).unwrap() {
            Target::Resource(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn namespaced_paths() {
        let r = res(Method::GET, "/api/v1/namespaces/default/pods/p1");
        assert_eq!(r.resource.plural, "pods");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name.as_deref(), Some("p1"));
        assert_eq!(r.verb, Verb::Get);
        let r = res(Method::GET, "/apis/apps/v1/namespaces/x/deployments");
        assert_eq!(r.verb, Verb::List);
        let r = res(
            Method::PATCH,
            "/apis/apps/v1/namespaces/x/deployments/d/scale",
        );
        assert_eq!(r.subresource.as_deref(), Some("scale"));
        assert_eq!(r.verb, Verb::Patch);
    }

    #[test]
    fn namespace_object_and_subresources() {
        let r = res(Method::GET, "/api/v1/namespaces/foo");
        assert_eq!(r.resource.plural, "namespaces");
        assert_eq!(r.name.as_deref(), Some("foo"));
        assert!(r.namespace.is_none());
        let r = res(Method::PUT, "/api/v1/namespaces/foo/finalize");
        assert_eq!(r.subresource.as_deref(), Some("finalize"));
        let r = res(Method::GET, "/api/v1/pods");
        assert!(r.namespace.is_none());
        assert_eq!(r.verb, Verb::List);
    }

    #[test]
    fn unknown_and_malformed() {
        assert!(resolve(&Method::GET, "/api/v1/widgets", false).is_err());
        assert!(resolve(
            &Method::GET,
            "/apis/apps/v1/namespaces/x/deployments/d/logs",
            false
        )
        .is_err());
        assert_eq!(
            resolve(&Method::POST, "/api/v1/namespaces/x/pods/p", false)
                .unwrap_err()
                .code,
            405
        );
        assert!(resolve(&Method::GET, "/api/v1/nodes/n/x/y", false).is_err());
    }
}
