//! The Lua scripts of every write that must be atomic, loaded once per client.

use super::*;

pub(super) struct Scripts {
    pub(super) begin_submission: Script,
    pub(super) enqueue: Script,
    pub(super) claim: Script,
    pub(super) renew: Script,
    pub(super) finish: Script,
    pub(super) hand_back: Script,
    pub(super) defer: Script,
    pub(super) promote: Script,
    pub(super) cancel: Script,
    pub(super) dead_letter: Script,
    pub(super) read: Script,
    pub(super) requeue: Script,
    pub(super) claim_correlation: Script,
}

/// `tally.lua`, then `script`: one script text for the scripts that count finished jobs.
fn with_tally(script: &str) -> Script {
    Script::new(&format!("{}\n{script}", include_str!("lua/tally.lua")))
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            begin_submission: Script::new(include_str!("lua/begin_submission.lua")),
            enqueue: Script::new(include_str!("lua/enqueue.lua")),
            claim: Script::new(include_str!("lua/claim.lua")),
            claim_correlation: Script::new(include_str!("lua/claim_correlation.lua")),
            renew: Script::new(include_str!("lua/renew.lua")),
            finish: with_tally(include_str!("lua/finish.lua")),
            hand_back: Script::new(include_str!("lua/hand_back.lua")),
            defer: Script::new(include_str!("lua/defer.lua")),
            promote: Script::new(include_str!("lua/promote.lua")),
            cancel: with_tally(&format!(
                "{}\n{}",
                include_str!("lua/lag.lua"),
                include_str!("lua/cancel.lua")
            )),
            dead_letter: with_tally(include_str!("lua/dead_letter.lua")),
            read: Script::new(include_str!("lua/read.lua")),
            requeue: Script::new(include_str!("lua/requeue.lua")),
        }
    }
}
