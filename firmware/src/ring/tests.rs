//! Ring tests: the worked cases, then a model-based property test (random pushes, acks,
//! sends and reconnects against a plain `VecDeque`).

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

fn id(boot: u32, seq: u32) -> EventId {
    EventId { boot, seq }
}

fn ack(boot: u32, seq: u32) -> Ack {
    Ack { boot, seq }
}

fn ids<const S: usize, const B: usize>(ring: &Ring<S, B>) -> Vec<(u32, u32)> {
    ring.iter().map(|s| (s.id.boot, s.id.seq)).collect()
}

#[test]
fn an_ack_removes_every_event_of_its_boot_up_to_its_seq_and_nothing_else() {
    let mut ring = Ring::<8, 64>::new(WhenFull::RefuseNew);
    for seq in 1..=5 {
        ring.push(id(1, seq), &[seq as u8; 4]).unwrap();
    }
    assert_eq!(ring.confirm(ack(1, 3)), 3);
    assert_eq!(ids(&ring), [(1, 4), (1, 5)]);
    assert_eq!(ring.confirm(ack(1, 3)), 0, "an old ack again changes nothing");
    assert_eq!(ring.confirm(ack(2, 9)), 0, "an ack of another boot covers nothing here");
    assert_eq!(ring.confirm(ack(1, 9)), 2);
    assert!(ring.is_empty());
    assert_eq!(ring.confirmed(), 5);
    assert_eq!(ring.bytes_used(), 0);
}

#[test]
fn an_ack_of_the_new_boot_also_frees_the_older_boot_sent_before_it() {
    let mut ring = Ring::<8, 64>::new(WhenFull::RefuseNew);
    ring.push(id(1, 9), b"a").unwrap();
    ring.push(id(1, 10), b"b").unwrap();
    ring.push(id(2, 1), b"c").unwrap();
    ring.push(id(2, 2), b"d").unwrap();
    assert_eq!(ring.confirm(ack(2, 1)), 3);
    assert_eq!(ids(&ring), [(2, 2)]);
}

#[test]
fn events_are_sent_oldest_first_and_all_again_after_a_rewind() {
    let mut ring = Ring::<4, 64>::new(WhenFull::RefuseNew);
    for seq in 1..=3 {
        ring.push(id(1, seq), &[seq as u8]).unwrap();
    }
    let mut sent = Vec::new();
    while let Some(next) = ring.next_unsent() {
        assert!(!next.sent_before);
        sent.push(next.id.seq);
        ring.mark_sent();
    }
    assert_eq!(sent, [1, 2, 3]);
    assert_eq!(ring.confirm(ack(1, 1)), 1);
    assert_eq!(ring.unsent(), 0);
    ring.rewind();
    let again = ring.next_unsent().unwrap();
    assert_eq!((again.id.seq, again.payload, again.sent_before), (2, &[2u8][..], true));
    assert_eq!(ring.unsent(), 2);
}

#[test]
fn drop_oldest_makes_room_and_counts_every_drop() {
    let mut ring = Ring::<3, 64>::new(WhenFull::DropOldest);
    for seq in 1..=5 {
        ring.push(id(1, seq), &[0; 8]).unwrap();
    }
    assert_eq!(ids(&ring), [(1, 3), (1, 4), (1, 5)]);
    assert_eq!(ring.dropped(), 2);
    // Bytes run out before slots do: a 40-byte event pushes out all three 8-byte ones.
    let mut ring = Ring::<8, 48>::new(WhenFull::DropOldest);
    for seq in 1..=4 {
        ring.push(id(1, seq), &[0; 8]).unwrap();
    }
    ring.push(id(1, 5), &[5; 40]).unwrap();
    assert_eq!(ids(&ring), [(1, 5)]);
    assert_eq!(ring.dropped(), 4);
}

#[test]
fn refuse_new_keeps_the_ring_unchanged_and_reports_it_full() {
    let mut ring = Ring::<2, 64>::new(WhenFull::RefuseNew);
    ring.push(id(1, 1), b"one").unwrap();
    ring.push(id(1, 2), b"two").unwrap();
    assert_eq!(ring.push(id(1, 3), b"three"), Err(Error::RingFull));
    assert_eq!(ids(&ring), [(1, 1), (1, 2)]);
    assert_eq!(ring.dropped(), 0);
    ring.confirm(ack(1, 1));
    ring.push(id(1, 3), b"three").unwrap();
}

#[test]
fn an_event_larger_than_the_ring_is_refused_whatever_the_policy() {
    let mut ring = Ring::<4, 16>::new(WhenFull::DropOldest);
    ring.push(id(1, 1), b"keep").unwrap();
    assert_eq!(ring.push(id(1, 2), &[0; 17]), Err(Error::BufferTooSmall { needed: 17, available: 16 }));
    assert_eq!(ids(&ring), [(1, 1)], "nothing dropped for an event that cannot fit");
    ring.push(id(1, 3), &[7; 16]).unwrap();
    assert_eq!(ids(&ring), [(1, 3)]);
}

#[test]
fn an_encoding_that_would_straddle_the_end_starts_again_at_offset_zero() {
    let mut ring = Ring::<8, 10>::new(WhenFull::RefuseNew);
    ring.push(id(1, 1), &[1; 4]).unwrap();
    ring.push(id(1, 2), &[2; 4]).unwrap();
    ring.confirm(ack(1, 1));
    // 2 bytes left at the end, 4 at the start: the 3-byte event goes to offset 0.
    ring.push(id(1, 3), &[3; 3]).unwrap();
    assert_eq!(ring.push(id(1, 4), &[4; 2]), Err(Error::RingFull), "only 1 byte between");
    ring.push(id(1, 4), &[4; 1]).unwrap();
    let payloads: Vec<Vec<u8>> = ring.iter().map(|s| s.payload.to_vec()).collect();
    assert_eq!(payloads, [vec![2; 4], vec![3; 3], vec![4; 1]]);
}

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    SendSome(usize),
    Ack(usize),
    Reconnect,
    Reboot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..=48).prop_map(Op::Push),
        2 => (0usize..6).prop_map(Op::SendSome),
        2 => (0usize..8).prop_map(Op::Ack),
        1 => Just(Op::Reconnect),
        1 => Just(Op::Reboot),
    ]
}

/// What the model holds per event: its id, its bytes, whether it was ever sent.
type ModelEntry = ((u32, u32), Vec<u8>, bool);

fn check_model(ring: &Ring<6, 96>, model: &VecDeque<ModelEntry>, sent: usize) {
    let got: Vec<ModelEntry> =
        ring.iter().map(|s| ((s.id.boot, s.id.seq), s.payload.to_vec(), s.sent_before)).collect();
    let want: Vec<ModelEntry> = model.iter().cloned().collect();
    assert_eq!(got, want, "ring content differs from the model");
    assert_eq!(ring.unsent(), model.len() - sent);
    assert_eq!(ring.bytes_used(), model.iter().map(|e| e.1.len()).sum::<usize>());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_ring_behaves_like_a_queue_that_loses_only_acked_or_counted_events(
        ops in proptest::collection::vec(op(), 1..120),
        refuse in any::<bool>(),
    ) {
        let policy = if refuse { WhenFull::RefuseNew } else { WhenFull::DropOldest };
        let mut ring = Ring::<6, 96>::new(policy);
        let mut model: VecDeque<ModelEntry> = VecDeque::new();
        let mut sent = 0usize;
        let (mut boot, mut seq) = (1u32, 0u32);
        for op in ops {
            match op {
                Op::Push(len) => {
                    let payload: Vec<u8> = (0..len).map(|i| (seq as usize * 31 + i) as u8).collect();
                    let dropped_before = ring.dropped();
                    let result = ring.push(id(boot, seq + 1), &payload);
                    let dropped = (ring.dropped() - dropped_before) as usize;
                    match result {
                        Ok(()) => {
                            for _ in 0..dropped {
                                model.pop_front();
                            }
                            sent = sent.saturating_sub(dropped);
                            model.push_back(((boot, seq + 1), payload, false));
                            seq += 1;
                        }
                        Err(Error::RingFull) => {
                            prop_assert_eq!(policy, WhenFull::RefuseNew);
                            prop_assert_eq!(dropped, 0);
                            prop_assert!(!model.is_empty(), "an empty ring takes any event that fits");
                        }
                        Err(other) => prop_assert!(false, "unexpected {other:?}"),
                    }
                    if policy == WhenFull::RefuseNew {
                        prop_assert_eq!(ring.dropped(), 0);
                    }
                }
                Op::SendSome(n) => {
                    for _ in 0..n {
                        let Some(next) = ring.next_unsent() else { break };
                        prop_assert_eq!((next.id.boot, next.id.seq), model[sent].0);
                        ring.mark_sent();
                        model[sent].2 = true;
                        sent += 1;
                    }
                }
                Op::Ack(k) => {
                    // The gateway acks an event it has seen: one already sent on some link.
                    let candidates: Vec<usize> = (0..model.len()).filter(|&i| model[i].2).collect();
                    if let Some(&index) = candidates.get(k % candidates.len().max(1)) {
                        let (b, s) = model[index].0;
                        prop_assert_eq!(ring.confirm(Ack { boot: b, seq: s }), index + 1);
                        model.drain(..=index);
                        sent = sent.saturating_sub(index + 1);
                    }
                }
                Op::Reconnect => {
                    ring.rewind();
                    sent = 0;
                }
                Op::Reboot => {
                    boot += 1;
                    seq = 0;
                }
            }
            check_model(&ring, &model, sent);
        }
    }
}

#[test]
fn a_slot_costs_sixteen_bytes() {
    assert_eq!(std::mem::size_of::<Entry>(), 16);
}
