//! Graded runs (`submit --bench`): dataset problems with reference answers, rendered into
//! prompts per seed, each job carrying the grading the collector applies to its result.

use std::sync::Arc;

use powerfleet_datasets::{Answer, Template};
use powerfleet_jobs::{Grader, Grading, Prompt, ReasoningMarkers, ReferenceAnswer, ReferenceKind};

/// A graded run (`submit --bench`): dataset problems with reference answers, the template that
/// renders them (per seed, so multiple-choice options are shuffled per seed) and the grader the
/// collector applies.
#[derive(Clone, Debug, PartialEq)]
pub struct GradedRun {
    /// The problems: shared, not copied, with the registered dataset a request names
    /// (`serve --dataset`).
    pub problems: Arc<[GradedProblem]>,
    /// How a problem becomes a prompt.
    pub template: Template,
    /// How completions are graded; `None`: `choice` for multiple-choice problems, `humaneval`
    /// for programming problems, `math` for the others.
    pub grader: Option<Grader>,
    /// Price of generated tokens, US dollars per million, recorded in every job.
    pub price_per_mtok: Option<f64>,
    /// The markers of a reasoning trace, which grading skips; `None`: `<think>` and `</think>`.
    pub reasoning_markers: Option<ReasoningMarkers>,
}

/// The longest reasoning marker accepted.
pub const MAX_MARKER_BYTES: usize = 64;

/// One dataset problem of a graded run.
#[derive(Clone, Debug, PartialEq)]
pub struct GradedProblem {
    /// The problem.
    pub problem: powerfleet_datasets::Problem,
    /// Its model, when it is not the submission's (the built-in suite has one per problem).
    pub model: Option<String>,
}

impl GradedProblem {
    /// `problems` as a graded run's (each on the submission's model), shared.
    pub fn many(problems: Vec<powerfleet_datasets::Problem>) -> Arc<[GradedProblem]> {
        problems
            .into_iter()
            .map(|problem| GradedProblem {
                problem,
                model: None,
            })
            .collect::<Vec<_>>()
            .into()
    }
}

impl GradedRun {
    /// Every problem of the built-in suite on its toy model, graded by its answer pattern.
    pub fn builtin_suite() -> GradedRun {
        GradedRun {
            problems: powerfleet_datasets::builtin_suite()
                .into_iter()
                .map(|item| GradedProblem {
                    model: Some(format!("toy:{}", item.model_name)),
                    problem: item.problem,
                })
                .collect::<Vec<_>>()
                .into(),
            template: Template::Plain,
            grader: Some(Grader::Regex {
                pattern: powerfleet_datasets::SUITE_ANSWER_PATTERN.to_string(),
            }),
            price_per_mtok: None,
            reasoning_markers: None,
        }
    }

    /// The prompt and grading data of `problem` for `seed`. Multiple-choice options are shuffled
    /// per problem and seed ([`powerfleet_grade::problem_shuffle_seed`]); the order is recorded.
    pub(super) fn render(&self, problem: &GradedProblem, seed: u64) -> (Prompt, Grading) {
        let shuffle = powerfleet_grade::problem_shuffle_seed(&problem.problem.id, seed);
        let rendered = self.template.render(&problem.problem, shuffle);
        let grading = self.grading(problem, rendered.permutation);
        (Prompt::Text(rendered.prompt), grading)
    }

    /// The grading data of `problem` whose options were shown in `permutation` (`None`: in the
    /// dataset's order), without rendering its prompt.
    pub(super) fn grading(
        &self,
        problem: &GradedProblem,
        permutation: Option<Vec<usize>>,
    ) -> Grading {
        let reference = match &problem.problem.answer {
            Answer::Text(t) => ReferenceAnswer::Text(t.clone()),
            Answer::Choice { choices, correct } => ReferenceAnswer::Choice {
                choices: choices.clone(),
                correct: *correct,
                permutation: permutation.unwrap_or_else(|| (0..choices.len()).collect()),
            },
            // The dataset's prompt, whatever the template: the completion continues it.
            Answer::Code { test, entry_point } => ReferenceAnswer::Code {
                prompt: problem.problem.question.clone(),
                test: test.clone(),
                entry_point: entry_point.clone(),
            },
        };
        let grader = self
            .grader
            .clone()
            .unwrap_or_else(|| Grader::default_for(reference.kind()));
        Grading {
            template: self.template.name().to_string(),
            grader,
            reference,
            price_per_mtok: self.price_per_mtok,
            reasoning_markers: self.reasoning_markers.clone(),
        }
    }

    /// Checks that the grader fits every problem and its pattern compiles.
    pub(super) fn check(&self) -> Result<(), String> {
        if let Some(m) = &self.reasoning_markers {
            let fits = |s: &str| !s.trim().is_empty() && s.len() <= MAX_MARKER_BYTES;
            if !fits(&m.open) || !fits(&m.close) || m.open == m.close {
                return Err(format!(
                    "reasoning markers must be two different non-blank strings of at most {MAX_MARKER_BYTES} bytes, got {:?} and {:?}",
                    m.open, m.close
                ));
            }
        }
        if let Some(p) = self.price_per_mtok
            && !(p.is_finite() && p >= 0.0)
        {
            return Err(format!(
                "price_per_mtok (USD per million generated tokens) must be a number >= 0, got {p}"
            ));
        }
        if let Some(grader) = &self.grader {
            powerfleet_grade::check_grader(grader).map_err(|e| format!("grader: {e}"))?;
            for p in self.problems.iter() {
                grader
                    .fits(reference_kind(&p.problem.answer))
                    .map_err(|e| format!("problem {}: {e}", p.problem.id))?;
            }
        }
        Ok(())
    }
}

/// The kind of reference a dataset answer becomes ([`GradedRun::grading`]), which decides the
/// graders that fit it.
pub(crate) fn reference_kind(answer: &Answer) -> ReferenceKind {
    match answer {
        Answer::Text(_) => ReferenceKind::Text,
        Answer::Choice { .. } => ReferenceKind::Choice,
        Answer::Code { .. } => ReferenceKind::Code,
    }
}

#[cfg(test)]
mod tests {
    use powerfleet_jobs::{BatchId, CorrelationId};

    use super::*;
    use crate::producer::tests::submission;

    fn choice_problem(id: &str) -> GradedProblem {
        GradedProblem {
            problem: powerfleet_datasets::Problem {
                id: id.into(),
                question: "A".into(),
                answer: Answer::Choice {
                    choices: vec!["A".into(), "B".into(), "C".into(), "D".into()],
                    correct: 2,
                },
                extra: Default::default(),
            },
            model: None,
        }
    }

    #[test]
    fn a_benchmark_makes_a_job_per_problem_method_and_seed_with_its_reference() {
        let mut s = submission();
        s.problems.clear();
        s.model = "llamacpp+http://gpu:8080".into();
        s.seeds = (0..8).collect();
        s.graded_run = Some(GradedRun {
            problems: vec![choice_problem("q1"), choice_problem("q2")].into(),
            template: Template::Plain,
            grader: None,
            price_per_mtok: Some(0.25),
            reasoning_markers: None,
        });
        let corr = CorrelationId::generate();
        let batch = BatchId::new();
        let jobs = s.jobs(&corr, Some(batch)).unwrap();
        assert_eq!(jobs.len(), 2 * 3 * 8);
        assert!(
            jobs.iter()
                .all(|j| j.batch_id == Some(batch) && j.correlation_id == corr)
        );
        let mut permutations = std::collections::HashSet::new();
        for j in &jobs {
            let grading = j.grading.as_ref().unwrap();
            assert_eq!(
                grading.grader,
                Grader::Choice,
                "multiple choice grades by letter"
            );
            assert_eq!(grading.price_per_mtok, Some(0.25));
            let ReferenceAnswer::Choice {
                correct,
                permutation,
                ..
            } = &grading.reference
            else {
                panic!("a choice reference")
            };
            assert_eq!(*correct, 2);
            let problem = j.problem_id.as_deref().unwrap();
            let shuffle = powerfleet_grade::problem_shuffle_seed(problem, j.seed);
            assert_eq!(permutation, &powerfleet_grade::shuffle_choices(4, shuffle));
            // The prompt shows the options in the recorded order.
            let Prompt::Text(prompt) = &j.prompt else {
                panic!("rendered text")
            };
            let expected = Template::Plain
                .render(&choice_problem(problem).problem, shuffle)
                .prompt;
            assert_eq!(prompt, &expected);
            permutations.insert(permutation.clone());
        }
        assert!(permutations.len() > 1, "options are shuffled per seed");
    }

    #[test]
    fn benchmark_submissions_refuse_what_cannot_be_graded_or_run() {
        let corr = CorrelationId::generate();
        let mut s = submission();
        s.problems.clear();
        s.model = "toy:tiny".into();
        s.graded_run = Some(GradedRun {
            problems: vec![choice_problem("q1")].into(),
            template: Template::Plain,
            grader: Some(Grader::Math),
            price_per_mtok: None,
            reasoning_markers: None,
        });
        let e = s.jobs(&corr, None).unwrap_err().to_string();
        assert!(
            e.contains("problem q1: a multiple-choice answer is graded by grader choice"),
            "{e}"
        );
        s.graded_run.as_mut().unwrap().grader = Some(Grader::Regex {
            pattern: "no group".into(),
        });
        let e = s.jobs(&corr, None).unwrap_err().to_string();
        assert!(
            e.contains("grader: ") && e.contains("no capture group"),
            "{e}"
        );
        s.graded_run.as_mut().unwrap().grader = None;
        s.graded_run.as_mut().unwrap().price_per_mtok = Some(-1.0);
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("price_per_mtok (USD per million generated tokens)")
        );
        s.graded_run.as_mut().unwrap().price_per_mtok = None;
        s.chat = true;
        let e = s.jobs(&corr, None).unwrap_err().to_string();
        assert!(e.contains("chat: model toy:tiny is a toy model"), "{e}");
        s.chat = false;
        s.problems = submission().problems;
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
    }

    #[test]
    fn the_builtin_suite_runs_each_problem_on_its_own_model() {
        let mut s = submission();
        s.problems.clear();
        s.graded_run = Some(GradedRun::builtin_suite());
        let jobs = s.jobs(&CorrelationId::generate(), None).unwrap();
        assert_eq!(
            jobs.len(),
            powerfleet_datasets::builtin_suite().len() * 3 * 2
        );
        for item in powerfleet_datasets::builtin_suite() {
            let job = jobs
                .iter()
                .find(|j| j.problem_id.as_deref() == Some(item.problem.id.as_str()))
                .unwrap();
            assert_eq!(job.model, format!("toy:{}", item.model_name));
            assert_eq!(job.prompt, Prompt::Text(item.prompt()));
        }
    }
}
