//! The one chain driver: runs a chain against any [`Backend`] (toy model or inference server)
//! with one retry policy, used by the worker and by `powerfleet sample` alike.
//!
//! Every model call is raced against an interrupt token, so a shutdown, a cancellation or a lost
//! lease abandons an in-flight request at once; the chain keeps its state as of its last
//! completed step (a chain only changes when [`Chain::advance`] accepts an answer).
//!
//! Errors are settled by kind ([`BackendError`]): a refused request fails at once; an
//! unavailable server is retried, and when the attempts run out the caller waits for the model
//! ([`Called::Waiting`]); a request that fails the same way on every attempt, though the server
//! answered, is at fault and fails.

use std::future::Future;
use std::time::{Duration, Instant};

use powerfleet_backends::BackendError;
use powerfleet_sampler::{Chain, Generation, OwnedRequest};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::backoff::Backoff;
use crate::metrics;
use crate::models::Backend;

/// How model calls are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts per request before the caller waits for the model (or fails the request).
    pub attempts: u32,
    /// First retry delay; doubles per attempt, with jitter, up to 30 s
    /// ([`Backoff::model_retry`]).
    pub backoff: Duration,
}

impl RetryPolicy {
    /// The delay before retry `attempt` of one request.
    pub fn delay(&self, attempt: u32) -> Duration {
        Backoff::model_retry(self.backoff).delay(attempt)
    }
}

/// How a model call (or a stretch of chain work) ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Called<T> {
    /// It succeeded.
    Done(T),
    /// The interrupt token fired first; nothing changed.
    Interrupted,
    /// The model is unavailable: wait for it and try again later.
    Waiting(String),
    /// The request is at fault: retrying it will not help.
    Failed(String),
}

/// Why a stretch of chain work stopped.
pub type BlockOutcome = Called<Stop>;

/// Where a chain stopped after [`run_block`] returned [`Called::Done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The chain has its output.
    Finished,
    /// A block ended (checkpoint now).
    BlockDone,
}

/// The verdict on a request whose attempts all failed with `errors` (transient or unavailable).
fn verdict<T>(errors: &[BackendError]) -> Called<T> {
    let last = errors.last().map(BackendError::message).unwrap_or_default();
    let same_answer = errors
        .iter()
        .all(|e| matches!(e, BackendError::Transient(_)))
        && errors.iter().all(|e| e.message() == last);
    if same_answer {
        Called::Failed(format!(
            "the server answered the same request the same way {} times: {last}",
            errors.len()
        ))
    } else {
        Called::Waiting(last.to_string())
    }
}

/// Sleeps before the next attempt; false when interrupted meanwhile.
async fn pause(interrupt: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = interrupt.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Calls `op` until it succeeds, per `policy`, racing every attempt against `interrupt`.
pub async fn call<T, F, Fut>(
    backend: &Backend,
    policy: RetryPolicy,
    interrupt: &CancellationToken,
    mut op: F,
) -> Called<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    let mut errors = Vec::new();
    for attempt in 1..=policy.attempts {
        let answer = tokio::select! {
            biased;
            _ = interrupt.cancelled() => return Called::Interrupted,
            a = op() => a,
        };
        match answer {
            Ok(v) => return Called::Done(v),
            Err(BackendError::Rejected(m)) => return Called::Failed(m),
            Err(e) if e.is_unavailable() && backend.unavailable_for().is_some() => {
                errors.push(e);
                break;
            }
            Err(e) => errors.push(e),
        }
        if attempt < policy.attempts {
            metrics::model_retry(backend.label());
            let delay = policy.delay(attempt);
            if !pause(interrupt, delay).await {
                return Called::Interrupted;
            }
        }
    }
    verdict(&errors)
}

/// Runs `chain` until the end of its current block, its end, an interrupt, or a model fault that
/// outlasts `policy`. `on_step` sees the chain after every accepted answer (for progress).
pub async fn run_block(
    chain: &mut Chain,
    backend: &Backend,
    affinity: u64,
    policy: RetryPolicy,
    interrupt: &CancellationToken,
    mut on_step: impl FnMut(&Chain),
) -> BlockOutcome {
    let label = backend.label();
    // Answers fetched ahead: a power-smc block's particle requests, sent at once.
    let mut ahead: std::collections::VecDeque<(OwnedRequest, Result<Generation, BackendError>)> =
        std::collections::VecDeque::new();
    loop {
        if interrupt.is_cancelled() {
            return Called::Interrupted;
        }
        let Some(request) = chain.request().map(|r| r.to_owned()) else {
            return Called::Done(Stop::Finished);
        };
        if ahead.is_empty() {
            let listed = chain.requests();
            if listed.len() > 1 {
                let started = Instant::now();
                let answers = tokio::select! {
                    biased;
                    _ = interrupt.cancelled() => return Called::Interrupted,
                    a = futures_util::future::join_all(
                        listed.iter().map(|r| backend.generate(r, affinity)),
                    ) => a,
                };
                metrics::observe_backend(metrics::MODEL_CALL_DURATION, label, started.elapsed());
                ahead.extend(listed.into_iter().zip(answers));
            }
        }
        let mut fetched = match ahead.pop_front() {
            Some((r, answer)) if r == request => Some(answer),
            _ => {
                ahead.clear();
                None
            }
        };
        let mut errors = Vec::new();
        let mut advanced = None;
        for attempt in 1..=policy.attempts {
            let started = Instant::now();
            let answer = match fetched.take() {
                Some(answer) => answer,
                None => {
                    let answer = tokio::select! {
                        biased;
                        _ = interrupt.cancelled() => return Called::Interrupted,
                        a = backend.generate(&request, affinity) => a,
                    };
                    metrics::observe_backend(
                        metrics::MODEL_CALL_DURATION,
                        label,
                        started.elapsed(),
                    );
                    answer
                }
            };
            let error = match answer {
                Ok(g) => match chain.advance(g) {
                    Ok(a) => {
                        advanced = Some(a);
                        break;
                    }
                    Err(e) => BackendError::Transient(format!("the model answered unusably: {e}")),
                },
                Err(BackendError::Rejected(m)) => {
                    return Called::Failed(format!("the server refused the request: {m}"));
                }
                Err(e) => e,
            };
            // While every server's circuit is open, retrying cannot reach one: wait for the
            // model at once instead of holding the job.
            if error.is_unavailable() && backend.unavailable_for().is_some() {
                errors.push(error);
                break;
            }
            if attempt < policy.attempts {
                metrics::model_retry(label);
                warn!(attempt, error = %error, "model request failed; retrying");
                errors.push(error);
                let delay = policy.delay(attempt);
                if !pause(interrupt, delay).await {
                    return Called::Interrupted;
                }
            } else {
                errors.push(error);
            }
        }
        let Some(a) = advanced else {
            return verdict(&errors);
        };
        on_step(chain);
        if a.finished {
            return Called::Done(Stop::Finished);
        }
        if a.block_finished.is_some() {
            return Called::Done(Stop::BlockDone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_failure_every_time_fails_and_anything_else_waits() {
        let t = |m: &str| BackendError::Transient(m.to_string());
        let u = |m: &str| BackendError::Unavailable(m.to_string());
        let failed = verdict::<()>(&[t("500: unordered_map::at"), t("500: unordered_map::at")]);
        assert!(
            matches!(&failed, Called::Failed(m) if m.contains("the same way 2 times") && m.contains("unordered_map::at")),
            "{failed:?}"
        );
        assert_eq!(
            verdict::<()>(&[u("connection refused"), u("connection refused")]),
            Called::Waiting("connection refused".into())
        );
        assert_eq!(
            verdict::<()>(&[t("500: a"), u("connection refused"), t("500: a")]),
            Called::Waiting("500: a".into())
        );
        assert_eq!(
            verdict::<()>(&[t("malformed JSON"), t("500: b")]),
            Called::Waiting("500: b".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_interrupt_abandons_the_request_in_flight_and_the_chain_is_unchanged() {
        use powerfleet_sampler::{Method, SamplerConfig};
        let slow = crate::models::load("toy:pivot?delay_ms=600000").unwrap();
        let config = SamplerConfig::new(Method::Power).validate().unwrap();
        let mut chain = Chain::new(config, &[], 1, 0);
        let before = chain.clone();
        let interrupt = CancellationToken::new();
        let trigger = interrupt.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            trigger.cancel();
        });
        let policy = RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(1),
        };
        let started = tokio::time::Instant::now();
        let boundary = run_block(&mut chain, &slow, 0, policy, &interrupt, |_| {}).await;
        assert_eq!(boundary, Called::Interrupted);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "not the 600 s request"
        );
        assert_eq!(chain, before);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_that_outlasts_the_attempts_waits_and_leaves_the_chain_as_it_was() {
        use powerfleet_sampler::{Method, SamplerConfig};
        let down = crate::models::load("toy:pivot?fail_rate=1").unwrap();
        let config = SamplerConfig::new(Method::Power).validate().unwrap();
        let mut chain = Chain::new(config, &[], 1, 0);
        let before = chain.clone();
        let policy = RetryPolicy {
            attempts: 4,
            backoff: Duration::from_millis(10),
        };
        let boundary = run_block(
            &mut chain,
            &down,
            0,
            policy,
            &CancellationToken::new(),
            |_| {},
        )
        .await;
        assert!(
            matches!(&boundary, Called::Waiting(m) if m.contains("simulated transient failure")),
            "{boundary:?}"
        );
        assert_eq!(chain, before);
    }
}
