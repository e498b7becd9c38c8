//! The worker's decisions about a claimed job, as pure functions of what it knows: what to do
//! right after the claim, which checkpoint to resume, what to do after each block and after a
//! model call that did not succeed, and how long to wait for an unavailable model. The I/O code
//! in `claim`, `chain` and `settle` acts on their answers; none of them touches Redis, a model
//! or the clock, so they are tested here without either.

use std::time::Duration;

use powerfleet_jobs::Pin;

use crate::driver::{Called, Stop};

/// What to do with a job just claimed, before any model call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum AfterClaim {
    /// The worker is shutting down: give the job back at once.
    HandBack,
    /// Delivered more often than the limit: publish it `dead` with the reason.
    Dead(String),
    /// A cancellation was requested: publish it `cancelled`.
    Cancel,
    /// Run it.
    Run,
}

/// The decision after a claim: shutdown first, then the delivery limit, then cancellation.
pub(super) fn after_claim(
    stopping: bool,
    attempts: u32,
    max_deliveries: u32,
    cancel_requested: bool,
) -> AfterClaim {
    if stopping {
        AfterClaim::HandBack
    } else if attempts > max_deliveries {
        AfterClaim::Dead(format!(
            "delivered {attempts} times, more than the limit of {max_deliveries}; the job keeps killing or stalling its workers"
        ))
    } else if cancel_requested {
        AfterClaim::Cancel
    } else {
        AfterClaim::Run
    }
}

/// What to start a claimed chain from, given its stored checkpoint.
#[derive(Debug, PartialEq)]
pub(super) enum StartFrom<C> {
    /// No checkpoint: a new chain from the job's seed.
    Fresh,
    /// The checkpoint was written for another configuration: start over.
    OtherConfig,
    /// The checkpoint does not decode (the reason): start over.
    Unusable(String),
    /// The checkpoint's chain, once it is checked against the job.
    Checkpoint(C),
    /// The checkpoint is pinned to another backend: leave it to a worker that has that backend,
    /// and wait; the fields in which the pins differ.
    OtherBackend(Vec<String>),
}

/// Chooses between a stored checkpoint (decoded to a chain, whose configuration `config_of`
/// reads, and the pin it was written with, if any) and a fresh chain. The pin decides first: a checkpoint of another
/// backend is another worker's to resume, not this one's to judge.
pub(super) fn start_from<C, K: PartialEq>(
    stored: Option<Result<(C, Option<Pin>), String>>,
    config_of: impl Fn(&C) -> &K,
    config: &K,
    pin: &Pin,
) -> StartFrom<C> {
    match stored {
        None => StartFrom::Fresh,
        Some(Ok((chain, stored_pin))) if config_of(&chain) == config => {
            match stored_pin.map(|p| p.differences(pin)) {
                Some(differences) if !differences.is_empty() => {
                    StartFrom::OtherBackend(differences)
                }
                _ => StartFrom::Checkpoint(chain),
            }
        }
        Some(Ok(_)) => StartFrom::OtherConfig,
        Some(Err(e)) => StartFrom::Unusable(e),
    }
}

/// What to do when the chain driver returns from a block, before any checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum AfterBlock {
    /// The lease is gone: another worker may own the job; write nothing more.
    LeaseGone,
    /// The chain has its output: complete the job.
    Complete,
    /// The request is at fault: fail the job with the reason.
    Fail(String),
    /// Checkpoint the chain if it moved on, then see [`after_checkpoint`].
    Checkpoint,
}

/// The decision after a block: a lost lease first, then the driver's verdict.
pub(super) fn after_block(boundary: &Called<Stop>, lease_lost: bool) -> AfterBlock {
    if lease_lost {
        return AfterBlock::LeaseGone;
    }
    match boundary {
        Called::Done(Stop::Finished) => AfterBlock::Complete,
        Called::Failed(e) => AfterBlock::Fail(e.clone()),
        Called::Done(Stop::BlockDone) | Called::Interrupted | Called::Waiting(_) => {
            AfterBlock::Checkpoint
        }
    }
}

/// What to do once a block's checkpoint is stored (or was not needed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum AfterCheckpoint {
    /// A cancellation was requested: publish the job `cancelled`.
    Cancel,
    /// The model is unavailable: put the job back to wait, with the reason.
    WaitForModel(String),
    /// The worker is shutting down: give the job back.
    HandBack,
    /// Run the next block.
    NextBlock,
}

/// The decision after a block's checkpoint: cancellation, then the model's availability, then
/// shutdown.
pub(super) fn after_checkpoint(
    boundary: &Called<Stop>,
    cancel_requested: bool,
    stopping: bool,
) -> AfterCheckpoint {
    if cancel_requested {
        AfterCheckpoint::Cancel
    } else if let Called::Waiting(why) = boundary {
        AfterCheckpoint::WaitForModel(why.clone())
    } else if stopping {
        AfterCheckpoint::HandBack
    } else {
        AfterCheckpoint::NextBlock
    }
}

/// How a claimed job settles a model call that did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Settlement {
    /// It did succeed: nothing to settle.
    Nothing,
    /// The request is at fault: fail the job with the reason.
    Fail(String),
    /// The model is unavailable: wait for it, with the reason.
    WaitForModel(String),
    /// Interrupted by a lost lease: write nothing more.
    LeaseGone,
    /// Interrupted by a cancellation: publish the job `cancelled`.
    Cancel,
    /// Interrupted by shutdown: give the job back.
    HandBack,
}

/// The decision after a model call: its verdict, and for an interruption what fired it (a lost
/// lease before a cancellation; otherwise shutdown).
pub(super) fn settlement(
    outcome: Called<()>,
    lease_lost: bool,
    cancel_requested: bool,
) -> Settlement {
    match outcome {
        Called::Done(()) => Settlement::Nothing,
        Called::Failed(e) => Settlement::Fail(e),
        Called::Waiting(why) => Settlement::WaitForModel(why),
        Called::Interrupted if lease_lost => Settlement::LeaseGone,
        Called::Interrupted if cancel_requested => Settlement::Cancel,
        Called::Interrupted => Settlement::HandBack,
    }
}

/// Whether a job waiting for its model waits again or gives up, and from when it has waited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum WaitPlan {
    /// It has waited `waited`, at least the patience: fail it.
    GiveUp {
        /// How long it has waited.
        waited: Duration,
    },
    /// Put it back until `delay` from now.
    Defer {
        /// Since when it waits (ms since the Unix epoch).
        since_ms: u64,
        /// How long it has waited so far.
        waited: Duration,
        /// How long until it is tried again.
        delay: Duration,
    },
}

/// How long a job whose model is unavailable waits, at `now_ms`. A claim that got any answer
/// from the model (`progressed`) starts a new wait; otherwise the wait goes on from
/// `waiting_since_ms`. The delay is `backoff` (the caller's jittered backoff for this wait),
/// at least as long as the model is known to be down, and never past the patience: the job fails
/// at the first try after it.
pub(super) fn plan_wait(
    now_ms: u64,
    progressed: bool,
    waiting_since_ms: Option<u64>,
    patience: Duration,
    backoff: Duration,
    unavailable_for: Option<Duration>,
) -> WaitPlan {
    let since_ms = if progressed {
        now_ms
    } else {
        waiting_since_ms.unwrap_or(now_ms)
    };
    let waited = Duration::from_millis(now_ms.saturating_sub(since_ms));
    if waited >= patience {
        return WaitPlan::GiveUp { waited };
    }
    let mut delay = backoff;
    if let Some(down) = unavailable_for {
        delay = delay.max(down);
    }
    delay = delay.min(patience - waited + Duration::from_millis(10));
    WaitPlan::Defer {
        since_ms,
        waited,
        delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_hands_back_on_shutdown_then_dead_letters_then_cancels() {
        assert_eq!(after_claim(true, 99, 5, true), AfterClaim::HandBack);
        let AfterClaim::Dead(why) = after_claim(false, 6, 5, true) else {
            panic!("over the limit")
        };
        assert_eq!(
            why,
            "delivered 6 times, more than the limit of 5; the job keeps killing or stalling its workers"
        );
        assert_eq!(after_claim(false, 5, 5, true), AfterClaim::Cancel);
        assert_eq!(after_claim(false, 5, 5, false), AfterClaim::Run);
    }

    #[test]
    fn a_checkpoint_is_resumed_only_under_the_same_configuration_and_pin() {
        let toy = |model: &str| Pin::Toy {
            model: model.into(),
        };
        let (pin, other) = (toy("pivot"), toy("tiny"));
        // (config, payload) stands in for a chain.
        fn same(c: &(u8, u8)) -> &u8 {
            &c.0
        }
        assert_eq!(start_from(None, same, &1, &pin), StartFrom::Fresh);
        assert_eq!(
            start_from(Some(Ok(((1, 7), Some(pin.clone())))), same, &1, &pin),
            StartFrom::Checkpoint((1, 7))
        );
        // A checkpoint from before pins is checked against the job, not refused.
        assert_eq!(
            start_from(Some(Ok(((1, 7), None))), same, &1, &pin),
            StartFrom::Checkpoint((1, 7))
        );
        assert_eq!(
            start_from(Some(Ok(((1, 7), Some(other.clone())))), same, &1, &pin),
            StartFrom::OtherBackend(vec![
                "model: checkpoint \"tiny\", this worker \"pivot\"".into()
            ])
        );
        // Another configuration starts over whatever its pin.
        assert_eq!(
            start_from(Some(Ok(((2, 7), Some(other)))), same, &1, &pin),
            StartFrom::OtherConfig
        );
        assert_eq!(
            start_from(Some(Err("bad json".into())), same, &1, &pin),
            StartFrom::Unusable("bad json".into())
        );
    }

    #[test]
    fn after_a_block_a_lost_lease_wins_then_the_verdict_decides() {
        let done = Called::Done(Stop::BlockDone);
        assert_eq!(
            after_block(&Called::Done(Stop::Finished), true),
            AfterBlock::LeaseGone
        );
        assert_eq!(
            after_block(&Called::Done(Stop::Finished), false),
            AfterBlock::Complete
        );
        assert_eq!(
            after_block(&Called::Failed("bad".into()), false),
            AfterBlock::Fail("bad".into())
        );
        for b in [done, Called::Interrupted, Called::Waiting("down".into())] {
            assert_eq!(after_block(&b, false), AfterBlock::Checkpoint);
        }
    }

    #[test]
    fn after_a_checkpoint_cancellation_then_waiting_then_shutdown() {
        let waiting = Called::Waiting("down".into());
        let done = Called::Done(Stop::BlockDone);
        assert_eq!(
            after_checkpoint(&waiting, true, true),
            AfterCheckpoint::Cancel
        );
        assert_eq!(
            after_checkpoint(&waiting, false, true),
            AfterCheckpoint::WaitForModel("down".into())
        );
        assert_eq!(
            after_checkpoint(&done, false, true),
            AfterCheckpoint::HandBack
        );
        assert_eq!(
            after_checkpoint(&Called::Interrupted, false, true),
            AfterCheckpoint::HandBack
        );
        assert_eq!(
            after_checkpoint(&done, false, false),
            AfterCheckpoint::NextBlock
        );
    }

    #[test]
    fn an_interrupted_call_settles_by_what_fired_the_interrupt() {
        assert_eq!(
            settlement(Called::Done(()), true, true),
            Settlement::Nothing
        );
        assert_eq!(
            settlement(Called::Failed("x".into()), true, true),
            Settlement::Fail("x".into())
        );
        assert_eq!(
            settlement(Called::Waiting("w".into()), true, true),
            Settlement::WaitForModel("w".into())
        );
        assert_eq!(
            settlement(Called::Interrupted, true, true),
            Settlement::LeaseGone
        );
        assert_eq!(
            settlement(Called::Interrupted, false, true),
            Settlement::Cancel
        );
        assert_eq!(
            settlement(Called::Interrupted, false, false),
            Settlement::HandBack
        );
    }

    #[test]
    fn waits_go_on_from_their_start_and_never_past_the_patience() {
        let s = Duration::from_secs;
        // A first wait starts now.
        assert_eq!(
            plan_wait(10_000, false, None, s(60), s(2), None),
            WaitPlan::Defer {
                since_ms: 10_000,
                waited: s(0),
                delay: s(2)
            }
        );
        // An earlier wait goes on, unless this claim got answers from the model.
        assert_eq!(
            plan_wait(10_000, false, Some(4_000), s(60), s(2), Some(s(5))),
            WaitPlan::Defer {
                since_ms: 4_000,
                waited: s(6),
                delay: s(5)
            }
        );
        assert!(matches!(
            plan_wait(10_000, true, Some(4_000), s(60), s(2), None),
            WaitPlan::Defer {
                since_ms: 10_000,
                ..
            }
        ));
        // The delay ends just after the patience runs out.
        assert_eq!(
            plan_wait(60_000, false, Some(5_000), s(60), s(30), None),
            WaitPlan::Defer {
                since_ms: 5_000,
                waited: s(55),
                delay: Duration::from_millis(5_010)
            }
        );
        assert_eq!(
            plan_wait(65_000, false, Some(5_000), s(60), s(30), None),
            WaitPlan::GiveUp { waited: s(60) }
        );
    }
}
