//! The simulator's IPv4 address pool: where a device's public IPv4 and every public or
//! global elastic IP come from.
//!
//! Owns [`AddressPool`] (the choice made in `SimConfig`: a random /16 of 127.0.0.0/8 per
//! start, one derived from the seed, or a given block), the allocator the world keeps
//! ([`Ipv4Pool`]: aligned blocks, next-fit, never two live blocks overlapping whichever
//! project asks) and the lease that keeps the simulators of one process on different random
//! blocks.
//!
//! Every address of 127.0.0.0/8 is a loopback address (RFC 1122, section 3.2.1.3) and local
//! on Linux (the kernel's `local 127.0.0.0/8 dev lo` route in its `local` table), so an address handed out from the default pool can be bound
//! and reached on this machine: a test can listen on a device's public IPv4 or on an elastic
//! IP, as the booted server would. Where only 127.0.0.1 is local (macOS), choose a pool with
//! `rackform sim --address-pool` and expect binds to fail.
//! The 127.0.x.x and 127.255.x.x blocks are never chosen at random: 127.0.0.1 is everyone's,
//! and 127.255.255.255 is the loopback broadcast address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use ipnet::Ipv4Net;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64 as SplitMix;

/// Where the simulator takes public IPv4 addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressPool {
    /// A /16 of 127.0.0.0/8 drawn at random at each start, different from the blocks of the
    /// other simulators running in this process (another process draws independently: two
    /// simulators share a block with a chance of 1 in 254).
    #[default]
    Random,
    /// A /16 of 127.0.0.0/8 derived from `SimConfig::seed`, the same at every start.
    Seeded,
    /// This block (its prefix at most /30). Outside 127.0.0.0/8, addresses are not local.
    Block(Ipv4Net),
}

/// Random and seeded blocks are `127.N.0.0/16` with `N` in this range.
const FIRST_BLOCK: u8 = 1;
const LAST_BLOCK: u8 = 254;

/// The second octets of the random blocks leased by the simulators of this process.
static LEASED: Mutex<BTreeSet<u8>> = Mutex::new(BTreeSet::new());

/// A random block held by one simulator; dropping it frees the block for the next.
#[derive(Debug)]
pub struct Lease(Option<u8>);

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(octet) = self.0 {
            LEASED
                .lock()
                .expect("pool lease lock poisoned")
                .remove(&octet);
        }
    }
}

fn block(octet: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(127, octet, 0, 0), 16).expect("16 is a valid prefix")
}

impl AddressPool {
    /// The block this choice stands for, and the lease that holds a random one.
    pub fn choose(self, seed: u64) -> (Ipv4Net, Lease) {
        match self {
            Self::Block(net) => (net.trunc(), Lease(None)),
            Self::Seeded => {
                let span = u64::from(LAST_BLOCK - FIRST_BLOCK) + 1;
                let octet = FIRST_BLOCK
                    + u8::try_from(SplitMix::new(seed ^ 0x706f_6f6c).next_u64() % span)
                        .expect("below 254");
                (block(octet), Lease(None))
            }
            Self::Random => {
                let mut leased = LEASED.lock().expect("pool lease lock poisoned");
                let free: Vec<u8> = (FIRST_BLOCK..=LAST_BLOCK)
                    .filter(|o| !leased.contains(o))
                    .collect();
                let mut rng = rand::thread_rng();
                let octet = if free.is_empty() {
                    // More than 254 simulators at once: share a block rather than refuse.
                    rng.gen_range(FIRST_BLOCK..=LAST_BLOCK)
                } else {
                    free[rng.gen_range(0..free.len())]
                };
                leased.insert(octet);
                (block(octet), Lease(Some(octet)))
            }
        }
    }
}

/// The allocator: which blocks of the pool are live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Pool {
    net: Ipv4Net,
    /// Offset in `net` where the next search starts (next-fit: a released block is handed
    /// out again only after the rest of the pool was used, as an address is not reused at once
    /// on Packet either).
    cursor: u64,
    /// Live blocks: first address to last address, both as integers.
    taken: BTreeMap<u32, u32>,
}

fn align_up(offset: u64, size: u64) -> u64 {
    offset.div_ceil(size) * size
}

impl Ipv4Pool {
    pub fn new(net: Ipv4Net) -> Self {
        Self {
            net: net.trunc(),
            cursor: 0,
            taken: BTreeMap::new(),
        }
    }

    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    /// A free block of `/prefix` inside the pool, now taken; `None` when none is left (or
    /// the block asked for is larger than the pool).
    pub fn allocate(&mut self, prefix: u8) -> Option<Ipv4Net> {
        if prefix > 32 || prefix < self.net.prefix_len() {
            return None;
        }
        let size = 1u64 << (32 - u32::from(prefix));
        let span = 1u64 << (32 - u32::from(self.net.prefix_len()));
        let base = u64::from(u32::from(self.net.network()));
        let mut offset = align_up(self.cursor, size);
        if offset + size > span {
            offset = 0;
        }
        let first = offset;
        let mut wrapped = false;
        loop {
            if offset + size > span || (wrapped && offset >= first) {
                if wrapped || first == 0 {
                    return None;
                }
                wrapped = true;
                offset = 0;
                continue;
            }
            let start = u32::try_from(base + offset).expect("inside the IPv4 space");
            let end = u32::try_from(base + offset + size - 1).expect("inside the IPv4 space");
            match self.taken.range(..=end).next_back() {
                Some((_, &last)) if last >= start => {
                    offset = align_up(u64::from(last) + 1 - base, size);
                }
                _ => {
                    self.taken.insert(start, end);
                    self.cursor = offset + size;
                    return Some(Ipv4Net::new(Ipv4Addr::from(start), prefix).expect("valid"));
                }
            }
        }
    }

    /// Marks a block live (rebuilding the allocator from records). Blocks outside the pool
    /// or overlapping a live one are ignored.
    pub fn mark(&mut self, block: Ipv4Net) {
        let block = block.trunc();
        if !self.net.contains(&block) {
            return;
        }
        let start = u32::from(block.network());
        let end = u32::from(block.broadcast());
        let overlaps = self
            .taken
            .range(..=end)
            .next_back()
            .is_some_and(|(_, &last)| last >= start);
        if !overlaps {
            self.taken.insert(start, end);
        }
    }

    /// Frees the block that starts at `network`.
    pub fn release(&mut self, network: Ipv4Addr) {
        self.taken.remove(&u32::from(network));
    }

    /// Live blocks.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.taken.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_are_aligned_and_never_overlap() {
        let mut pool = Ipv4Pool::new(net("127.9.0.0/24"));
        let a = pool.allocate(31).unwrap();
        let b = pool.allocate(29).unwrap();
        let c = pool.allocate(32).unwrap();
        assert_eq!(a, net("127.9.0.0/31"));
        assert_eq!(b, net("127.9.0.8/29"), "aligned to its size");
        assert_eq!(c, net("127.9.0.16/32"));
        assert_eq!(pool.allocate(23), None, "larger than the pool");
        assert_eq!(pool.allocate(25), Some(net("127.9.0.128/25")));
        // The rest fills the gaps left by alignment, never a live block.
        let mut rest = Vec::new();
        while let Some(block) = pool.allocate(32) {
            rest.push(block);
        }
        let mut all: Vec<Ipv4Net> = vec![a, b, c, net("127.9.0.128/25")];
        all.extend(&rest);
        let addresses: usize = all.iter().map(|n| n.hosts().count().max(1)).sum();
        assert_eq!(pool.live(), all.len());
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert!(!x.contains(y) && !y.contains(x), "{x} overlaps {y}");
            }
        }
        assert!(addresses <= 256);
        assert_eq!(pool.allocate(32), None, "full");
    }

    #[test]
    fn released_blocks_come_back_after_the_rest() {
        let mut pool = Ipv4Pool::new(net("127.9.0.0/30"));
        let a = pool.allocate(31).unwrap();
        let b = pool.allocate(31).unwrap();
        assert_eq!(pool.allocate(31), None);
        pool.release(a.network());
        assert_eq!(pool.allocate(31), Some(a), "wraps to the freed block");
        pool.release(b.network());
        pool.mark(b);
        assert_eq!(pool.allocate(32), None);
    }

    #[test]
    fn choices() {
        let (seeded, _) = AddressPool::Seeded.choose(7);
        assert_eq!(seeded, AddressPool::Seeded.choose(7).0);
        assert_eq!(seeded.prefix_len(), 16);
        assert!(net("127.0.0.0/8").contains(&seeded));
        let (given, _) = AddressPool::Block(net("127.42.1.7/24")).choose(0);
        assert_eq!(given, net("127.42.1.0/24"));
        let (a, lease_a) = AddressPool::Random.choose(0);
        let (b, lease_b) = AddressPool::Random.choose(0);
        assert_ne!(a, b, "one process never hands out one block twice");
        for block in [a, b] {
            let second = block.network().octets()[1];
            assert!((1..=254).contains(&second), "{block}");
        }
        drop((lease_a, lease_b));
    }
}
