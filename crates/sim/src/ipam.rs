//! Pod IPs from a node's pod CIDR: a bitmap per node, lowest free address first, so an
//! address freed by a deleted pod is handed out again.

use std::net::Ipv4Addr;

/// An IPv4 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub base: Ipv4Addr,
    /// The prefix length (0–32).
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`; `None` for anything else (IPv6 pod CIDRs are not simulated).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, len) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = len.parse().ok()?;
        if prefix > 32 {
            return None;
        }
        let mask = mask(prefix);
        Some(Cidr {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    /// The number of addresses in the block.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Offsets a node may hand to pods: the network address and the first host (the bridge's
/// gateway on a real node) are reserved, and so is the broadcast address. Capped at 256 so a
/// node costs 32 bytes of bitmap whatever its CIDR; a simulated node never runs more pods.
const FIRST: u32 = 2;
const MAX_SPAN: u64 = 256;

/// The addresses in use on one node.
#[derive(Debug, Default, Clone)]
pub struct PodIps {
    used: [u64; 4],
}

impl PodIps {
    fn span(cidr: &Cidr) -> u32 {
        // The last address of a block that fits within the cap is its broadcast address.
        let size = cidr.size();
        if size <= MAX_SPAN {
            (size as u32).saturating_sub(1)
        } else {
            MAX_SPAN as u32
        }
    }

    /// Takes the lowest free address of `cidr`, or `None` when the block is full.
    pub fn allocate(&mut self, cidr: &Cidr) -> Option<Ipv4Addr> {
        let span = Self::span(cidr);
        for off in FIRST..span {
            let (w, b) = ((off / 64) as usize, off % 64);
            if self.used[w] & (1 << b) == 0 {
                self.used[w] |= 1 << b;
                return Some(Ipv4Addr::from(u32::from(cidr.base) + off));
            }
        }
        None
    }

    /// Marks `ip` in use (an address found on a pod at start-up); false if it is outside the
    /// allocatable range of `cidr`.
    pub fn mark(&mut self, cidr: &Cidr, ip: Ipv4Addr) -> bool {
        match offset(cidr, ip) {
            Some(off) => {
                self.used[(off / 64) as usize] |= 1 << (off % 64);
                true
            }
            None => false,
        }
    }

    /// Frees `ip`.
    pub fn release(&mut self, cidr: &Cidr, ip: Ipv4Addr) {
        if let Some(off) = offset(cidr, ip) {
            self.used[(off / 64) as usize] &= !(1 << (off % 64));
        }
    }

    /// How many addresses are in use.
    pub fn in_use(&self) -> u32 {
        self.used.iter().map(|w| w.count_ones()).sum()
    }
}

fn offset(cidr: &Cidr, ip: Ipv4Addr) -> Option<u32> {
    let off = u32::from(ip).wrapping_sub(u32::from(cidr.base));
    (u32::from(ip) & mask(cidr.prefix) == u32::from(cidr.base)
        && off >= FIRST
        && off < PodIps::span(cidr))
    .then_some(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let c = Cidr::parse("10.42.3.7/24").unwrap();
        assert_eq!(c.to_string(), "10.42.3.0/24");
        assert_eq!(c.size(), 256);
        assert!(Cidr::parse("fd00::/64").is_none());
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0.0").is_none());
    }

    #[test]
    fn lowest_free_first_and_reuse_after_release() {
        let c = Cidr::parse("10.42.1.0/24").unwrap();
        let mut ips = PodIps::default();
        let a = ips.allocate(&c).unwrap();
        let b = ips.allocate(&c).unwrap();
        assert_eq!(a, "10.42.1.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(b, "10.42.1.3".parse::<Ipv4Addr>().unwrap());
        ips.release(&c, a);
        assert_eq!(ips.allocate(&c).unwrap(), a);
        assert_eq!(ips.in_use(), 2);
    }

    #[test]
    fn full_block_and_bounds() {
        let c = Cidr::parse("10.0.0.0/29").unwrap();
        let mut ips = PodIps::default();
        let got: Vec<_> = std::iter::from_fn(|| ips.allocate(&c)).collect();
        // .0 network, .1 gateway, .7 broadcast are never handed out.
        assert_eq!(got.len(), 5);
        assert_eq!(got.last().unwrap().to_string(), "10.0.0.6");
        let mut other = PodIps::default();
        assert!(!other.mark(&c, "10.0.0.7".parse().unwrap()));
        assert!(!other.mark(&c, "10.0.1.3".parse().unwrap()));
        assert!(other.mark(&c, "10.0.0.3".parse().unwrap()));
        assert_eq!(other.allocate(&c).unwrap().to_string(), "10.0.0.2");
        assert_eq!(other.allocate(&c).unwrap().to_string(), "10.0.0.4");
        // A large block is capped at 256 offsets.
        let big = Cidr::parse("10.64.0.0/16").unwrap();
        let mut b = PodIps::default();
        assert_eq!(std::iter::from_fn(|| b.allocate(&big)).count(), 254);
    }
}
