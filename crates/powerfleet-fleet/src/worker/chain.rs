//! A claimed job's chain, driven block by block with a checkpoint after each, and its completion.

use super::*;

pub(super) async fn drive(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    chain: Chain,
    backend: &Backend,
    shared: &JobSignals,
) -> Result<(), QueueError> {
    *shared.progress.lock().expect("progress") = progress_of(&chain);
    metrics::chains_in_flight(1.0);
    let outcome = drive_inner(ctx, run, chain, backend, shared).await;
    metrics::chains_in_flight(-1.0);
    outcome
}

pub(super) async fn drive_inner(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    mut chain: Chain,
    backend: &Backend,
    shared: &JobSignals,
) -> Result<(), QueueError> {
    let policy = ctx.config.retry_policy();
    let label = backend.label();
    let pin = run
        .pin
        .clone()
        .expect("a chain runs once its backend is prepared and pinned");
    let affinity = run.spec.job_id.0.as_u64_pair().1;
    let calls_at_claim = chain.stats().model_calls;
    // The chain's state as last stored (or as Chain::new makes it again): a checkpoint is written
    // only when the chain has moved on since, so one that records no progress never resets the
    // job's wait.
    let mut stored_calls = calls_at_claim;
    let mut counted = chain.stats().clone();
    loop {
        let block_started = std::time::Instant::now();
        let boundary = driver::run_block(
            &mut chain,
            backend,
            affinity,
            policy,
            &shared.interrupt,
            |c| *shared.progress.lock().expect("progress") = progress_of(c),
        )
        .await;
        if matches!(boundary, Called::Done(_)) {
            metrics::observe_backend(metrics::BLOCK_DURATION, label, block_started.elapsed());
        }
        let now = chain.stats();
        metrics::PROPOSALS.increment(now.proposals - counted.proposals);
        metrics::ACCEPTANCES.increment(now.acceptances - counted.acceptances);
        metrics::TOKENS_GENERATED.increment(now.tokens_generated - counted.tokens_generated);
        counted = now.clone();
        let progressed = chain.stats().model_calls > calls_at_claim;
        match after_block(&boundary, shared.lost.load(Ordering::Relaxed)) {
            AfterBlock::LeaseGone => return lease_gone(ctx, run, shared).await,
            AfterBlock::Complete => {
                return complete(ctx, run, shared, &chain, backend, &pin, progressed).await;
            }
            AfterBlock::Fail(e) => {
                let mut r = run.result(JobStatus::Failed, Some(&chain), Some(backend), Some(e));
                r.error_code = Some(powerfleet_jobs::ErrorCode::RequestRefused);
                return finish(ctx, run, r, None).await;
            }
            AfterBlock::Checkpoint => {}
        }
        // A checkpoint at a step boundary: the chain as of its last accepted answer.
        let progress = progress_of(&chain);
        if chain.stats().model_calls > stored_calls {
            if !store_checkpoint(ctx, run, shared, &chain, &pin).await? {
                return Ok(());
            }
            stored_calls = chain.stats().model_calls;
        }
        if matches!(boundary, Called::Done(Stop::BlockDone)) {
            ctx.report.blocks.fetch_add(1, Ordering::Relaxed);
            metrics::BLOCKS.increment(1);
            debug!(block_idx = progress.block_idx, "block checkpointed");
        }
        match after_checkpoint(
            &boundary,
            shared.cancel.load(Ordering::Relaxed),
            ctx.stop.is_cancelled(),
        ) {
            AfterCheckpoint::Cancel => return cancel(ctx, run, Some(&chain), backend).await,
            AfterCheckpoint::WaitForModel(why) => {
                return wait_for_model(ctx, run, backend, Some(&chain), progressed, &why).await;
            }
            AfterCheckpoint::HandBack => return hand_back(ctx, run, Some(&progress)).await,
            AfterCheckpoint::NextBlock => {}
        }
    }
}

/// Stores the chain's checkpoint with its pin; false when the lease was lost.
pub(super) async fn store_checkpoint(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    shared: &JobSignals,
    chain: &Chain,
    pin: &Pin,
) -> Result<bool, QueueError> {
    let progress = progress_of(chain);
    let bytes = PinnedCheckpoint::encode(chain, pin);
    let write_started = std::time::Instant::now();
    let written = ctx.queue.checkpoint(&run.lease, &progress, &bytes).await?;
    metrics::checkpoint_written(write_started.elapsed(), bytes.len());
    match written {
        LeaseState::Lost | LeaseState::Vanished => {
            shared.lose(written);
            lease_gone(ctx, run, shared).await?;
            Ok(false)
        }
        LeaseState::Owned { cancel } => {
            if cancel {
                shared.cancel.store(true, Ordering::Relaxed);
            }
            Ok(true)
        }
    }
}

/// Publishes a finished chain's result with its text. The text comes from the model's own
/// tokenizer, retried like any model call; when the server refuses it, the result is stored
/// without text and ungraded, with the reason, never graded as empty.
pub(super) async fn complete(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    shared: &JobSignals,
    chain: &Chain,
    backend: &Backend,
    pin: &Pin,
    progressed: bool,
) -> Result<(), QueueError> {
    if progressed {
        ctx.report.blocks.fetch_add(1, Ordering::Relaxed);
        metrics::BLOCKS.increment(1);
    }
    let mut r = run.result(JobStatus::Completed, Some(chain), Some(backend), None);
    // The text leaves out a terminal EOS, as the servers' own completion text does.
    let tokens = powerfleet_sampler::text_tokens(&r.tokens, r.ends_with_eos).to_vec();
    let text = driver::call(
        backend,
        ctx.config.retry_policy(),
        &shared.interrupt,
        || backend.detokenize(&tokens),
    )
    .await;
    match text {
        Called::Done(t) => {
            r.stop = stop_hit(backend, &tokens, &t, &run.spec.stop).await;
            r.text = Some(t);
        }
        Called::Failed(e) => {
            warn!(error = %e, "the server refused to detokenize the completion; stored without text, ungraded");
            r.text_error = Some(e);
        }
        waiting_or_interrupted => {
            // Keep the finished chain so that the next claim only has to detokenize.
            if progressed && !store_checkpoint(ctx, run, shared, chain, pin).await? {
                return Ok(());
            }
            let outcome = unit(&waiting_or_interrupted);
            return settle(ctx, run, shared, backend, Some(chain), progressed, outcome).await;
        }
    }
    finish(ctx, run, r, None).await
}

/// Where the first of `stops` cuts `text` (the detokenized `tokens`), with the fewest leading
/// tokens whose text holds the whole match: a binary search over prefixes, one detokenize call
/// per step (free on toy models, about log2(tokens) requests on a server). When the server fails
/// to answer, the hit counts every token.
async fn stop_hit(
    backend: &Backend,
    tokens: &[powerfleet_sampler::TokenId],
    text: &str,
    stops: &[String],
) -> Option<powerfleet_jobs::StopHit> {
    let (stop, at) = powerfleet_jobs::StopHit::find(text, stops)?;
    let end = at + stop.len();
    // Invariant: the first `hi` tokens hold the match; fewer than `lo + 1` do not.
    let (mut lo, mut hi) = (0, tokens.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let holds = if mid == 0 {
            false
        } else {
            match backend.detokenize(&tokens[..mid]).await {
                Ok(prefix) => prefix.len() >= end,
                Err(e) => {
                    warn!(error = %e, "cannot detokenize a prefix to place the stop string; counting every token");
                    hi = tokens.len();
                    break;
                }
            }
        };
        if holds {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(powerfleet_jobs::StopHit {
        stop,
        text_bytes: at,
        tokens: hi,
    })
}
