//! The jobs streams a worker reads: the shared stream and one per model name it maps, read in
//! turn.

use super::*;

/// The jobs streams a worker reads: the shared stream (jobs of model references, which every
/// worker resolves) and the stream of each model name it maps. Made by [`Queue::subscription`].
#[derive(Debug)]
pub struct Subscription {
    names: Vec<String>,
    streams: Vec<String>,
    /// Which stream the next read starts at.
    turn: std::sync::atomic::AtomicUsize,
}

impl Subscription {
    /// The model names whose streams it reads, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether it reads the stream of model name `name`.
    pub fn serves_name(&self, name: &str) -> bool {
        self.names
            .binary_search_by(|n| n.as_str().cmp(name))
            .is_ok()
    }

    /// The streams, starting at the next one in turn.
    pub(super) fn in_turn(&self) -> Vec<String> {
        let start =
            self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.streams.len();
        let mut s = self.streams[start..].to_vec();
        s.extend_from_slice(&self.streams[..start]);
        s
    }
}

impl Queue {
    /// The jobs streams of a worker that maps `names`: the shared stream and each name's.
    pub fn subscription(&self, names: &[String]) -> Subscription {
        let mut names: Vec<String> = names
            .iter()
            .filter(|n| matches!(ModelRoute::of(n), ModelRoute::Name(_)))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        let mut streams = vec![self.keys.jobs()];
        streams.extend(names.iter().map(|n| self.keys.model_jobs(n)));
        Subscription {
            names,
            streams,
            turn: Default::default(),
        }
    }
}
