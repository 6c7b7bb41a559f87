//! A NOR flash in RAM that survives a simulated reset, and can lose power at any byte of a
//! write or an erase: the byte being programmed when the power goes ends up with a random
//! subset of its bits programmed, and every later operation fails until `power_on`.
//! It also counts programming over already-programmed bytes, which real NOR forbids.

use std::cell::RefCell;
use std::rc::Rc;

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};

/// Sector size of the mock.
pub const SECTOR: usize = 1024;

#[derive(Debug)]
pub struct Inner {
    pub bytes: Vec<u8>,
    /// Bytes that can still be programmed or erased before the power goes.
    pub budget: Option<usize>,
    /// The power went: everything fails until `power_on`.
    pub dead: bool,
    /// Bytes programmed while not erased (a driver bug on real NOR).
    pub overwrites: usize,
    rng: u64,
}

/// The flash; clones share the memory (it outlives the "device").
#[derive(Debug, Clone)]
pub struct MemFlash(pub Rc<RefCell<Inner>>);

impl MemFlash {
    pub fn new(sectors: usize, seed: u64) -> MemFlash {
        MemFlash(Rc::new(RefCell::new(Inner {
            bytes: vec![0xFF; sectors * SECTOR],
            budget: None,
            dead: false,
            overwrites: 0,
            rng: seed | 1,
        })))
    }

    /// The power goes after `bytes` more bytes are programmed or erased.
    pub fn cut_after(&self, bytes: usize) {
        self.0.borrow_mut().budget = Some(bytes);
    }

    /// True once the power went.
    pub fn is_dead(&self) -> bool {
        self.0.borrow().dead
    }

    /// Power back (a reset): the memory is as the cut left it.
    pub fn power_on(&self) {
        let mut inner = self.0.borrow_mut();
        inner.dead = false;
        inner.budget = None;
    }

    pub fn overwrites(&self) -> usize {
        self.0.borrow().overwrites
    }
}

impl Inner {
    fn random(&mut self) -> u8 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng as u8
    }

    /// Spends one byte of budget; false (and a half-done byte) when the power goes.
    fn spend(&mut self, at: usize, value: u8, erase: bool) -> bool {
        if self.budget == Some(0) {
            let noise = self.random();
            self.bytes[at] = if erase { self.bytes[at] | noise } else { self.bytes[at] & (value | noise) };
            self.dead = true;
            return false;
        }
        if let Some(budget) = &mut self.budget {
            *budget -= 1;
        }
        true
    }
}

impl ErrorType for MemFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for MemFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let inner = self.0.borrow();
        if inner.dead {
            return Err(NorFlashErrorKind::Other);
        }
        let at = offset as usize;
        let src = inner.bytes.get(at..at + bytes.len()).ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.0.borrow().bytes.len()
    }
}

impl NorFlash for MemFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let mut inner = self.0.borrow_mut();
        if inner.dead {
            return Err(NorFlashErrorKind::Other);
        }
        if !(from as usize).is_multiple_of(SECTOR)
            || !(to as usize).is_multiple_of(SECTOR)
            || to as usize > inner.bytes.len()
        {
            return Err(NorFlashErrorKind::NotAligned);
        }
        for at in from as usize..to as usize {
            if !inner.spend(at, 0xFF, true) {
                return Err(NorFlashErrorKind::Other);
            }
            inner.bytes[at] = 0xFF;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        let mut inner = self.0.borrow_mut();
        if inner.dead {
            return Err(NorFlashErrorKind::Other);
        }
        let at = offset as usize;
        if !at.is_multiple_of(4) || !data.len().is_multiple_of(4) || at + data.len() > inner.bytes.len() {
            return Err(NorFlashErrorKind::NotAligned);
        }
        for (i, &value) in data.iter().enumerate() {
            if !inner.spend(at + i, value, false) {
                return Err(NorFlashErrorKind::Other);
            }
            if value != 0xFF && inner.bytes[at + i] != 0xFF {
                inner.overwrites += 1;
            }
            inner.bytes[at + i] &= value;
        }
        Ok(())
    }
}
