//! Address and port ranges: the arithmetic behind nft interval sets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    /// The nft payload keyword for addresses of this family.
    pub(super) fn kw(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    pub(super) fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
    pub(super) fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
    pub(super) fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
    pub(super) fn max(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }
    pub(super) fn format(self, v: u128) -> String {
        match self {
            Family::V4 => Ipv4Addr::from(v as u32).to_string(),
            Family::V6 => Ipv6Addr::from(v).to_string(),
        }
    }
}

/// An inclusive range of addresses of one family: `(family, first, last)`.
pub(super) type Span = (Family, u128, u128);

pub(super) const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// One address as a range of one.
pub(super) fn ip_range(ip: &IpAddr) -> Span {
    let v = to_u128(ip);
    (Family::of(ip), v, v)
}

fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u32::from(*v) as u128,
        IpAddr::V6(v) => u128::from(*v),
    }
}

/// Inclusive ranges of numbers (addresses or ports), sorted, disjoint and never adjacent, so
/// nft interval sets accept them without overlap errors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Ranges(pub(super) Vec<(u128, u128)>);

impl Ranges {
    pub(super) fn add(&mut self, lo: u128, hi: u128) {
        self.0.push((lo, hi));
        self.normalize();
    }

    /// Sorts and merges overlapping or adjacent ranges; callers adding many ranges push them
    /// all first and normalize once.
    fn normalize(&mut self) {
        self.0.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(self.0.len());
        for &(lo, hi) in &self.0 {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        self.0 = merged;
    }

    pub(super) fn subtract(&mut self, lo: u128, hi: u128) {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if b < lo || a > hi {
                out.push((a, b));
                continue;
            }
            if a < lo {
                out.push((a, lo - 1));
            }
            if b > hi {
                out.push((hi + 1, b));
            }
        }
        self.0 = out;
    }

    pub(super) fn contains(&self, v: u128) -> bool {
        let i = self.0.partition_point(|&(_, hi)| hi < v);
        self.0.get(i).is_some_and(|&(lo, _)| lo <= v)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Elements for an nft set: a prefix where the range is one, else `lo-hi`.
    pub(super) fn elements(&self, family: Family) -> Vec<String> {
        self.0
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    return family.format(lo);
                }
                let size = hi - lo;
                if size.wrapping_add(1) & size == 0 && lo & size == 0 {
                    let len = family.bits() - (size.count_ones());
                    return format!("{}/{len}", family.format(lo));
                }
                format!("{}-{}", family.format(lo), family.format(hi))
            })
            .collect()
    }
}

/// A CIDR as an inclusive address range; host bits are ignored as upstream's parser does.
pub(super) fn cidr_range(cidr: &str) -> Option<Span> {
    let (addr, len) = cidr.split_once('/')?;
    let ip: IpAddr = addr.parse().ok()?;
    let family = Family::of(&ip);
    let len: u32 = len.parse().ok()?;
    if len > family.bits() {
        return None;
    }
    let host = if len == family.bits() {
        0
    } else {
        family.max() >> len
    };
    let lo = to_u128(&ip) & !host;
    Some((family, lo, lo | host))
}

/// The addresses a rule's peers cover, per family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct AddrSet {
    v4: Ranges,
    v6: Ranges,
}

impl AddrSet {
    pub(super) fn family(&self, f: Family) -> &Ranges {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
    pub(super) fn family_mut(&mut self, f: Family) -> &mut Ranges {
        match f {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }
    /// The union of `ranges`, each `(family, first, last)`.
    pub(super) fn from_ranges(ranges: impl IntoIterator<Item = Span>) -> AddrSet {
        let mut set = AddrSet::default();
        for (f, lo, hi) in ranges {
            set.family_mut(f).0.push((lo, hi));
        }
        set.v4.normalize();
        set.v6.normalize();
        set
    }

    pub(super) fn contains(&self, ip: &IpAddr) -> bool {
        self.family(Family::of(ip)).contains(to_u128(ip))
    }
}
