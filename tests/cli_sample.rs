//! End-to-end tests of `powerfleet sample` through the real binary.

use std::process::{Command, Output};

use serde_json::Value;

fn powerfleet(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_powerfleet"));
    cmd.args(args);
    for var in [
        "POWER_SAMPLING_ALPHA",
        "POWER_SAMPLING_N_MCMC",
        "POWER_SAMPLING_BLOCK_SIZE",
        "POWER_SAMPLING_MAX_NEW_TOKENS",
        "POWER_SAMPLING_PROPOSAL_TEMP",
        "POWER_SAMPLING_LOOKAHEAD_CANDIDATES",
        "POWER_SAMPLING_LOOKAHEAD_ROLLOUTS",
        "POWER_SAMPLING_LOOKAHEAD_HORIZON",
        "POWER_SAMPLING_LOOKAHEAD_JACKKNIFE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the powerfleet binary runs")
}

fn jsonl(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const BASE: &[&str] = &[
    "sample",
    "--model",
    "toy:eos-lengths",
    "--method",
    "power",
    "--alpha",
    "4",
    "--n-mcmc",
    "3",
    "--block-size",
    "4",
    "--max-new-tokens",
    "10",
    "--chains",
    "300",
    "--seed",
    "7",
    "--format",
    "jsonl",
];

#[test]
fn same_seed_gives_the_same_output_whatever_the_thread_count() {
    let one = powerfleet(&[BASE, &["--threads", "1"]].concat(), &[]);
    let many = powerfleet(&[BASE, &["--threads", "4"]].concat(), &[]);
    assert!(one.status.success());
    assert_eq!(one.stdout, many.stdout);
    let other_seed = powerfleet(&[BASE, &["--seed", "8"]].concat(), &[]);
    assert_ne!(one.stdout, other_seed.stdout);
}

#[test]
fn jsonl_records_hold_tokens_text_and_statistics() {
    let records = jsonl(&powerfleet(BASE, &[]));
    assert_eq!(records.len(), 300);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["chain"], i as u64);
        let tokens: Vec<u64> = r["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect();
        assert!(
            !tokens.is_empty() && tokens.len() <= 10,
            "max_new_tokens counts EOS too"
        );
        let ends_with_eos = tokens.last() == Some(&3);
        assert_eq!(r["ends_with_eos"], ends_with_eos);
        assert!(ends_with_eos || tokens.len() == 10);
        let text = r["text"].as_str().unwrap();
        // The text leaves a terminal EOS out, as a server's completion text does.
        let words = if text.is_empty() {
            0
        } else {
            text.split(' ').count()
        };
        assert_eq!(words, tokens.len() - usize::from(ends_with_eos), "{text:?}");
        assert!(!text.contains("<eos>"), "{text:?}");
        let proposals = r["proposals"].as_u64().unwrap();
        let blocks = r["block_proposals"].as_array().unwrap().len() as u64;
        assert_eq!(proposals, 3 * blocks, "3 MCMC steps in every block entered");
        assert!(r["acceptances"].as_u64().unwrap() <= proposals);
        assert!(r["tokens_generated"].as_u64().unwrap() >= tokens.len() as u64);
        assert!(r["log_p"].as_f64().unwrap() < 0.0);
    }
}

#[test]
fn environment_sets_defaults_and_flags_override_it() {
    let base = [
        "sample",
        "--model",
        "toy:tiny",
        "--chains",
        "5",
        "--format",
        "jsonl",
        "--block-size",
        "100",
    ];
    let from_env = jsonl(&powerfleet(
        &base,
        &[
            ("POWER_SAMPLING_N_MCMC", "4"),
            ("POWER_SAMPLING_MAX_NEW_TOKENS", "3"),
        ],
    ));
    for r in &from_env {
        assert_eq!(r["proposals"], 4);
        assert!(r["tokens"].as_array().unwrap().len() <= 3);
    }
    let overridden = jsonl(&powerfleet(
        &[&base[..], &["--n-mcmc", "2"]].concat(),
        &[("POWER_SAMPLING_N_MCMC", "4")],
    ));
    for r in &overridden {
        assert_eq!(r["proposals"], 2);
    }
}

#[test]
fn bad_input_names_the_field_and_the_allowed_values() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            &["sample", "--alpha", "-1"],
            &[],
            "--alpha: alpha must be > 0 or inf, got -1",
        ),
        (
            &["sample"],
            &[("POWER_SAMPLING_ALPHA", "zero")],
            "POWER_SAMPLING_ALPHA: alpha must be > 0 or inf, got zero",
        ),
        (
            &["sample", "--n-mcmc", "0"],
            &[],
            "n_mcmc must be >= 1, got 0",
        ),
        (
            &["sample"],
            &[("POWER_SAMPLING_BLOCK_SIZE", "x")],
            "POWER_SAMPLING_BLOCK_SIZE: block_size must be a whole number >= 1, got x",
        ),
        (
            &["sample", "--max-new-tokens", "0"],
            &[],
            "max_new_tokens must be between 1 and 65536, got 0",
        ),
        (
            &["sample", "--proposal-temp", "0"],
            &[],
            "proposal_temp must be a finite number > 0, got 0",
        ),
        (
            &["sample", "--method", "beam"],
            &[],
            "method must be one of power, max-swap, low-temp, standard, power-smc, power-lookahead, got beam",
        ),
        (
            &["sample", "--method", "max-swap", "--alpha", "4"],
            &[],
            "alpha must be inf for method max-swap",
        ),
        (
            &["sample", "--model", "toy:nope"],
            &[],
            "neither a built-in model (tiny, pivot, eos-lengths, suite-arith, suite-carry, suite-capital, suite-double) nor a file",
        ),
        (&["sample", "--prompt", "A zz"], &[], "unknown token \"zz\""),
        (
            &["sample", "--prompt-tokens", "0,99"],
            &[],
            "token id 99 is not in the vocabulary of toy:pivot (ids 0 to 9)",
        ),
        (
            &["sample", "--prompt", "A", "--prompt-tokens", "0"],
            &[],
            "give --prompt or --prompt-tokens, not both",
        ),
        (
            &["sample", "--ratio", "approx"],
            &[],
            "ratio must be one of exact, reference, got approx",
        ),
        (
            &[
                "sample",
                "--method",
                "power-smc",
                "--rejuvenation-steps",
                "65",
            ],
            &[],
            "rejuvenation_steps must be between 0 and 64, got 65",
        ),
        (
            &["sample", "--method", "power-smc"],
            &[("POWER_SAMPLING_REJUVENATION_STEPS", "x")],
            "POWER_SAMPLING_REJUVENATION_STEPS: rejuvenation_steps must be a whole number between 0 and 64, got x",
        ),
        (
            &[
                "sample",
                "--method",
                "power-smc",
                "--alpha-schedule",
                "cosine",
            ],
            &[],
            "--alpha-schedule: alpha_schedule must be one of none, linear, geometric, got cosine",
        ),
        (
            &["sample", "--method", "power-smc", "--anneal-blocks", "2"],
            &[],
            "anneal_blocks must be unset unless alpha_schedule is linear or geometric, got 2",
        ),
        (
            &["sample", "--alpha-schedule", "linear"],
            &[],
            "alpha_schedule must be unset for this method (it is an option of method power-smc)",
        ),
        (
            &[
                "sample",
                "--method",
                "power-lookahead",
                "--lookahead-candidates",
                "65",
            ],
            &[],
            "lookahead_candidates must be between 1 and 64, got 65",
        ),
        (
            &["sample", "--method", "power-lookahead"],
            &[("POWER_SAMPLING_LOOKAHEAD_JACKKNIFE", "yes")],
            "POWER_SAMPLING_LOOKAHEAD_JACKKNIFE: lookahead_jackknife must be true or false, got yes",
        ),
        (
            &["sample", "--lookahead-rollouts", "4"],
            &[],
            "lookahead_rollouts must be unset for this method (it is an option of method power-lookahead)",
        ),
    ];
    for (args, env, needle) in cases {
        let out = powerfleet(args, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} not in {stderr:?}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn power_smc_takes_its_moves_and_schedule_from_flags_and_environment() {
    let base = [
        "sample",
        "--model",
        "toy:eos-lengths",
        "--method",
        "power-smc",
        "--particles",
        "8",
        "--ess-threshold",
        "1",
        "--block-size",
        "1",
        "--max-new-tokens",
        "4",
        "--chains",
        "20",
    ];
    let calls = |extra: &[&str], env: &[(&str, &str)]| -> u64 {
        let args = [&base[..], &["--format", "jsonl"], extra].concat();
        jsonl(&powerfleet(&args, env))
            .iter()
            .map(|r| r["model_calls"].as_u64().unwrap())
            .sum()
    };
    let plain = calls(&[], &[]);
    let moved = calls(&["--rejuvenation-steps", "2"], &[]);
    assert!(moved > plain, "moves are model calls: {moved} vs {plain}");
    assert_eq!(
        calls(&[], &[("POWER_SAMPLING_REJUVENATION_STEPS", "2")]),
        moved
    );
    let table = powerfleet(
        &[
            &base[..],
            &[
                "--rejuvenation-steps",
                "2",
                "--alpha-schedule",
                "geometric",
                "--anneal-blocks",
                "3",
            ],
        ]
        .concat(),
        &[],
    );
    let stdout = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    for needle in [
        "rejuvenation_steps 2  alpha_schedule geometric  anneal_blocks 3",
        "moves accepted",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in {stdout}");
    }
}

#[test]
fn table_puts_frequencies_beside_the_exact_probability() {
    let out = powerfleet(
        &[
            "sample",
            "--model",
            "toy:pivot",
            "--n-mcmc",
            "10",
            "--block-size",
            "4",
            "--max-new-tokens",
            "12",
            "--chains",
            "400",
            "--seed",
            "7",
        ],
        &[],
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("exact p^α"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("B b <eos>"))
        .expect("the mode is listed");
    let exact: f64 = row.split_whitespace().last().unwrap().parse().unwrap();
    assert!((exact - 0.9771).abs() < 1e-4, "{row}");
    assert!(text.contains("acceptance rate"));
    assert!(text.contains("cost multiplier"));
    assert!(text.contains("TV to exact p^α"));
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_powerfleet"))
        .args([
            "sample",
            "--model",
            "toy:tiny",
            "--chains",
            "20000",
            "--format",
            "jsonl",
            "--max-new-tokens",
            "4",
            "--block-size",
            "4",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("{\"chain\":0"), "{first}");
    // stdout is closed now, like `| head -1`.
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("error"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn huge_counts_are_refused_before_anything_is_allocated() {
    let out = powerfleet(&["sample", "--chains", "1000000000000"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--chains must be at most 10000000"),
        "{stderr}"
    );
    // Refused before connecting anywhere: no Redis is needed to say so.
    let out = powerfleet(
        &[
            "submit",
            "--redis",
            "redis://127.0.0.1:9/",
            "--model",
            "toy:pivot",
            "--seeds",
            "1000000000000",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--seeds must be at most 100000"),
        "{stderr}"
    );
}

#[test]
fn power_lookahead_runs_from_flags_and_environment() {
    let args = [
        "sample",
        "--model",
        "toy:pivot",
        "--method",
        "power-lookahead",
        "--max-new-tokens",
        "3",
        "--block-size",
        "3",
        "--chains",
        "200",
        "--seed",
        "3",
        "--lookahead-rollouts",
        "4",
        "--lookahead-jackknife",
        "false",
    ];
    let out = powerfleet(&args, &[("POWER_SAMPLING_LOOKAHEAD_CANDIDATES", "10")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "lookahead_candidates 10  lookahead_rollouts 4  lookahead_horizon none  lookahead_jackknife false"
        ),
        "{text}"
    );
    // Exact on toy:pivot at any number of rollouts: "B b <eos>" has p^α 0.9771.
    let row = text
        .lines()
        .find(|l| l.starts_with("B b <eos>"))
        .expect("the mode is listed");
    let freq: f64 = row.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert!(freq > 0.9, "{row}");
    let records = jsonl(&powerfleet(
        &[
            &args[..],
            &["--format", "jsonl", "--lookahead-candidates", "1"],
        ]
        .concat(),
        &[("POWER_SAMPLING_LOOKAHEAD_CANDIDATES", "10")],
    ));
    // One candidate: greedy on p, "A" then one of six, then EOS.
    for r in &records {
        assert_eq!(r["tokens"][0], 0, "{r}");
    }
}
