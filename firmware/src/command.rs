//! Commands from the cloud, as the device handles them: the handler's [`Outcome`], and the
//! memory of the last answers that makes a repeated command harmless.
//!
//! # Invariant
//!
//! A command id the device still remembers is never run twice: a repeat (the gateway
//! re-sends a command whose answer it did not get) is answered with the stored outcome.
//! The gateway sends a device one command at a time, so remembering the last
//! [`REMEMBERED`] is enough.

use edge_event::command::ReplyStatus;
use edge_event::command::{MAX_COMMAND_ID_LEN, MAX_REPLY_MESSAGE_LEN};

/// How many answered commands a device remembers.
pub const REMEMBERED: usize = 2;

/// A reply's message; longer text is cut at a character boundary.
pub type Message = heapless::String<MAX_REPLY_MESSAGE_LEN>;

/// What a command handler reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command ran; the message is its result (may be empty).
    Done(Message),
    /// The command could not run; the message says why.
    Failed(Message),
}

impl Outcome {
    /// `Done` with `message` (cut to [`MAX_REPLY_MESSAGE_LEN`] bytes).
    pub fn done(message: &str) -> Outcome {
        Outcome::Done(message_of(message))
    }

    /// `Failed` with `message` (cut to [`MAX_REPLY_MESSAGE_LEN`] bytes).
    pub fn failed(message: &str) -> Outcome {
        Outcome::Failed(message_of(message))
    }

    /// The reply status it is reported as.
    pub fn status(&self) -> ReplyStatus {
        match self {
            Outcome::Done(_) => ReplyStatus::Done,
            Outcome::Failed(_) => ReplyStatus::Failed,
        }
    }

    /// Its message.
    pub fn message(&self) -> &str {
        match self {
            Outcome::Done(m) | Outcome::Failed(m) => m.as_str(),
        }
    }
}

fn message_of(text: &str) -> Message {
    let mut end = text.len().min(MAX_REPLY_MESSAGE_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut message = Message::new();
    let _ = message.push_str(&text[..end]);
    message
}

/// An answered command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) id: heapless::String<MAX_COMMAND_ID_LEN>,
    pub(crate) outcome: Outcome,
}

/// The last [`REMEMBERED`] answers, newest last.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recent {
    answers: [Option<Answer>; REMEMBERED],
    next: usize,
}

impl Recent {
    /// The slot of the answer to `id`, if remembered.
    pub(crate) fn find(&self, id: &str) -> Option<usize> {
        self.answers.iter().position(|a| a.as_ref().is_some_and(|a| a.id.as_str() == id))
    }

    /// Remembers an answer (forgetting the oldest); None if `id` is too long to keep.
    pub(crate) fn insert(&mut self, id: &str, outcome: Outcome) -> Option<usize> {
        let mut kept = heapless::String::new();
        kept.push_str(id).ok()?;
        let slot = self.next;
        self.answers[slot] = Some(Answer { id: kept, outcome });
        self.next = (slot + 1) % REMEMBERED;
        Some(slot)
    }

    pub(crate) fn get(&self, slot: usize) -> Option<&Answer> {
        self.answers.get(slot).and_then(Option::as_ref)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_REPLY_MESSAGE_LEN);
        let outcome = Outcome::failed(&long);
        assert!(outcome.message().len() <= MAX_REPLY_MESSAGE_LEN && outcome.message().starts_with('é'));
        assert_eq!(Outcome::done("pong").message(), "pong");
        assert_eq!(Outcome::done("").status(), ReplyStatus::Done);
    }

    #[test]
    fn remembers_the_last_answers_only() {
        let mut recent = Recent::default();
        let a = recent.insert("a", Outcome::done("1")).unwrap();
        recent.insert("b", Outcome::done("2")).unwrap();
        assert_eq!(recent.find("a"), Some(a));
        recent.insert("c", Outcome::done("3")).unwrap();
        assert_eq!(recent.find("a"), None, "the oldest is forgotten");
        assert_eq!(recent.get(recent.find("c").unwrap()).unwrap().outcome, Outcome::done("3"));
        assert_eq!(recent.insert(&"x".repeat(MAX_COMMAND_ID_LEN + 1), Outcome::done("")), None);
    }
}
