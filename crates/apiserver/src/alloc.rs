//! Service ClusterIP and NodePort allocation: each IP and port is held by at most one Service.
//! The allocation state is rebuilt from the stored Services at start, so a crash between
//! allocating and writing leaks nothing.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use serde_json::{json, Value};
use skiff_api::Cause;

/// The service CIDR's network address and prefix length.
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 43, 0, 0), 16);
/// The NodePort range.
pub const NODE_PORTS: (u16, u16) = (30000, 32767);

#[derive(Default)]
struct Inner {
    ips: HashMap<u32, String>,
    ports: HashMap<(u16, String), String>,
    next_ip: u32,
    next_port: u16,
}

/// ClusterIP and NodePort allocators.
#[derive(Default)]
pub struct Allocator {
    inner: Mutex<Inner>,
}

fn cidr_range() -> (u32, u32) {
    let base = u32::from(SERVICE_CIDR.0);
    let size = 1u32 << (32 - SERVICE_CIDR.1);
    // Skip the network and broadcast addresses.
    (base + 1, base + size - 2)
}

fn protocol(p: &Value) -> String {
    p["protocol"].as_str().unwrap_or("TCP").to_string()
}

impl Allocator {
    /// Records what a stored Service holds.
    pub fn restore(&self, key: &str, svc: &Value) {
        let mut st = self.inner.lock().expect("allocator lock");
        if let Some(ip) = svc["spec"]["clusterIP"]
            .as_str()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        {
            st.ips.insert(u32::from(ip), key.to_string());
        }
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(np) = p["nodePort"].as_u64() {
                st.ports.insert((np as u16, protocol(p)), key.to_string());
            }
        }
    }

    /// Fills in and reserves the ClusterIP and NodePorts of `svc` (stored under `key`).
    /// Returns the field causes of a failed allocation.
    pub fn allocate(&self, key: &str, svc: &mut Value) -> Result<(), Vec<Cause>> {
        let mut st = self.inner.lock().expect("allocator lock");
        let ty = svc["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_string();
        let mut causes = Vec::new();
        if ty != "ExternalName" {
            let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
            if ip.is_empty() {
                let (lo, hi) = cidr_range();
                let span = hi - lo + 1;
                if st.next_ip == 0 {
                    st.next_ip = uuid::Uuid::new_v4().as_u128() as u32 % span;
                }
                let mut found = None;
                for i in 0..span {
                    let cand = lo + (st.next_ip + i) % span;
                    if !st.ips.contains_key(&cand) {
                        found = Some(cand);
                        st.next_ip = (st.next_ip + i + 1) % span;
                        break;
                    }
                }
                match found {
                    Some(c) => {
                        st.ips.insert(c, key.to_string());
                        let s = Ipv4Addr::from(c).to_string();
                        svc["spec"]["clusterIP"] = json!(s);
                        svc["spec"]["clusterIPs"] = json!([s]);
                    }
                    None => causes.push(Cause {
                        reason: "FieldValueInvalid",
                        field: "spec.clusterIPs".into(),
                        message: "Internal error: failed to allocate a serviceIP: range is full"
                            .into(),
                    }),
                }
            } else if ip != "None" {
                // Validation reports malformed addresses.
                if let Ok(addr) = ip.parse::<Ipv4Addr>() {
                    let n = u32::from(addr);
                    let (lo, hi) = cidr_range();
                    if n < lo || n > hi {
                        causes.push(Cause {
                                reason: "FieldValueInvalid",
                                field: "spec.clusterIPs".into(),
                                message: format!(
                                    "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}",
                                    SERVICE_CIDR.0, SERVICE_CIDR.1
                                ),
                            });
                    } else if st.ips.get(&n).is_some_and(|k| k != key) {
                        causes.push(Cause {
                                reason: "FieldValueInvalid",
                                field: "spec.clusterIPs".into(),
                                message: format!(
                                    "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
                                ),
                            });
                    } else {
                        st.ips.insert(n, key.to_string());
                        if svc["spec"]["clusterIPs"]
                            .as_array()
                            .is_none_or(|a| a.is_empty())
                        {
                            svc["spec"]["clusterIPs"] = json!([ip]);
                        }
                    }
                }
            } else if svc["spec"]["clusterIPs"]
                .as_array()
                .is_none_or(|a| a.is_empty())
            {
                svc["spec"]["clusterIPs"] = json!(["None"]);
            }
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            let n = svc["spec"]["ports"].as_array().map(Vec::len).unwrap_or(0);
            for i in 0..n {
                let p = &svc["spec"]["ports"][i];
                let proto = protocol(p);
                match p["nodePort"].as_u64() {
                    Some(np) => {
                        let np16 = np as u16;
                        if np < NODE_PORTS.0 as u64 || np > NODE_PORTS.1 as u64 {
                            causes.push(Cause {
                                reason: "FieldValueInvalid",
                                field: format!("spec.ports[{i}].nodePort"),
                                message: format!(
                                    "Invalid value: {np}: provided port is not in the valid range. The range of valid ports is {}-{}",
                                    NODE_PORTS.0, NODE_PORTS.1
                                ),
                            });
                        } else if st
                            .ports
                            .get(&(np16, proto.clone()))
                            .is_some_and(|k| k != key)
                        {
                            causes.push(Cause {
                                reason: "FieldValueInvalid",
                                field: format!("spec.ports[{i}].nodePort"),
                                message: format!(
                                    "Invalid value: {np}: provided port is already allocated"
                                ),
                            });
                        } else {
                            st.ports.insert((np16, proto), key.to_string());
                        }
                    }
                    None => {
                        let span = NODE_PORTS.1 - NODE_PORTS.0 + 1;
                        if st.next_port == 0 {
                            st.next_port = (uuid::Uuid::new_v4().as_u128() % span as u128) as u16;
                        }
                        let mut found = None;
                        for j in 0..span {
                            let cand = NODE_PORTS.0 + (st.next_port + j) % span;
                            if !st.ports.contains_key(&(cand, proto.clone())) {
                                found = Some(cand);
                                st.next_port = (st.next_port + j + 1) % span;
                                break;
                            }
                        }
                        match found {
                            Some(c) => {
                                st.ports.insert((c, proto), key.to_string());
                                svc["spec"]["ports"][i]["nodePort"] = json!(c);
                            }
                            None => causes.push(Cause {
                                reason: "FieldValueInvalid",
                                field: format!("spec.ports[{i}].nodePort"),
                                message:
                                    "Internal error: failed to allocate a nodePort: range is full"
                                        .into(),
                            }),
                        }
                    }
                }
            }
        }
        if causes.is_empty() {
            Ok(())
        } else {
            drop(st);
            self.release_unused(key, None);
            Err(causes)
        }
    }

    /// Releases whatever `key` holds that `svc` (its stored state; `None` once deleted) does not
    /// use.
    pub fn release_unused(&self, key: &str, svc: Option<&Value>) {
        let mut st = self.inner.lock().expect("allocator lock");
        let keep_ip = svc
            .and_then(|s| s["spec"]["clusterIP"].as_str())
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            .map(u32::from);
        st.ips
            .retain(|ip, owner| owner != key || Some(*ip) == keep_ip);
        let keep_ports: Vec<(u16, String)> = svc
            .and_then(|s| s["spec"]["ports"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| p["nodePort"].as_u64().map(|n| (n as u16, protocol(p))))
            .collect();
        st.ports
            .retain(|p, owner| owner != key || keep_ports.contains(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_allocates_twice() {
        let a = Allocator::default();
        let mut seen = std::collections::HashSet::new();
        for i in 0..500 {
            let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
            a.allocate(&format!("k{i}"), &mut svc).unwrap();
            assert!(seen.insert(svc["spec"]["clusterIP"].as_str().unwrap().to_string()));
            assert!(seen.insert(svc["spec"]["ports"][0]["nodePort"].to_string()));
        }
    }

    #[test]
    fn explicit_conflicts_are_invalid_and_release_frees() {
        let a = Allocator::default();
        let mut s1 = json!({"spec": {"clusterIP": "10.43.0.10", "type": "NodePort", "ports": [{"port": 1, "nodePort": 30080}]}});
        a.allocate("a", &mut s1).unwrap();
        let mut s2 = s1.clone();
        let causes = a.allocate("b", &mut s2).unwrap_err();
        assert_eq!(causes.len(), 2);
        assert!(causes[0]
            .message
            .contains("provided IP is already allocated"));
        a.release_unused("a", None);
        let mut s3 = s1.clone();
        a.allocate("b", &mut s3).unwrap();
        let mut bad = json!({"spec": {"clusterIP": "192.168.0.1"}});
        assert!(a.allocate("c", &mut bad).is_err());
    }
}
