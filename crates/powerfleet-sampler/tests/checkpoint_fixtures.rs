//! Pinned checkpoints: the JSON that each checkpoint version wrote, kept verbatim under
//! `tests/fixtures/`, must keep decoding, re-encode to the same bytes, and resume into the same
//! chain as a fresh run to the same point, which then continues to the same tokens. A checkpoint
//! outlives a deploy, so a change to the sampler's in-memory types that silently changes what
//! "version 1" means fails here.
//!
//! Each fixture is written by the code of its version, from a recipe in [`recipes`]: a sampler
//! configuration, prompt, seed and stream, and how many model answers (from the toy model [`TOY`],
//! which is part of every recipe and must never change) the chain consumed before the checkpoint.
//!
//! Adding a fixture for a new checkpoint version N (or another state of an existing one):
//! 1. add recipes named `vN-...json` with `version: "N"` to [`recipes`];
//! 2. run `POWERFLEET_WRITE_FIXTURES=1 cargo test -p powerfleet-sampler --test
//!    checkpoint_fixtures`, which writes the fixtures that do not exist yet (and refuses to write
//!    one whose version is not the one the current code writes);
//! 3. commit the new files as they are.
//!
//! Never regenerate, edit or delete an existing fixture, and never change an existing recipe or
//! the toy model: they are the record of what that version wrote. If one stops passing, the code
//! broke that version's checkpoints; make the code read them again (old versions keep their
//! variant of [`Checkpoint`] and decode into the current chain).

use std::path::{Path, PathBuf};

use crate::hash_model::HashModel;
use powerfleet_sampler::{
    Alpha, AlphaSchedule, Chain, Checkpoint, LanguageModel, Method, Phase, Ratio, SamplerConfig,
    TokenId, run,
};

/// The model every recipe runs with.
const TOY: HashModel = HashModel { vocab: 16, eos: 15 };

/// Where a recipe's chain stands when its checkpoint is taken.
#[derive(Clone, Copy, Debug)]
enum At {
    /// Waiting for the proposal of MCMC step `step_idx` (> 0) of block `block_idx`.
    MidBlock { block_idx: u32, step_idx: u32 },
    /// Just past a block boundary: the last answer finished block `block_idx - 1`.
    BlockBoundary { block_idx: u32 },
    /// Finished.
    Finished,
}

impl At {
    /// [`At::BlockBoundary`] before block `block_idx`.
    fn boundary(block_idx: u32) -> At {
        At::BlockBoundary { block_idx }
    }

    /// [`At::MidBlock`] at step `step_idx` of block `block_idx`.
    fn mid_block(block_idx: u32, step_idx: u32) -> At {
        At::MidBlock {
            block_idx,
            step_idx,
        }
    }
}

/// How a fixture was made: a chain with `config`, `prompt`, `seed` and `stream`, after `answers`
/// answers of [`TOY`], checkpointed by the code of `version`.
struct Recipe {
    /// The file under `tests/fixtures/`.
    file: &'static str,
    /// The checkpoint version the fixture holds.
    version: &'static str,
    config: SamplerConfig,
    prompt: &'static [TokenId],
    seed: u64,
    stream: u64,
    answers: usize,
    at: At,
}

/// Every fixture's recipe. Append only (see the top of this file).
fn recipes() -> Vec<Recipe> {
    let power = SamplerConfig {
        n_mcmc: 3,
        block_size: 4,
        max_new_tokens: 12,
        ..SamplerConfig::new(Method::Power)
    };
    // Every option away from its default: alpha "inf", top-k, the reference ratio, and MCMC
    // steps that go on after EOS.
    let max_swap = SamplerConfig {
        n_mcmc: 2,
        block_size: 3,
        max_new_tokens: 9,
        top_k: Some(4),
        ratio: Ratio::Reference,
        finish_on_eos: false,
        ..SamplerConfig::new(Method::MaxSwap)
    };
    // A single-sample method: no MCMC steps, one extension per block.
    let low_temp = SamplerConfig {
        alpha: Some(Alpha::new(2.0).expect("2 is a valid alpha")),
        block_size: 3,
        max_new_tokens: 9,
        ..SamplerConfig::new(Method::LowTemp)
    };
    // power-smc as its first release wrote it: particles, no moves, no annealing.
    let smc = SamplerConfig {
        alpha: Some(Alpha::new(3.0).expect("3 is a valid alpha")),
        block_size: 2,
        max_new_tokens: 6,
        particles: Some(4),
        ess_threshold: Some(1.0),
        ..SamplerConfig::new(Method::PowerSmc)
    };
    // power-smc with resample-move and an annealed alpha: moves after every resampling.
    let smc_move = SamplerConfig {
        rejuvenation_steps: Some(2),
        alpha_schedule: Some(AlphaSchedule::Linear),
        anneal_blocks: Some(2),
        ..smc.clone()
    };
    let recipe = |file, config: &SamplerConfig, answers, at| Recipe {
        file,
        version: "1",
        config: config.clone(),
        prompt: &[1, 2],
        seed: 1,
        stream: 0,
        answers,
        at,
    };
    vec![
        recipe("v1-power-mid-block.json", &power, 6, At::mid_block(1, 1)),
        recipe("v1-power-block-boundary.json", &power, 4, At::boundary(1)),
        // Finished early, at EOS.
        recipe("v1-power-finished.json", &power, 12, At::Finished),
        recipe(
            "v1-max-swap-mid-block.json",
            &max_swap,
            5,
            At::mid_block(1, 1),
        ),
        recipe(
            "v1-low-temp-block-boundary.json",
            &low_temp,
            2,
            At::boundary(2),
        ),
        // Finished at the token budget.
        recipe("v1-low-temp-finished.json", &low_temp, 3, At::Finished),
        recipe("v1-power-smc-block-boundary.json", &smc, 4, At::boundary(1)),
        // Block 0's four extensions, its first move's four proposals, one of the second's.
        recipe(
            "v1-power-smc-mid-move.json",
            &smc_move,
            9,
            At::MidBlock {
                block_idx: 0,
                step_idx: 1,
            },
        ),
        recipe(
            "v1-power-smc-move-block-boundary.json",
            &smc_move,
            12,
            At::boundary(1),
        ),
    ]
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The recipe's chain, run afresh to its checkpoint; checks it is where the recipe says.
fn fresh(recipe: &Recipe) -> Chain {
    let config = recipe
        .config
        .validate()
        .expect("a recipe's configuration is valid");
    let mut chain = Chain::new(config, recipe.prompt, recipe.seed, recipe.stream);
    let mut last = None;
    for answer in 0..recipe.answers {
        let request = chain.request().unwrap_or_else(|| {
            panic!(
                "{}: the chain finished after {answer} of {} answers",
                recipe.file, recipe.answers
            )
        });
        let generation = TOY.generate(&request).expect("the toy model never fails");
        last = Some(
            chain
                .advance(generation)
                .expect("the toy model's answers are usable"),
        );
    }
    let phase = chain.phase();
    let there = match recipe.at {
        At::MidBlock {
            block_idx,
            step_idx,
        } => {
            step_idx > 0
                && matches!(phase, Phase::Propose { block_idx: b, step_idx: s, .. }
                    if b == block_idx && s == step_idx)
        }
        At::BlockBoundary { block_idx } => {
            block_idx > 0
                && last.and_then(|a| a.block_finished) == Some(block_idx - 1)
                && matches!(phase, Phase::Extend { block_idx: b, .. } if b == block_idx)
        }
        At::Finished => phase == Phase::Finished,
    };
    assert!(
        there,
        "{}: after {} answers the chain is at {phase:?}, not {:?}",
        recipe.file, recipe.answers, recipe.at
    );
    chain
}

#[test]
fn every_fixture_has_a_recipe_and_every_recipe_a_fixture() {
    if std::env::var_os("POWERFLEET_WRITE_FIXTURES").is_some() {
        write_missing_fixtures();
    }
    let mut files: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures exists")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut named: Vec<String> = recipes().iter().map(|r| r.file.to_string()).collect();
    named.sort();
    assert_eq!(
        files, named,
        "tests/fixtures and the recipes differ; a missing fixture is written by \
         `POWERFLEET_WRITE_FIXTURES=1 cargo test -p powerfleet-sampler --test integration checkpoint_fixtures::`"
    );
}

#[test]
fn fixtures_decode_re_encode_and_resume_like_a_fresh_run() {
    for recipe in recipes() {
        let path = fixtures_dir().join(recipe.file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json["version"], recipe.version,
            "{}: the version field",
            recipe.file
        );

        // Decodes, and encodes back to the very bytes the version wrote.
        let checkpoint =
            Checkpoint::from_json(&bytes).unwrap_or_else(|e| panic!("{}: {e}", recipe.file));
        assert!(
            checkpoint.to_json() == bytes,
            "{}: re-encoding changes the JSON:\n{}",
            recipe.file,
            String::from_utf8_lossy(&checkpoint.to_json())
        );

        // Resumes into the chain a fresh run reaches, and both continue alike.
        let mut restored =
            Chain::from_checkpoint(checkpoint).unwrap_or_else(|e| panic!("{}: {e}", recipe.file));
        let mut fresh = fresh(&recipe);
        assert_eq!(restored, fresh, "{}: the restored chain", recipe.file);
        let expected = run(&mut fresh, &TOY).unwrap();
        let output = run(&mut restored, &TOY).unwrap();
        assert!(!output.tokens.is_empty(), "{}", recipe.file);
        assert_eq!(output, expected, "{}: the continued chain", recipe.file);
        assert_eq!(restored.checkpoint(), fresh.checkpoint(), "{}", recipe.file);
    }
}

/// Writes the fixtures that do not exist yet, each from its recipe with the current code; never
/// touches an existing one.
fn write_missing_fixtures() {
    std::fs::create_dir_all(fixtures_dir()).unwrap();
    for recipe in recipes() {
        let path = fixtures_dir().join(recipe.file);
        if path.exists() {
            continue;
        }
        let bytes = fresh(&recipe).checkpoint().to_json();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json["version"], recipe.version,
            "{}: this code writes version {}, not the recipe's",
            recipe.file, json["version"]
        );
        std::fs::write(&path, &bytes).unwrap();
        println!("wrote {}", path.display());
    }
}
