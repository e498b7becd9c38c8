//! Property tests: a chain restored from its checkpoint, at any block boundary or any step,
//! continues bit-identically to the uninterrupted chain; bad generations leave the chain unchanged.

use powerfleet_sampler::{
    Alpha, AlphaSchedule, Chain, Checkpoint, Generation, GenerationError, LanguageModel, Method,
    Phase, Ratio, SamplerConfig, TokenId, ValidConfig, run,
};

use crate::hash_model::HashModel;
use proptest::prelude::*;

const MODEL: HashModel = HashModel { vocab: 6, eos: 5 };

fn config_strategy() -> impl Strategy<Value = ValidConfig> {
    (
        prop::sample::select(Method::ALL.to_vec()),
        prop_oneof![Just(None), (0.25f64..8.0).prop_map(Some)],
        1u32..5,
        1u32..7,
        1u32..20,
        prop::option::of(1u32..6),
        prop::bool::ANY,
        prop::bool::ANY,
        smc_strategy(),
        (1u32..8, 1u32..5, prop::option::of(1u32..6), prop::bool::ANY),
    )
        .prop_map(
            |(
                method,
                alpha,
                n_mcmc,
                block_size,
                max_new_tokens,
                top_k,
                reference,
                finish_on_eos,
                (particles, ess_threshold, rejuvenation_steps, alpha_schedule, anneal_blocks),
                (candidates, rollouts, horizon, jackknife),
            )| {
                let alpha = match method {
                    Method::MaxSwap => None,
                    _ => alpha.map(|a| Alpha::new(a).unwrap()),
                };
                let config = SamplerConfig {
                    alpha,
                    n_mcmc,
                    block_size,
                    max_new_tokens,
                    top_k,
                    ratio: if reference {
                        Ratio::Reference
                    } else {
                        Ratio::Exact
                    },
                    finish_on_eos,
                    ..SamplerConfig::new(method)
                };
                let n_blocks = max_new_tokens.div_ceil(block_size);
                let config = if method.is_smc() {
                    SamplerConfig {
                        particles: Some(particles),
                        ess_threshold: Some(ess_threshold),
                        rejuvenation_steps: Some(rejuvenation_steps),
                        alpha_schedule: Some(alpha_schedule),
                        anneal_blocks: (!alpha_schedule.is_none())
                            .then(|| anneal_blocks.min(n_blocks)),
                        ..config
                    }
                } else if method.is_lookahead() {
                    SamplerConfig {
                        lookahead_candidates: Some(candidates),
                        lookahead_rollouts: Some(rollouts),
                        lookahead_horizon: horizon,
                        lookahead_jackknife: Some(jackknife),
                        ..config
                    }
                } else {
                    config
                };
                config.validate().unwrap()
            },
        )
}

/// power-smc's particles, ESS threshold (often 1: resampling, so moves, at most boundaries),
/// rejuvenation steps, α schedule and anneal blocks (clamped to the blocks).
fn smc_strategy() -> impl Strategy<Value = (u32, f64, u32, AlphaSchedule, u32)> {
    (
        1u32..7,
        prop_oneof![Just(1.0), 0.1f64..1.0],
        0u32..4,
        prop::sample::select(vec![
            AlphaSchedule::None,
            AlphaSchedule::Linear,
            AlphaSchedule::Geometric,
        ]),
        1u32..8,
    )
}

/// Runs to the end, returning the checkpoints taken after every block and after every step.
fn run_recording(chain: &mut Chain) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    chain.set_terminal_tokens(&MODEL.terminal_tokens());
    let (mut at_blocks, mut at_steps) = (vec![], vec![]);
    while let Some(req) = chain.request() {
        let g = MODEL.generate(&req).unwrap();
        let advance = chain.advance(g).unwrap();
        let json = chain.checkpoint().to_json();
        if advance.block_finished.is_some() {
            at_blocks.push(json.clone());
        }
        at_steps.push(json);
    }
    (at_blocks, at_steps)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn resume_from_any_checkpoint_equals_the_uninterrupted_run(
        config in config_strategy(),
        prompt in prop::collection::vec(0u32..5, 0..4),
        seed in any::<u64>(),
        stream in 0u64..1000,
    ) {
        let mut chain = Chain::new(config.clone(), &prompt, seed, stream);
        let start = chain.checkpoint().to_json();
        let (at_blocks, at_steps) = run_recording(&mut chain);
        let expected = chain.output().unwrap();
        let expected_final = chain.checkpoint().to_json();
        prop_assert_eq!(at_blocks.len() as u32, expected.stats.blocks.len() as u32);

        for json in std::iter::once(&start).chain(&at_blocks).chain(&at_steps) {
            let mut resumed = Chain::from_checkpoint(Checkpoint::from_json(json).unwrap()).unwrap();
            let output = run(&mut resumed, &MODEL).unwrap();
            prop_assert_eq!(&output, &expected);
            prop_assert_eq!(resumed.checkpoint().to_json(), expected_final.clone());
        }
        // Statistics add up.
        let s = &expected.stats;
        prop_assert_eq!(s.proposals, s.blocks.iter().map(|b| u64::from(b.proposals)).sum::<u64>());
        prop_assert_eq!(s.acceptances, s.blocks.iter().map(|b| u64::from(b.acceptances)).sum::<u64>());
        prop_assert!(s.acceptances <= s.proposals);
        prop_assert!(expected.tokens.len() <= config.max_new_tokens() as usize);
        prop_assert!(s.tokens_generated >= expected.tokens.len() as u64);
        if !config.method().is_mcmc() {
            prop_assert_eq!(s.proposals, 0);
        }
        if !config.method().needs_log_probs() {
            prop_assert_eq!(s.tokens_generated, expected.tokens.len() as u64);
        }
        if let Some(la) = &s.lookahead {
            // One candidate request per final token, and rollouts only for candidates that
            // neither end the completion nor fill the budget.
            prop_assert_eq!(la.tokens, expected.tokens.len() as u64);
            prop_assert_eq!(s.model_calls, la.tokens + la.rollouts);
            prop_assert_eq!(s.tokens_generated, la.tokens + la.rollout_tokens);
            let k = u64::from(config.lookahead().unwrap().candidates);
            let m = u64::from(config.lookahead().unwrap().rollouts);
            prop_assert_eq!(la.rollouts + m * la.exact_candidates, la.tokens * k.min(6) * m);
            prop_assert_eq!(expected.ends_with_eos, expected.tokens.last() == Some(&MODEL.eos));
        }
        if let Some(smc) = &s.smc {
            // Every particle's tokens were generated; the returned one is one of them.
            prop_assert!(s.tokens_generated >= expected.tokens.len() as u64);
            prop_assert!(smc.weighted.iter().any(|w| w.tokens == expected.tokens));
            let steps = config.smc().unwrap().rejuvenation_steps;
            prop_assert_eq!(smc.moves, u64::from(steps) * u64::from(smc.particles) * u64::from(smc.resamples));
            prop_assert!(smc.accepted_moves <= smc.moves);
            let total: f64 = smc.weighted.iter().map(|w| w.weight).sum();
            prop_assert!((total - 1.0).abs() < 1e-9 || smc.weighted.len() == powerfleet_sampler::smc::MAX_WEIGHTED_SET);
        }
    }
}

#[test]
fn the_same_seed_and_stream_give_the_same_chain_and_streams_differ() {
    let config = SamplerConfig {
        n_mcmc: 3,
        block_size: 4,
        max_new_tokens: 12,
        ..SamplerConfig::new(Method::Power)
    }
    .validate()
    .unwrap();
    let out = |stream| run(&mut Chain::new(config.clone(), &[1, 2], 42, stream), &MODEL).unwrap();
    assert_eq!(out(0), out(0));
    let distinct: std::collections::HashSet<Vec<TokenId>> =
        (0..20).map(|s| out(s).tokens).collect();
    assert!(distinct.len() > 5, "streams are independent: {distinct:?}");
}

#[test]
fn unusable_generations_are_rejected_and_leave_the_chain_unchanged() {
    let config = SamplerConfig {
        block_size: 3,
        max_new_tokens: 6,
        ..SamplerConfig::new(Method::Power)
    }
    .validate()
    .unwrap();
    let mut chain = Chain::new(config, &[0], 1, 0);
    let before = chain.clone();
    let generation = |tokens: Vec<TokenId>, lp: Vec<f64>, lq: Vec<f64>, eos| Generation {
        tokens,
        log_p: lp,
        log_q: lq,
        eos,
        candidates: Vec::new(),
    };
    let cases = [
        (
            generation(vec![], vec![], vec![], false),
            GenerationError::Empty,
        ),
        (
            generation(vec![1, 2, 3, 4], vec![-1.0; 4], vec![-1.0; 4], false),
            GenerationError::TooMany { got: 4, max: 3 },
        ),
        (
            generation(vec![1], vec![-1.0], vec![-1.0], false),
            GenerationError::StoppedEarly { got: 1, max: 3 },
        ),
        (
            generation(vec![1, 2, 3], vec![-1.0; 2], vec![-1.0; 3], false),
            GenerationError::LengthMismatch {
                tokens: 3,
                log_p: 2,
                log_q: 3,
            },
        ),
        (
            generation(
                vec![1, 2, 3],
                vec![-1.0, f64::NAN, -1.0],
                vec![-1.0; 3],
                false,
            ),
            GenerationError::BadLogProb {
                which: "log_p",
                index: 1,
                value: f64::NAN,
            },
        ),
        (
            generation(vec![1, 2, 3], vec![-1.0; 3], vec![-1.0, -1.0, 0.5], false),
            GenerationError::BadLogProb {
                which: "log_q",
                index: 2,
                value: 0.5,
            },
        ),
    ];
    for (g, want) in cases {
        let err = chain.advance(g).unwrap_err();
        assert_eq!(err.to_string(), want.to_string());
        assert_eq!(chain, before, "a rejected generation changes nothing");
    }
    let ok = generation(vec![1, 5], vec![-1.0, -2.0], vec![-1.0, -2.0], true);
    assert!(chain.advance(ok).is_ok());
}

#[test]
fn corrupt_or_unknown_checkpoints_are_refused_with_a_reason() {
    let config = SamplerConfig::new(Method::Power).validate().unwrap();
    let chain = Chain::new(config, &[0], 1, 0);
    let json = String::from_utf8(chain.checkpoint().to_json()).unwrap();
    assert!(json.starts_with("{\"version\":\"1\""), "{json}");

    let future = json.replacen("\"version\":\"1\"", "\"version\":\"9\"", 1);
    let err = Checkpoint::from_json(future.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("known versions: 1"), "{err}");

    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["log_p"] = serde_json::json!([-1.0]);
    let err = Checkpoint::from_json(value.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("inconsistent"), "{err}");
    assert!(Checkpoint::from_json(b"garbage").is_err());

    // Decoded configurations are checked too: a block size of 0 would divide by zero.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["config"]["block_size"] = serde_json::json!(0);
    let err = Checkpoint::from_json(value.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of range"), "{err}");
    // A pending request must fit its block.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["stats"]["blocks"] = serde_json::json!([]);
    let err = Checkpoint::from_json(value.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no block statistics"), "{err}");

    // Stored log-probabilities must be ones a generation could have had: finite and <= 0.
    let config = SamplerConfig {
        block_size: 2,
        max_new_tokens: 4,
        ..SamplerConfig::new(Method::Power)
    }
    .validate()
    .unwrap();
    let mut chain = Chain::new(config, &[0], 1, 0);
    let model = HashModel { vocab: 5, eos: 4 };
    let request = chain.request().unwrap().to_owned();
    chain
        .advance(model.generate(&request.as_request()).unwrap())
        .unwrap();
    let json = String::from_utf8(chain.checkpoint().to_json()).unwrap();
    assert!(Checkpoint::from_json(json.as_bytes()).is_ok());
    for bad in [serde_json::json!(0.5), serde_json::json!(null)] {
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["log_p"][0] = bad;
        let err = Checkpoint::from_json(value.to_string().as_bytes())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a finite log-probability") || err.contains("invalid type"),
            "{err}"
        );
    }
}

#[test]
fn an_smc_chain_lists_a_blocks_requests_in_the_order_it_takes_their_answers() {
    let config = SamplerConfig {
        block_size: 2,
        max_new_tokens: 6,
        particles: Some(8),
        ..SamplerConfig::new(Method::PowerSmc)
    }
    .validate()
    .unwrap();
    for stream in 0..20 {
        let mut chain = Chain::new(config.clone(), &[1], 5, stream);
        while chain.request().is_some() {
            let listed = chain.requests();
            assert!(!listed.is_empty() && listed.len() <= 8);
            for (i, expected) in listed.iter().enumerate() {
                let pending = chain.request().unwrap().to_owned();
                assert_eq!(&pending, expected, "request {i} of the block");
                let g = MODEL.generate(&pending.as_request()).unwrap();
                let advance = chain.advance(g).unwrap();
                assert_eq!(
                    advance.block_finished.is_some(),
                    i + 1 == listed.len(),
                    "the block ends with its last listed request"
                );
            }
        }
    }
}

#[test]
fn an_smc_chain_lists_a_moves_proposals_in_the_order_it_takes_their_answers() {
    let config = SamplerConfig {
        block_size: 2,
        max_new_tokens: 6,
        particles: Some(8),
        ess_threshold: Some(1.0),
        rejuvenation_steps: Some(2),
        alpha_schedule: Some(AlphaSchedule::Linear),
        ..SamplerConfig::new(Method::PowerSmc)
    }
    .validate()
    .unwrap();
    let (mut batches, mut accepted) = (0, 0);
    for stream in 0..20 {
        let mut chain = Chain::new(config.clone(), &[1], 5, stream);
        while chain.request().is_some() {
            let listed = chain.requests();
            let moving = matches!(chain.phase(), Phase::Propose { .. });
            if moving {
                batches += 1;
                assert_eq!(listed.len(), 8, "every particle moves at once");
            }
            for (i, expected) in listed.iter().enumerate() {
                let pending = chain.request().unwrap().to_owned();
                assert_eq!(&pending, expected, "request {i} of the batch");
                let g = MODEL.generate(&pending.as_request()).unwrap();
                let advance = chain.advance(g).unwrap();
                assert_eq!(advance.accepted.is_some(), moving);
                accepted += u32::from(advance.accepted == Some(true));
            }
        }
        let smc = chain.output().unwrap().stats.smc.unwrap();
        assert_eq!(smc.moves, 2 * 8 * u64::from(smc.resamples));
    }
    assert!(batches > 0, "the particles were moved");
    assert!(accepted > 0, "some moves were accepted");
}

#[test]
fn an_smc_chains_position_names_each_block_it_enters_until_it_finishes() {
    let config = SamplerConfig {
        block_size: 2,
        max_new_tokens: 8,
        particles: Some(4),
        finish_on_eos: false,
        ..SamplerConfig::new(Method::PowerSmc)
    }
    .validate()
    .unwrap();
    let mut longest = 0;
    for stream in 0..20 {
        let mut chain = Chain::new(config.clone(), &[1], 3, stream);
        assert_eq!(chain.position().block_idx, 0);
        assert_eq!(chain.position().n_blocks, 4);
        while let Some(request) = chain.request() {
            let g = MODEL.generate(&request).unwrap();
            let before = chain.position().block_idx;
            let advance = chain.advance(g).unwrap();
            let p = chain.position();
            match advance.block_finished {
                Some(b) if !advance.finished => {
                    assert_eq!(b, before);
                    assert_eq!(p.block_idx, b + 1, "stream {stream}: the next block");
                    longest = longest.max(p.block_idx);
                }
                Some(_) => assert!(p.finished && p.block_idx == p.n_blocks),
                None => assert_eq!(p.block_idx, before, "stream {stream}: within a block"),
            }
        }
    }
    assert_eq!(longest, 3, "some chain reached the last block");
}

/// Answers every request with `max_tokens` tokens of log p −0.7 and log q −0.3, or, when
/// `stop` is set, with EOS alone (log p −0.5, log q −0.2).
struct Scripted {
    stop: bool,
}

impl LanguageModel for Scripted {
    type Error = std::convert::Infallible;

    fn generate(
        &self,
        request: &powerfleet_sampler::Request<'_>,
    ) -> Result<Generation, Self::Error> {
        let n = if self.stop {
            1
        } else {
            request.max_tokens as usize
        };
        Ok(Generation {
            tokens: vec![if self.stop { 9 } else { 1 }; n],
            log_p: vec![if self.stop { -0.5 } else { -0.7 }; n],
            log_q: vec![if self.stop { -0.2 } else { -0.3 }; n],
            eos: self.stop,
            candidates: Vec::new(),
        })
    }
}

#[test]
fn annealed_weights_telescope_to_alpha_log_p_minus_log_q_even_when_particles_stop_early() {
    // One particle never resamples, so log Ẑ is its whole log weight: whatever the schedule,
    // alpha log p(x) − log q(x) of the completion, also when EOS ends it before alpha is reached.
    for schedule in [
        AlphaSchedule::None,
        AlphaSchedule::Linear,
        AlphaSchedule::Geometric,
    ] {
        for stop in [false, true] {
            let config = SamplerConfig {
                alpha: Some(Alpha::new(3.0).unwrap()),
                block_size: 2,
                max_new_tokens: 8,
                particles: Some(1),
                alpha_schedule: Some(schedule),
                ..SamplerConfig::new(Method::PowerSmc)
            }
            .validate()
            .unwrap();
            let out = run(&mut Chain::new(config, &[1], 1, 0), &Scripted { stop }).unwrap();
            let (log_p, log_q) = if stop {
                (-0.5, -0.2)
            } else {
                (8.0 * -0.7, 8.0 * -0.3)
            };
            let log_z = out.stats.smc.unwrap().log_z;
            assert!(
                (log_z - (3.0 * log_p - log_q)).abs() < 1e-9,
                "{schedule:?}, stop {stop}: log Ẑ {log_z}"
            );
        }
    }
}

/// A lookahead configuration at α = 1 (π = p), where completions go on past the first token.
fn lookahead(candidates: u32, rollouts: u32, max_new_tokens: u32) -> ValidConfig {
    SamplerConfig {
        alpha: Some(Alpha::new(1.0).unwrap()),
        block_size: 2,
        max_new_tokens,
        lookahead_candidates: Some(candidates),
        lookahead_rollouts: Some(rollouts),
        ..SamplerConfig::new(Method::PowerLookahead)
    }
    .validate()
    .unwrap()
}

#[test]
fn a_lookahead_chain_lists_a_tokens_rollouts_in_the_order_it_takes_their_answers() {
    let config = lookahead(3, 4, 6);
    let mut batches = 0;
    for stream in 0..20 {
        let mut chain = Chain::new(config.clone(), &[1], 5, stream);
        chain.set_terminal_tokens(&[MODEL.eos]);
        while let Some(request) = chain.request() {
            // The candidate request goes alone.
            assert_eq!(request.candidates, 3);
            assert_eq!(request.max_tokens, 1);
            assert_eq!(chain.requests(), vec![request.to_owned()]);
            let g = MODEL.generate(&request).unwrap();
            let prefix = request.prefix.to_vec();
            let candidates = g.candidates.clone();
            let advance = chain.advance(g).unwrap();
            let listed = chain.requests();
            if listed.is_empty() || listed[0].candidates > 0 {
                // No rollouts: every candidate ended the completion or filled the budget.
                continue;
            }
            batches += 1;
            assert!(advance.block_finished.is_none());
            assert_eq!(listed.len() % 4, 0, "M rollouts per candidate");
            for (i, expected) in listed.iter().enumerate() {
                let pending = chain.request().unwrap().to_owned();
                assert_eq!(&pending, expected, "rollout {i}");
                assert_eq!(pending.candidates, 0);
                assert_eq!(&pending.prefix[..prefix.len()], &prefix[..]);
                let candidate = *pending.prefix.last().unwrap();
                assert!(candidates.iter().any(|&(t, _)| t == candidate));
                assert_ne!(candidate, MODEL.eos, "no rollout after EOS");
                let left = 6 - (prefix.len() - 1) - 1;
                assert_eq!(
                    pending.max_tokens as usize, left,
                    "to the end of the budget"
                );
                let g = MODEL.generate(&pending.as_request()).unwrap();
                chain.advance(g).unwrap();
            }
        }
        let out = chain.output().unwrap();
        assert!(out.ends_with_eos || out.tokens.len() == 6);
    }
    assert!(batches > 20, "rollouts ran: {batches}");
}

#[test]
fn a_lookahead_horizon_bounds_the_rollouts() {
    let config = SamplerConfig {
        lookahead_horizon: Some(2),
        ..lookahead(2, 2, 8).manifest()
    }
    .validate()
    .unwrap();
    let mut chain = Chain::new(config, &[1], 9, 0);
    chain.set_terminal_tokens(&[MODEL.eos]);
    let mut seen = 0;
    while let Some(request) = chain.request() {
        if request.candidates == 0 {
            assert!(request.max_tokens <= 2);
            seen += 1;
        }
        let g = MODEL.generate(&request).unwrap();
        chain.advance(g).unwrap();
    }
    assert!(seen > 0);
}

#[test]
fn a_lookahead_chain_refuses_unusable_candidate_lists_and_stays_unchanged() {
    let mut chain = Chain::new(lookahead(3, 2, 6), &[1], 1, 0);
    chain.set_terminal_tokens(&[MODEL.eos]);
    let before = chain.clone();
    let answer = |candidates: Vec<(TokenId, f64)>| Generation {
        tokens: vec![2],
        log_p: vec![-1.0],
        log_q: vec![-1.0],
        eos: false,
        candidates,
    };
    for (candidates, needle) in [
        (vec![], "0 candidates came back, 1 to 3 were asked for"),
        (
            vec![(1, -1.0), (2, -1.5), (3, -2.0), (4, -3.0)],
            "4 candidates came back",
        ),
        (vec![(1, -2.0), (2, -1.0)], "the list must descend"),
        (vec![(1, -1.0), (1, -1.0)], "candidate 1 is listed twice"),
        (vec![(1, f64::NAN)], "not a finite log-probability"),
        (vec![(1, 0.5)], "not a finite log-probability"),
    ] {
        let err = chain.advance(answer(candidates)).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
        assert_eq!(chain, before);
    }
    assert!(chain.advance(answer(vec![(1, -1.0), (2, -1.0)])).is_ok());
    // A rollout's answer must not carry candidates nobody asked for.
    let before = chain.clone();
    let n = chain.request().unwrap().max_tokens as usize;
    let err = chain
        .advance(Generation {
            tokens: vec![2; n],
            log_p: vec![-1.0; n],
            log_q: vec![-1.0; n],
            eos: false,
            candidates: vec![(1, -1.0)],
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("none were asked for"), "{err}");
    assert_eq!(chain, before);
}

#[test]
fn one_lookahead_candidate_takes_the_likeliest_token_and_reports_a_block_every_block_size_tokens() {
    let mut chain = Chain::new(lookahead(1, 3, 7), &[1], 2, 0);
    chain.set_terminal_tokens(&[MODEL.eos]);
    let mut blocks = Vec::new();
    let mut top = None;
    while let Some(request) = chain.request() {
        let g = MODEL.generate(&request).unwrap();
        if request.candidates > 0 {
            assert_eq!(g.candidates.len(), 1);
            top = Some(g.candidates[0]);
        }
        let before = chain.completion().len();
        let advance = chain.advance(g).unwrap();
        if let Some(b) = advance.block_finished {
            blocks.push((b, chain.completion().len()));
        }
        if chain.completion().len() > before {
            assert_eq!(Some(*chain.completion().last().unwrap()), top.map(|t| t.0));
        }
    }
    let out = chain.output().unwrap();
    let n = out.tokens.len();
    let expected: Vec<(u32, usize)> = (0..n.div_ceil(2))
        .map(|b| (b as u32, (2 * b + 2).min(n)))
        .collect();
    assert_eq!(blocks, expected, "{out:?}");
    assert_eq!(out.stats.blocks.len(), blocks.len());
    assert!(out.stats.lookahead.as_ref().unwrap().tokens == n as u64);
}
