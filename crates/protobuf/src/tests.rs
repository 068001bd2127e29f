use serde_json::json;

use super::*;
use crate::wire::{put_int, put_key, FIXED64};

/// A hand-built protobuf message.
#[derive(Default, Clone)]
struct Msg(Vec<u8>);

impl Msg {
    fn new() -> Self {
        Msg::default()
    }
    fn str(mut self, tag: u32, s: &str) -> Self {
        put_bytes(&mut self.0, tag, s.as_bytes());
        self
    }
    fn bytes(mut self, tag: u32, b: &[u8]) -> Self {
        put_bytes(&mut self.0, tag, b);
        self
    }
    fn int(mut self, tag: u32, v: i64) -> Self {
        put_int(&mut self.0, tag, v);
        self
    }
    fn msg(mut self, tag: u32, m: Msg) -> Self {
        put_bytes(&mut self.0, tag, &m.0);
        self
    }
    fn entry(self, tag: u32, k: &str, v: &str) -> Self {
        self.msg(tag, Msg::new().str(1, k).str(2, v))
    }
    fn entry_msg(self, tag: u32, k: &str, v: Msg) -> Self {
        self.msg(tag, Msg::new().str(1, k).msg(2, v))
    }
}

fn envelope(api_version: &str, kind: &str, raw: Msg) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    let tm = Msg::new().str(1, api_version).str(2, kind);
    put_bytes(&mut out, 1, &tm.0);
    put_bytes(&mut out, 2, &raw.0);
    put_bytes(&mut out, 3, b"");
    put_bytes(&mut out, 4, b"");
    out
}

/// ObjectMeta as Go writes it for a new object: every non-pointer field, zero or not.
fn meta(name: &str) -> Msg {
    Msg::new()
        .str(1, name)
        .str(2, "")
        .str(3, "")
        .str(4, "")
        .str(5, "")
        .str(6, "")
        .int(7, 0)
        .msg(8, Msg::new())
}

fn quantity(s: &str) -> Msg {
    Msg::new().str(1, s)
}

fn round_trip(obj: &Value) {
    let bytes = encode(obj).unwrap();
    assert_eq!(&decode(&bytes).unwrap(), obj);
}

#[test]
fn config_map() {
    let raw = Msg::new()
        .msg(1, meta("x").entry(11, "app", "web"))
        .entry(2, "a", "b")
        .entry(2, "c", "")
        .entry(3, "bin", "\u{0}\u{1}")
        .int(4, 0);
    let obj = decode(&envelope("v1", "ConfigMap", raw)).unwrap();
    let want = json!({
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "x", "creationTimestamp": null, "labels": {"app": "web"}},
        "immutable": false,
        "data": {"a": "b", "c": ""},
        "binaryData": {"bin": "AAE="},
    });
    assert_eq!(obj, want);
    // Go's field order: TypeMeta, then declaration order.
    let keys: Vec<&String> = obj.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "kind",
            "apiVersion",
            "metadata",
            "immutable",
            "data",
            "binaryData"
        ]
    );
    let mut without_null = want.clone();
    without_null["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("creationTimestamp");
    round_trip(&without_null);
}

#[test]
fn secret_bytes_are_base64() {
    let raw = Msg::new()
        .msg(1, meta("s"))
        .msg(2, Msg::new().str(1, "k").bytes(2, b"v\xff"))
        .str(3, "Opaque");
    let obj = decode(&envelope("v1", "Secret", raw)).unwrap();
    assert_eq!(
        obj,
        json!({
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {"name": "s", "creationTimestamp": null},
            "data": {"k": "dv8="},
            "type": "Opaque",
        })
    );
    let bytes = encode(&json!({
        "kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s"}, "data": {"k": "dv8="}
    }))
    .unwrap();
    // The map entry holds the raw bytes, not the base64 text.
    assert!(bytes.windows(4).any(|w| w == b"\x12\x02v\xff"));
    let err = encode(&json!({"kind": "Secret", "apiVersion": "v1", "data": {"k": "!!"}}));
    assert_eq!(err.unwrap_err().to_string(), "data.k: expected base64 data");
}

fn deployment_bytes(replicas: i64) -> Vec<u8> {
    let container = Msg::new()
        .str(1, "web")
        .str(2, "nginx:1.27")
        .msg(
            6,
            Msg::new()
                .str(1, "")
                .int(2, 0)
                .int(3, 80)
                .str(4, "TCP")
                .str(5, ""),
        )
        .msg(7, Msg::new().str(1, "MODE").str(2, "prod"))
        .msg(
            7,
            Msg::new().str(1, "POD_IP").str(2, "").msg(
                3,
                Msg::new().msg(1, Msg::new().str(1, "v1").str(2, "status.podIP")),
            ),
        )
        .msg(
            8,
            Msg::new()
                .entry_msg(1, "cpu", quantity("500m"))
                .entry_msg(1, "memory", quantity("128Mi"))
                .entry_msg(2, "cpu", quantity("100m")),
        )
        .str(13, "")
        .bool_field(16, false)
        .bool_field(17, false);
    let template = Msg::new()
        .msg(1, meta("").entry(11, "app", "web"))
        .msg(2, Msg::new().msg(2, container).int(4, 30));
    let spec = Msg::new()
        .int(1, replicas)
        .msg(2, Msg::new().entry(1, "app", "web"))
        .msg(3, template)
        .msg(4, Msg::new())
        .int(5, 0)
        .bool_field(7, false);
    let raw = Msg::new()
        .msg(1, meta("web"))
        .msg(2, spec)
        .msg(3, Msg::new().int(1, 0).int(2, 0));
    envelope("apps/v1", "Deployment", raw)
}

impl Msg {
    fn bool_field(self, tag: u32, b: bool) -> Self {
        self.int(tag, i64::from(b))
    }
}

#[test]
fn deployment() {
    let obj = decode(&deployment_bytes(0)).unwrap();
    let want = json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "web", "creationTimestamp": null},
        "spec": {
            // A pointer: zero shows. minReadySeconds and paused are omitempty.
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": "nginx:1.27",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "env": [
                            {"name": "MODE", "value": "prod"},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {
                                "apiVersion": "v1", "fieldPath": "status.podIP"}}},
                        ],
                        "resources": {
                            "limits": {"cpu": "500m", "memory": "128Mi"},
                            "requests": {"cpu": "100m"},
                        },
                    }],
                    "terminationGracePeriodSeconds": 30,
                },
            },
            "strategy": {},
        },
        "status": {},
    });
    assert_eq!(obj, want);
    let obj2 = decode(&deployment_bytes(2)).unwrap();
    assert_eq!(obj2["spec"]["replicas"], 2);
    // Null times are left out when encoding (upstream writes an empty message: the same).
    let mut spec = want["spec"].clone();
    spec["template"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("creationTimestamp");
    round_trip(&json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": spec,
    }));
}

#[test]
fn service_int_or_string() {
    let port = |target: Msg| {
        Msg::new()
            .str(1, "http")
            .str(2, "TCP")
            .int(3, 80)
            .msg(4, target)
            .int(5, 0)
    };
    let spec = Msg::new()
        .msg(1, port(Msg::new().int(1, 0).int(2, 8080).str(3, "")))
        .msg(1, port(Msg::new().int(1, 1).int(2, 0).str(3, "web")))
        .entry(2, "app", "web")
        .str(3, "10.0.0.1")
        .str(4, "ClusterIP");
    let obj = decode(&envelope("v1", "Service", Msg::new().msg(2, spec))).unwrap();
    let want = json!({
        "kind": "Service",
        "apiVersion": "v1",
        "spec": {
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web"},
            ],
            "selector": {"app": "web"},
            "clusterIP": "10.0.0.1",
            "type": "ClusterIP",
        },
    });
    assert_eq!(obj, want);
    round_trip(&want);
}

#[test]
fn times() {
    let meta = Msg::new()
        .str(1, "ev")
        .msg(8, Msg::new().int(1, 1_704_164_645).int(2, 0))
        .msg(9, Msg::new().int(1, 0));
    let raw = Msg::new()
        .msg(1, meta)
        .str(3, "Started")
        .msg(10, Msg::new().int(1, 1_704_164_645).int(2, 123_456_789))
        .msg(7, Msg::new());
    let obj = decode(&envelope("v1", "Event", raw)).unwrap();
    assert_eq!(obj["metadata"]["creationTimestamp"], "2024-01-02T03:04:05Z");
    // A Time with fields, even zero ones, is the epoch; an empty one is the zero time.
    assert_eq!(obj["metadata"]["deletionTimestamp"], "1970-01-01T00:00:00Z");
    assert_eq!(obj["eventTime"], "2024-01-02T03:04:05.123456Z");
    assert_eq!(obj["lastTimestamp"], Value::Null);
    assert_eq!(obj["reason"], "Started");
    let want = json!({
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"name": "ev", "creationTimestamp": "2024-01-02T03:04:05Z"},
        "reason": "Started",
        "eventTime": "2024-01-02T03:04:05.123456Z",
    });
    round_trip(&want);
}

#[test]
fn inline_structs() {
    // Volume{name, VolumeSource{configMap}}; Probe{ProbeHandler{httpGet}, periodSeconds}.
    let volume = Msg::new().str(1, "cfg").msg(
        2,
        Msg::new().msg(19, Msg::new().msg(1, Msg::new().str(1, "settings"))),
    );
    let probe = Msg::new()
        .msg(
            1,
            Msg::new().msg(
                2,
                Msg::new()
                    .str(1, "/healthz")
                    .msg(2, Msg::new().int(1, 1).str(3, "http")),
            ),
        )
        .int(4, 5);
    let container = Msg::new().str(1, "c").msg(10, probe);
    let spec = Msg::new().msg(1, volume).msg(2, container);
    let obj = decode(&envelope("v1", "Pod", Msg::new().msg(2, spec))).unwrap();
    let want = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "spec": {
            "volumes": [{"name": "cfg", "configMap": {"name": "settings"}}],
            "containers": [{
                "name": "c",
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http"},
                    "periodSeconds": 5,
                },
            }],
        },
    });
    assert_eq!(obj, want);
    round_trip(&want);
}

#[test]
fn every_kind_decodes_an_empty_message() {
    let mut n = 0;
    for (api_version, kind) in table::table().kinds() {
        let api_version = if api_version == "*" {
            "v1"
        } else {
            api_version
        };
        let obj = decode(&envelope(api_version, kind, Msg::new())).unwrap();
        assert_eq!(obj, json!({"kind": kind, "apiVersion": api_version}));
        n += 1;
    }
    assert!(n > 80, "{n} kinds");
    for r in skiff_api_kinds() {
        assert!(supports(r.0, r.1), "{r:?}");
    }
}

/// A few served kinds, spelled out so the test fails if the table loses them.
fn skiff_api_kinds() -> [(&'static str, &'static str); 6] {
    [
        ("v1", "ConfigMap"),
        ("apps/v1", "DeploymentList"),
        ("policy/v1", "Eviction"),
        ("meta.k8s.io/v1", "DeleteOptions"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("batch/v1", "CronJob"),
    ]
}

#[test]
fn eviction_and_delete_options() {
    let raw = Msg::new().msg(1, meta("p").str(3, "default")).msg(
        2,
        Msg::new()
            .int(1, 0)
            .msg(2, Msg::new().str(1, "uid-1"))
            .str(4, "Background"),
    );
    let obj = decode(&envelope("policy/v1", "Eviction", raw)).unwrap();
    assert_eq!(
        obj,
        json!({
            "kind": "Eviction",
            "apiVersion": "policy/v1",
            "metadata": {"name": "p", "namespace": "default", "creationTimestamp": null},
            "deleteOptions": {
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "uid-1"},
                "propagationPolicy": "Background",
            },
        })
    );
}

#[test]
fn errors() {
    assert_eq!(decode(b"{}").unwrap_err(), Error::BadMagic);
    let mut truncated = envelope("v1", "ConfigMap", Msg::new().int(4, 1));
    truncated.truncate(truncated.len() - 5);
    assert_eq!(decode(&truncated).unwrap_err(), Error::Truncated);
    let mut bad_varint = MAGIC.to_vec();
    bad_varint.extend_from_slice(&[0x08, 0xff]);
    assert_eq!(decode(&bad_varint).unwrap_err(), Error::Truncated);
    let unknown = decode(&envelope("example.com/v1", "Widget", Msg::new())).unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "no protobuf serialization known for kind \"Widget\" in \"example.com/v1\""
    );
    // immutable (bool) sent as a string.
    let wrong = decode(&envelope("v1", "ConfigMap", Msg::new().str(4, "x"))).unwrap_err();
    assert_eq!(
        wrong.to_string(),
        "field io.k8s.api.core.v1.ConfigMap.immutable: wire type 2, expected 0"
    );
    let mut compressed = MAGIC.to_vec();
    put_bytes(&mut compressed, 3, b"gzip");
    assert_eq!(
        decode(&compressed).unwrap_err(),
        Error::ContentEncoding("gzip".into())
    );
    assert_eq!(
        encode(&json!({"kind": "Pod"})).unwrap_err(),
        Error::MissingTypeMeta
    );
    assert_eq!(
        encode(&json!({"kind": "Pod", "apiVersion": "v1", "spec": {"priority": "high"}}))
            .unwrap_err()
            .to_string(),
        "spec.priority: expected an integer"
    );
}

#[test]
fn unknown_fields_and_packed_lists_are_read() {
    // Fields of numbers the table lacks (newer API fields), of every wire type, are skipped.
    let mut raw = Msg::new().msg(1, Msg::new().str(1, "x")).0;
    put_int(&mut raw, 99, 7);
    put_key(&mut raw, 98, FIXED64);
    raw.extend_from_slice(&[0; 8]);
    put_bytes(&mut raw, 97, b"zz");
    let raw = Msg(raw).entry(2, "a", "b");
    let obj = decode(&envelope("v1", "ConfigMap", raw)).unwrap();
    assert_eq!(
        obj,
        json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "x"}, "data": {"a": "b"}})
    );
    // PodSecurityContext.supplementalGroups (4): packed and unpacked elements both read.
    let psc = Msg::new().bytes(4, &[0x01, 0x80, 0x01]).int(4, 2);
    let spec = Msg::new().msg(14, psc);
    let obj = decode(&envelope("v1", "Pod", Msg::new().msg(2, spec))).unwrap();
    assert_eq!(
        obj["spec"]["securityContext"]["supplementalGroups"],
        json!([1, 128, 2])
    );
}

#[test]
fn negative_int32() {
    let spec = Msg::new().int(1, -1);
    let raw = Msg::new().msg(2, spec);
    let obj = decode(&envelope("apps/v1", "Deployment", raw)).unwrap();
    assert_eq!(obj["spec"]["replicas"], -1);
    round_trip(&obj);
}

#[test]
fn watch_events() {
    let obj = json!({
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "x", "resourceVersion": "7"},
        "data": {"a": "b"},
    });
    let frame = encode_watch_event("ADDED", &obj).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let (ty, decoded) = decode_watch_event(&frame[4..]).unwrap();
    assert_eq!(ty, "ADDED");
    assert_eq!(decoded, obj);
}

#[test]
fn raw_extensions_and_fields_v1() {
    let managed = Msg::new()
        .str(1, "kubectl")
        .str(2, "Update")
        .str(3, "v1")
        .msg(4, Msg::new().int(1, 1_704_164_645))
        .str(6, "FieldsV1")
        .msg(7, Msg::new().bytes(1, br#"{"f:data":{"f:a":{}}}"#));
    let raw = Msg::new().msg(1, Msg::new().str(1, "x").msg(17, managed));
    let obj = decode(&envelope("v1", "ConfigMap", raw)).unwrap();
    assert_eq!(
        obj["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2024-01-02T03:04:05Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:a": {}}},
        }])
    );
    round_trip(&obj);
    let rev = json!({
        "kind": "ControllerRevision",
        "apiVersion": "apps/v1",
        "metadata": {"name": "r"},
        "data": {"spec": {"template": {"x": 1}}},
        "revision": 3,
    });
    round_trip(&rev);
}
