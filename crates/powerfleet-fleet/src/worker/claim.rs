//! A claimed job up to its chain: the claim's record (`ClaimedJob`), the pinned checkpoint, the
//! checks of a checkpoint against its job, and a hosted API's single sample.

use super::*;

/// A claimed job.
pub(super) struct ClaimedJob {
    pub(super) lease: Lease,
    /// The job, its prompt resolved once the claim has gone ahead ([`resolve_prompt`]).
    pub(super) spec: JobSpec,
    /// The stored prompt the job references, which its result references too: a result never
    /// copies a stored prompt (the collector resolves it before storing).
    pub(super) prompt_ref: Option<PromptRef>,
    pub(super) attempts: u32,
    pub(super) started_at_ms: u64,
    /// Since when the job has waited for its model, from earlier claims.
    pub(super) waiting_since_ms: Option<u64>,
    /// How often it waited before.
    pub(super) waits: u32,
    /// The pin of the backend this claim runs with, once known.
    pub(super) pin: Option<Pin>,
}

impl ClaimedJob {
    pub(super) fn result(
        &self,
        status: JobStatus,
        chain: Option<&Chain>,
        backend: Option<&Backend>,
        error: Option<String>,
    ) -> JobResult {
        let spec = &self.spec;
        let mut r = JobResult::for_spec(spec, status, self.attempts, error);
        r.stats = chain.map(|c| c.stats().clone()).unwrap_or_default();
        r.started_at_ms = Some(self.started_at_ms);
        r.exactness = backend.map(|b| b.exactness(spec.config.top_k));
        r.pin = self.pin.clone();
        r.prompt_tokens = chain.map(|c| c.prompt().len() as u64);
        if status == JobStatus::Completed
            && let Some(out) = chain.and_then(Chain::output)
        {
            r.tokens = out.tokens;
            r.log_p = Some(out.log_p);
            r.ends_with_eos = out.ends_with_eos;
            r.stats = out.stats;
            r.token_log_p = out.token_log_p;
            r.prompt = Some(match &self.prompt_ref {
                Some(stored) => Prompt::Stored(stored.clone()),
                None => spec.prompt.clone(),
            });
            r.alpha = spec.config.validate().ok().map(|c| c.alpha());
        }
        r
    }
}

/// A chain checkpoint as the worker stores it: with the pin of the backend whose answers its log q
/// came from. Checkpoints written before pins existed are bare chain checkpoints and still load.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PinnedCheckpoint {
    /// Format version of this envelope.
    pub(super) pinned: u32,
    /// What the chain's log q depends on (see [`Backend::prepare`]); `null` in envelopes
    /// written without one.
    pub(super) pin: Option<Pin>,
    /// The chain's own checkpoint.
    pub(super) chain: Checkpoint,
}

impl PinnedCheckpoint {
    pub(super) fn encode(chain: &Chain, pin: &Pin) -> Vec<u8> {
        serde_json::to_vec(&PinnedCheckpoint {
            pinned: 1,
            pin: Some(pin.clone()),
            chain: chain.checkpoint(),
        })
        .expect("a checkpoint serializes")
    }

    /// The chain and, unless the checkpoint predates pins, its pin.
    pub(super) fn decode(bytes: &[u8]) -> Result<(Chain, Option<Pin>), String> {
        match serde_json::from_slice::<PinnedCheckpoint>(bytes) {
            Ok(p) => {
                let chain = Chain::from_checkpoint(p.chain).map_err(|e| e.to_string())?;
                Ok((chain, p.pin))
            }
            Err(_) => Checkpoint::from_json(bytes)
                .and_then(Chain::from_checkpoint)
                .map(|c| (c, None))
                .map_err(|e| e.to_string()),
        }
    }
}

pub(super) async fn process(ctx: &WorkerContext, delivery: Delivery) -> Result<(), QueueError> {
    let spec = match &delivery.spec {
        Ok(spec) => spec.clone(),
        Err(reason) => {
            warn!(reason = %reason, "undecodable job entry moved to the dead-letter stream");
            ctx.queue.dead_letter_job_entry(&delivery, reason).await?;
            ctx.report.dead.fetch_add(1, Ordering::Relaxed);
            metrics::JOBS_DEAD_LETTERED.increment(1);
            return Ok(());
        }
    };
    let consumer = &ctx.config.consumer;
    let claimed = ctx.queue.claim(spec.job_id, &delivery, consumer).await?;
    let (mut run, cancel, checkpoint, stored_prompt) = match claimed {
        ClaimOutcome::Claimed {
            lease,
            deliveries,
            cancel_requested,
            checkpoint,
            started_at_ms,
            waiting_since_ms,
            waits,
            prompt,
        } => (
            ClaimedJob {
                lease,
                prompt_ref: spec.prompt.stored().cloned(),
                spec,
                attempts: deliveries,
                started_at_ms,
                waiting_since_ms,
                waits,
                pin: None,
            },
            cancel_requested,
            checkpoint,
            prompt,
        ),
        ClaimOutcome::Missing => {
            let reason = format!("no state for job {} in this namespace", spec.job_id);
            ctx.queue.dead_letter_job_entry(&delivery, &reason).await?;
            ctx.report.dead.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        ClaimOutcome::AlreadyFinal(_) | ClaimOutcome::Stale => return Ok(()),
    };
    metrics::JOBS_STARTED.increment(1);
    // The lease is renewed from the claim on, whatever the job does next (tokenizing, a hosted
    // call, the chain); the guard stops the renewals when this function returns or unwinds. The
    // job's interrupt fires on shutdown, on a cancellation request and when the lease is lost,
    // and abandons any model request in flight.
    let shared = Arc::new(JobSignals {
        interrupt: ctx.stop.child_token(),
        ..JobSignals::default()
    });
    let _keeper = AbortOnDrop(tokio::spawn(keep_lease(
        ctx.queue.clone(),
        run.lease.clone(),
        shared.clone(),
        ctx.config.heartbeat,
    )));
    match after_claim(
        ctx.stop.is_cancelled(),
        run.attempts,
        ctx.config.max_deliveries,
        cancel,
    ) {
        AfterClaim::HandBack => return hand_back(ctx, &run, None).await,
        AfterClaim::Dead(reason) => {
            let r = run.result(JobStatus::Dead, None, None, Some(reason.clone()));
            return finish(ctx, &run, r, Some(&reason)).await;
        }
        AfterClaim::Cancel => {
            let r = run.result(JobStatus::Cancelled, None, None, Some("cancelled".into()));
            return finish(ctx, &run, r, None).await;
        }
        AfterClaim::Run => {}
    }
    if let Err(e) = resolve_prompt(&mut run, stored_prompt.as_deref()) {
        let r = run.result(JobStatus::Failed, None, None, Some(e.to_string()));
        return finish(ctx, &run, r, None).await;
    }
    let config = match run.spec.validate() {
        Ok(c) => c,
        Err(e) => {
            let r = run.result(
                JobStatus::Failed,
                None,
                None,
                Some(format!("invalid job: {e}")),
            );
            return finish(ctx, &run, r, None).await;
        }
    };
    let backend = match ctx.models.resolve(&run.spec.model) {
        Ok(b) => b,
        Err(e) => {
            let r = run.result(JobStatus::Failed, None, None, Some(format!("model: {e}")));
            return finish(ctx, &run, r, None).await;
        }
    };
    if let Backend::Hosted { model } = &backend {
        if ctx.config.require_deterministic {
            let why = "hosted chat APIs cannot be checked for determinism and this worker runs with --require-deterministic; a worker without it may run the job";
            return wait_for_model(ctx, &run, &backend, None, false, why).await;
        }
        return hosted_sample(ctx, &run, &shared, model, &config, &backend).await;
    }
    let policy = ctx.config.retry_policy();
    let interrupt = &shared.interrupt;
    let (prompt, chat) = (&run.spec.prompt, run.spec.chat);
    let tokenized = driver::call(&backend, policy, interrupt, || {
        backend.tokenize(prompt, chat)
    })
    .await;
    let Called::Done(prompt) = tokenized else {
        return settle(ctx, &run, &shared, &backend, None, false, unit(&tokenized)).await;
    };
    let prepared = driver::call(&backend, policy, interrupt, || {
        backend.prepare(&config, prompt.len())
    })
    .await;
    let pin = match prepared {
        Called::Done(pin) => pin,
        // The request's own fault: failed at once with its cause, never retried.
        Called::Failed(e) if backend.exceeds_context(&config, prompt.len()) => {
            let mut r = run.result(JobStatus::Failed, None, Some(&backend), Some(e));
            r.prompt_tokens = Some(prompt.len() as u64);
            r.error_code = Some(powerfleet_jobs::ErrorCode::ContextLengthExceeded);
            return finish(ctx, &run, r, None).await;
        }
        other => {
            return settle(ctx, &run, &shared, &backend, None, false, unit(&other)).await;
        }
    };
    run.pin = Some(pin.clone());
    if ctx.config.require_deterministic && pin.deterministic() == Some(false) {
        let why = "its servers do not answer the same request the same way every time and this worker runs with --require-deterministic; a worker without it may run the job";
        warn!(reason = why, "refusing a nondeterministic server");
        return wait_for_model(ctx, &run, &backend, None, false, why).await;
    }
    // Power-lookahead chains must know which tokens end a completion; a checkpoint keeps them,
    // and the pin (checked below) makes sure a resumed chain's server has the same.
    let terminal = backend.terminal_tokens();
    let fresh = || {
        let mut chain = Chain::new(config.clone(), &prompt, run.spec.seed, run.spec.stream);
        chain.set_terminal_tokens(&terminal);
        chain
    };
    let stored = checkpoint.as_deref().map(PinnedCheckpoint::decode);
    let chain = match start_from(stored, Chain::config, &config, &pin) {
        StartFrom::Fresh => fresh(),
        StartFrom::OtherBackend(differences) => {
            // The stored log q came from another proposal: resuming would mix two proposals
            // in one acceptance ratio. Another worker (the old mapping, during a rolling
            // deploy) may resume it; this one waits, and says why.
            let why = format!(
                "this worker's model {} is not the backend the checkpoint was made with ({}); resume it on a worker that maps the name as before, or cancel the job",
                redact_reference(&run.spec.model),
                differences.join("; ")
            );
            warn!(reason = %why, "refusing to resume a checkpoint pinned to another backend");
            return wait_for_model(ctx, &run, &backend, None, false, &why).await;
        }
        StartFrom::Checkpoint(c) => match fits_the_job(&c, &prompt, &backend) {
            Ok(()) => {
                info!(
                    block_idx = c.position().block_idx,
                    "resuming from checkpoint"
                );
                c
            }
            Err(e) => {
                warn!(error = %e, "checkpoint does not fit the job; starting over");
                fresh()
            }
        },
        StartFrom::OtherConfig => {
            warn!("checkpoint was written for another configuration; starting over");
            fresh()
        }
        StartFrom::Unusable(e) => {
            warn!(error = %e, "checkpoint unusable; starting over");
            fresh()
        }
    };
    let mut chain = chain;
    chain.set_terminal_tokens(&terminal);
    drive(ctx, &run, chain, &backend, &shared).await
}

/// Puts the prompt the claim read (`stored`, its JSON) in place of the job's reference to it;
/// a job that carries its prompt inline (specifications written before references) is left as
/// it is.
pub(super) fn resolve_prompt(
    run: &mut ClaimedJob,
    stored: Option<&[u8]>,
) -> Result<(), powerfleet_jobs::ResolveError> {
    if let Some(reference) = &run.prompt_ref {
        run.spec.prompt = reference.resolve(stored)?;
    }
    Ok(())
}

/// Whether a decoded checkpoint belongs to this job: the same prompt, and (for toy models, whose
/// vocabulary is known) only tokens of the model's vocabulary. A checkpoint that does not is
/// discarded with the reason, and the chain starts over from its seed.
pub(super) fn fits_the_job(
    chain: &Chain,
    prompt: &[powerfleet_sampler::TokenId],
    backend: &Backend,
) -> Result<(), String> {
    if chain.prompt() != prompt {
        return Err(format!(
            "the checkpoint continues another prompt ({} tokens, the job's has {})",
            chain.prompt().len(),
            prompt.len()
        ));
    }
    let mut toy = backend;
    while let Backend::Faulty { inner, .. } = toy {
        toy = inner;
    }
    if let Backend::Toy { model, .. } = toy {
        model
            .check_tokens(chain.completion())
            .map_err(|e| format!("the checkpoint's completion: {e}"))?;
    }
    Ok(())
}

/// A job on a hosted chat API: one sample at the method's temperature. MCMC methods run this way
/// only with the job's explicit fallback option, and the result says so.
pub(super) async fn hosted_sample(
    ctx: &WorkerContext,
    run: &ClaimedJob,
    shared: &JobSignals,
    model: &powerfleet_backends::HostedModel,
    config: &powerfleet_sampler::ValidConfig,
    backend: &Backend,
) -> Result<(), QueueError> {
    let spec = &run.spec;
    let fail = |e: String| run.result(JobStatus::Failed, None, Some(backend), Some(e));
    let fallback = match (
        config.method().needs_log_probs(),
        spec.fallback_single_sample,
    ) {
        (false, _) => None,
        (true, true) => Some(format!(
            "ran as one sample at the proposal temperature {}: {}",
            config.temperature(),
            powerfleet_backends::HOSTED_CHAT_REFUSAL
        )),
        (true, false) => {
            let r = fail(powerfleet_backends::HOSTED_CHAT_REFUSAL.to_string());
            return finish(ctx, run, r, None).await;
        }
    };
    let Prompt::Text(prompt) = &spec.prompt else {
        let r = fail("hosted chat APIs take text prompts, not token ids".to_string());
        return finish(ctx, run, r, None).await;
    };
    let sampled = driver::call(
        backend,
        ctx.config.retry_policy(),
        &shared.interrupt,
        || {
            model.sample(
                prompt,
                config.temperature(),
                config.max_new_tokens(),
                spec.seed ^ spec.stream,
            )
        },
    )
    .await;
    match sampled {
        Called::Done(text) => {
            let mut r = run.result(JobStatus::Completed, None, Some(backend), None);
            r.text = Some(text);
            r.fallback = fallback;
            finish(ctx, run, r, None).await
        }
        Called::Failed(e) => {
            let r = fail(format!("the API refused the request: {e}"));
            finish(ctx, run, r, None).await
        }
        other => settle(ctx, run, shared, backend, None, false, unit(&other)).await,
    }
}
