//! Node IPAM: hands each node a pod CIDR (a `/mask` block) out of the cluster CIDR, never
//! the same block to two nodes (upstream's range allocator and its `CidrSet`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Errors of the allocator.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IpamError {
    /// The cluster CIDR or a node CIDR does not parse.
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
    /// The node mask is not longer than the cluster prefix (or beyond /32).
    #[error("node mask /{mask} does not fit in cluster CIDR /{prefix}")]
    BadMask {
        /// The node mask.
        mask: u8,
        /// The cluster prefix length.
        prefix: u8,
    },
    /// Every block is taken.
    #[error("CIDR allocation failed; there are no remaining CIDRs left to allocate in the accepted range")]
    Full,
}

/// Parses `a.b.c.d/n`.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), IpamError> {
    let bad = || IpamError::InvalidCidr(s.to_string());
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok((ip, len))
}

/// The blocks of one cluster CIDR and which are taken.
#[derive(Debug)]
pub struct CidrAllocator {
    base: u32,
    prefix: u8,
    mask: u8,
    used: BTreeSet<u32>,
    next: u32,
}

impl CidrAllocator {
    /// An allocator of `/node_mask` blocks out of `cluster_cidr` (e.g. `10.42.0.0/16`, 24).
    pub fn new(cluster_cidr: &str, node_mask: u8) -> Result<CidrAllocator, IpamError> {
        let (ip, prefix) = parse_cidr(cluster_cidr)?;
        if node_mask < prefix || node_mask > 32 || node_mask - prefix > 24 {
            return Err(IpamError::BadMask {
                mask: node_mask,
                prefix,
            });
        }
        let net_mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(CidrAllocator {
            base: u32::from(ip) & net_mask,
            prefix,
            mask: node_mask,
            used: BTreeSet::new(),
            next: 0,
        })
    }

    fn blocks(&self) -> u32 {
        1 << (self.mask - self.prefix)
    }

    fn block_of(&self, cidr: &str) -> Result<Option<u32>, IpamError> {
        let (ip, len) = parse_cidr(cidr)?;
        if len != self.mask {
            return Ok(None);
        }
        let ip = u32::from(ip);
        let net_mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        if ip & net_mask != self.base {
            return Ok(None);
        }
        let idx = (ip - self.base) >> (32 - self.mask);
        Ok(Some(idx))
    }

    fn cidr_of(&self, idx: u32) -> String {
        let ip = self.base + (idx << (32 - self.mask));
        format!("{}/{}", Ipv4Addr::from(ip), self.mask)
    }

    /// Marks a block already assigned to a node as taken (when rebuilding at start); blocks
    /// outside the range are ignored. Returns whether it was free.
    pub fn occupy(&mut self, cidr: &str) -> Result<bool, IpamError> {
        Ok(match self.block_of(cidr)? {
            Some(idx) => self.used.insert(idx),
            None => false,
        })
    }

    /// Takes the next free block, scanning on from the last one handed out so that a block
    /// just released is not reused at once.
    pub fn allocate(&mut self) -> Result<String, IpamError> {
        let n = self.blocks();
        for i in 0..n {
            let idx = (self.next + i) % n;
            if !self.used.contains(&idx) {
                self.used.insert(idx);
                self.next = (idx + 1) % n;
                return Ok(self.cidr_of(idx));
            }
        }
        Err(IpamError::Full)
    }

    /// Frees a block of a deleted node.
    pub fn release(&mut self, cidr: &str) -> Result<(), IpamError> {
        if let Some(idx) = self.block_of(cidr)? {
            self.used.remove(&idx);
        }
        Ok(())
    }

    /// How many blocks are taken.
    pub fn used(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_blocks_and_rebuilds() {
        let mut a = CidrAllocator::new("10.42.0.0/16", 24).unwrap();
        assert!(a.occupy("10.42.0.0/24").unwrap());
        assert!(!a.occupy("10.42.0.0/24").unwrap());
        assert!(!a.occupy("192.168.0.0/24").unwrap());
        assert_eq!(a.allocate().unwrap(), "10.42.1.0/24");
        assert_eq!(a.allocate().unwrap(), "10.42.2.0/24");
        a.release("10.42.1.0/24").unwrap();
        // Scans on rather than reusing the block just freed.
        assert_eq!(a.allocate().unwrap(), "10.42.3.0/24");
        assert_eq!(a.used(), 3);
    }

    #[test]
    fn runs_out() {
        let mut a = CidrAllocator::new("10.42.0.0/23", 24).unwrap();
        a.allocate().unwrap();
        a.allocate().unwrap();
        assert_eq!(a.allocate(), Err(IpamError::Full));
        assert!(CidrAllocator::new("10.42.0.0/16", 8).is_err());
        assert!(CidrAllocator::new("10.42.0.0", 24).is_err());
    }
}
