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

/// `lag.lua`, then `script`: one script text for the scripts that delete entries of a jobs
/// stream, which keep the lag autoscalers read true.
fn with_lag(script: &str) -> Script {
    Script::new(&format!("{}\n{script}", include_str!("lua/lag.lua")))
}

/// `tally.lua` and `lag.lua`, then `script`: one script text for the scripts that count finished
/// jobs (and delete their entries).
fn with_tally_and_lag(script: &str) -> Script {
    Script::new(&format!(
        "{}\n{}\n{script}",
        include_str!("lua/tally.lua"),
        include_str!("lua/lag.lua")
    ))
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            begin_submission: Script::new(include_str!("lua/begin_submission.lua")),
            enqueue: Script::new(include_str!("lua/enqueue.lua")),
            claim: with_lag(include_str!("lua/claim.lua")),
            claim_correlation: Script::new(include_str!("lua/claim_correlation.lua")),
            renew: Script::new(include_str!("lua/renew.lua")),
            finish: with_tally_and_lag(include_str!("lua/finish.lua")),
            hand_back: with_lag(include_str!("lua/hand_back.lua")),
            defer: with_lag(include_str!("lua/defer.lua")),
            promote: Script::new(include_str!("lua/promote.lua")),
            cancel: with_tally_and_lag(include_str!("lua/cancel.lua")),
            dead_letter: with_tally_and_lag(include_str!("lua/dead_letter.lua")),
            read: Script::new(include_str!("lua/read.lua")),
            requeue: with_lag(include_str!("lua/requeue.lua")),
        }
    }
}
