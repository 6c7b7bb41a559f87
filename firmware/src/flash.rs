//! The retention ring in NOR flash (feature `flash`): [`FlashRing`] keeps the events the
//! gateway has not confirmed, and the boot counter, through resets and power cuts, on any
//! [`NorFlash`] of `embedded-storage` (a region of the MCU's own flash, or a SPI NOR).
//!
//! Written here rather than on sequential-storage: its API is async-only (the blocking
//! device would need an executor to call it), and its queue pops items in order while an
//! ack here releases "everything up to the newest match", which a log of our own states in
//! one record. The log is about 300 lines and builds for `thumbv6m-none-eabi`.
//!
//! # Layout
//!
//! The region is a circle of erase sectors used as one append-only log (byte format in
//! `flash/format.rs`). Each sector opens with a header carrying its age (`seq`, one more
//! than the previous sector's) and the boot counter; records follow: `Event` (its
//! `(boot, seq)` and encoding), `Confirm` (an ack that released events), `Boot` (a new
//! boot counter). RAM holds only an index: 16 bytes per unconfirmed event (`SLOTS` of
//! them), plus one 800-byte record buffer.
//!
//! # Invariants
//!
//! 1. **Nothing confirmed-lost.** [`Retention::push`] returns `Ok` only after the event's
//!    record is written; a record is erased only with its whole sector, and a sector is
//!    erased only when the log needs it again and it holds no unconfirmed event (or the
//!    full policy [`WhenFull::DropOldest`] drops them, counted).
//! 2. **Replay is the state.** [`FlashRing::open`] walks the sectors oldest first and
//!    applies every intact record in log order, as [`Ring`](crate::Ring) would have: the
//!    unconfirmed events come back in order with their original `(boot, seq)`, the boot
//!    counter with them. A record whose CRC fails ends its sector (a torn write); the next
//!    append opens a new sector, so nothing is ever written over half-programmed bytes.
//! 3. **Writes never cross sectors** and start on an erased, aligned address.
//! 4. **A record damaged after it was written** (wear, a bad erase) is skipped when
//!    sending, counted in [`FlashRing::damaged`], never a blockage for the events behind it.
//!
//! # The window (what a power cut can cost)
//!
//! - A cut while an event is written: that event is either fully kept or absent (its
//!   `publish` had not returned `Ok`); nothing else changes.
//! - A cut while a `Confirm` is written, or a `Confirm` that could not be written (a
//!   flash error, counted in [`FlashRing::unrecorded_confirms`]): the events that ack
//!   released come back after the reset and are **sent again once**. The gateway drops
//!   them as duplicates (their seq is not above its committed mark), and the next ack
//!   releases them, so the cloud counts each event once; the device re-sends at most the
//!   events covered by the acks since the last recorded `Confirm`.
//! - A cut while a sector is erased to make room under `DropOldest`: events being dropped
//!   may come back (sent late, not lost, not duplicated).

use edge_event::{Ack, MAX_ENCODED_LEN};
use embedded_storage::nor_flash::NorFlash;
use heapless::Deque;

use crate::error::Error;
use crate::numbering::{BootId, EventId};
use crate::retention::Retention;
use crate::ring::{Stored, WhenFull};

mod format;

use format::{pad, Header, Kind, RECORD_HEADER_LEN, SECTOR_HEADER_LEN};

/// The largest write and read alignment supported.
pub const MAX_ALIGN: usize = 32;

/// Bytes of the head sector events leave free for `Boot` and `Confirm` records (eight
/// of them), so that a log full of unconfirmed events under `RefuseNew` can still record
/// acks and a few boots.
const RESERVE: u32 = 128;

/// The largest record (an event of `edge_event::MAX_ENCODED_LEN` bytes), padded.
const RECORD_BUF: usize = pad(RECORD_HEADER_LEN + format::EVENT_BODY_PREFIX + MAX_ENCODED_LEN, MAX_ALIGN);

/// Where one unconfirmed event's record is.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: EventId,
    /// Address of its record, relative to the region.
    addr: u32,
    len: u16,
    sent_before: bool,
}

/// Unconfirmed events in NOR flash (at most `SLOTS` of them), and the boot counter; see
/// the module docs for the layout, the invariants and the power-cut window.
#[derive(Debug)]
pub struct FlashRing<F, const SLOTS: usize> {
    flash: F,
    base: u32,
    sectors: u32,
    sector_len: u32,
    align: usize,
    entries: Deque<Entry, SLOTS>,
    /// How many entries, from the front, were published on the current link.
    sent: usize,
    /// The sector appends go to, its age, and where its free space starts (None: closed).
    head: u32,
    head_seq: u32,
    write_at: Option<u32>,
    boot: u32,
    when_full: WhenFull,
    dropped: u64,
    confirmed: u64,
    unrecorded_confirms: u64,
    damaged: u64,
    buf: [u8; RECORD_BUF],
}

fn storage(reason: &'static str) -> Error {
    Error::Storage { reason }
}

impl<F: NorFlash, const SLOTS: usize> FlashRing<F, SLOTS> {
    /// Opens the log in `flash` between offsets `start` and `end` (whole erase sectors, at
    /// least two), replaying what it holds; a region that holds none is started afresh.
    pub fn open(flash: F, start: u32, end: u32, when_full: WhenFull) -> Result<Self, Error> {
        let align = F::WRITE_SIZE.max(F::READ_SIZE).max(1);
        let sector_len = F::ERASE_SIZE;
        let fits = align.is_power_of_two()
            && align <= MAX_ALIGN
            && sector_len.is_multiple_of(align)
            && sector_len >= pad(SECTOR_HEADER_LEN, align) + RECORD_BUF;
        if !fits {
            return Err(storage("flash geometry: write size a power of two up to 32, sectors of 1 KiB or more"));
        }
        let len = end.checked_sub(start).ok_or(storage("flash region ends before it starts"))?;
        let (Ok(sector_u32), true) = (u32::try_from(sector_len), (start as usize).is_multiple_of(sector_len)) else {
            return Err(storage("flash region does not start on an erase sector"));
        };
        if !len.is_multiple_of(sector_u32) || len / sector_u32 < 2 || end as usize > flash.capacity() {
            return Err(storage("flash region must be two or more whole erase sectors inside the flash"));
        }
        let mut ring = FlashRing {
            flash,
            base: start,
            sectors: len / sector_u32,
            sector_len: sector_u32,
            align,
            entries: Deque::new(),
            sent: 0,
            head: 0,
            head_seq: 0,
            write_at: None,
            boot: 0,
            when_full,
            dropped: 0,
            confirmed: 0,
            unrecorded_confirms: 0,
            damaged: 0,
            buf: [0xFF; RECORD_BUF],
        };
        ring.replay()?;
        Ok(ring)
    }

    /// The boot counter as stored (0 on a fresh region).
    pub fn stored_boot(&self) -> u32 {
        self.boot
    }

    /// The next boot id ([`BootId::after`] the stored counter), written to flash before it
    /// is returned: call it once at start-up, before the first event leaves the device.
    /// Events leave room for eight such records in a full log; a `RefuseNew` log still
    /// full after that many resets is [`Error::RingFull`] (take [`BootId::from_seed`] then).
    pub fn next_boot(&mut self) -> Result<BootId, Error> {
        let boot = BootId::after(self.boot);
        self.append(Kind::Boot, &[&boot.get().to_le_bytes()], true, 0)?;
        self.boot = boot.get();
        Ok(boot)
    }

    /// Events ever released by an ack.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// Acks applied in RAM whose `Confirm` record could not be written (see the window in
    /// the module docs).
    pub fn unrecorded_confirms(&self) -> u64 {
        self.unrecorded_confirms
    }

    /// Kept events whose record no longer reads back intact (flash wear), skipped when
    /// sending.
    pub fn damaged(&self) -> u64 {
        self.damaged
    }

    /// The flash, for inspection.
    pub fn flash(&self) -> &F {
        &self.flash
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> F {
        self.flash
    }

    fn sector_of(&self, addr: u32) -> u32 {
        addr / self.sector_len
    }

    fn read(&mut self, addr: u32, len: usize) -> Result<(), Error> {
        let buf = self.buf.get_mut(..len).ok_or(storage("record larger than the record buffer"))?;
        self.flash.read(self.base + addr, buf).map_err(|_| storage("flash read failed"))
    }

    /// Rebuilds the index, the boot counter and the append position from the log.
    fn replay(&mut self) -> Result<(), Error> {
        let header_len = pad(SECTOR_HEADER_LEN, self.align);
        let mut newest: Option<(u32, u32)> = None;
        for sector in 0..self.sectors {
            self.read(sector * self.sector_len, header_len)?;
            if let Some((seq, _)) = format::parse_sector_header(&self.buf) {
                if newest.is_none_or(|(_, s)| seq > s) {
                    newest = Some((sector, seq));
                }
            }
        }
        let Some((head, head_seq)) = newest else {
            // A fresh (or wholly damaged) region: start the log in sector 0.
            self.head = self.sectors - 1;
            return self.open_next_sector(false);
        };
        (self.head, self.head_seq) = (head, head_seq);
        // Oldest first: the sectors after the head, around the circle, ages increasing.
        let mut last_seq = 0;
        for step in 1..=self.sectors {
            let sector = (head + step) % self.sectors;
            self.read(sector * self.sector_len, header_len)?;
            let Some((seq, boot)) = format::parse_sector_header(&self.buf) else { continue };
            if seq <= last_seq && step > 1 {
                continue;
            }
            last_seq = seq;
            self.boot = boot;
            let free = self.replay_sector(sector)?;
            if sector == head {
                self.write_at = match free {
                    Some(at) if self.is_erased(sector, at)? => Some(at),
                    _ => None,
                };
            }
        }
        Ok(())
    }

    /// Applies a sector's intact records; where its free space starts, or None if a
    /// damaged record ended it.
    fn replay_sector(&mut self, sector: u32) -> Result<Option<u32>, Error> {
        let mut at = pad(SECTOR_HEADER_LEN, self.align) as u32;
        let start = sector * self.sector_len;
        let head_len = pad(RECORD_HEADER_LEN, self.align);
        while (at as usize) + head_len <= self.sector_len as usize {
            self.read(start + at, head_len)?;
            let (kind, len, crc) = match format::parse_record_header(&self.buf) {
                Header::Free => return Ok(Some(at)),
                Header::Bad => return Ok(None),
                Header::Record { kind, len, crc } => (kind, len, crc),
            };
            let total = pad(RECORD_HEADER_LEN + len, self.align);
            if total > RECORD_BUF || at as usize + total > self.sector_len as usize {
                return Ok(None);
            }
            self.read(start + at, total)?;
            if !format::record_is_intact(&self.buf, len, crc) {
                return Ok(None);
            }
            self.apply(kind, len, start + at);
            at += total as u32;
        }
        Ok(None)
    }

    fn apply(&mut self, kind: Kind, len: usize, addr: u32) {
        let body = &self.buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
        let (a, b) = (format::u32_at(body, 0).unwrap_or(0), format::u32_at(body, 4).unwrap_or(0));
        match kind {
            Kind::Event if len >= format::EVENT_BODY_PREFIX => {
                if self.entries.is_full() {
                    // The live ring dropped its oldest here too (DropOldest): replay it.
                    self.entries.pop_front();
                }
                let payload_len = (len - format::EVENT_BODY_PREFIX) as u16;
                let entry = Entry { id: EventId { boot: a, seq: b }, addr, len: payload_len, sent_before: true };
                let _ = self.entries.push_back(entry);
            }
            Kind::Event => {}
            Kind::Confirm => {
                let covered = self.covered(Ack { boot: a, seq: b });
                self.remove_front(covered);
            }
            Kind::Boot => self.boot = a,
        }
    }

    fn is_erased(&mut self, sector: u32, from: u32) -> Result<bool, Error> {
        let mut at = from;
        while at < self.sector_len {
            let n = (self.sector_len - at).min(RECORD_BUF as u32) as usize;
            self.read(sector * self.sector_len + at, n)?;
            if self.buf[..n].iter().any(|&b| b != 0xFF) {
                return Ok(false);
            }
            at += n as u32;
        }
        Ok(true)
    }

    /// Erases the sector after the head and opens it. Its unconfirmed events (the oldest)
    /// are dropped (counted) if `may_drop` and the policy is `DropOldest`, else the ring is
    /// full.
    fn open_next_sector(&mut self, may_drop: bool) -> Result<(), Error> {
        let next = (self.head + 1) % self.sectors;
        let live = self.entries.iter().take_while(|e| self.sector_of(e.addr) == next).count();
        if live > 0 {
            if !may_drop || self.when_full == WhenFull::RefuseNew {
                return Err(Error::RingFull);
            }
            self.remove_front(live);
            self.dropped += live as u64;
        }
        self.write_at = None;
        let start = self.base + next * self.sector_len;
        self.flash.erase(start, start + self.sector_len).map_err(|_| storage("flash erase failed"))?;
        let mut header = [0xFF; MAX_ALIGN];
        let mut fields = [0u8; SECTOR_HEADER_LEN];
        format::sector_header(self.head_seq.wrapping_add(1), self.boot, &mut fields);
        header[..SECTOR_HEADER_LEN].copy_from_slice(&fields);
        let header_len = pad(SECTOR_HEADER_LEN, self.align);
        self.flash.write(start, &header[..header_len]).map_err(|_| storage("flash write failed"))?;
        self.head = next;
        self.head_seq = self.head_seq.wrapping_add(1);
        self.write_at = Some(header_len as u32);
        Ok(())
    }

    /// Writes a record at the end of the log, leaving `reserve` bytes of the head sector
    /// free; its address.
    fn append(&mut self, kind: Kind, body: &[&[u8]], may_drop: bool, reserve: u32) -> Result<u32, Error> {
        let total = format::record(kind, body, self.align, &mut self.buf).ok_or(Error::BufferTooSmall {
            needed: body.iter().map(|b| b.len()).sum(),
            available: RECORD_BUF - RECORD_HEADER_LEN,
        })? as u32;
        let at = loop {
            match self.write_at {
                Some(at) if at + total + reserve <= self.sector_len => break at,
                _ => self.open_next_sector(may_drop)?,
            }
        };
        let addr = self.head * self.sector_len + at;
        // Closed until the write is known complete: a failed write never gets written over.
        self.write_at = None;
        self.flash.write(self.base + addr, &self.buf[..total as usize]).map_err(|_| storage("flash write failed"))?;
        self.write_at = Some(at + total);
        Ok(addr)
    }

    fn covered(&self, ack: Ack) -> usize {
        self.entries.iter().rposition(|e| e.id.boot == ack.boot && e.id.seq <= ack.seq).map_or(0, |i| i + 1)
    }

    fn remove_front(&mut self, count: usize) {
        for _ in 0..count {
            self.entries.pop_front();
        }
        self.sent = self.sent.saturating_sub(count);
    }
}

impl<F: NorFlash, const SLOTS: usize> Retention for FlashRing<F, SLOTS> {
    fn push(&mut self, id: EventId, payload: &[u8]) -> Result<(), Error> {
        let len = u16::try_from(payload.len())
            .ok()
            .filter(|&l| usize::from(l) <= MAX_ENCODED_LEN)
            .ok_or(Error::BufferTooSmall { needed: payload.len(), available: MAX_ENCODED_LEN })?;
        if SLOTS == 0 {
            return Err(Error::BufferTooSmall { needed: payload.len(), available: 0 });
        }
        if self.entries.is_full() {
            if self.when_full == WhenFull::RefuseNew {
                return Err(Error::RingFull);
            }
            self.remove_front(1);
            self.dropped += 1;
        }
        let body: [&[u8]; 3] = [&id.boot.to_le_bytes(), &id.seq.to_le_bytes(), payload];
        let addr = self.append(Kind::Event, &body, true, RESERVE)?;
        self.entries.push_back(Entry { id, addr, len, sent_before: false }).map_err(|_| Error::RingFull)
    }

    fn confirm(&mut self, ack: Ack) -> usize {
        let covered = self.covered(ack);
        if covered > 0 {
            self.remove_front(covered);
            self.confirmed += covered as u64;
            let body: [&[u8]; 2] = [&ack.boot.to_le_bytes(), &ack.seq.to_le_bytes()];
            if self.append(Kind::Confirm, &body, false, 0).is_err() {
                self.unrecorded_confirms += 1;
            }
        }
        covered
    }

    fn next_unsent(&mut self) -> Result<Option<Stored<'_>>, Error> {
        loop {
            let Some(entry) = self.entries.get(self.sent).copied() else {
                return Ok(None);
            };
            let len = format::EVENT_BODY_PREFIX + usize::from(entry.len);
            self.read(entry.addr, pad(RECORD_HEADER_LEN + len, self.align))?;
            let intact = match format::parse_record_header(&self.buf) {
                Header::Record { kind: Kind::Event, len: l, crc } if l == len => {
                    format::record_is_intact(&self.buf, len, crc)
                }
                _ => false,
            };
            if intact {
                let start = RECORD_HEADER_LEN + format::EVENT_BODY_PREFIX;
                let payload = &self.buf[start..start + usize::from(entry.len)];
                return Ok(Some(Stored { id: entry.id, payload, sent_before: entry.sent_before }));
            }
            // Damaged since it was written (flash wear): skip it, counted, rather than
            // hold back every event behind it; the next ack releases it with the rest.
            self.damaged += 1;
            self.mark_sent();
        }
    }

    fn mark_sent(&mut self) {
        if let Some(entry) = self.entries.get_mut(self.sent) {
            entry.sent_before = true;
            self.sent += 1;
        }
    }

    fn rewind(&mut self) {
        self.sent = 0;
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn unsent(&self) -> usize {
        self.entries.len() - self.sent
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }
}
