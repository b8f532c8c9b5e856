//! The fast index's table from 64-bit name hashes to what the name is.
//!
//! Open addressing with linear probing over one flat array: the cache line a lookup will
//! read first is known from the hash alone, so a whole receive batch can have its lines
//! requested before any lookup waits on one (a general-purpose map hides its buckets).
//! Keys are already uniform hashes, so the low bits pick the position directly.

/// What an indexed name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// An app (index into the snapshot's apps).
    App(u32),
    /// A static name (index into the fast index's static names).
    Static(u32),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    slot: Option<Slot>,
}

const EMPTY: Entry = Entry {
    hash: 0,
    slot: None,
};

/// Hash → slot. Never more than two-thirds full, so every probe ends at an empty entry.
#[derive(Debug)]
pub struct SlotTable {
    mask: usize,
    len: usize,
    entries: Box<[Entry]>,
}

impl Default for SlotTable {
    fn default() -> Self {
        Self::with_size(16)
    }
}

impl SlotTable {
    fn with_size(size: usize) -> Self {
        debug_assert!(size.is_power_of_two());
        Self {
            mask: size - 1,
            len: 0,
            entries: vec![EMPTY; size].into_boxed_slice(),
        }
    }

    /// Adds `slot` under `hash`; if the hash is already taken the first slot stays (the
    /// fast path confirms every match by name, so the second name just goes slow).
    pub fn insert(&mut self, hash: u64, slot: Slot) {
        if (self.len + 1) * 3 > self.entries.len() * 2 {
            let mut bigger = Self::with_size(self.entries.len() * 2);
            for e in self.entries.iter() {
                if let Some(s) = e.slot {
                    bigger.insert(e.hash, s);
                }
            }
            *self = bigger;
        }
        let mut i = hash as usize & self.mask;
        loop {
            let e = &mut self.entries[i];
            match e.slot {
                None => {
                    *e = Entry {
                        hash,
                        slot: Some(slot),
                    };
                    self.len += 1;
                    return;
                }
                Some(_) if e.hash == hash => return,
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }

    pub fn get(&self, hash: u64) -> Option<Slot> {
        let mut i = hash as usize & self.mask;
        loop {
            let e = &self.entries[i];
            match e.slot {
                None => return None,
                Some(s) if e.hash == hash => return Some(s),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }

    /// Where the lookup of `hash` starts reading (for a prefetch).
    pub fn first_line(&self, hash: u64) -> *const u8 {
        (&self.entries[hash as usize & self.mask] as *const Entry).cast()
    }

    /// How many slots are held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_slot_through_collisions_and_growth() {
        let mut t = SlotTable::default();
        // Hashes sharing their low bits probe past each other; 10,000 entries force
        // growth from 16 several times.
        let hash = |k: u64| (k << 20) | (k % 7);
        for k in 0..2_000u64 {
            t.insert(hash(k), Slot::App(k as u32));
        }
        assert_eq!(t.len(), 2_000);
        for k in 0..2_000u64 {
            assert_eq!(t.get(hash(k)), Some(Slot::App(k as u32)), "key {k}");
        }
        assert_eq!(t.get(hash(2_000)), None);
        assert_eq!(t.get(12345), None);
        // A hash inserted twice keeps its first slot.
        t.insert(hash(5), Slot::Static(1));
        assert_eq!(t.get(hash(5)), Some(Slot::App(5)));
        assert_eq!(t.len(), 2_000);
    }
}
