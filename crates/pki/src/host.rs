//! The host's name and addresses, from `/proc` (no `ip`, no extra crates).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The host name (`/proc/sys/kernel/hostname`) and the host's non-loopback
/// addresses: IPv4 from the local routes in `/proc/net/fib_trie`, IPv6 with
/// global scope from `/proc/net/if_inet6`. Unreadable sources yield nothing.
pub fn host_identity() -> (String, Vec<IpAddr>) {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut addrs: Vec<IpAddr> = std::fs::read_to_string("/proc/net/fib_trie")
        .map(|s| parse_fib_trie(&s))
        .unwrap_or_default()
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    addrs.extend(
        std::fs::read_to_string("/proc/net/if_inet6")
            .map(|s| parse_if_inet6(&s))
            .unwrap_or_default()
            .into_iter()
            .map(IpAddr::V6),
    );
    (name, addrs)
}

/// The addresses assigned to this host: a leaf followed by a `/32 host LOCAL`
/// route. Both the main and the local table list them; duplicates collapse.
fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut out = BTreeSet::new();
    let mut current: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("|-- ") {
            current = rest.trim().parse().ok();
        } else if t.starts_with('/') {
            let mut words = t.split_whitespace();
            let is_local = words.next() == Some("/32")
                && words.next() == Some("host")
                && words.next() == Some("LOCAL");
            if let (true, Some(ip)) = (is_local, current) {
                if !ip.is_loopback() && !ip.is_unspecified() {
                    out.insert(ip);
                }
            }
        } else {
            current = None;
        }
    }
    out.into_iter().collect()
}

/// Global-scope IPv6 addresses; link-local ones need a zone to be dialled
/// and host-scope is loopback.
fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || fields[0].len() != 32 || fields[3] != "00" {
            continue;
        }
        let Ok(bits) = u128::from_str_radix(fields[0], 16) else {
            continue;
        };
        let ip = Ipv6Addr::from(bits);
        if !ip.is_loopback() && !ip.is_unspecified() {
            out.insert(ip);
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
     |-- 10.1.0.7
        /24 link UNICAST
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 192.0.2.2
              /32 host LOCAL
";

    #[test]
    fn fib_trie_yields_local_non_loopback_addresses() {
        assert_eq!(
            parse_fib_trie(FIB_TRIE),
            vec![Ipv4Addr::new(10, 1, 0, 7), Ipv4Addr::new(192, 0, 2, 2)]
        );
    }

    #[test]
    fn if_inet6_yields_global_addresses_only() {
        let text = "\
fd000000000000000000000000000002 04 40 00 82     eth0
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
";
        assert_eq!(
            parse_if_inet6(text),
            vec!["fd00::2".parse::<Ipv6Addr>().unwrap()]
        );
    }

    #[test]
    fn host_identity_reads_proc() {
        let (name, addrs) = host_identity();
        assert!(!name.is_empty());
        assert!(addrs.iter().all(|a| !a.is_loopback()));
    }
}
