//! Bodies kubectl v1.32 sent (captured from `kubectl create …` against a plain-HTTP listener),
//! against the JSON the same command prints with `--dry-run=client -o json`.

use serde_json::Value;

fn fixture(name: &str) -> (Vec<u8>, Value) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let pb = std::fs::read(format!("{dir}{name}.pb")).unwrap();
    let json = std::fs::read_to_string(format!("{dir}{name}.json")).unwrap();
    (pb, serde_json::from_str(&json).unwrap())
}

fn check(name: &str) {
    let (pb, want) = fixture(name);
    let got = skiff_protobuf::decode(&pb).unwrap();
    assert_eq!(got, want, "{name}");
    // Same field order as kubectl's own JSON.
    assert_eq!(
        serde_json::to_string(&got).unwrap(),
        serde_json::to_string(&want).unwrap(),
        "{name}"
    );
    let again = skiff_protobuf::decode(&skiff_protobuf::encode(&got).unwrap()).unwrap();
    assert_eq!(
        strip_null_times(again),
        strip_null_times(want),
        "{name} round trip"
    );
}

/// Encoding leaves null times out; decoding an absent time gives no field.
fn strip_null_times(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, v| !(k == "creationTimestamp" && v.is_null()));
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

#[test]
fn kubectl_create_configmap() {
    check("create-configmap");
}

#[test]
fn kubectl_create_deployment() {
    check("create-deployment");
}

#[test]
fn kubectl_create_secret() {
    check("create-secret");
}

#[test]
fn kubectl_create_service() {
    check("create-service");
}
