//! What a submission would make the queue hold, measured from the sizes of its parts before
//! any prompt is rendered or any job is built.

use powerfleet_jobs::{BatchId, CorrelationId, JobId, JobSpec, Prompt, now_ms};
use serde::Serialize;

use super::Submission;

/// What a submission makes the queue hold, computed before any prompt is rendered or any job
/// is built ([`Submission::footprint`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Jobs: problems x methods x seeds x chains.
    pub jobs: u128,
    /// Bytes of the prompts stored, each as JSON once: a prompt per problem, or a graded run's
    /// rendering per problem and seed.
    pub prompt_bytes: u128,
    /// Bytes of every job's specification as JSON, its prompt by reference.
    pub job_bytes: u128,
}

impl Submission {
    /// What the submission would make the queue hold, from the sizes of its parts: a graded
    /// run's prompts are measured with [`Template::rendered_size`], never rendered, and each
    /// job's specification is measured once per problem and method (with the largest seed and
    /// stream) and counted for every seed and chain.
    ///
    /// [`Template::rendered_size`]: powerfleet_datasets::Template::rendered_size
    pub fn footprint(&self) -> Footprint {
        let seeds = self.seeds.len() as u128;
        let chains = u128::from(self.chains);
        let mut out = Footprint::default();
        let correlation_id = self
            .correlation_id
            .clone()
            .unwrap_or_else(CorrelationId::generate);
        let mut probe = JobSpec {
            job_id: JobId::new(),
            correlation_id,
            batch_id: self.batch.then(BatchId::new),
            problem_id: None,
            model: String::new(),
            prompt: Prompt::Stored(powerfleet_jobs::PromptRef {
                sha256: "0".repeat(64),
                bytes: u64::MAX,
            }),
            config: self.config.clone(),
            seed: self.seeds.iter().copied().max().unwrap_or(0),
            stream: self.chains.saturating_sub(1),
            submitted_at_ms: now_ms(),
            fallback_single_sample: self.fallback_single_sample,
            stop: self.stop.clone(),
            chat: self.chat,
            grading: None,
            label: self.label.clone(),
        };
        let mut add_jobs = |probe: &mut JobSpec| {
            for &method in &self.methods {
                probe.config.method = method;
                out.jobs += seeds * chains;
                out.job_bytes += json_len(&*probe) as u128 * seeds * chains;
            }
        };
        match &self.graded_run {
            None => {
                for p in &self.problems {
                    out.prompt_bytes += json_len(&p.prompt) as u128;
                    probe.problem_id = p.id.clone();
                    probe.model.clone_from(&self.model);
                    add_jobs(&mut probe);
                }
            }
            Some(run) => {
                for p in run.problems.iter() {
                    // `{"text":"` and `"}` around the escaped text.
                    let json = 11 + run.template.rendered_size(&p.problem).json_bytes;
                    out.prompt_bytes += json as u128 * seeds;
                    probe.problem_id = Some(p.problem.id.clone());
                    probe.model = p.model.clone().unwrap_or_else(|| self.model.clone());
                    probe.grading = Some(run.grading(p, None));
                    add_jobs(&mut probe);
                }
            }
        }
        out
    }
}

/// Bytes of `value` as compact JSON, counted without writing it.
pub(crate) fn json_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}
