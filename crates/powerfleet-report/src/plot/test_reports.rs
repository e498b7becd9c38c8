//! Reports for the figures' tests: four methods with every kind of data, and a crowded one.

use powerfleet_sampler::{Method, SamplerConfig};

use crate::report::{MethodReport, ProblemMethod, ProblemReport, Report};

pub(super) fn method(
    name: &str,
    pass: [f64; 4],
    acceptance: Vec<Option<f64>>,
    cost: f64,
    acc: f64,
) -> MethodReport {
    MethodReport {
        row: name.to_string(),
        jobs: 40,
        completed: 40,
        scheduled: 40,
        graded: 40,
        missing: 0,
        problems: 10,
        problems_with_missing: 0,
        samples: 4,
        accuracy: Some(acc),
        accuracy_stderr: Some(0.025),
        accuracy_graded: Some(acc),
        accuracy_graded_stderr: Some(0.025),
        pass_at_k: pass.to_vec(),
        majority_accuracy: Some(acc + 0.02),
        proposals: 100,
        acceptances: 40,
        acceptance_rate: acceptance.iter().flatten().next().map(|_| 0.4),
        mean_job_acceptance_rate: acceptance
            .iter()
            .flatten()
            .copied()
            .reduce(|a, b| (a + b) / 2.0),
        mean_ess: None,
        acceptance_by_block: acceptance,
        tokens_generated: (cost * 10_000.0) as u64,
        final_tokens: 10_000,
        cost_multiplier: Some(cost),
        trace_chars: None,
        answer_chars: None,
        cost_usd: Some(0.01 * cost),
        model_calls: 400,
        latency_p50_ms: Some(1_200),
        latency_p95_ms: Some(3_400),
        wall_time_s: Some(60.0),
        jobs_per_s: Some(40.0 / 60.0),
        tokens_per_s: Some(cost * 10_000.0 / 60.0),
        config: None,
        setting: String::new(),
    }
}

/// Four methods, each with one configuration at its defaults.
pub(super) fn report() -> Report {
    let mut methods = vec![
        method(
            "power",
            [0.52, 0.63, 0.69, 0.73],
            vec![Some(0.41), None, Some(0.33)],
            8.7,
            0.52,
        ),
        method(
            "max-swap",
            [0.49, 0.60, 0.66, 0.71],
            vec![Some(0.58), Some(0.47), Some(0.44)],
            6.2,
            0.49,
        ),
        method(
            "low-temp",
            [0.45, 0.55, 0.60, 0.63],
            vec![None, None, None],
            1.0,
            0.45,
        ),
        method("standard", [0.40, 0.53, 0.60, 0.65], vec![], 1.0, 0.40),
    ];
    for m in &mut methods {
        let method: Method = m.row.parse().unwrap();
        m.config = Some(SamplerConfig::new(method).validate().unwrap().manifest());
    }
    Report {
        id: "0192f3a4-5b6c-7d8e-9f01-23456789abcd".to_string(),
        label: None,
        models: vec!["toy".to_string()],
        jobs: 160,
        completed: 160,
        not_completed: 0,
        graded: 160,
        missing: 0,
        problems: 10,
        problems_with_missing: 0,
        wall_time_s: Some(75.0),
        cost_usd: Some(0.17),
        per_problem: vec![ProblemReport {
            problem_id: "p1".to_string(),
            reference: Some("42".to_string()),
            methods: methods
                .iter()
                .map(|m| ProblemMethod {
                    method: m.row.clone(),
                    scheduled: 4,
                    graded: 4,
                    correct: 2,
                    missing: 0,
                    majority_answer: Some("42".to_string()),
                    majority_correct: true,
                })
                .collect(),
            solved_by: methods.iter().map(|m| m.row.clone()).collect(),
            methods_with_missing: Vec::new(),
        }],
        methods,
        definitions: Default::default(),
        scheduled: None,
        stored: 0,
        running: None,
        complete: true,
    }
}

/// A report with many methods, long series, coinciding points, costs spanning 1x to 41x
/// and a long id.
pub(super) fn crowded() -> Report {
    let mut r = report();
    r.id = "nightly-math500-qwen2.5-math-7b-alpha4-run-2026-11-25".to_string();
    let curve = |a: f64| {
        (1..=64)
            .map(|k| 1.0 - (1.0 - a) * (k as f64).powf(-0.35))
            .collect::<Vec<_>>()
    };
    let blocks = |a: f64| {
        (0..16)
            .map(|b| (b % 5 != 3).then_some(a - 0.015 * b as f64))
            .collect::<Vec<_>>()
    };
    for (i, m) in r.methods.iter_mut().enumerate() {
        m.pass_at_k = curve(0.5 - 0.05 * i as f64);
        if i < 2 {
            m.acceptance_by_block = blocks(0.7 - 0.2 * i as f64);
        }
    }
    r.methods[0].cost_multiplier = Some(41.0);
    r.methods[3].accuracy = r.methods[2].accuracy;
    let mut long = method(
        "self-consistency-with-a-long-name",
        [0.3; 4],
        vec![],
        12.0,
        0.46,
    );
    long.pass_at_k = curve(0.2);
    r.methods.push(long);
    r.methods
        .push(method("beam", [0.35; 4], vec![Some(0.2)], 4.0, 0.47));
    r
}
