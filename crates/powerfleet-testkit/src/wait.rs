//! Waiting in tests for a condition of a fleet, polled rather than slept on.

use std::future::Future;
use std::time::{Duration, Instant};

use powerfleet_jobs::{JobId, JobStatus};

use crate::Fleet;

/// How long a test waits for what a fleet must do before it calls the fleet hung: far beyond what
/// any test's work takes on a loaded 2-core machine shared with other builds, so it only ever
/// catches a hang, never slowness. Every deadline of a test that waits for work (results stored,
/// a job running, a process up or gone) is this one.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// Polls `check` every 20 ms until it holds; panics naming `what` once `timeout` has passed
/// without it (a far-off bound: a test waits for what it needs, not for a clock).
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_or(what, timeout, check, String::new).await
}

async fn wait_or<F, Fut>(what: &str, timeout: Duration, mut check: F, context: impl Fn() -> String)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "gave up after {timeout:?} waiting until {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Fleet {
    /// [`wait_until`], with the fleet's logs in the panic message.
    pub async fn wait_until<F, Fut>(&self, what: &str, timeout: Duration, check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        wait_or(what, timeout, check, || self.logs()).await
    }

    /// Waits until at least `n` of `jobs` are running at block `block` (0-based) or later.
    pub async fn wait_for_blocks(&self, jobs: &[JobId], block: u32, n: usize) {
        let queue = self.queue().await;
        let what = format!("{n} of {} jobs run at block {block} or later", jobs.len());
        self.wait_until(&what, PATIENCE, || async {
            let mut reached = 0;
            for id in jobs {
                let s = queue.job_state(*id).await.unwrap().unwrap();
                if s.status == JobStatus::Running
                    && s.progress.is_some_and(|p| p.block_idx >= block)
                {
                    reached += 1;
                }
            }
            reached >= n
        })
        .await;
    }
}
