//! WATCH: a stream of `{"type": ..., "object": ...}` lines fed from the watch cache.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use skiff_api::registry::ResourceInfo;
use skiff_store::EventType;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::cache::{Backlog, CacheEvent};
use crate::error::{ApiError, ApiResult};
use crate::http_util::Resp;
use crate::negotiate::{self, Output};
use crate::reqinfo::ResourceRequest;
use crate::rest::{parse_stored, partial_metadata, Filter};
use crate::{ApiServer, Ctx};

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

struct Encoder {
    r: &'static ResourceInfo,
    out: Output,
    include: skiff_api::table::IncludeObject,
    first_table: bool,
}

impl Encoder {
    fn line(&mut self, ty: &str, obj: Value) -> Bytes {
        let object = match self.out {
            Output::Table => {
                let mut t = skiff_api::table::to_table(
                    self.r.group,
                    self.r.kind,
                    std::slice::from_ref(&obj),
                    self.include,
                    chrono::Utc::now(),
                );
                if !self.first_table {
                    if let Some(m) = t.as_object_mut() {
                        m.insert("columnDefinitions".into(), json!([]));
                    }
                }
                self.first_table = false;
                t["metadata"] =
                    json!({"resourceVersion": obj["metadata"]["resourceVersion"].clone()});
                t
            }
            Output::Metadata => partial_metadata(&obj),
            Output::Protobuf => {
                if let Ok(frame) = skiff_protobuf::encode_watch_event(ty, &obj) {
                    return Bytes::from(frame);
                }
                obj
            }
            _ => obj,
        };
        let mut v = serde_json::to_vec(&json!({"type": ty, "object": object})).expect("serializes");
        v.push(b'\n');
        Bytes::from(v)
    }

    fn raw(&self, v: &Value) -> Bytes {
        if self.out == Output::Protobuf {
            if let Ok(frame) =
                skiff_protobuf::encode_watch_event(v["type"].as_str().unwrap_or(""), &v["object"])
            {
                return Bytes::from(frame);
            }
        }
        let mut b = serde_json::to_vec(v).expect("serializes");
        b.push(b'\n');
        Bytes::from(b)
    }
}

impl ApiServer {
    /// WATCH on a collection.
    pub(crate) async fn watch(&self, rr: &ResourceRequest, ctx: &Ctx<'_>) -> ApiResult<Resp> {
        let r = rr.resource;
        let q = ctx.query;
        let filter = Filter::from_query(r, q)?;
        let out = negotiate::output(ctx.accept)
            .ok_or_else(|| ApiError::not_acceptable(ctx.accept.unwrap_or("")))?;
        let include = match q.get("includeObject").map(String::as_str) {
            Some("Object") => skiff_api::table::IncludeObject::Object,
            Some("None") => skiff_api::table::IncludeObject::None,
            _ => skiff_api::table::IncludeObject::Metadata,
        };
        let prefix = match &rr.namespace {
            Some(ns) => r.namespace_prefix(ns),
            None => r.key_prefix(),
        };
        let rv: Option<i64> = match q.get("resourceVersion").filter(|s| !s.is_empty()) {
            Some(s) => Some(
                s.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
            ),
            None => None,
        };
        let bookmarks = q
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true" || v == "1");
        let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
        if send_initial && q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan")
        {
            return Err(ApiError::invalid("ListOptions", "meta.k8s.io", "", &[skiff_api::Cause {
                reason: "FieldValueForbidden",
                field: "resourceVersionMatch".into(),
                message: "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into(),
            }]));
        }
        let timeout = match q.get("timeoutSeconds").filter(|s| !s.is_empty()) {
            Some(t) => Duration::from_secs(
                t.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t}")))?,
            ),
            None => Duration::from_secs(1800 + (uuid::Uuid::new_v4().as_u128() % 1800) as u64),
        };
        // Unset or "0": start with the current state; otherwise replay from that revision.
        let after = match rv {
            None | Some(0) => None,
            Some(n) => Some(n),
        };
        if rv.is_none() {
            let cur = self.store.current_revision().await?;
            self.cache.wait_for(cur, Duration::from_secs(3)).await?;
        }
        let sub = if send_initial {
            if let Some(n) = after {
                self.cache.wait_for(n, Duration::from_secs(3)).await?;
            }
            self.cache.subscribe(&prefix, None)?
        } else {
            if let Some(n) = after {
                self.cache.wait_for(n, Duration::from_secs(3)).await?;
            }
            self.cache.subscribe(&prefix, after)?
        };
        let initial_marker = send_initial;
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let metrics = self.metrics.clone();
        let server = self.clone();
        let r_static = r;
        let prefix_owned = prefix.clone();
        tokio::spawn(async move {
            metrics.watch_started(r_static.plural);
            let mut enc = Encoder {
                r: r_static,
                out,
                include,
                first_table: true,
            };
            let mut last_rv = sub.revision;
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut rx_events = sub.rx;
            let mut epoch = sub.epoch;
            let mut ok = true;
            for item in sub.backlog {
                let line = match item {
                    Backlog::Initial(o) => match parse_stored(&o.bytes) {
                        Ok(v) if filter.matches(r_static, &v) => {
                            match server.to_client(r_static, v) {
                                Ok(v) => Some(enc.line("ADDED", v)),
                                Err(_) => None,
                            }
                        }
                        _ => None,
                    },
                    Backlog::Event(e) => event_line(&server, &mut enc, &filter, &e),
                };
                if let Some(l) = line {
                    if tx.send(l).await.is_err() {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && initial_marker {
                let bm = json!({"type": "BOOKMARK", "object": {
                    "kind": r_static.kind, "apiVersion": r_static.api_version(),
                    "metadata": {"resourceVersion": last_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}
                }});
                ok = tx.send(enc.raw(&bm)).await.is_ok();
            }
            let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
            ticker.tick().await;
            // Runs until the client goes, the deadline passes, or the watcher is cut off.
            #[allow(clippy::while_immutable_condition)]
            while ok {
                tokio::select! {
                    _ = &mut deadline => break,
                    _ = tx.closed() => break,
                    _ = epoch.changed() => {
                        let st = ApiError::gone("the watch cache was reinitialized; re-list and watch again").to_status();
                        let _ = tx.send(enc.raw(&json!({"type": "ERROR", "object": st}))).await;
                        break;
                    }
                    _ = ticker.tick(), if bookmarks => {
                        let bm = json!({"type": "BOOKMARK", "object": {
                            "kind": r_static.kind, "apiVersion": r_static.api_version(),
                            "metadata": {"resourceVersion": last_rv.max(server.cache.revision()).to_string()}
                        }});
                        if tx.send(enc.raw(&bm)).await.is_err() { break; }
                    }
                    ev = rx_events.recv() => match ev {
                        Ok(e) => {
                            last_rv = e.object.revision;
                            if !e.object.key.starts_with(&prefix_owned) { continue; }
                            if let Some(l) = event_line(&server, &mut enc, &filter, &e) {
                                if tx.send(l).await.is_err() { break; }
                            }
                        }
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(resource = r_static.plural, missed = n, "watcher fell behind; cutting it off");
                            metrics.watch_cut_off(r_static.plural);
                            let st = ApiError::gone(format!(
                                "watch of {} was cut off: the client fell {n} events behind; re-list and watch again",
                                r_static.plural
                            )).to_status();
                            let _ = tx.try_send(enc.raw(&json!({"type": "ERROR", "object": st})));
                            break;
                        }
                        Err(RecvError::Closed) => break,
                    },
                }
            }
            metrics.watch_ended(r_static.plural);
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
        let body = BodyExt::boxed(StreamBody::new(stream));
        Ok(http::Response::builder()
            .status(200)
            .header(
                http::header::CONTENT_TYPE,
                if out == Output::Protobuf {
                    skiff_protobuf::STREAM_MEDIA_TYPE
                } else {
                    "application/json"
                },
            )
            .body(body)
            .expect("valid response"))
    }
}

/// Encodes one cache event for a watcher, applying its selectors the way upstream's cacher
/// does: an object that starts or stops matching is seen as added or deleted.
fn event_line(
    server: &ApiServer,
    enc: &mut Encoder,
    filter: &Filter,
    e: &Arc<CacheEvent>,
) -> Option<Bytes> {
    let r = enc.r;
    let natural = match e.event_type {
        EventType::Create => "ADDED",
        EventType::Update => "MODIFIED",
        EventType::Delete => "DELETED",
    };
    // The common case, a JSON watch of the storage version: the cached bytes are the object
    // as the client gets it, so every watcher shares them instead of decoding and encoding.
    let verbatim = |ty: &str| {
        (ty == natural && enc.out == Output::Json && r.storage_version && e.object.typed)
            .then(|| verbatim_line(ty, &e.object.bytes))
    };
    if filter.is_empty() {
        if let Some(line) = verbatim(natural) {
            return Some(line);
        }
    }
    let ty = if filter.is_empty() {
        natural
    } else {
        // What selectors read, decoded once per event for all its watchers.
        let cur = e.view()?;
        let now = e.event_type != EventType::Delete && filter.matches(r, &cur);
        let was = if e.event_type == EventType::Delete {
            filter.matches(r, &cur)
        } else {
            e.prev_view().is_some_and(|p| filter.matches(r, &p))
        };
        match (was, now) {
            (false, true) => "ADDED",
            (true, true) => "MODIFIED",
            (true, false) => "DELETED",
            (false, false) => return None,
        }
    };
    if let Some(line) = verbatim(ty) {
        return Some(line);
    }
    let obj = server
        .to_client(r, parse_stored(&e.object.bytes).ok()?)
        .ok()?;
    Some(enc.line(ty, obj))
}

/// `{"type":TY,"object":OBJECT}` and a newline, around an object already encoded.
fn verbatim_line(ty: &str, object: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(object.len() + ty.len() + 24);
    v.extend_from_slice(b"{\"type\":\"");
    v.extend_from_slice(ty.as_bytes());
    v.extend_from_slice(b"\",\"object\":");
    v.extend_from_slice(object);
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verbatim_line_is_the_event_the_encoder_writes() {
        let r = skiff_api::registry::find("", "v1", "configmaps").expect("served");
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "d", "resourceVersion": "7"},
            "data": {"k": "a \"quoted\" \u{e9}\n"}});
        let mut enc = Encoder {
            r,
            out: Output::Json,
            include: skiff_api::table::IncludeObject::Metadata,
            first_table: true,
        };
        let encoded = enc.line("MODIFIED", obj.clone());
        let verbatim = verbatim_line("MODIFIED", &serde_json::to_vec(&obj).unwrap());
        assert!(verbatim.ends_with(b"}\n") && encoded.ends_with(b"}\n"));
        let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap();
        assert_eq!(parse(&verbatim), parse(&encoded));
        assert_eq!(parse(&verbatim)["object"], obj);
    }
}
