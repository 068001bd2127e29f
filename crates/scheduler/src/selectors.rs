//! Label selectors, node selectors and tolerations compiled for fast matching.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Object labels.
pub type Labels = BTreeMap<String, String>;

/// A set-based label selector operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The label is one of the values.
    In,
    /// The label is absent or none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label is an integer above the value (node selectors only).
    Gt,
    /// The label is an integer below the value (node selectors only).
    Lt,
}

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: Op,
    /// The operand values.
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether the labels satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            Op::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotIn => !v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(v), Some(bound)) = (v, self.values.first()) else {
                    return false;
                };
                match (v.parse::<i64>(), bound.parse::<i64>()) {
                    (Ok(v), Ok(b)) => {
                        if self.op == Op::Gt {
                            v > b
                        } else {
                            v < b
                        }
                    }
                    _ => false,
                }
            }
        }
    }
}

/// A compiled label selector; `nothing` is what a missing selector means in affinity terms
/// and spread constraints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// The requirements, all of which must hold.
    pub reqs: Vec<Requirement>,
    /// Matches no object at all.
    pub nothing: bool,
}

fn op_of(s: &str) -> Option<Op> {
    Some(match s {
        "In" => Op::In,
        "NotIn" => Op::NotIn,
        "Exists" => Op::Exists,
        "DoesNotExist" => Op::DoesNotExist,
        "Gt" => Op::Gt,
        "Lt" => Op::Lt,
        _ => return None,
    })
}

impl Selector {
    /// Compiles a metav1 label selector; `None` selects nothing, an empty one everything.
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Selector {
        let Some(sel) = sel else {
            return Selector {
                reqs: Vec::new(),
                nothing: true,
            };
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement {
                key: k.clone(),
                op: Op::In,
                values: vec![v.clone()],
            });
        }
        for e in sel.match_expressions.iter().flatten() {
            match op_of(&e.operator) {
                Some(op @ (Op::In | Op::NotIn | Op::Exists | Op::DoesNotExist)) => {
                    reqs.push(Requirement {
                        key: e.key.clone(),
                        op,
                        values: e.values.clone().unwrap_or_default(),
                    })
                }
                // An invalid selector matches nothing, as upstream's conversion error does.
                _ => {
                    return Selector {
                        reqs: Vec::new(),
                        nothing: true,
                    }
                }
            }
        }
        Selector {
            reqs,
            nothing: false,
        }
    }

    /// A selector for exactly these labels (`labels.SelectorFromSet`).
    pub fn from_map(m: &Labels) -> Selector {
        Selector {
            reqs: m
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    op: Op::In,
                    values: vec![v.clone()],
                })
                .collect(),
            nothing: false,
        }
    }

    /// Whether the selector matches everything.
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.reqs.is_empty()
    }

    /// Whether the labels match.
    pub fn matches(&self, labels: &Labels) -> bool {
        !self.nothing && self.reqs.iter().all(|r| r.matches(labels))
    }
}

/// A compiled node selector term (`matchExpressions` and `matchFields` on `metadata.name`).
#[derive(Clone, Debug, Default)]
pub struct NodeTerm {
    exprs: Vec<Requirement>,
    fields: Vec<Requirement>,
    valid: bool,
}

fn node_reqs(list: Option<&Vec<NodeSelectorRequirement>>) -> Option<Vec<Requirement>> {
    let mut out = Vec::new();
    for r in list.into_iter().flatten() {
        out.push(Requirement {
            key: r.key.clone(),
            op: op_of(&r.operator)?,
            values: r.values.clone().unwrap_or_default(),
        });
    }
    Some(out)
}

impl NodeTerm {
    /// Compiles a term; an empty or invalid term matches no node.
    pub fn new(t: &NodeSelectorTerm) -> NodeTerm {
        match (
            node_reqs(t.match_expressions.as_ref()),
            node_reqs(t.match_fields.as_ref()),
        ) {
            (Some(exprs), Some(fields)) => {
                let valid = (!exprs.is_empty() || !fields.is_empty())
                    && fields.iter().all(|f| f.key == "metadata.name");
                NodeTerm {
                    exprs,
                    fields,
                    valid,
                }
            }
            _ => NodeTerm::default(),
        }
    }

    /// Whether a node with these labels and name matches.
    pub fn matches(&self, labels: &Labels, name: &str) -> bool {
        if !self.valid {
            return false;
        }
        if !self.exprs.iter().all(|r| r.matches(labels)) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        let mut f = Labels::new();
        f.insert("metadata.name".into(), name.into());
        self.fields.iter().all(|r| r.matches(&f))
    }

    /// The node names this term is limited to by a `metadata.name In` field, if any.
    pub fn name_set(&self) -> Option<Vec<String>> {
        self.fields
            .iter()
            .find(|r| r.op == Op::In)
            .map(|r| r.values.clone())
    }
}

/// Whether a toleration tolerates a taint (`Toleration.ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref() {
        if !e.is_empty() && e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The first taint passing `filter` that none of the tolerations tolerates.
pub fn find_untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| filter(t))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_semantics() {
        let s: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
        }))
        .unwrap();
        let s = Selector::from_label_selector(Some(&s));
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!Selector::from_label_selector(None).matches(&labels(&[])));
        assert!(
            Selector::from_label_selector(Some(&LabelSelector::default())).matches(&labels(&[]))
        );
    }

    #[test]
    fn node_terms_and_tolerations() {
        let t: NodeSelectorTerm = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}],
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]
        }))
        .unwrap();
        let t = NodeTerm::new(&t);
        assert!(t.matches(&labels(&[("cores", "8")]), "n1"));
        assert!(!t.matches(&labels(&[("cores", "8")]), "n2"));
        assert!(!t.matches(&labels(&[("cores", "2")]), "n1"));
        assert!(!NodeTerm::new(&NodeSelectorTerm::default()).matches(&labels(&[]), "n1"));
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let exists: Toleration =
            serde_json::from_value(serde_json::json!({"operator": "Exists"})).unwrap();
        let wrong: Toleration =
            serde_json::from_value(serde_json::json!({"key": "k", "value": "w"})).unwrap();
        assert!(tolerates(&exists, &taint));
        assert!(!tolerates(&wrong, &taint));
    }
}
