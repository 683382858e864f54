//! The bounded queue between the pipeline and the MQTT client.

/// Messages waiting for the broker at most. A minute of state at one per second fits, with room for
/// events; beyond it the oldest state goes first (a newer one replaces it anyway), then the oldest event.
pub const QUEUE_CAPACITY: usize = 64;

/// What a message is, for the queue's drop policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The retained state: only the newest matters.
    State,
    /// A face event: each matters, kept while there is room.
    Event,
    /// Periodic stats.
    Stats,
}

/// One message for the broker.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Full topic.
    pub topic: String,
    /// JSON text.
    pub payload: String,
    /// Retained by the broker.
    pub retain: bool,
    /// QoS 1 (at least once) rather than 0.
    pub at_least_once: bool,
    /// For the drop policy.
    pub kind: Kind,
}

/// A fixed-capacity FIFO that drops by kind when full.
#[derive(Debug, Default)]
pub struct Queue {
    items: heapless::Deque<Outgoing, QUEUE_CAPACITY>,
    /// States dropped (a newer one was published instead, or the broker was away).
    pub dropped_states: u64,
    /// Events and stats dropped because the queue was full of them.
    pub dropped_events: u64,
}

impl Queue {
    /// Adds a message; when full, first drops the oldest state, else the oldest event or stats.
    pub fn push(&mut self, message: Outgoing) {
        if self.items.is_full() {
            let victim = self.items.iter().position(|m| m.kind == Kind::State).unwrap_or(0);
            let kind = self.remove(victim);
            match kind {
                Kind::State => self.dropped_states += 1,
                Kind::Event | Kind::Stats => self.dropped_events += 1,
            }
        }
        // Cannot fail: there is room now.
        let _ = self.items.push_back(message);
    }

    /// Removes the message at `index` (keeping the order of the others); its kind.
    fn remove(&mut self, index: usize) -> Kind {
        let len = self.items.len();
        let mut kind = Kind::Event;
        for i in 0..len {
            let Some(m) = self.items.pop_front() else { break };
            if i == index {
                kind = m.kind;
            } else {
                let _ = self.items.push_back(m);
            }
        }
        kind
    }

    /// The oldest message.
    pub fn pop(&mut self) -> Option<Outgoing> {
        self.items.pop_front()
    }

    /// Messages waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Nothing waiting.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: Kind, n: usize) -> Outgoing {
        Outgoing { topic: format!("t/{n}"), payload: String::new(), retain: false, at_least_once: false, kind }
    }

    #[test]
    fn full_queue_drops_the_oldest_state_first_then_the_oldest_event() {
        let mut queue = Queue::default();
        queue.push(message(Kind::Event, 0));
        queue.push(message(Kind::State, 1));
        for n in 2..QUEUE_CAPACITY {
            queue.push(message(Kind::Event, n));
        }
        assert_eq!(queue.len(), QUEUE_CAPACITY);
        queue.push(message(Kind::Event, 100));
        assert_eq!((queue.dropped_states, queue.dropped_events), (1, 0));
        queue.push(message(Kind::Event, 101));
        assert_eq!((queue.dropped_states, queue.dropped_events), (1, 1));
        let topics: Vec<String> = std::iter::from_fn(|| queue.pop()).map(|m| m.topic).collect();
        assert_eq!(topics.len(), QUEUE_CAPACITY);
        // Event 0 went (the oldest), state 1 went before it; order otherwise kept.
        assert_eq!(&topics[..2], ["t/2", "t/3"]);
        assert_eq!(&topics[QUEUE_CAPACITY - 2..], ["t/100", "t/101"]);
        assert!(queue.is_empty());
    }
}
