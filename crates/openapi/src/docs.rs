//! The served documents: `/openapi/v3`, `/openapi/v3/<prefix>/<group>/<version>` and
//! `/openapi/v2`, each serialized once with its content hash.

use std::sync::{Arc, OnceLock};

use serde_json::{json, Map, Value};
use skiff_api::registry;

use crate::defs::{self, closure, ref_name, V3_REF};
use crate::kinds;
use crate::paths;

/// The Kubernetes version the documents describe.
const INFO_VERSION: &str = "v1.32.0";

/// One generated document with its serialized form and content hash.
#[derive(Debug)]
pub struct Document {
    /// The document.
    pub value: Value,
    /// Its JSON serialization, as served.
    pub json: Vec<u8>,
    /// Upper-case hex hash of `json`; stable for the same content.
    pub hash: String,
}

/// What to answer a request for a hashed document (upstream's `hash` query parameter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashCheck {
    /// No hash was asked for: serve with the `ETag` only.
    Plain,
    /// The hash matches: serve with `Cache-Control: public, immutable` and an `Expires` a year
    /// ahead.
    Immutable,
    /// The hash is stale: answer `301 Moved Permanently` to this location.
    Redirect(String),
}

impl Document {
    fn new(value: Value) -> Document {
        let json = serde_json::to_vec(&value).expect("a JSON value serializes");
        let hash = hash_of(&json);
        Document { value, json, hash }
    }

    /// The `ETag` header value: the hash in double quotes.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.hash)
    }
}

/// Hashes content into 32 upper-case hex digits (two independent 64-bit FNV-1a lanes). Only
/// stability matters: clients treat the value as opaque.
pub fn hash_of(bytes: &[u8]) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for &x in bytes {
        a = (a ^ u64::from(x)).wrapping_mul(PRIME);
        b = (b ^ u64::from(x.rotate_left(3))).wrapping_mul(PRIME);
    }
    format!("{a:016X}{b:016X}")
}

/// The index key of a group/version: `api/v1` or `apis/<group>/<version>`.
pub fn gv_path(group: &str, version: &str) -> String {
    paths::prefix(group, version)
        .trim_start_matches('/')
        .to_string()
}

/// Parses an index key (`api/v1`, `apis/apps/v1`) back into group and version.
pub fn parse_gv_path(path: &str) -> Option<(&str, &str)> {
    let path = path.trim_matches('/');
    let mut parts = path.split('/');
    match (parts.next()?, parts.next()?, parts.next(), parts.next()) {
        ("api", v, None, None) => Some(("", v)),
        ("apis", g, Some(v), None) => Some((g, v)),
        _ => None,
    }
}

type GvDocs = Vec<((&'static str, &'static str), Arc<Document>)>;

fn all_v3() -> &'static GvDocs {
    static DOCS: OnceLock<GvDocs> = OnceLock::new();
    DOCS.get_or_init(|| {
        registry::groups()
            .into_iter()
            .flat_map(|(g, vs)| vs.into_iter().map(move |v| (g, v)))
            .map(|(g, v)| ((g, v), Arc::new(Document::new(build_v3(g, v)))))
            .collect()
    })
}

/// The definitions a group/version's paths and kinds refer to.
fn gv_roots(group: &str, version: &str) -> Vec<String> {
    let mut roots: Vec<String> = vec![
        kinds::DELETE_OPTIONS.into(),
        kinds::STATUS.into(),
        kinds::WATCH_EVENT.into(),
        kinds::API_RESOURCE_LIST.into(),
        kinds::PATCH.into(),
    ];
    let all = &defs::defs().roots;
    for r in registry::resources_of(group, version) {
        for kind in [r.kind.to_string(), format!("{}List", r.kind)] {
            if let Some(n) = all.get(&(group.into(), version.into(), kind)) {
                roots.push(n.clone());
            }
        }
        if r.has_subresource("scale") {
            roots.push(kinds::SCALE.into());
        }
        if r.has_subresource("binding") {
            roots.push(kinds::BINDING.into());
        }
    }
    roots
}

fn build_v3(group: &str, version: &str) -> Value {
    let roots = gv_roots(group, version);
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": paths::render_v3(group, version),
        "components": {
            "schemas": closure(&roots),
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                },
            },
        },
        "security": [{"BearerToken": []}],
    })
}

/// The OpenAPI v3 document of one group/version (`""` for core), or `None` if not served.
/// Generated for every group/version on first use and cached.
pub fn v3_group_version(group: &str, version: &str) -> Option<Arc<Document>> {
    all_v3()
        .iter()
        .find(|((g, v), _)| *g == group && *v == version)
        .map(|(_, d)| d.clone())
}

/// The document of `/openapi/v3`: each group/version's path with its hashed URL.
pub fn v3_index() -> Value {
    let paths: Map<String, Value> = all_v3()
        .iter()
        .map(|((g, v), d)| {
            let path = gv_path(g, v);
            let url = format!("/openapi/v3/{path}?hash={}", d.hash);
            (path, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// How to answer `GET /openapi/v3/<path>?hash=<requested>` for this document.
pub fn check_hash(
    group: &str,
    version: &str,
    doc: &Document,
    requested: Option<&str>,
) -> HashCheck {
    match requested {
        None | Some("") => HashCheck::Plain,
        Some(h) if h == doc.hash => HashCheck::Immutable,
        Some(_) => HashCheck::Redirect(format!(
            "/openapi/v3/{}?hash={}",
            gv_path(group, version),
            doc.hash
        )),
    }
}

/// The swagger 2.0 document of `/openapi/v2`, as JSON. Generated on first use and cached.
pub fn v2() -> Arc<Document> {
    static DOC: OnceLock<Arc<Document>> = OnceLock::new();
    DOC.get_or_init(|| Arc::new(Document::new(build_v2())))
        .clone()
}

fn build_v2() -> Value {
    let mut paths = Map::new();
    let mut roots = Vec::new();
    for (g, vs) in registry::groups() {
        for v in vs {
            paths::render_v2(g, v, &mut paths);
            roots.extend(gv_roots(g, v));
        }
    }
    let mut sorted: Vec<(String, Value)> = paths.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
    let definitions: Map<String, Value> = closure(&roots)
        .into_iter()
        .map(|(name, mut schema)| {
            to_v2(&mut schema);
            (name, schema)
        })
        .collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": Map::from_iter(sorted),
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header",
            },
        },
        "security": [{"BearerToken": []}],
    })
}

/// Rewrites a v3 schema into swagger 2.0 form: `#/definitions/` references, no `allOf`
/// wrapper around a described reference, and no `oneOf` (int-or-string and quantity are
/// strings there).
fn to_v2(v: &mut Value) {
    let Value::Object(m) = v else {
        if let Value::Array(a) = v {
            a.iter_mut().for_each(to_v2);
        }
        return;
    };
    if m.contains_key("allOf") {
        if let Some(name) = ref_name(&Value::Object(m.clone())).map(str::to_string) {
            m.remove("allOf");
            m.insert("$ref".into(), format!("{V3_REF}{name}").into());
        }
    }
    if m.remove("oneOf").is_some() {
        m.insert("type".into(), "string".into());
    }
    for (k, child) in m.iter_mut() {
        if k == "$ref" {
            if let Value::String(s) = child {
                if let Some(rest) = s.strip_prefix(V3_REF) {
                    *s = format!("#/definitions/{rest}");
                }
            }
        } else {
            to_v2(child);
        }
    }
}
