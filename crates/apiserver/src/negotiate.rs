//! Content negotiation: what the client accepts and what it sent.

/// The representation a response is rendered in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Plain JSON.
    Json,
    /// YAML.
    Yaml,
    /// A `meta.k8s.io/v1` Table.
    Table,
    /// `PartialObjectMetadata` / `PartialObjectMetadataList`.
    Metadata,
    /// Kubernetes protobuf, only for clients that accept nothing else this server offers.
    Protobuf,
}

/// Picks the first acceptable representation from an `Accept` header.
pub fn output(accept: Option<&str>) -> Option<Output> {
    let Some(accept) = accept else {
        return Some(Output::Json);
    };
    if accept.trim().is_empty() {
        return Some(Output::Json);
    }
    // JSON is preferred whenever the client takes it; protobuf only as a last resort, so that
    // every response goes through the one JSON path unless the client needs otherwise.
    let mut protobuf = false;
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut as_ = None;
        let mut g = None;
        let mut v = None;
        for p in parts {
            if let Some((k, val)) = p.split_once('=') {
                match k.trim() {
                    "as" => as_ = Some(val.trim().to_string()),
                    "g" => g = Some(val.trim().to_string()),
                    "v" => v = Some(val.trim().to_string()),
                    _ => {}
                }
            }
        }
        let json_like = matches!(media.as_str(), "application/json" | "*/*" | "application/*");
        match as_.as_deref() {
            None => {
                if json_like {
                    return Some(Output::Json);
                }
                if media == "application/yaml" {
                    return Some(Output::Yaml);
                }
                if media == "application/vnd.kubernetes.protobuf" {
                    protobuf = true;
                }
            }
            Some("Table")
                if json_like
                    && g.as_deref() == Some("meta.k8s.io")
                    && v.as_deref() == Some("v1") =>
            {
                return Some(Output::Table);
            }
            Some("PartialObjectMetadata") | Some("PartialObjectMetadataList")
                if json_like
                    && g.as_deref() == Some("meta.k8s.io")
                    && v.as_deref() == Some("v1") =>
            {
                return Some(Output::Metadata);
            }
            _ => {}
        }
    }
    protobuf.then_some(Output::Protobuf)
}

/// Whether an `Accept` header asks for aggregated discovery (`apidiscovery.k8s.io/v2`).
pub fn wants_aggregated_discovery(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    for item in accept.split(',') {
        let item = item.replace(' ', "");
        if item.starts_with("application/json")
            && item.contains("g=apidiscovery.k8s.io")
            && item.contains("v=v2")
            && !item.contains("v=v2beta1")
            && item.contains("as=APIGroupDiscoveryList")
        {
            return true;
        }
        if item == "application/json" {
            return false;
        }
    }
    false
}

/// The media type of a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// RFC 6902 JSON patch.
    JsonPatch,
    /// RFC 7386 merge patch.
    MergePatch,
    /// Strategic merge patch.
    StrategicMergePatch,
    /// Server-side apply.
    ApplyPatch,
    /// Kubernetes protobuf (`application/vnd.kubernetes.protobuf`).
    Protobuf,
}

/// Classifies a `Content-Type` header.
pub fn body_type(content_type: Option<&str>) -> Option<BodyType> {
    let ct = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(match ct.as_str() {
        "application/json" | "" | "*/*" => BodyType::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" => BodyType::Yaml,
        "application/json-patch+json" => BodyType::JsonPatch,
        "application/merge-patch+json" => BodyType::MergePatch,
        "application/strategic-merge-patch+json" => BodyType::StrategicMergePatch,
        "application/apply-patch+yaml" => BodyType::ApplyPatch,
        "application/vnd.kubernetes.protobuf" => BodyType::Protobuf,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_get_accept_picks_table() {
        let a = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(output(Some(a)), Some(Output::Table));
        assert_eq!(output(Some("application/json")), Some(Output::Json));
        assert_eq!(output(None), Some(Output::Json));
        assert_eq!(
            output(Some("application/vnd.kubernetes.protobuf")),
            Some(Output::Protobuf)
        );
        assert_eq!(output(Some("text/html")), None);
        assert_eq!(
            output(Some(
                "application/vnd.kubernetes.protobuf, application/json"
            )),
            Some(Output::Json)
        );
        assert_eq!(output(Some("application/yaml")), Some(Output::Yaml));
    }

    #[test]
    fn aggregated_discovery_detection() {
        let a = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated_discovery(Some(a)));
        assert!(!wants_aggregated_discovery(Some("application/json")));
    }

    #[test]
    fn patch_types() {
        assert_eq!(
            body_type(Some("application/strategic-merge-patch+json")),
            Some(BodyType::StrategicMergePatch)
        );
        assert_eq!(
            body_type(Some("application/json; charset=utf-8")),
            Some(BodyType::Json)
        );
        assert_eq!(body_type(Some("text/plain")), None);
    }
}
