//! The REST verbs on persisted resources: get, list, create, update, patch, delete,
//! deletecollection, and the status, scale and binding subresources. Watch is in `watch`.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use skiff_api::registry::{self, ResourceInfo};
use skiff_api::schema::Schema;
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_store::{KeyValue, Revision};

use crate::error::{ApiError, ApiResult};
use crate::http_util::{bytes_response, json_response, Resp};
use crate::meta::{self, meta_mut, meta_str};
use crate::negotiate::{self, BodyType, Output};
use crate::reqinfo::{ResourceRequest, Verb};
use crate::{strategy, ApiServer, Ctx};

/// Upstream's request body limit (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// How many times a write retries after losing a compare-and-swap race.
const MAX_RETRIES: usize = 16;

/// Selectors of a list or watch.
pub struct Filter {
    /// `labelSelector`.
    pub labels: Option<LabelSelector>,
    /// `fieldSelector`.
    pub fields: Option<FieldSelector>,
}

impl Filter {
    /// Parses the selectors of a request.
    pub fn from_query(r: &ResourceInfo, q: &HashMap<String, String>) -> ApiResult<Filter> {
        let labels = match q.get("labelSelector").filter(|s| !s.is_empty()) {
            Some(s) => Some(LabelSelector::parse(s).map_err(ApiError::bad_request)?),
            None => None,
        };
        let fields = match q.get("fieldSelector").filter(|s| !s.is_empty()) {
            Some(s) => {
                let f = FieldSelector::parse(s).map_err(ApiError::bad_request)?;
                for req in f.requirements() {
                    skiff_api::selector::check_field_label(r.group, r.version, r.kind, &req.field)
                        .map_err(ApiError::bad_request)?;
                }
                Some(f)
            }
            None => None,
        };
        Ok(Filter { labels, fields })
    }

    /// Whether no selector is set.
    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    /// Whether an object (in storage form) passes.
    pub fn matches(&self, r: &ResourceInfo, obj: &Value) -> bool {
        if let Some(l) = &self.labels {
            let empty = serde_json::Map::new();
            let labels = obj["metadata"]["labels"].as_object().unwrap_or(&empty);
            if !l.matches(labels) {
                return false;
            }
        }
        if let Some(f) = &self.fields {
            let fields = skiff_api::selector::selectable_fields(r.group, r.kind, obj);
            if !f.matches(&fields) {
                return false;
            }
        }
        true
    }
}

/// Parses stored bytes into an object.
pub fn parse_stored(bytes: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("corrupt stored object: {e}")))
}

fn parse_stored_kv(kv: &KeyValue) -> ApiResult<Value> {
    let mut v = parse_stored(&kv.value)?;
    meta_mut(&mut v).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    Ok(v)
}

/// Decodes a request body as JSON or YAML (upstream's 400 on malformed input).
pub fn decode_body(body: &[u8], body_type: BodyType) -> ApiResult<Value> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    let v: Value = match body_type {
        BodyType::Protobuf => skiff_protobuf::decode(body).map_err(|e| {
            ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
        })?,
        BodyType::Yaml | BodyType::ApplyPatch => {
            // YAML is a superset of JSON; try JSON first for exact error positions.
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => serde_yaml::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("error converting YAML to JSON: yaml: {e}"))
                })?,
            }
        }
        _ => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
    };
    Ok(v)
}

/// The media type of a create or update body (upstream's 415 for anything else).
fn object_body_type(ctx: &Ctx<'_>) -> ApiResult<BodyType> {
    negotiate::body_type(ctx.content_type)
        .filter(|b| matches!(b, BodyType::Json | BodyType::Yaml | BodyType::Protobuf))
        .ok_or_else(|| {
            ApiError::unsupported_media_type(
                ctx.content_type.unwrap_or(""),
                &[
                    "application/json",
                    "application/yaml",
                    "application/vnd.kubernetes.protobuf",
                ],
            )
        })
}

/// Whether a request is a dry run (`dryRun=All`); other values are rejected as upstream does.
fn dry_run(q: &HashMap<String, String>) -> ApiResult<bool> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid dry run value: unsupported dry run value \"{other}\""
        ))),
    }
}

fn field_manager(ctx: &Ctx<'_>) -> String {
    match ctx.query.get("fieldManager").filter(|s| !s.is_empty()) {
        Some(m) => m.clone(),
        None => skiff_api::apply::default_manager(ctx.user_agent),
    }
}

fn list_kind(r: &ResourceInfo) -> String {
    format!("{}List", r.kind)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, start: &str) -> String {
    let t = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: start.into(),
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&t).expect("serializes"))
}

fn decode_continue(s: &str) -> ApiResult<ContinueToken> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(s))
        .map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if t.v != "meta.k8s.io/v1" || t.rv <= 0 {
        return Err(bad());
    }
    Ok(t)
}

impl ApiServer {
    /// Reads one object (storage form, with resourceVersion) from the store.
    pub(crate) async fn read(&self, key: &str) -> ApiResult<Option<(Value, KeyValue)>> {
        match self.store.get(key, 0).await? {
            Some(kv) => Ok(Some((parse_stored_kv(&kv)?, kv))),
            None => Ok(None),
        }
    }

    /// Converts a stored object to the version a request addresses.
    pub(crate) fn to_client(&self, r: &ResourceInfo, stored: Value) -> ApiResult<Value> {
        if r.storage_version {
            let mut v = stored;
            if v.get("apiVersion").is_none() || v.get("kind").is_none() {
                v["apiVersion"] = json!(r.api_version());
                v["kind"] = json!(r.kind);
            }
            return Ok(v);
        }
        skiff_api::convert::from_storage(r.group, r.version, r.kind, stored)
            .map_err(ApiError::internal)
    }

    /// Renders one object in the representation the client accepts.
    pub(crate) fn render_object(
        &self,
        r: &ResourceInfo,
        obj: Value,
        ctx: &Ctx<'_>,
        code: u16,
    ) -> ApiResult<Resp> {
        let out = negotiate::output(ctx.accept)
            .ok_or_else(|| ApiError::not_acceptable(ctx.accept.unwrap_or("")))?;
        Ok(match out {
            Output::Json => json_response(code, &obj),
            Output::Yaml => bytes_response(
                code,
                "application/yaml",
                serde_yaml::to_string(&obj).map_err(ApiError::internal)?,
            ),
            Output::Table => {
                let mut t = skiff_api::table::to_table(
                    r.group,
                    r.kind,
                    std::slice::from_ref(&obj),
                    include_object(ctx.query)?,
                    chrono::Utc::now(),
                );
                t["metadata"] =
                    json!({"resourceVersion": obj["metadata"]["resourceVersion"].clone()});
                json_response(code, &t)
            }
            Output::Metadata => json_response(code, &partial_metadata(&obj)),
            Output::Protobuf => protobuf_response(code, &obj),
        })
    }

    /// GET of one object (or of its status subresource).
    pub(crate) async fn get(&self, rr: &ResourceRequest, ctx: &Ctx<'_>) -> ApiResult<Resp> {
        let r = rr.resource;
        let name = rr.name.as_deref().unwrap_or_default();
        let key = r.key(rr.namespace.as_deref(), name);
        let (obj, _) = self
            .read(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(r, name))?;
        match rr.subresource.as_deref() {
            Some("scale") => {
                let scale = strategy::to_scale(r, &obj)?;
                return Ok(json_response(200, &scale));
            }
            None | Some("status") => {}
            Some(_) => return Err(ApiError::method_not_allowed()),
        }
        let obj = self.to_client(r, obj)?;
        self.render_object(r, obj, ctx, 200)
    }

    /// LIST.
    pub(crate) async fn list(&self, rr: &ResourceRequest, ctx: &Ctx<'_>) -> ApiResult<Resp> {
        let r = rr.resource;
        let q = ctx.query;
        let filter = Filter::from_query(r, q)?;
        let out = negotiate::output(ctx.accept)
            .ok_or_else(|| ApiError::not_acceptable(ctx.accept.unwrap_or("")))?;
        let prefix = match &rr.namespace {
            Some(ns) => r.namespace_prefix(ns),
            None => r.key_prefix(),
        };
        let limit: usize = match q.get("limit").filter(|s| !s.is_empty()) {
            Some(l) => l
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?
                .max(0) as usize,
            None => 0,
        };
        let rv = q.get("resourceVersion").filter(|s| !s.is_empty()).cloned();
        let rv_match = q
            .get("resourceVersionMatch")
            .filter(|s| !s.is_empty())
            .cloned();
        let cont = q.get("continue").filter(|s| !s.is_empty()).cloned();
        if cont.is_some() && rv.is_some() {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        let rv_num: Option<Revision> = match &rv {
            Some(s) => Some(
                s.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
            ),
            None => None,
        };
        if let Some(m) = &rv_match {
            if m != "NotOlderThan" && m != "Exact" {
                return Err(ApiError::bad_request(format!("resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\"")));
            }
            if rv.is_none() {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if m == "Exact" && rv_num == Some(0) {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }

        // Pick the source: the store at a revision (exact and paginated reads) or the cache.
        let store_read: Option<(Revision, String)> = if let Some(c) = &cont {
            let t = decode_continue(c)?;
            Some((t.rv, format!("{prefix}{}", t.start)))
        } else if rv_match.as_deref() == Some("Exact") {
            Some((rv_num.unwrap_or(0), prefix.clone()))
        } else if rv.is_none() && limit > 0 {
            Some((self.store.current_revision().await?, prefix.clone()))
        } else {
            None
        };

        let (revision, objects, next): (Revision, Vec<Value>, Option<String>) = match store_read {
            Some((at, start)) => {
                let mut items = Vec::new();
                let mut start = start;
                let mut next = None;
                let at = if at == 0 {
                    self.store.current_revision().await?
                } else {
                    at
                };
                loop {
                    let want = if limit == 0 { 0 } else { limit - items.len() };
                    let page = match self.store.list(&prefix, &start, want, at).await {
                        Err(skiff_store::Error::Compacted { .. }) if cont.is_some() => {
                            return Err(ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."));
                        }
                        other => other?,
                    };
                    let mut last_key = None;
                    for kv in &page.kvs {
                        last_key = Some(kv.key.clone());
                        let v = parse_stored_kv(kv)?;
                        if filter.matches(r, &v) {
                            items.push(v);
                        }
                    }
                    let Some(last) = last_key else { break };
                    start = format!("{last}\0");
                    if !page.more {
                        break;
                    }
                    if limit > 0 && items.len() >= limit {
                        next = Some(encode_continue(at, &start[prefix.len()..]));
                        break;
                    }
                }
                (at, items, next)
            }
            None => {
                match rv_num {
                    None => {
                        let cur = self.store.current_revision().await?;
                        self.cache.wait_for(cur, Duration::from_secs(3)).await?;
                    }
                    Some(0) => {}
                    Some(n) => self.cache.wait_for(n, Duration::from_secs(3)).await?,
                }
                let (rev, cached) = self.cache.list(&prefix);
                // Fast path: plain JSON of a stored version with no selector needs no parsing.
                if out == Output::Json && filter.is_empty() && r.storage_version {
                    return Ok(raw_list_response(r, rev, &cached));
                }
                let mut items = Vec::with_capacity(cached.len());
                for c in &cached {
                    let v = parse_stored(&c.bytes)?;
                    if filter.matches(r, &v) {
                        items.push(v);
                    }
                }
                (rev, items, None)
            }
        };

        let mut items = Vec::with_capacity(objects.len());
        for o in objects {
            items.push(self.to_client(r, o)?);
        }
        let mut list_meta = json!({"resourceVersion": revision.to_string()});
        if let Some(n) = &next {
            list_meta["continue"] = json!(n);
        }
        Ok(match out {
            Output::Table => {
                let mut t = skiff_api::table::to_table(
                    r.group,
                    r.kind,
                    &items,
                    include_object(q)?,
                    chrono::Utc::now(),
                );
                t["metadata"] = list_meta;
                json_response(200, &t)
            }
            Output::Metadata => {
                let l = json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": list_meta,
                    "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
                });
                json_response(200, &l)
            }
            Output::Json | Output::Yaml | Output::Protobuf => {
                let l = json!({
                    "kind": list_kind(r),
                    "apiVersion": r.api_version(),
                    "metadata": list_meta,
                    "items": items,
                });
                if out == Output::Protobuf {
                    protobuf_response(200, &l)
                } else if out == Output::Yaml {
                    bytes_response(
                        200,
                        "application/yaml",
                        serde_yaml::to_string(&l).map_err(ApiError::internal)?,
                    )
                } else {
                    json_response(200, &l)
                }
            }
        })
    }

    /// POST: create an object, or a subresource (binding).
    pub(crate) async fn create(
        &self,
        rr: &ResourceRequest,
        ctx: &Ctx<'_>,
        body: &Bytes,
    ) -> ApiResult<Resp> {
        let r = rr.resource;
        let bt = object_body_type(ctx)?;
        let obj = decode_body(body, bt)?;
        if rr.subresource.as_deref() == Some("binding") {
            return self.bind(rr, obj).await;
        }
        if rr.subresource.as_deref() == Some("token") {
            return self.create_token(rr, ctx, obj).await;
        }
        if rr.subresource.is_some() {
            return Err(ApiError::method_not_allowed());
        }
        let mut obj = check_body_type(r, obj)?;
        let warnings = self.field_validation(r, &obj, ctx)?;
        if let Some(ns) = &rr.namespace {
            set_namespace(&mut obj, ns)?;
        }
        let created = self
            .create_object(r, obj, &field_manager(ctx), dry_run(ctx.query)?)
            .await?;
        let out = self.to_client(r, created)?;
        let mut resp = self.render_object(r, out, ctx, 201)?;
        add_warnings(&mut resp, &warnings);
        Ok(resp)
    }

    /// Creates an object given in the version `r` addresses; returns it in storage form.
    pub(crate) async fn create_object(
        &self,
        r: &ResourceInfo,
        obj: Value,
        manager: &str,
        dry_run: bool,
    ) -> ApiResult<Value> {
        self.create_object_tracked(r, obj, manager, dry_run, true)
            .await
    }

    /// Creates an object; `track` records the creator in `managedFields` (false when server-side
    /// apply has already done so).
    pub(crate) async fn create_object_tracked(
        &self,
        r: &ResourceInfo,
        mut obj: Value,
        manager: &str,
        dry_run: bool,
        track: bool,
    ) -> ApiResult<Value> {
        let namespace = meta_str(&obj, "namespace").map(str::to_string);
        if r.namespaced && namespace.is_none() {
            return Err(ApiError::bad_request(
                "the server could not find the requested resource",
            ));
        }
        if !r.namespaced {
            meta_mut(&mut obj).remove("namespace");
        }
        let explicit_name = meta_str(&obj, "name").filter(|n| !n.is_empty()).is_some();
        if !explicit_name {
            match meta_str(&obj, "generateName").filter(|n| !n.is_empty()) {
                Some(prefix) => {
                    let n = meta::generate_name(prefix);
                    meta_mut(&mut obj).insert("name".into(), json!(n));
                }
                None => {
                    return Err(ApiError::invalid(
                        r.kind,
                        r.group,
                        "",
                        &[skiff_api::Cause {
                            reason: "FieldValueRequired",
                            field: "metadata.name".into(),
                            message: "Required value: name or generateName is required".into(),
                        }],
                    ));
                }
            }
        }
        let stored_r = registry::storage_of(r);
        meta::strip_nulls(&mut obj);
        let mut obj = if r.storage_version {
            obj
        } else {
            skiff_api::convert::to_storage(r.group, r.version, r.kind, obj)
                .map_err(ApiError::bad_request)?
        };
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        strategy::check_path_name(r, &name)?;
        skiff_api::defaults::apply(stored_r.group, stored_r.version, stored_r.kind, &mut obj);
        meta::prepare_create(stored_r, &mut obj);
        if stored_r.kind == "Job" {
            let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
            skiff_api::defaults::job_selector(&mut obj, &uid);
        }
        self.admit_create(stored_r, &mut obj).await?;
        let causes = skiff_api::validation::validate_create(
            stored_r.group,
            stored_r.version,
            stored_r.kind,
            &obj,
        );
        if !causes.is_empty() {
            return Err(ApiError::invalid(r.kind, r.group, &name, &causes));
        }
        if let Some(ns) = &namespace {
            if r.namespaced {
                self.check_namespace_open(ns).await?;
            }
        }
        let key = r.key(namespace.as_deref(), &name);
        if stored_r.kind == "Service" {
            if let Err(causes) = self.alloc.allocate(&key, &mut obj) {
                return Err(ApiError::invalid(r.kind, r.group, &name, &causes));
            }
        }
        if track {
            strategy::track_managed_fields(None, &mut obj, manager, &r.api_version(), None);
        }
        if dry_run {
            if stored_r.kind == "Service" {
                self.release_service(&key).await;
            }
            return Ok(obj);
        }
        match self
            .store
            .create(&key, Bytes::from(meta::for_storage(&obj)))
            .await
        {
            Ok(kv) => {
                meta_mut(&mut obj)
                    .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                Ok(obj)
            }
            Err(e) => {
                if stored_r.kind == "Service" {
                    self.release_service(&key).await;
                }
                match e {
                    skiff_store::Error::AlreadyExists(_) => Err(ApiError::already_exists(r, &name)),
                    other => Err(other.into()),
                }
            }
        }
    }

    async fn release_service(&self, key: &str) {
        // Keep whatever the stored object (if any) holds; free the rest.
        let current = self.read(key).await.ok().flatten().map(|(v, _)| v);
        self.alloc.release_unused(key, current.as_ref());
    }

    async fn check_namespace_open(&self, ns: &str) -> ApiResult<()> {
        let nsr = registry::find("", "v1", "namespaces").expect("namespaces are served");
        // From the watch cache, as upstream's NamespaceLifecycle reads its informer: a create
        // costs no store read.
        match self.cached_or_read(&nsr.key(None, ns)).await? {
            None => Err(ApiError::not_found(nsr, ns)),
            Some(v) => {
                if v["status"]["phase"] == "Terminating"
                    || v["metadata"].get("deletionTimestamp").is_some()
                {
                    let mut e = ApiError::forbidden(format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    ));
                    e.details = Some(
                        json!({"causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}),
                    );
                    Err(e)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Admission that upstream runs by default and that needs the store (pod priority).
    async fn admit_create(&self, r: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
        if r.kind != "Pod" {
            return Ok(());
        }
        strategy::admit_pod(obj, self.opts.default_toleration_seconds);
        self.admit_pod_service_account(obj).await?;
        if let Some(pc) = obj["spec"]["priorityClassName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
        {
            let pcr = registry::find("scheduling.k8s.io", "v1", "priorityclasses").expect("served");
            match self.cached_or_read(&pcr.key(None, &pc)).await? {
                Some(class) => {
                    obj["spec"]["priority"] = class["value"].clone();
                    if obj["spec"].get("preemptionPolicy").is_none() {
                        obj["spec"]["preemptionPolicy"] = class
                            .get("preemptionPolicy")
                            .cloned()
                            .unwrap_or(json!("PreemptLowerPriority"));
                    }
                }
                None => {
                    return Err(ApiError::forbidden(format!(
                        "pods \"{}\" is forbidden: no PriorityClass with name {pc} was found",
                        meta_str(obj, "name").unwrap_or_default()
                    )))
                }
            }
        } else if obj["spec"].get("priority").is_none() {
            obj["spec"]["priority"] = json!(0);
        }
        Ok(())
    }

    /// `fieldValidation`: unknown fields fail (Strict), warn (Warn, the default) or pass (Ignore).
    fn field_validation(
        &self,
        r: &ResourceInfo,
        obj: &Value,
        ctx: &Ctx<'_>,
    ) -> ApiResult<Vec<String>> {
        let mode = ctx
            .query
            .get("fieldValidation")
            .map(String::as_str)
            .unwrap_or("Warn");
        if !matches!(mode, "Strict" | "Warn" | "Ignore") {
            return Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{mode}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            )));
        }
        if mode == "Ignore" {
            return Ok(Vec::new());
        }
        let unknown = skiff_openapi::unknown_fields(&r.api_version(), r.kind, obj);
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let msgs: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        if mode == "Strict" {
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                msgs.join(", ")
            )));
        }
        Ok(msgs)
    }

    /// PUT.
    pub(crate) async fn update(
        &self,
        rr: &ResourceRequest,
        ctx: &Ctx<'_>,
        body: &Bytes,
    ) -> ApiResult<Resp> {
        let r = rr.resource;
        let bt = object_body_type(ctx)?;
        let name = rr.name.clone().unwrap_or_default();
        let body_obj = decode_body(body, bt)?;
        let sub = rr.subresource.as_deref();
        if sub == Some("scale") {
            let replicas = body_obj["spec"]["replicas"].as_i64().unwrap_or(0);
            let rv = meta_str(&body_obj, "resourceVersion").map(str::to_string);
            return self.scale(rr, ctx, replicas, rv).await;
        }
        let mut body_obj = check_body_type(r, body_obj)?;
        let warnings = self.field_validation(r, &body_obj, ctx)?;
        if let Some(n) = meta_str(&body_obj, "name") {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        } else {
            meta_mut(&mut body_obj).insert("name".into(), json!(name));
        }
        if let Some(ns) = &rr.namespace {
            set_namespace(&mut body_obj, ns)?;
        }
        let client_rv = meta_str(&body_obj, "resourceVersion")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let manager = field_manager(ctx);
        let dry = dry_run(ctx.query)?;
        let new_in = if r.storage_version {
            body_obj
        } else {
            skiff_api::convert::to_storage(r.group, r.version, r.kind, body_obj)
                .map_err(ApiError::bad_request)?
        };
        let (obj, created) = self
            .guaranteed_update(
                rr,
                &manager,
                dry,
                |cur| {
                    if let Some(rv) = &client_rv {
                        if meta_str(cur, "resourceVersion") != Some(rv.as_str()) {
                            return Err(ApiError::conflict(r, &name));
                        }
                    }
                    Ok(Some(new_in.clone()))
                },
                || {
                    if meta::CREATE_ON_UPDATE_KINDS.contains(&r.kind) && rr.subresource.is_none() {
                        Some((new_in.clone(), true))
                    } else {
                        None
                    }
                },
            )
            .await?;
        let out = self.to_client(r, obj)?;
        let mut resp = self.render_object(r, out, ctx, if created { 201 } else { 200 })?;
        add_warnings(&mut resp, &warnings);
        Ok(resp)
    }

    /// The read-modify-write loop of update and patch: `f` computes the new object (storage form)
    /// from the current one, or `None` if the object is missing; `create` gives the object to
    /// create when it is missing (or `None` for 404). Retries lost compare-and-swap races.
    pub(crate) async fn guaranteed_update<F, C>(
        &self,
        rr: &ResourceRequest,
        manager: &str,
        dry: bool,
        mut f: F,
        create: C,
    ) -> ApiResult<(Value, bool)>
    where
        F: FnMut(&Value) -> ApiResult<Option<Value>>,
        C: Fn() -> Option<(Value, bool)>,
    {
        let r = registry::storage_of(rr.resource);
        let name = rr.name.clone().unwrap_or_default();
        let key = r.key(rr.namespace.as_deref(), &name);
        let sub = rr.subresource.as_deref();
        // The first attempt starts from the watch cache's copy, as upstream's GuaranteedUpdate
        // starts from its cached object: the compare-and-swap on its revision catches a stale
        // copy. Anything else decided on a cached copy (an error, a no-op, a dry run, absence)
        // is decided again on a fresh read.
        let mut cached = (!dry)
            .then(|| self.cache.get(&key))
            .flatten()
            .and_then(|o| Some((serde_json::from_slice::<Value>(&o.bytes).ok()?, o.revision)));
        for _ in 0..MAX_RETRIES {
            let from_cache = cached.is_some();
            let current = match cached.take() {
                Some(c) => Some(c),
                None => self.read(&key).await?.map(|(v, kv)| (v, kv.mod_revision)),
            };
            let Some((old, mod_revision)) = current else {
                return match create() {
                    Some((obj, track)) => {
                        let obj = if rr.resource.storage_version {
                            obj
                        } else {
                            self.to_client(rr.resource, obj)?
                        };
                        match self
                            .create_object_tracked(rr.resource, obj, manager, dry, track)
                            .await
                        {
                            Err(e) if e.reason == "AlreadyExists" => continue,
                            other => other.map(|o| (o, true)),
                        }
                    }
                    None => Err(ApiError::not_found(rr.resource, &name)),
                };
            };
            let mut new = match f(&old) {
                Ok(Some(n)) => n,
                _ if from_cache => continue,
                Ok(None) => return Err(ApiError::not_found(rr.resource, &name)),
                Err(e) => return Err(e),
            };
            meta::strip_nulls(&mut new);
            // Binding is a server-internal write of spec.nodeName (upstream's assignPod): it
            // skips the user-facing update rules, which forbid changing the node.
            let internal = sub == Some("binding");
            let finalize = sub == Some("finalize");
            if !internal && !finalize && sub != Some("status") {
                if r.kind == "Service" {
                    strategy::carry_service_allocations(&mut new, &old);
                }
                skiff_api::defaults::apply(r.group, r.version, r.kind, &mut new);
            }
            if !internal {
                meta::prepare_update(r, &mut new, &old, sub);
            }
            let causes = if internal {
                Vec::new()
            } else if sub == Some("status") {
                skiff_api::validation::validate_status_update(
                    r.group, r.version, r.kind, &new, &old,
                )
            } else {
                skiff_api::validation::validate_update(r.group, r.version, r.kind, &new, &old)
            };
            if !causes.is_empty() {
                if from_cache {
                    continue;
                }
                return Err(ApiError::invalid(
                    rr.resource.kind,
                    rr.resource.group,
                    &name,
                    &causes,
                ));
            }
            if r.kind == "Service" && sub.is_none() {
                if let Err(causes) = self.alloc.allocate(&key, &mut new) {
                    return Err(ApiError::invalid(r.kind, r.group, &name, &causes));
                }
            }
            // Upstream writes a binding straight to storage, past the field manager: a
            // scheduled pod gets no managedFields entry for it.
            if !internal {
                strategy::track_managed_fields(
                    Some(&old),
                    &mut new,
                    manager,
                    &rr.resource.api_version(),
                    sub,
                );
            }
            if strategy::same_object(&old, &new) {
                if from_cache {
                    continue;
                }
                return Ok((old, false));
            }
            if dry {
                return Ok((new, false));
            }
            // An object being deleted goes once its last finalizer is removed.
            let finalized = new["metadata"].get("deletionTimestamp").is_some()
                && new["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(|a| a.is_empty())
                && !(r.kind == "Namespace"
                    && new["spec"]["finalizers"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty()))
                && new["metadata"]["deletionGracePeriodSeconds"]
                    .as_i64()
                    .unwrap_or(0)
                    == 0;
            let res = if finalized {
                self.store.delete(&key, mod_revision).await.map(|mut d| {
                    d.value = Bytes::from(meta::for_storage(&new));
                    d
                })
            } else {
                self.store
                    .update(&key, Bytes::from(meta::for_storage(&new)), mod_revision)
                    .await
            };
            match res {
                Ok(kv) => {
                    if r.kind == "Service" {
                        self.alloc
                            .release_unused(&key, if finalized { None } else { Some(&new) });
                    }
                    meta_mut(&mut new)
                        .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                    return Ok((new, false));
                }
                Err(skiff_store::Error::Conflict { .. }) | Err(skiff_store::Error::NotFound(_)) => {
                    continue
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(rr.resource, &name))
    }

    /// PATCH.
    pub(crate) async fn patch(
        &self,
        rr: &ResourceRequest,
        ctx: &Ctx<'_>,
        body: &Bytes,
    ) -> ApiResult<Resp> {
        let r = rr.resource;
        let accepted = [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ];
        let bt = negotiate::body_type(ctx.content_type)
            .filter(|b| !matches!(b, BodyType::Json | BodyType::Yaml | BodyType::Protobuf))
            .ok_or_else(|| {
                ApiError::unsupported_media_type(ctx.content_type.unwrap_or(""), &accepted)
            })?;
        let patch = decode_body(body, bt)?;
        let name = rr.name.clone().unwrap_or_default();
        let dry = dry_run(ctx.query)?;
        let force = ctx.query.get("force").is_some_and(|v| v == "true");
        let manager = match bt {
            BodyType::ApplyPatch => match ctx.query.get("fieldManager").filter(|s| !s.is_empty()) {
                Some(m) => m.clone(),
                None => {
                    return Err(ApiError::invalid(
                        "PatchOptions",
                        "meta.k8s.io",
                        "",
                        &[skiff_api::Cause {
                            reason: "FieldValueRequired",
                            field: "fieldManager".into(),
                            message: "Required value: is required for apply patch".into(),
                        }],
                    ))
                }
            },
            _ => field_manager(ctx),
        };
        if force && bt != BodyType::ApplyPatch {
            return Err(ApiError::bad_request(
                "force: Invalid value: true: may not be specified for non-apply patch",
            ));
        }
        if rr.subresource.as_deref() == Some("scale") {
            let key = r.key(rr.namespace.as_deref(), &name);
            let (obj, _) = self
                .read(&key)
                .await?
                .ok_or_else(|| ApiError::not_found(r, &name))?;
            let scale = strategy::to_scale(r, &obj)?;
            let patched = apply_patch(bt, &scale, &patch, "io.k8s.api.autoscaling.v1.Scale")?;
            let replicas = patched["spec"]["replicas"].as_i64().unwrap_or(0);
            let rv = meta_str(&patched, "resourceVersion")
                .filter(|rv| Some(*rv) != meta_str(&scale, "resourceVersion"))
                .map(str::to_string);
            return self.scale(rr, ctx, replicas, rv).await;
        }
        let mut warnings = Vec::new();
        if bt == BodyType::ApplyPatch {
            let applied = check_body_type(r, patch.clone())?;
            warnings = self.field_validation(r, &applied, ctx)?;
            if let Some(n) = meta_str(&applied, "name") {
                if n != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
            }
        }
        let type_name = skiff_openapi::schema()
            .root(&r.api_version(), r.kind)
            .unwrap_or_default();
        let api_version = r.api_version();
        let now = meta::now_rfc3339();
        let ns = rr.namespace.clone();
        let sub = rr.subresource.clone();
        let (obj, created) = self
            .guaranteed_update(rr, &manager, dry, |current| {
                let client = self.to_client(r, current.clone())?;
                let patched = if bt == BodyType::ApplyPatch {
                    skiff_api::apply::apply(Some(&client), &patch, &manager, force, &api_version, skiff_openapi::schema(), &now)
                        .map_err(|e| strategy::apply_error(r, &name, e))?
                } else {
                    apply_patch(bt, &client, &patch, &type_name)?
                };
                let mut patched = check_body_type(r, patched)?;
                if meta_str(&patched, "name") != Some(name.as_str()) {
                    return Err(ApiError::bad_request("metadata.name: Invalid value: the name of the object does not match the name on the URL"));
                }
                if let Some(ns) = &ns {
                    set_namespace(&mut patched, ns)?;
                }
                if let Some(rv) = meta_str(&patched, "resourceVersion") {
                    if Some(rv) != meta_str(current, "resourceVersion") {
                        return Err(ApiError::conflict(r, &name));
                    }
                }
                let _ = &sub;
                let stored = if r.storage_version {
                    patched
                } else {
                    skiff_api::convert::to_storage(r.group, r.version, r.kind, patched).map_err(ApiError::bad_request)?
                };
                Ok(Some(stored))
            }, || {
                if bt != BodyType::ApplyPatch || rr.subresource.is_some() {
                    return None;
                }
                let mut obj = skiff_api::apply::apply(None, &patch, &manager, force, &api_version, skiff_openapi::schema(), &now).ok()?;
                if let Some(ns) = &rr.namespace {
                    meta_mut(&mut obj).insert("namespace".into(), json!(ns));
                }
                Some((obj, false))
            })
            .await?;
        let out = self.to_client(r, obj)?;
        let mut resp = self.render_object(r, out, ctx, if created { 201 } else { 200 })?;
        add_warnings(&mut resp, &warnings);
        Ok(resp)
    }

    /// Writes `spec.replicas` through the scale subresource.
    async fn scale(
        &self,
        rr: &ResourceRequest,
        ctx: &Ctx<'_>,
        replicas: i64,
        rv: Option<String>,
    ) -> ApiResult<Resp> {
        let r = rr.resource;
        let name = rr.name.clone().unwrap_or_default();
        let main = ResourceRequest {
            subresource: None,
            ..rr.clone()
        };
        let (obj, _) = self
            .guaranteed_update(
                &main,
                &field_manager(ctx),
                dry_run(ctx.query)?,
                |cur| {
                    if let Some(rv) = &rv {
                        if meta_str(cur, "resourceVersion") != Some(rv.as_str()) {
                            return Err(ApiError::conflict(r, &name));
                        }
                    }
                    let mut n = cur.clone();
                    n["spec"]["replicas"] = json!(replicas);
                    Ok(Some(n))
                },
                || None,
            )
            .await?;
        Ok(json_response(200, &strategy::to_scale(r, &obj)?))
    }

    /// POST pods/<name>/binding: assigns the pod to a node.
    async fn bind(&self, rr: &ResourceRequest, binding: Value) -> ApiResult<Resp> {
        let r = rr.resource;
        let name = rr.name.clone().unwrap_or_default();
        let node = binding["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                "Binding",
                "",
                &name,
                &[skiff_api::Cause {
                    reason: "FieldValueRequired",
                    field: "target.name".into(),
                    message: "Required value".into(),
                }],
            ));
        }
        let main = ResourceRequest {
            subresource: Some("binding".into()),
            ..rr.clone()
        };
        self.guaranteed_update(
            &main,
            "kube-scheduler",
            false,
            |cur| {
                if cur["metadata"].get("deletionTimestamp").is_some() {
                    return Err(ApiError::conflict_msg(
                        r,
                        &name,
                        &format!("pod {name} is being deleted, cannot be assigned to a host"),
                    ));
                }
                if let Some(n) = cur["spec"]["nodeName"].as_str().filter(|s| !s.is_empty()) {
                    return Err(ApiError::conflict_msg(
                        r,
                        &name,
                        &format!("pod {name} is already assigned to node \"{n}\""),
                    ));
                }
                let mut n = cur.clone();
                n["spec"]["nodeName"] = json!(node);
                strategy::set_pod_condition(&mut n, "PodScheduled", "True", None);
                Ok(Some(n))
            },
            || None,
        )
        .await?;
        Ok(json_response(
            201,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }

    /// DELETE of one object.
    pub(crate) async fn delete(
        &self,
        rr: &ResourceRequest,
        ctx: &Ctx<'_>,
        body: &Bytes,
    ) -> ApiResult<Resp> {
        let r = rr.resource;
        let opts = delete_options(ctx, body)?;
        let name = rr.name.clone().unwrap_or_default();
        let (obj, gone) = self
            .delete_object(
                r,
                rr.namespace.as_deref(),
                &name,
                &opts,
                dry_run(ctx.query)?,
            )
            .await?;
        if gone && !meta::RETURNS_DELETED_OBJECT.contains(&r.kind) {
            let mut details =
                json!({"name": name, "kind": r.plural, "uid": obj["metadata"]["uid"].clone()});
            if !r.group.is_empty() {
                details["group"] = json!(r.group);
            }
            return Ok(json_response(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            ));
        }
        let out = self.to_client(r, obj)?;
        self.render_object(r, out, ctx, if gone { 200 } else { 202 }.min(200))
    }

    /// Deletes (or starts the graceful deletion of) one object; returns it and whether it is gone.
    pub(crate) async fn delete_object(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
        dry: bool,
    ) -> ApiResult<(Value, bool)> {
        let key = r.key(ns, name);
        for _ in 0..MAX_RETRIES {
            let (cur, kv) = self
                .read(&key)
                .await?
                .ok_or_else(|| ApiError::not_found(r, name))?;
            if let Some(uid) = &opts.uid {
                let have = meta_str(&cur, "uid").unwrap_or_default();
                if have != uid {
                    return Err(ApiError::conflict_msg(r, name, &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}")));
                }
            }
            if let Some(rv) = &opts.resource_version {
                let have = meta_str(&cur, "resourceVersion").unwrap_or_default();
                if have != rv {
                    return Err(ApiError::conflict_msg(r, name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}")));
                }
            }
            let mut next = cur.clone();
            let graceful = strategy::graceful_deletion(r, &mut next, opts);
            let pending = graceful || strategy::pending_finalizers(r, &mut next, opts);
            if dry {
                return Ok((if pending { next } else { cur }, !pending));
            }
            if pending {
                if strategy::same_object(&cur, &next) {
                    return Ok((cur, false));
                }
                match self
                    .store
                    .update(&key, Bytes::from(meta::for_storage(&next)), kv.mod_revision)
                    .await
                {
                    Ok(kv) => {
                        meta_mut(&mut next)
                            .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                        return Ok((next, false));
                    }
                    Err(skiff_store::Error::Conflict { .. })
                    | Err(skiff_store::Error::NotFound(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            match self.store.delete(&key, kv.mod_revision).await {
                Ok(_) => {
                    if r.kind == "Service" {
                        self.alloc.release_unused(&key, None);
                    }
                    return Ok((cur, true));
                }
                Err(skiff_store::Error::Conflict { .. }) => continue,
                Err(skiff_store::Error::NotFound(_)) => return Err(ApiError::not_found(r, name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(r, name))
    }

    /// DELETE of a collection: deletes every object that matches the selectors.
    pub(crate) async fn delete_collection(
        &self,
        rr: &ResourceRequest,
        ctx: &Ctx<'_>,
        body: &Bytes,
    ) -> ApiResult<Resp> {
        let r = rr.resource;
        let opts = delete_options(ctx, body)?;
        let filter = Filter::from_query(r, ctx.query)?;
        let prefix = match &rr.namespace {
            Some(ns) => r.namespace_prefix(ns),
            None => r.key_prefix(),
        };
        let dry = dry_run(ctx.query)?;
        let page = self.store.list(&prefix, "", 0, 0).await?;
        let mut items = Vec::new();
        for kv in &page.kvs {
            let v = parse_stored_kv(kv)?;
            if !filter.matches(r, &v) {
                continue;
            }
            let ns = meta_str(&v, "namespace").map(str::to_string);
            let name = meta_str(&v, "name").unwrap_or_default().to_string();
            match self
                .delete_object(r, ns.as_deref(), &name, &opts, dry)
                .await
            {
                Ok((o, _)) => items.push(self.to_client(r, o)?),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let l = json!({
            "kind": list_kind(r),
            "apiVersion": r.api_version(),
            "metadata": {"resourceVersion": page.revision.to_string()},
            "items": items,
        });
        Ok(json_response(200, &l))
    }

    /// Dispatches a resource request.
    pub(crate) async fn resource(
        &self,
        rr: &ResourceRequest,
        ctx: &Ctx<'_>,
        body: &Bytes,
    ) -> ApiResult<Resp> {
        match rr.verb {
            Verb::Get => self.get(rr, ctx).await,
            Verb::List => self.list(rr, ctx).await,
            Verb::Watch => self.watch(rr, ctx).await,
            Verb::Create => self.create(rr, ctx, body).await,
            Verb::Update => {
                if rr.subresource.as_deref() == Some("finalize") {
                    return self.finalize_namespace(rr, ctx, body).await;
                }
                self.update(rr, ctx, body).await
            }
            Verb::Patch => self.patch(rr, ctx, body).await,
            Verb::Delete => self.delete(rr, ctx, body).await,
            Verb::DeleteCollection => self.delete_collection(rr, ctx, body).await,
        }
    }

    /// PUT namespaces/<name>/finalize: replaces `spec.finalizers`.
    async fn finalize_namespace(
        &self,
        rr: &ResourceRequest,
        ctx: &Ctx<'_>,
        body: &Bytes,
    ) -> ApiResult<Resp> {
        let r = rr.resource;
        let body_obj = decode_body(body, BodyType::Json)?;
        let finalizers = body_obj["spec"]["finalizers"].clone();
        let main = ResourceRequest {
            subresource: Some("finalize".into()),
            ..rr.clone()
        };
        let (obj, _) = self
            .guaranteed_update(
                &main,
                &field_manager(ctx),
                dry_run(ctx.query)?,
                |cur| {
                    let mut n = cur.clone();
                    n["spec"]["finalizers"] = if finalizers.is_null() {
                        json!([])
                    } else {
                        finalizers.clone()
                    };
                    Ok(Some(n))
                },
                || None,
            )
            .await?;
        let out = self.to_client(r, obj)?;
        self.render_object(r, out, ctx, 200)
    }
}

/// Options of a delete.
#[derive(Default, Debug, Clone)]
pub struct DeleteOpts {
    /// `gracePeriodSeconds`.
    pub grace_period: Option<i64>,
    /// `propagationPolicy`.
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

fn delete_options(ctx: &Ctx<'_>, body: &Bytes) -> ApiResult<DeleteOpts> {
    let q = ctx.query;
    let mut o = DeleteOpts::default();
    if !body.is_empty() {
        let bt = match negotiate::body_type(ctx.content_type) {
            Some(BodyType::Protobuf) => BodyType::Protobuf,
            _ => BodyType::Json,
        };
        let b = decode_body(body, bt)?;
        o.grace_period = b["gracePeriodSeconds"].as_i64();
        o.propagation = b["propagationPolicy"].as_str().map(str::to_string);
        o.uid = b["preconditions"]["uid"].as_str().map(str::to_string);
        o.resource_version = b["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        if b.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            && o.propagation.is_none()
        {
            o.propagation = Some("Orphan".into());
        }
    }
    if let Some(g) = q.get("gracePeriodSeconds").filter(|s| !s.is_empty()) {
        o.grace_period = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?,
        );
    }
    if let Some(p) = q.get("propagationPolicy").filter(|s| !s.is_empty()) {
        o.propagation = Some(p.clone());
    }
    if let Some(p) = &o.propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::invalid("DeleteOptions", "meta.k8s.io", "", &[skiff_api::Cause {
                reason: "FieldValueNotSupported",
                field: "propagationPolicy".into(),
                message: format!("Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""),
            }]));
        }
    }
    Ok(o)
}

fn include_object(q: &HashMap<String, String>) -> ApiResult<skiff_api::table::IncludeObject> {
    use skiff_api::table::IncludeObject;
    Ok(match q.get("includeObject").map(String::as_str) {
        None | Some("") | Some("Metadata") => IncludeObject::Metadata,
        Some("Object") => IncludeObject::Object,
        Some("None") => IncludeObject::None,
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "includeObject: Unsupported value: \"{o}\""
            )))
        }
    })
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"].clone(),
    })
}

fn raw_list_response(
    r: &ResourceInfo,
    revision: Revision,
    items: &[crate::cache::CachedObject],
) -> Resp {
    let head = format!(
        "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{}\"}},\"items\":[",
        list_kind(r),
        r.api_version(),
        revision
    );
    let size = head.len() + items.iter().map(|i| i.bytes.len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(head.as_bytes());
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&it.bytes);
    }
    out.extend_from_slice(b"]}");
    bytes_response(200, "application/json", out)
}

/// Checks `apiVersion`/`kind` of a body against the addressed resource (upstream's 400s), and
/// fills them in when absent.
fn check_body_type(r: &ResourceInfo, mut obj: Value) -> ApiResult<Value> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: expected an object",
            r.kind
        )));
    }
    let av = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !kind.is_empty() && kind != r.kind {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): no kind \"{}\" is registered for version \"{}\"",
            r.kind, kind, av
        )));
    }
    if !av.is_empty() && av != r.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            r.api_version()
        )));
    }
    obj["apiVersion"] = json!(r.api_version());
    obj["kind"] = json!(r.kind);
    Ok(obj)
}

fn set_namespace(obj: &mut Value, ns: &str) -> ApiResult<()> {
    match meta_str(obj, "namespace") {
        Some(n) if !n.is_empty() && n != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta_mut(obj).insert("namespace".into(), json!(ns));
            Ok(())
        }
    }
}

fn apply_patch(bt: BodyType, doc: &Value, patch: &Value, type_name: &str) -> ApiResult<Value> {
    let res = match bt {
        BodyType::JsonPatch => skiff_api::patch::apply_json_patch(doc, patch),
        BodyType::MergePatch => skiff_api::patch::apply_merge_patch(doc, patch),
        BodyType::StrategicMergePatch => skiff_api::patch::apply_strategic_merge_patch(
            doc,
            patch,
            skiff_openapi::schema(),
            type_name,
        ),
        _ => return Err(ApiError::bad_request("unsupported patch type")),
    };
    res.map_err(strategy::patch_error)
}

fn add_warnings(resp: &mut Resp, warnings: &[String]) {
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(h) = http::HeaderValue::from_str(&v) {
            resp.headers_mut().append("Warning", h);
        }
    }
}

/// A protobuf response; falls back to JSON for anything the transcoder cannot encode (clients
/// decode by the response's content type).
fn protobuf_response(code: u16, obj: &Value) -> Resp {
    match skiff_protobuf::encode(obj) {
        Ok(b) => bytes_response(code, skiff_protobuf::MEDIA_TYPE, b),
        Err(e) => {
            tracing::debug!(error = %e, "protobuf encoding failed; answering JSON");
            json_response(code, obj)
        }
    }
}
