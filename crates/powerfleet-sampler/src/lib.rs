//! Exact power sampling as a pure library: a sans-IO chain that targets p^α with
//! Metropolis-Hastings over token suffixes, block by block ("Reasoning with Sampling",
//! Karan & Du, arXiv 2510.14901).
//!
//! The crate does no IO, reads no clock and no environment, and holds no global state: a chain is
//! a deterministic function of its configuration, prompt, seed and the model's answers. Its state
//! is its checkpoint.
//!
//! ```
//! use powerfleet_sampler::{Chain, Method, SamplerConfig};
//! let config = SamplerConfig { n_mcmc: 2, block_size: 4, max_new_tokens: 8, ..SamplerConfig::new(Method::Power) }
//!     .validate()
//!     .unwrap();
//! let chain = Chain::new(config, &[0, 1], 7, 0);
//! let request = chain.request().unwrap();
//! assert_eq!(request.prefix, &[0, 1]);
//! assert_eq!(request.max_tokens, 4);
//! ```

pub mod accept;
pub mod chain;
pub mod config;
pub mod lookahead;
pub mod method;
pub mod model;
pub mod rng;
pub mod smc;
pub mod stats;

pub use chain::{
    Advance, Chain, ChainState, Checkpoint, CheckpointError, GenerationError, Phase, Position,
    RunError, run,
};
pub use config::{
    Alpha, ConfigError, Family, FieldError, Method, OutOfRange, Ratio, SamplerConfig, ValidConfig,
};
pub use lookahead::{LookaheadConfig, LookaheadStats};
pub use model::{Generation, LanguageModel, OwnedRequest, Request, TokenId};
pub use smc::{AlphaSchedule, Resampling, SmcConfig, SmcStats, WeightedCompletion};
pub use stats::{BlockStats, ChainOutput, ChainStats, text_tokens};
