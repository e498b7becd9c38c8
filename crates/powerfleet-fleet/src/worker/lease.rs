//! The lease keeper: it renews a claimed job's lease, carries progress to Redis and cancellation
//! and a lost lease back to the job (`JobSignals`).

use super::*;

/// Signals between a job's driver and its lease keeper: progress one way; cancellation, a lost
/// lease, a vanished state and the interrupt the other.
#[derive(Default)]
pub(super) struct JobSignals {
    pub(super) progress: Mutex<Progress>,
    pub(super) cancel: AtomicBool,
    pub(super) lost: AtomicBool,
    /// The job's state vanished from Redis (set with `lost`).
    pub(super) vanished: AtomicBool,
    /// Fires on shutdown (a child of the worker's stop token), cancellation and a lost lease.
    pub(super) interrupt: CancellationToken,
}

impl JobSignals {
    /// Records that the job's lease is gone (`Lost` or `Vanished`).
    pub(super) fn lose(&self, state: LeaseState) {
        self.vanished
            .store(state == LeaseState::Vanished, Ordering::Relaxed);
        self.lost.store(true, Ordering::Relaxed);
    }
}

pub(super) fn progress_of(chain: &Chain) -> Progress {
    let p = chain.position();
    let s = chain.stats();
    Progress {
        block_idx: p.block_idx,
        n_blocks: p.n_blocks,
        step_idx: p.step_idx,
        n_mcmc: p.n_mcmc,
        proposals: s.proposals,
        acceptances: s.acceptances,
        tokens_generated: s.tokens_generated,
    }
}

pub(super) async fn keep_lease(
    queue: Queue,
    lease: Lease,
    shared: Arc<JobSignals>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let progress = shared.progress.lock().expect("progress").clone();
        match queue.heartbeat(&lease, &progress).await {
            Ok(LeaseState::Owned { cancel }) => {
                if cancel {
                    shared.cancel.store(true, Ordering::Relaxed);
                    shared.interrupt.cancel();
                }
            }
            Ok(state @ (LeaseState::Lost | LeaseState::Vanished)) => {
                shared.lose(state);
                shared.interrupt.cancel();
                return;
            }
            Err(e) => warn!(error = %e, "heartbeat failed; retrying"),
        }
    }
}

/// Aborts a task when dropped, so a background task never outlives its job.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Stops working on a job whose lease is gone. When another claim took it, that claim carries
/// on; when the job's state vanished from Redis, its entry is dead-lettered at once.
pub(super) async fn lease_gone(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    shared: &JobSignals,
) -> Result<(), QueueError> {
    ctx.report.lost.fetch_add(1, Ordering::Relaxed);
    if shared.vanished.load(Ordering::Relaxed) {
        warn!("the job's state vanished from Redis while it ran; dead-lettering its entry");
        ctx.queue
            .dead_letter_vanished(&run.lease, &run.spec)
            .await?;
        ctx.report.dead.fetch_add(1, Ordering::Relaxed);
        metrics::JOBS_DEAD_LETTERED.increment(1);
    } else {
        info!("lease lost; another worker owns the job now");
    }
    Ok(())
}
