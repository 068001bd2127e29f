//! Generator of `src/table.txt`, the wire layout of every Kubernetes type the crate transcodes,
//! and the check that the committed table is what the generator produces.
//!
//! Inputs:
//! - the `k8s-pb` 0.9.0 sources (prost structs generated from upstream's `generated.proto`
//!   files) for messages, field numbers, wire kinds and nested message types. They are looked up
//!   in Cargo's registry (`$CARGO_HOME/registry/src/*/k8s-pb-0.9.0/src`) or at `$K8S_PB_SRC`;
//!   the crate is only read, never built;
//! - k8s-openapi's schemas (the ones skiff-openapi serves) for the JSON field names: a prost
//!   field `pod_ip` is the schema property equal to it once underscores are dropped and case is
//!   ignored (`podIP`); a message field matching no property whose message's properties all sit
//!   in the parent is embedded inline in JSON (`Volume.volumeSource`, `Probe.handler`);
//! - optionally, upstream's Go types (`$SKIFF_K8S_GO_API` = a checkout of k8s.io/api and
//!   `$SKIFF_K8S_GO_APIMACHINERY` = one of k8s.io/apimachinery, at the v0.32 tag) for whether a
//!   zero value that is on the wire shows in JSON (Go pointers, and fields without `omitempty`)
//!   and for the JSON field order (Go declaration order). Without them the flags and order of
//!   the committed table are kept, and fields new to the table fall back to "zero shows iff the
//!   schema lists the field as required".
//!
//! `SKIFF_PROTOBUF_REGENERATE=1 cargo test -p skiff-protobuf --test table` rewrites the table.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use k8s_openapi::api;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::Value;

const TABLE: &str = "src/table.txt";

/// Messages the codec handles itself (their JSON is not an object of their proto fields).
const SPECIAL: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Duration",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
    "io.k8s.apimachinery.pkg.runtime.RawExtension",
    // `type ExtraValue []string`: a JSON array of strings.
    "io.k8s.api.authentication.v1.ExtraValue",
    "io.k8s.api.authorization.v1.ExtraValue",
];

type Register = fn(&mut SchemaGenerator) -> String;

fn register<T: JsonSchema>(gen: &mut SchemaGenerator) -> String {
    gen.subschema_for::<T>();
    T::schema_name().into_owned()
}

struct Root {
    /// `*` for the meta kinds every group version carries.
    api_version: &'static str,
    kind: &'static str,
    register: Register,
    /// Whether `<Kind>List` is served too.
    list: bool,
}

macro_rules! roots {
    ($(($av:expr, $kind:expr, $ty:ty, $list:expr)),* $(,)?) => {
        vec![$(Root { api_version: $av, kind: $kind, register: register::<$ty>, list: $list }),*]
    };
}

/// The kinds an envelope may carry: the served resources (with their lists) and the other
/// bodies kubectl and client-go send or accept as protobuf.
fn roots() -> Vec<Root> {
    roots![
        ("v1", "ConfigMap", api::core::v1::ConfigMap, true),
        ("v1", "Endpoints", api::core::v1::Endpoints, true),
        ("v1", "Event", api::core::v1::Event, true),
        ("v1", "LimitRange", api::core::v1::LimitRange, true),
        ("v1", "Namespace", api::core::v1::Namespace, true),
        ("v1", "Node", api::core::v1::Node, true),
        (
            "v1",
            "PersistentVolumeClaim",
            api::core::v1::PersistentVolumeClaim,
            true
        ),
        ("v1", "PersistentVolume", api::core::v1::PersistentVolume, true),
        ("v1", "Pod", api::core::v1::Pod, true),
        ("v1", "PodTemplate", api::core::v1::PodTemplate, true),
        (
            "v1",
            "ReplicationController",
            api::core::v1::ReplicationController,
            true
        ),
        ("v1", "ResourceQuota", api::core::v1::ResourceQuota, true),
        ("v1", "Secret", api::core::v1::Secret, true),
        ("v1", "ServiceAccount", api::core::v1::ServiceAccount, true),
        ("v1", "Service", api::core::v1::Service, true),
        ("v1", "Binding", api::core::v1::Binding, false),
        (
            "apps/v1",
            "ControllerRevision",
            api::apps::v1::ControllerRevision,
            true
        ),
        ("apps/v1", "DaemonSet", api::apps::v1::DaemonSet, true),
        ("apps/v1", "Deployment", api::apps::v1::Deployment, true),
        ("apps/v1", "ReplicaSet", api::apps::v1::ReplicaSet, true),
        ("apps/v1", "StatefulSet", api::apps::v1::StatefulSet, true),
        (
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            api::autoscaling::v2::HorizontalPodAutoscaler,
            true
        ),
        (
            "autoscaling/v1",
            "HorizontalPodAutoscaler",
            api::autoscaling::v1::HorizontalPodAutoscaler,
            true
        ),
        ("autoscaling/v1", "Scale", api::autoscaling::v1::Scale, false),
        ("batch/v1", "CronJob", api::batch::v1::CronJob, true),
        ("batch/v1", "Job", api::batch::v1::Job, true),
        ("coordination.k8s.io/v1", "Lease", api::coordination::v1::Lease, true),
        (
            "discovery.k8s.io/v1",
            "EndpointSlice",
            api::discovery::v1::EndpointSlice,
            true
        ),
        ("events.k8s.io/v1", "Event", api::events::v1::Event, true),
        (
            "networking.k8s.io/v1",
            "IngressClass",
            api::networking::v1::IngressClass,
            true
        ),
        ("networking.k8s.io/v1", "Ingress", api::networking::v1::Ingress, true),
        (
            "networking.k8s.io/v1",
            "NetworkPolicy",
            api::networking::v1::NetworkPolicy,
            true
        ),
        (
            "policy/v1",
            "PodDisruptionBudget",
            api::policy::v1::PodDisruptionBudget,
            true
        ),
        ("policy/v1", "Eviction", api::policy::v1::Eviction, false),
        (
            "scheduling.k8s.io/v1",
            "PriorityClass",
            api::scheduling::v1::PriorityClass,
            true
        ),
        (
            "storage.k8s.io/v1",
            "StorageClass",
            api::storage::v1::StorageClass,
            true
        ),
        (
            "authentication.k8s.io/v1",
            "TokenRequest",
            api::authentication::v1::TokenRequest,
            false
        ),
        (
            "authentication.k8s.io/v1",
            "TokenReview",
            api::authentication::v1::TokenReview,
            false
        ),
        (
            "authentication.k8s.io/v1",
            "SelfSubjectReview",
            api::authentication::v1::SelfSubjectReview,
            false
        ),
        (
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            api::authorization::v1::SelfSubjectAccessReview,
            false
        ),
        (
            "authorization.k8s.io/v1",
            "SelfSubjectRulesReview",
            api::authorization::v1::SelfSubjectRulesReview,
            false
        ),
        (
            "authorization.k8s.io/v1",
            "SubjectAccessReview",
            api::authorization::v1::SubjectAccessReview,
            false
        ),
        (
            "authorization.k8s.io/v1",
            "LocalSubjectAccessReview",
            api::authorization::v1::LocalSubjectAccessReview,
            false
        ),
        ("rbac.authorization.k8s.io/v1", "Role", api::rbac::v1::Role, true),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            api::rbac::v1::ClusterRole,
            true
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            api::rbac::v1::RoleBinding,
            true
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            api::rbac::v1::ClusterRoleBinding,
            true
        ),
        ("*", "DeleteOptions", meta::DeleteOptions, false),
        ("*", "Status", meta::Status, false),
        ("*", "WatchEvent", meta::WatchEvent<api::core::v1::Pod>, false),
    ]
}

// ---- k8s-pb sources ----

#[derive(Clone, Debug)]
struct PbField {
    name: String,
    tag: u32,
    /// `one`, `list` or `map`.
    shape: &'static str,
    /// Scalar kind, `message`, or for maps the value kind.
    kind: String,
    /// Definition name of a message (or map value message) type.
    message: Option<String>,
}

fn k8s_pb_src() -> PathBuf {
    if let Ok(p) = std::env::var("K8S_PB_SRC") {
        return PathBuf::from(p);
    }
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cargo"));
    let registry = cargo_home.join("registry/src");
    for entry in std::fs::read_dir(&registry).into_iter().flatten().flatten() {
        let p = entry.path().join("k8s-pb-0.9.0/src");
        if p.is_dir() {
            return p;
        }
    }
    panic!(
        "k8s-pb 0.9.0 sources not found under {}: set K8S_PB_SRC or run `cargo fetch` in a \
         project depending on k8s-pb = \"=0.9.0\"",
        registry.display()
    );
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.file_name().is_some_and(|n| n == "mod.rs") {
            out.push(p);
        }
    }
}

/// Every message of `api/**` and `apimachinery/**`, by definition name.
fn parse_k8s_pb(src: &Path) -> BTreeMap<String, Vec<PbField>> {
    let mut files = Vec::new();
    collect_rs(&src.join("api"), &mut files);
    collect_rs(&src.join("apimachinery"), &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let module: Vec<String> = file
            .parent()
            .unwrap()
            .strip_prefix(src)
            .unwrap()
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let text = std::fs::read_to_string(&file).unwrap();
        parse_module(&module, &text, &mut out);
    }
    out
}

fn def_name(module: &[String], name: &str) -> String {
    format!("io.k8s.{}.{}", module.join("."), name)
}

fn parse_module(module: &[String], text: &str, out: &mut BTreeMap<String, Vec<PbField>>) {
    let mut lines = text.lines().peekable();
    let mut current: Option<(String, Vec<PbField>)> = None;
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("pub struct ") {
            let name = rest.trim_end_matches(" {").trim().to_string();
            current = Some((def_name(module, &name), Vec::new()));
            continue;
        }
        if line == "}" {
            if let Some((name, fields)) = current.take() {
                out.insert(name, fields);
            }
            continue;
        }
        let Some(attr) = t.strip_prefix("#[prost(") else {
            continue;
        };
        let Some((_, fields)) = current.as_mut() else {
            continue;
        };
        let attr = attr.trim_end_matches(")]");
        let mut decl = String::new();
        for l in lines.by_ref() {
            decl.push_str(l.trim());
            if decl.ends_with(',') && decl.matches('<').count() == decl.matches('>').count() {
                break;
            }
        }
        let decl = decl.trim_end_matches(',');
        let (name, ty) = decl
            .strip_prefix("pub ")
            .and_then(|d| d.split_once(':'))
            .unwrap_or_else(|| panic!("unexpected field declaration {decl:?}"));
        let name = name.trim().trim_start_matches("r#").to_string();
        let tag: u32 = attr
            .split("tag = \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no tag in {attr:?}"));
        let (shape, kind) = if let Some(m) = attr.strip_prefix("btree_map = \"string, ") {
            ("map", m.split('"').next().unwrap().to_string())
        } else {
            let kind = attr
                .split([',', ' '])
                .next()
                .unwrap()
                .trim_end_matches('=')
                .to_string();
            let shape = if attr.contains(" repeated") {
                "list"
            } else {
                "one"
            };
            (shape, kind)
        };
        let message = (kind == "message").then(|| resolve_type(module, ty));
        fields.push(PbField {
            name,
            tag,
            shape,
            kind,
            message,
        });
    }
}

/// Resolves the message type of a prost field declaration to its definition name.
fn resolve_type(module: &[String], ty: &str) -> String {
    let mut ty = ty.replace(' ', "");
    for wrapper in [
        "::core::option::Option<",
        "::prost::alloc::vec::Vec<",
        "::prost::alloc::boxed::Box<",
        "::prost::alloc::collections::BTreeMap<::prost::alloc::string::String,",
    ] {
        if let Some(rest) = ty.strip_prefix(wrapper) {
            ty = rest.to_string();
        }
    }
    let path = ty.trim_end_matches(['>', ',']);
    let mut module = module.to_vec();
    let segments: Vec<&str> = path.split("::").collect();
    let (name, prefix) = segments.split_last().unwrap();
    for seg in prefix {
        if *seg == "super" {
            module.pop();
        } else {
            module.push(seg.to_string());
        }
    }
    def_name(&module, name)
}

// ---- Go sources ----

#[derive(Clone, Debug)]
struct GoField {
    json: String,
    tag: u32,
    keep_zero: bool,
}

fn go_types() -> Option<HashMap<String, Vec<GoField>>> {
    let api = std::env::var("SKIFF_K8S_GO_API").ok()?;
    let machinery = std::env::var("SKIFF_K8S_GO_APIMACHINERY").ok()?;
    let mut out = HashMap::new();
    let api = PathBuf::from(api);
    for group in std::fs::read_dir(&api).unwrap().flatten() {
        if !group.path().is_dir() {
            continue;
        }
        for version in std::fs::read_dir(group.path()).unwrap().flatten() {
            let prefix = format!(
                "io.k8s.api.{}.{}",
                group.file_name().to_string_lossy(),
                version.file_name().to_string_lossy()
            );
            parse_go_dir(&version.path(), &prefix, &mut out);
        }
    }
    let machinery = PathBuf::from(machinery);
    for dir in [
        "pkg/apis/meta/v1",
        "pkg/runtime",
        "pkg/api/resource",
        "pkg/util/intstr",
    ] {
        let prefix = format!("io.k8s.apimachinery.{}", dir.replace('/', "."));
        parse_go_dir(&machinery.join(dir), &prefix, &mut out);
    }
    Some(out)
}

fn parse_go_dir(dir: &Path, prefix: &str, out: &mut HashMap<String, Vec<GoField>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".go")
            || name.ends_with("_test.go")
            || name.starts_with("zz_generated")
            || name.contains("generated")
        {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let mut current: Option<(String, Vec<GoField>)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("type ") {
                if let Some(name) = rest.strip_suffix(" struct {") {
                    current = Some((format!("{prefix}.{name}"), Vec::new()));
                }
                continue;
            }
            if line == "}" {
                if let Some((name, fields)) = current.take() {
                    out.insert(name, fields);
                }
                continue;
            }
            let Some((_, fields)) = current.as_mut() else {
                continue;
            };
            let t = line.trim();
            if t.starts_with("//") {
                continue;
            }
            let Some((decl, tags)) = t.split_once('`') else {
                continue;
            };
            let tag_value = |key: &str| -> Option<String> {
                let start = tags.find(&format!("{key}:\""))? + key.len() + 2;
                Some(tags[start..].split('"').next()?.to_string())
            };
            let (Some(json), Some(pb)) = (tag_value("json"), tag_value("protobuf")) else {
                continue;
            };
            let Some(tag) = pb.split(',').nth(1).and_then(|s| s.parse().ok()) else {
                continue;
            };
            let mut parts = json.split(',');
            let json_name = parts.next().unwrap().to_string();
            let omitempty = parts.any(|p| p == "omitempty");
            let tokens: Vec<&str> = decl.split_whitespace().collect();
            let go_type = tokens.last().copied().unwrap_or("");
            fields.push(GoField {
                json: if json_name.is_empty() {
                    "-".to_string()
                } else {
                    json_name
                },
                tag,
                keep_zero: go_type.starts_with('*') || !omitempty,
            });
        }
    }
}

// ---- previous table ----

/// Per message: field order (by tag) and keep-zero flags of the committed table.
fn previous_table() -> HashMap<String, Vec<(u32, bool)>> {
    let mut out: HashMap<String, Vec<(u32, bool)>> = HashMap::new();
    let Ok(text) = std::fs::read_to_string(TABLE) else {
        return out;
    };
    let mut current = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("message ") {
            current = Some(name.to_string());
            out.entry(name.to_string()).or_default();
        } else if let (Some(c), Some(f)) = (&current, line.strip_prefix(' ')) {
            let tokens: Vec<&str> = f.split_whitespace().collect();
            let tag = tokens[0].parse().unwrap();
            out.get_mut(c)
                .unwrap()
                .push((tag, tokens.last() == Some(&"z")));
        }
    }
    out
}

// ---- generation ----

/// prost renames messages to Rust style (`HTTPGetAction` → `HttpGetAction`): back to
/// upstream's names, as the schemas (or Go types, or the committed table) spell them.
fn canonical_names(
    pb: BTreeMap<String, Vec<PbField>>,
    schemas: &serde_json::Map<String, Value>,
    go: Option<&HashMap<String, Vec<GoField>>>,
    previous: &HashMap<String, Vec<(u32, bool)>>,
) -> BTreeMap<String, Vec<PbField>> {
    let mut known: HashMap<String, String> = HashMap::new();
    let names = schemas
        .keys()
        .chain(go.into_iter().flat_map(|g| g.keys()))
        .chain(previous.keys());
    for n in names {
        known.entry(n.to_lowercase()).or_insert_with(|| n.clone());
    }
    let fix = |n: &str| {
        known
            .get(&n.to_lowercase())
            .cloned()
            .unwrap_or(n.to_string())
    };
    pb.into_iter()
        .map(|(name, fields)| {
            let fields = fields
                .into_iter()
                .map(|mut f| {
                    f.message = f.message.as_deref().map(fix);
                    f
                })
                .collect();
            (fix(&name), fields)
        })
        .collect()
}

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

struct Generated {
    table: String,
    problems: Vec<String>,
    /// Fields of k8s-pb no v1.32 schema knows (newer than the served API), left out.
    dropped: Vec<String>,
}

fn generate() -> Generated {
    let go = go_types();
    let previous = previous_table();

    let mut gen = SchemaSettings::openapi3()
        .with(|s| s.meta_schema = None)
        .into_generator();
    let mut kinds = Vec::new();
    let roots = roots();
    for r in &roots {
        let name = (r.register)(&mut gen);
        kinds.push((r.api_version, r.kind.to_string(), name.clone()));
        if r.list {
            kinds.push((
                r.api_version,
                format!("{}List", r.kind),
                format!("{name}List"),
            ));
        }
    }
    let schemas = gen.take_definitions(true);
    let pb = canonical_names(
        parse_k8s_pb(&k8s_pb_src()),
        &schemas,
        go.as_ref(),
        &previous,
    );

    let mut problems = Vec::new();
    let mut dropped = Vec::new();
    let mut queue: VecDeque<String> = kinds.iter().map(|k| k.2.clone()).collect();
    let mut seen = HashSet::new();
    let mut messages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Inlined messages have no schema of their own: their fields are the parent's properties.
    let mut borrowed: HashMap<String, String> = HashMap::new();
    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) || SPECIAL.contains(&name.as_str()) {
            continue;
        }
        let Some(fields) = pb.get(&name) else {
            problems.push(format!("{name}: no such message in k8s-pb"));
            continue;
        };
        let schema = schemas
            .get(&name)
            .or_else(|| schemas.get(borrowed.get(&name)?));
        let props: Vec<String> = schema
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let required: HashSet<String> = schema
            .and_then(|s| s.get("required"))
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let go_fields = go.as_ref().and_then(|g| g.get(&name));
        let prev = previous.get(&name);
        let is_list = schema.is_none() && name.ends_with("List");

        let mut lines: Vec<(usize, String)> = Vec::new();
        let mut covered = BTreeSet::new();
        for f in fields {
            let json = if is_list && (f.name == "metadata" || f.name == "items") {
                Some(f.name.clone())
            } else {
                let matches: Vec<&String> =
                    props.iter().filter(|p| norm(p) == norm(&f.name)).collect();
                match matches.as_slice() {
                    [one] => Some((*one).clone()),
                    [] => {
                        // An embedded struct (`json:",inline"`): most of its fields are
                        // properties of the parent.
                        let sub = f.message.as_ref().and_then(|m| pb.get(m));
                        let inline = sub.is_some_and(|sub| {
                            let known = sub
                                .iter()
                                .filter(|sf| props.iter().any(|p| norm(p) == norm(&sf.name)))
                                .count();
                            // Fields newer than the schema may be among them.
                            known > 0 && known * 2 >= sub.len()
                        });
                        if inline {
                            for sf in sub.unwrap() {
                                covered.extend(
                                    props.iter().filter(|p| norm(p) == norm(&sf.name)).cloned(),
                                );
                            }
                            let m = f.message.clone().unwrap();
                            if !schemas.contains_key(&m) {
                                borrowed.insert(m, name.clone());
                            }
                            Some("-".to_string())
                        } else {
                            None
                        }
                    }
                    many => {
                        problems.push(format!("{name}.{}: matches {many:?}", f.name));
                        continue;
                    }
                }
            };
            let Some(json) = json else {
                dropped.push(format!("{name}.{} ({})", f.name, f.tag));
                continue;
            };
            covered.insert(json.clone());
            let go_field = go_fields.and_then(|g| g.iter().position(|gf| gf.tag == f.tag));
            if let (Some(g), Some(i)) = (go_fields, go_field) {
                if g[i].json != json {
                    problems.push(format!(
                        "{name}.{}: schema name {json:?}, Go name {:?}",
                        f.name, g[i].json
                    ));
                }
            }
            let prev_field = prev.and_then(|p| p.iter().position(|(tag, _)| *tag == f.tag));
            let (order, keep_zero) = match (go_fields, go_field, prev_field) {
                (Some(g), Some(i), _) => (i, g[i].keep_zero),
                (_, _, Some(i)) => (i, prev.unwrap()[i].1),
                _ => (usize::MAX, required.contains(&json)),
            };
            let mut line = format!(" {} {} {} {}", f.tag, json, f.shape, f.kind);
            if let Some(m) = &f.message {
                line.push(' ');
                line.push_str(m);
                queue.push_back(m.clone());
            }
            if keep_zero && f.kind != "message" {
                line.push_str(" z");
            }
            lines.push((order, line));
        }
        if schema.is_none() && !is_list {
            problems.push(format!("{name}: no schema"));
        }
        let own_schema = schemas.contains_key(&name);
        for p in props.iter().filter(|_| own_schema) {
            if !covered.contains(p) && p != "apiVersion" && p != "kind" {
                problems.push(format!("{name}.{p}: no protobuf field"));
            }
        }
        lines.sort_by_key(|(order, _)| *order);
        messages.insert(name, lines.into_iter().map(|(_, l)| l).collect());
    }

    let mut table = String::from(
        "# Generated by crates/protobuf/tests/table.rs from k8s-pb 0.9.0 and k8s-openapi \
         (v1_32); do not edit.\n\
         # kind <apiVersion|*> <kind> <message>\n\
         # message <definition>, then its fields in JSON order:\n\
         #  <tag> <json name, - when inlined> <one|list|map> <kind> [<message>] [z: zero shows]\n",
    );
    for (av, kind, def) in &kinds {
        table.push_str(&format!("kind {av} {kind} {def}\n"));
    }
    for (name, lines) in &messages {
        table.push_str(&format!("message {name}\n"));
        for l in lines {
            table.push_str(l);
            table.push('\n');
        }
    }
    Generated {
        table,
        problems,
        dropped,
    }
}

#[test]
fn table_is_up_to_date() {
    let generated = generate();
    assert!(
        generated.problems.is_empty(),
        "unresolved fields:\n{}",
        generated.problems.join("\n")
    );
    if !generated.dropped.is_empty() {
        eprintln!(
            "fields newer than v1.32, left out:\n{}",
            generated.dropped.join("\n")
        );
    }
    if std::env::var_os("SKIFF_PROTOBUF_REGENERATE").is_some() {
        std::fs::write(TABLE, &generated.table).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(TABLE).unwrap_or_default();
    assert!(
        committed == generated.table,
        "src/table.txt is stale: run SKIFF_PROTOBUF_REGENERATE=1 cargo test -p skiff-protobuf \
         --test table"
    );
}

#[test]
fn every_served_kind_is_in_the_table() {
    let table = std::fs::read_to_string(TABLE).unwrap();
    for r in skiff_api::registry::RESOURCES {
        for kind in [r.kind.to_string(), format!("{}List", r.kind)] {
            let line = format!("kind {} {} ", r.api_version(), kind);
            assert!(table.contains(&line), "{line:?} missing");
        }
    }
}
