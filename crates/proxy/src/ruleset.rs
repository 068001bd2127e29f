//! The proxy's table in structured form, printed whole ([`Ruleset::to_table`]) or as the
//! difference between two states ([`diff`]), as kube-proxy's nftables mode does: a full resync
//! only now and then, otherwise a partial sync that rewrites only changed chains and adds or
//! deletes only changed map elements, so a change costs in proportion to its size rather than
//! to the size of the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::render::TABLE;

/// A named set or verdict map of the table with its elements, as nft writes them
/// (`key` for sets, `key : verdict` for maps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// `set` or `map`.
    pub kind: &'static str,
    /// The set's name, e.g. `service-ips`.
    pub name: &'static str,
    /// The nft type declaration, e.g. `ipv4_addr . inet_proto . inet_service : verdict`.
    pub ty: &'static str,
    /// Elements in the order they are written.
    pub elements: Vec<String>,
}

/// A client-IP affinity set: the clients an endpoint served recently, each remembered for
/// `timeout` seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffinitySet {
    /// The set's name (`aff_<service port>_<address>_<port>`).
    pub name: String,
    /// The affinity timeout in seconds.
    pub timeout: i32,
}

/// A regular chain of one service port with its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The chain's name (`svc_`, `ext_`, `all_`, `local_` or `ep_` prefixed).
    pub name: String,
    /// Its rules in order, as nft statements without indentation.
    pub rules: Vec<String>,
}

/// Everything of `table ip skiff` that depends on the cluster; the hook chains and plumbing
/// around it never change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// `node-ips` and the four verdict maps, in that order.
    pub sets: Vec<Set>,
    /// Affinity sets, in render order.
    pub affinity: Vec<AffinitySet>,
    /// Service chains, in render order.
    pub chains: Vec<Chain>,
}

/// Chains that never change: hooks, reject and masquerade plumbing. Mark bit 0x4000 (the one
/// kube-proxy uses) asks `masquerading` to masquerade a connection.
const BASE_CHAINS: &str = "\tchain filter-input {
\t\ttype filter hook input priority -110; policy accept;
\t\tct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services
\t\tct state new ip daddr @node-ips meta l4proto . th dport vmap @no-endpoint-nodeports
\t}
\tchain filter-forward {
\t\ttype filter hook forward priority -110; policy accept;
\t\tct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services
\t}
\tchain filter-output {
\t\ttype filter hook output priority -110; policy accept;
\t\tct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services
\t\tct state new ip daddr @node-ips meta l4proto . th dport vmap @no-endpoint-nodeports
\t}
\tchain reject-chain {
\t\tmeta l4proto tcp reject with tcp reset
\t\treject
\t}
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tjump services
\t}
\tchain nat-output {
\t\ttype nat hook output priority -100; policy accept;
\t\tjump services
\t}
\tchain nat-postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tjump masquerading
\t}
\tchain masquerading {
\t\tmeta mark & 0x00004000 == 0 return
\t\tmeta mark set meta mark ^ 0x00004000
\t\tmasquerade fully-random
\t}
\tchain mark-for-masquerade {
\t\tmeta mark set meta mark | 0x00004000
\t}
\tchain services {
\t\tip daddr . meta l4proto . th dport vmap @service-ips
\t\tip daddr @node-ips meta l4proto . th dport vmap @service-nodeports
\t}
";

impl Ruleset {
    /// The whole table as one `nft -f` transaction that replaces the previous table atomically
    /// (creating it first makes the first load work). Affinity sets start empty.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "add table ip {TABLE}");
        let _ = writeln!(out, "delete table ip {TABLE}");
        let _ = writeln!(out, "table ip {TABLE} {{");
        for s in &self.sets {
            let _ = writeln!(out, "\t{} {} {{", s.kind, s.name);
            let _ = writeln!(out, "\t\ttype {}", s.ty);
            if !s.elements.is_empty() {
                let _ = writeln!(
                    out,
                    "\t\telements = {{ {} }}",
                    s.elements.join(",\n\t\t\t     ")
                );
            }
            out.push_str("\t}\n");
        }
        for a in &self.affinity {
            let _ = write!(
                out,
                "\tset {} {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout {}s\n\t}}\n",
                a.name, a.timeout
            );
        }
        out.push_str(BASE_CHAINS);
        for c in &self.chains {
            let _ = writeln!(out, "\tchain {} {{", c.name);
            for r in &c.rules {
                let _ = writeln!(out, "\t\t{r}");
            }
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
        out
    }
}

/// Splits a set element into its key and, for maps, its verdict.
fn key_value(element: &str) -> (&str, Option<&str>) {
    match element.split_once(" : ") {
        Some((k, v)) => (k, Some(v)),
        None => (element, None),
    }
}

/// The `nft -f` transaction that turns the table `prev` was applied as into `next`, or an empty
/// string when nothing changed. Only chains whose rules changed are flushed and rewritten, only
/// changed elements are deleted and added, and affinity sets that stay keep the clients they
/// remember. The order keeps every reference valid inside the transaction: chains exist before
/// the rules and map elements that point at them, and chains and sets are deleted only after
/// nothing points at them any more.
pub fn diff(prev: &Ruleset, next: &Ruleset) -> String {
    let t = format!("ip {TABLE}");
    let prev_chains: BTreeMap<&str, &[String]> = prev
        .chains
        .iter()
        .map(|c| (c.name.as_str(), c.rules.as_slice()))
        .collect();
    let next_chains: BTreeSet<&str> = next.chains.iter().map(|c| c.name.as_str()).collect();
    let prev_aff: BTreeMap<&str, i32> = prev
        .affinity
        .iter()
        .map(|a| (a.name.as_str(), a.timeout))
        .collect();
    let next_aff: BTreeSet<&str> = next.affinity.iter().map(|a| a.name.as_str()).collect();

    // A set's timeout cannot be changed in place: the set is deleted and created again, after
    // every rule that names it is flushed.
    let recreated: BTreeSet<&str> = next
        .affinity
        .iter()
        .filter(|a| {
            prev_aff
                .get(a.name.as_str())
                .is_some_and(|t| *t != a.timeout)
        })
        .map(|a| a.name.as_str())
        .collect();
    let names_recreated = |rules: &[String]| {
        recreated.iter().any(|s| {
            let r = format!("@{s} ");
            rules.iter().any(|l| l.contains(&r))
        })
    };
    let rewritten: Vec<&Chain> = next
        .chains
        .iter()
        .filter(|c| match prev_chains.get(c.name.as_str()) {
            Some(old) => *old != c.rules.as_slice() || names_recreated(old),
            None => true,
        })
        .collect();
    let removed: Vec<&str> = prev
        .chains
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !next_chains.contains(n))
        .collect();

    let mut out = String::new();
    for c in &rewritten {
        let _ = writeln!(out, "add chain {t} {}", c.name);
    }
    // Removed chains are flushed too, so that nothing they point at is still referenced when
    // it is deleted below.
    for name in rewritten
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| prev_chains.contains_key(n))
        .chain(removed.iter().copied())
    {
        let _ = writeln!(out, "flush chain {t} {name}");
    }
    for name in &recreated {
        let _ = writeln!(out, "delete set {t} {name}");
    }
    for a in next
        .affinity
        .iter()
        .filter(|a| !prev_aff.contains_key(a.name.as_str()) || recreated.contains(a.name.as_str()))
    {
        let _ = writeln!(
            out,
            "add set {t} {} {{ type ipv4_addr; flags dynamic,timeout; timeout {}s; }}",
            a.name, a.timeout
        );
    }
    for c in &rewritten {
        for r in &c.rules {
            let _ = writeln!(out, "add rule {t} {} {r}", c.name);
        }
    }

    // Elements: stale and re-pointed keys go first, so a key whose verdict changed can be added
    // again with the new one.
    let mut adds = String::new();
    let empty = Vec::new();
    for n in &next.sets {
        let old = prev
            .sets
            .iter()
            .find(|s| s.name == n.name)
            .map_or(&empty, |s| &s.elements);
        let old_kv: BTreeMap<&str, Option<&str>> = old.iter().map(|e| key_value(e)).collect();
        let new_kv: BTreeMap<&str, Option<&str>> =
            n.elements.iter().map(|e| key_value(e)).collect();
        let gone: Vec<&str> = old_kv
            .iter()
            .filter(|(k, v)| new_kv.get(*k) != Some(*v))
            .map(|(k, _)| *k)
            .collect();
        let added: Vec<&str> = n
            .elements
            .iter()
            .filter(|e| {
                let (k, v) = key_value(e);
                old_kv.get(k) != Some(&v)
            })
            .map(String::as_str)
            .collect();
        if !gone.is_empty() {
            let _ = writeln!(
                out,
                "delete element {t} {} {{ {} }}",
                n.name,
                gone.join(", ")
            );
        }
        if !added.is_empty() {
            let _ = writeln!(
                adds,
                "add element {t} {} {{ {} }}",
                n.name,
                added.join(", ")
            );
        }
    }
    out.push_str(&adds);

    for name in &removed {
        let _ = writeln!(out, "delete chain {t} {name}");
    }
    for a in prev
        .affinity
        .iter()
        .filter(|a| !next_aff.contains(a.name.as_str()))
    {
        let _ = writeln!(out, "delete set {t} {}", a.name);
    }
    out
}

#[cfg(test)]
mod tests;
