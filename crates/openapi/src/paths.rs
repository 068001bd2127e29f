//! The operations upstream serves for each resource of a group/version, described once and
//! rendered as OpenAPI v3 or swagger 2.0.

use serde_json::{json, Map, Value};
use skiff_api::registry::{self, ResourceInfo};

use crate::kinds;
use crate::params;

/// Content types a patch body may have.
pub(crate) const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

const PRODUCES: &[&str] = &["application/json", "application/yaml"];
const PRODUCES_WATCH: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;stream=watch",
];

/// One operation on one path.
pub(crate) struct Operation {
    pub method: &'static str,
    pub action: Option<&'static str>,
    pub id: String,
    pub description: String,
    pub gvk: Option<(&'static str, &'static str, &'static str)>,
    pub params: Vec<Value>,
    /// Request body content types and definition name.
    pub body: Option<(&'static [&'static str], String)>,
    /// Response codes with a body of this definition.
    pub codes: &'static [&'static str],
    pub response: String,
    pub produces: &'static [&'static str],
}

/// One path with its path-level parameters and operations.
pub(crate) struct PathItem {
    pub path: String,
    pub params: Vec<Value>,
    pub ops: Vec<Operation>,
}

/// `apps` → `Apps`, `rbac.authorization.k8s.io` → `RbacAuthorization`, core → `Core`.
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(capitalize)
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Upstream's tag of a group/version, e.g. `core_v1`, `rbacAuthorization_v1`.
pub(crate) fn tag(group: &str, version: &str) -> String {
    let camel = group_camel(group);
    let mut c = camel.chars();
    let lower: String = match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    };
    format!("{lower}_{version}")
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub(crate) fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// Every path of a group/version, in upstream's order (sorted by path).
pub(crate) fn paths(group: &str, version: &str) -> Vec<PathItem> {
    let prefix = prefix(group, version);
    let gv = format!("{}{}", group_camel(group), capitalize(version));
    let mut out = vec![PathItem {
        path: format!("{prefix}/"),
        params: vec![],
        ops: vec![Operation {
            method: "get",
            action: None,
            id: format!("get{gv}APIResources"),
            description: "get available resources".into(),
            gvk: None,
            params: vec![],
            body: None,
            codes: &["200"],
            response: kinds::API_RESOURCE_LIST.into(),
            produces: PRODUCES,
        }],
    }];
    for r in registry::resources_of(group, version) {
        resource_paths(r, &prefix, &gv, &mut out);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn resource_paths(r: &'static ResourceInfo, prefix: &str, gv: &str, out: &mut Vec<PathItem>) {
    let crate::defs::Defs { roots, .. } = crate::defs::defs();
    let def = |kind: &str| -> String {
        roots
            .get(&(r.group.to_string(), r.version.to_string(), kind.to_string()))
            .cloned()
            .unwrap_or_default()
    };
    let item = def(r.kind);
    let list = def(&format!("{}List", r.kind));
    let gvk = Some((r.group, r.version, r.kind));
    let kind = r.kind;
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let (coll, one, watch_coll, watch_one, scope_params) = if r.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            format!("{prefix}/watch/namespaces/{{namespace}}/{}", r.plural),
            format!(
                "{prefix}/watch/namespaces/{{namespace}}/{}/{{name}}",
                r.plural
            ),
            vec![params::namespace()],
        )
    } else {
        (
            format!("{prefix}/{}", r.plural),
            format!("{prefix}/{}/{{name}}", r.plural),
            format!("{prefix}/watch/{}", r.plural),
            format!("{prefix}/watch/{}/{{name}}", r.plural),
            vec![],
        )
    };
    let with_name = |extra: &[Value]| {
        let mut v = vec![params::name(kind)];
        v.extend(scope_params.iter().cloned());
        v.extend(extra.iter().cloned());
        v.push(params::pretty());
        v
    };
    let mut coll_params = scope_params.clone();
    coll_params.push(params::pretty());

    let op = |method, action, id: String, description: String| Operation {
        method,
        action: Some(action),
        id,
        description,
        gvk,
        params: vec![],
        body: None,
        codes: &["200"],
        response: item.clone(),
        produces: PRODUCES,
    };

    out.push(PathItem {
        path: coll.clone(),
        params: coll_params.clone(),
        ops: vec![
            Operation {
                params: params::delete_collection(),
                body: Some((&["*/*"], kinds::DELETE_OPTIONS.into())),
                response: kinds::STATUS.into(),
                ..op(
                    "delete",
                    "deletecollection",
                    format!("delete{gv}Collection{scope}{kind}"),
                    format!("delete collection of {kind}"),
                )
            },
            Operation {
                params: params::list(),
                response: list.clone(),
                produces: PRODUCES_WATCH,
                ..op(
                    "get",
                    "list",
                    format!("list{gv}{scope}{kind}"),
                    format!("list or watch objects of kind {kind}"),
                )
            },
            Operation {
                params: params::write(),
                body: Some((&["*/*"], item.clone())),
                codes: &["200", "201", "202"],
                ..op(
                    "post",
                    "post",
                    format!("create{gv}{scope}{kind}"),
                    format!("create a {kind}"),
                )
            },
        ],
    });
    out.push(PathItem {
        path: one.clone(),
        params: with_name(&[]),
        ops: vec![
            Operation {
                params: params::delete(),
                body: Some((&["*/*"], kinds::DELETE_OPTIONS.into())),
                codes: &["200", "202"],
                response: kinds::STATUS.into(),
                ..op(
                    "delete",
                    "delete",
                    format!("delete{gv}{scope}{kind}"),
                    format!("delete a {kind}"),
                )
            },
            op(
                "get",
                "get",
                format!("read{gv}{scope}{kind}"),
                format!("read the specified {kind}"),
            ),
            Operation {
                params: params::patch(),
                body: Some((PATCH_TYPES, kinds::PATCH.into())),
                codes: &["200", "201"],
                ..op(
                    "patch",
                    "patch",
                    format!("patch{gv}{scope}{kind}"),
                    format!("partially update the specified {kind}"),
                )
            },
            Operation {
                params: params::write(),
                body: Some((&["*/*"], item.clone())),
                codes: &["200", "201"],
                ..op(
                    "put",
                    "put",
                    format!("replace{gv}{scope}{kind}"),
                    format!("replace the specified {kind}"),
                )
            },
        ],
    });
    if r.namespaced {
        out.push(PathItem {
            path: format!("{prefix}/{}", r.plural),
            params: vec![params::pretty()],
            ops: vec![Operation {
                params: params::list(),
                response: list.clone(),
                produces: PRODUCES_WATCH,
                ..op(
                    "get",
                    "list",
                    format!("list{gv}{kind}ForAllNamespaces"),
                    format!("list or watch objects of kind {kind}"),
                )
            }],
        });
        out.push(PathItem {
            path: format!("{prefix}/watch/{}", r.plural),
            params: vec![params::pretty()],
            ops: vec![Operation {
                params: params::list(),
                response: kinds::WATCH_EVENT.into(),
                produces: PRODUCES_WATCH,
                ..op(
                    "get",
                    "watchlist",
                    format!("watch{gv}{kind}ListForAllNamespaces"),
                    format!("watch individual changes to a list of {kind}"),
                )
            }],
        });
    }
    out.push(PathItem {
        path: watch_coll,
        params: coll_params,
        ops: vec![Operation {
            params: params::list(),
            response: kinds::WATCH_EVENT.into(),
            produces: PRODUCES_WATCH,
            ..op(
                "get",
                "watchlist",
                format!("watch{gv}{scope}{kind}List"),
                format!("watch individual changes to a list of {kind}"),
            )
        }],
    });
    out.push(PathItem {
        path: watch_one,
        params: with_name(&[]),
        ops: vec![Operation {
            params: params::list(),
            response: kinds::WATCH_EVENT.into(),
            produces: PRODUCES_WATCH,
            ..op(
                "get",
                "watch",
                format!("watch{gv}{scope}{kind}"),
                format!("watch changes to an object of kind {kind}"),
            )
        }],
    });

    for sub in r.subresources {
        let sub_camel = capitalize(sub);
        let path = format!("{one}/{sub}");
        let (sub_gvk, sub_def): (_, String) = match *sub {
            "scale" => (Some(("autoscaling", "v1", "Scale")), kinds::SCALE.into()),
            "binding" => (Some(("", "v1", "Binding")), kinds::BINDING.into()),
            _ => (gvk, item.clone()),
        };
        let sub_op = |method, action, verb: &str, description: String| Operation {
            gvk: sub_gvk,
            response: sub_def.clone(),
            ..op(
                method,
                action,
                format!("{verb}{gv}{scope}{kind}{sub_camel}"),
                description,
            )
        };
        let ops = match *sub {
            "status" | "scale" => vec![
                sub_op(
                    "get",
                    "get",
                    "read",
                    format!("read {sub} of the specified {kind}"),
                ),
                Operation {
                    params: params::patch(),
                    body: Some((PATCH_TYPES, kinds::PATCH.into())),
                    codes: &["200", "201"],
                    ..sub_op(
                        "patch",
                        "patch",
                        "patch",
                        format!("partially update {sub} of the specified {kind}"),
                    )
                },
                Operation {
                    params: params::write(),
                    body: Some((&["*/*"], sub_def.clone())),
                    codes: &["200", "201"],
                    ..sub_op(
                        "put",
                        "put",
                        "replace",
                        format!("replace {sub} of the specified {kind}"),
                    )
                },
            ],
            "binding" => vec![Operation {
                params: params::write(),
                body: Some((&["*/*"], sub_def.clone())),
                codes: &["200", "201", "202"],
                ..sub_op(
                    "post",
                    "post",
                    "create",
                    format!("create binding of a {kind}"),
                )
            }],
            "finalize" => vec![Operation {
                params: params::write(),
                body: Some((&["*/*"], sub_def.clone())),
                codes: &["200", "201"],
                ..sub_op(
                    "put",
                    "put",
                    "replace",
                    format!("replace finalize of the specified {kind}"),
                )
            }],
            _ => continue,
        };
        out.push(PathItem {
            path,
            params: with_name(&[]),
            ops,
        });
    }
}

fn gvk_value(gvk: (&str, &str, &str)) -> Value {
    json!({"group": gvk.0, "kind": gvk.2, "version": gvk.1})
}

fn responses(
    op: &Operation,
    content: impl Fn(&'static [&'static str], &str) -> Map<String, Value>,
) -> Value {
    let mut m = Map::new();
    for code in op.codes {
        let description = match *code {
            "201" => "Created",
            "202" => "Accepted",
            _ => "OK",
        };
        let mut r = Map::new();
        r.insert("description".into(), description.into());
        r.extend(content(op.produces, &op.response));
        m.insert((*code).into(), Value::Object(r));
    }
    m.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(m)
}

fn extensions(op: &Operation, o: &mut Map<String, Value>) {
    if let Some(a) = op.action {
        o.insert("x-kubernetes-action".into(), a.into());
    }
    if let Some(g) = op.gvk {
        o.insert("x-kubernetes-group-version-kind".into(), gvk_value(g));
    }
}

/// The OpenAPI v3 `paths` object of a group/version.
pub(crate) fn render_v3(group: &str, version: &str) -> Value {
    let tag = tag(group, version);
    let reference = |name: &str| json!({"$ref": format!("{}{name}", crate::defs::V3_REF)});
    let mut out = Map::new();
    for item in paths(group, version) {
        let mut p = Map::new();
        for op in &item.ops {
            let mut o = Map::new();
            o.insert("tags".into(), json!([tag]));
            o.insert("description".into(), op.description.clone().into());
            o.insert("operationId".into(), op.id.clone().into());
            if !op.params.is_empty() {
                o.insert("parameters".into(), Value::Array(op.params.clone()));
            }
            if let Some((types, def)) = &op.body {
                let content: Map<String, Value> = types
                    .iter()
                    .map(|t| ((*t).to_string(), json!({"schema": reference(def)})))
                    .collect();
                o.insert(
                    "requestBody".into(),
                    json!({"content": content, "required": true}),
                );
            }
            o.insert(
                "responses".into(),
                responses(op, |types, def| {
                    let content: Map<String, Value> = types
                        .iter()
                        .map(|t| ((*t).to_string(), json!({"schema": reference(def)})))
                        .collect();
                    Map::from_iter([("content".to_string(), Value::Object(content))])
                }),
            );
            extensions(op, &mut o);
            p.insert(op.method.into(), Value::Object(o));
        }
        if !item.params.is_empty() {
            p.insert("parameters".into(), Value::Array(item.params));
        }
        out.insert(item.path, Value::Object(p));
    }
    Value::Object(out)
}

/// A v3 parameter in swagger 2.0 form: the schema's type moves onto the parameter.
fn param_v2(p: &Value) -> Value {
    let mut out = p.as_object().cloned().unwrap_or_default();
    if let Some(Value::Object(schema)) = out.remove("schema") {
        out.extend(schema);
    }
    Value::Object(out)
}

/// The swagger 2.0 `paths` entries of a group/version.
pub(crate) fn render_v2(group: &str, version: &str, out: &mut Map<String, Value>) {
    let tag = tag(group, version);
    let reference = |name: &str| json!({"$ref": format!("#/definitions/{name}")});
    for item in paths(group, version) {
        let mut p = Map::new();
        for op in &item.ops {
            let mut o = Map::new();
            o.insert("description".into(), op.description.clone().into());
            if let Some((types, _)) = &op.body {
                o.insert("consumes".into(), json!(types));
            }
            o.insert("produces".into(), json!(op.produces));
            o.insert("schemes".into(), json!(["https"]));
            o.insert("tags".into(), json!([tag]));
            o.insert("operationId".into(), op.id.clone().into());
            let mut ps: Vec<Value> = Vec::new();
            if let Some((_, def)) = &op.body {
                ps.push(json!({"name": "body", "in": "body", "required": true, "schema": reference(def)}));
            }
            ps.extend(op.params.iter().map(param_v2));
            if !ps.is_empty() {
                o.insert("parameters".into(), Value::Array(ps));
            }
            o.insert(
                "responses".into(),
                responses(op, |_, def| {
                    Map::from_iter([("schema".to_string(), reference(def))])
                }),
            );
            extensions(op, &mut o);
            p.insert(op.method.into(), Value::Object(o));
        }
        if !item.params.is_empty() {
            p.insert(
                "parameters".into(),
                Value::Array(item.params.iter().map(param_v2).collect()),
            );
        }
        out.insert(item.path, Value::Object(p));
    }
}
