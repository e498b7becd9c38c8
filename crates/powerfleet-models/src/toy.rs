//! Toy language models with exact, enumerable distributions, loaded from JSON.
//!
//! The next-token distribution after the sequence so far (prompt, then completion) is the `probs`
//! of the longest `context` that is a suffix of it, else `default`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use powerfleet_sampler::{Generation, LanguageModel, Request, TokenId};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// How far from 1 a distribution's sum may be.
pub const SUM_TOLERANCE: f64 = 1e-9;

/// The JSON form of a toy model.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToyModelSpec {
    /// Optional human description.
    #[serde(default)]
    pub description: Option<String>,
    /// Token strings, indexed by token id.
    pub vocab: Vec<String>,
    /// The EOS token id.
    pub eos: TokenId,
    /// The distribution where no context matches.
    pub default: Vec<f64>,
    /// Context-specific distributions.
    #[serde(default)]
    pub contexts: Vec<ContextSpec>,
}

/// One context rule of a toy model.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSpec {
    /// Token ids that must end the sequence so far.
    pub context: Vec<TokenId>,
    /// The next-token distribution after it.
    pub probs: Vec<f64>,
}

/// A malformed toy model.
#[derive(Debug, thiserror::Error)]
pub enum ToyModelError {
    /// The file could not be read.
    #[error("cannot read toy model file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// Not JSON of the toy-model shape.
    #[error(
        "toy model {origin} is not valid: {source} (expected {{\"vocab\": [...], \"eos\": N, \"default\": [...], \"contexts\": [{{\"context\": [...], \"probs\": [...]}}]}})"
    )]
    Json {
        /// Where it came from.
        origin: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// JSON of the right shape with wrong contents.
    #[error("toy model {origin} is not valid: {problem}")]
    Invalid {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        problem: String,
    },
}

/// A token that is not in a toy model's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown token {token:?} in the prompt; the vocabulary is: {vocab}")]
pub struct UnknownToken {
    /// The unknown word.
    pub token: String,
    /// The vocabulary, comma-separated.
    pub vocab: String,
}

/// A token id that is not in a toy model's vocabulary ([`ToyModel::check_tokens`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token id {id} is not in the vocabulary of {model} (ids 0 to {last})")]
pub struct TokenOutOfVocab {
    /// The id.
    pub id: TokenId,
    /// The model's name.
    pub model: String,
    /// The largest id of the vocabulary.
    pub last: usize,
}

/// A toy model never fails to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("toy models cannot fail")]
pub enum Infallible {}

#[derive(Clone, Debug)]
struct Distribution {
    log_probs: Vec<f64>,
    /// Tokens with p > 0, most likely first (ties: lower id first).
    support: Vec<TokenId>,
}

#[derive(Clone, Debug, Default)]
struct TrieNode {
    children: HashMap<TokenId, usize>,
    distribution: Option<usize>,
}

/// A toy model: exact next-token distributions chosen by the longest matching context.
#[derive(Clone, Debug)]
pub struct ToyModel {
    name: String,
    description: Option<String>,
    vocab: Vec<String>,
    eos: TokenId,
    /// `distributions[0]` is the default.
    distributions: Vec<Distribution>,
    /// Contexts, reversed: walking from the sequence's last token backwards.
    trie: Vec<TrieNode>,
}

impl ToyModel {
    /// Parses and checks a model from JSON text; `origin` names it in errors.
    pub fn from_json(origin: &str, text: &str) -> Result<ToyModel, ToyModelError> {
        let spec: ToyModelSpec =
            serde_json::from_str(text).map_err(|source| ToyModelError::Json {
                origin: origin.to_string(),
                source,
            })?;
        ToyModel::from_spec(origin, spec)
    }

    /// Reads a model from a JSON file.
    pub fn from_path(path: &Path) -> Result<ToyModel, ToyModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ToyModelError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ToyModel::from_json(&path.display().to_string(), &text)
    }

    /// Checks a parsed spec and builds the model.
    pub fn from_spec(origin: &str, spec: ToyModelSpec) -> Result<ToyModel, ToyModelError> {
        let invalid = |problem: String| ToyModelError::Invalid {
            origin: origin.to_string(),
            problem,
        };
        let v = spec.vocab.len();
        if v < 2 {
            return Err(invalid(format!(
                "vocab must hold at least 2 tokens (one of them EOS), got {v}"
            )));
        }
        if let Some(dup) = first_duplicate(&spec.vocab) {
            return Err(invalid(format!("vocab lists {dup:?} twice")));
        }
        if let Some(bad) = spec
            .vocab
            .iter()
            .find(|t| t.is_empty() || t.contains(char::is_whitespace))
        {
            return Err(invalid(format!(
                "vocab entry {bad:?} is empty or holds white space; prompts are split on white space"
            )));
        }
        if spec.eos as usize >= v {
            return Err(invalid(format!(
                "eos must be a token id below {v} (the vocab size), got {}",
                spec.eos
            )));
        }
        let mut distributions = vec![check_probs("default", &spec.default, v).map_err(invalid)?];
        let mut trie = vec![TrieNode::default()];
        for (i, ctx) in spec.contexts.iter().enumerate() {
            let field = format!("contexts[{i}]");
            if ctx.context.is_empty() {
                return Err(invalid(format!(
                    "{field}.context is empty; put that distribution in default"
                )));
            }
            if let Some(t) = ctx.context.iter().find(|&&t| t as usize >= v) {
                return Err(invalid(format!(
                    "{field}.context holds token id {t}, the vocab has ids 0 to {}",
                    v - 1
                )));
            }
            let dist = check_probs(&format!("{field}.probs"), &ctx.probs, v).map_err(invalid)?;
            let mut node = 0;
            for &t in ctx.context.iter().rev() {
                node = match trie[node].children.get(&t) {
                    Some(&child) => child,
                    None => {
                        trie.push(TrieNode::default());
                        let child = trie.len() - 1;
                        trie[node].children.insert(t, child);
                        child
                    }
                };
            }
            if trie[node].distribution.is_some() {
                return Err(invalid(format!(
                    "{field}.context {:?} is listed twice",
                    ctx.context
                )));
            }
            distributions.push(dist);
            trie[node].distribution = Some(distributions.len() - 1);
        }
        Ok(ToyModel {
            name: origin.to_string(),
            description: spec.description,
            vocab: spec.vocab,
            eos: spec.eos,
            distributions,
            trie,
        })
    }

    /// The name it was loaded under (`toy:NAME` or a path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its description, if the file has one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The EOS token id.
    pub fn eos(&self) -> TokenId {
        self.eos
    }

    /// The vocabulary, indexed by token id.
    pub fn vocab(&self) -> &[String] {
        &self.vocab
    }

    /// Token ids of a white-space separated prompt.
    pub fn tokenize(&self, text: &str) -> Result<Vec<TokenId>, UnknownToken> {
        text.split_whitespace()
            .map(|word| {
                self.vocab
                    .iter()
                    .position(|t| t == word)
                    .map(|id| id as TokenId)
                    .ok_or_else(|| UnknownToken {
                        token: word.to_string(),
                        vocab: self.vocab.join(", "),
                    })
            })
            .collect()
    }

    /// The tokens as text, separated by spaces.
    pub fn detokenize(&self, tokens: &[TokenId]) -> String {
        tokens
            .iter()
            .map(|&t| self.vocab.get(t as usize).map_or("<?>", String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Checks that every id is in the vocabulary.
    pub fn check_tokens(&self, tokens: &[TokenId]) -> Result<(), TokenOutOfVocab> {
        match tokens.iter().find(|&&t| t as usize >= self.vocab.len()) {
            Some(&id) => Err(TokenOutOfVocab {
                id,
                model: self.name.clone(),
                last: self.vocab.len() - 1,
            }),
            None => Ok(()),
        }
    }

    /// log p of each token after the sequence `prefix ++ tail` (−∞ for impossible tokens).
    pub fn next_log_probs(&self, prefix: &[TokenId], tail: &[TokenId]) -> &[f64] {
        &self.distribution(prefix, tail).log_probs
    }

    fn distribution(&self, prefix: &[TokenId], tail: &[TokenId]) -> &Distribution {
        let mut node = 0;
        let mut best = 0;
        for t in tail.iter().rev().chain(prefix.iter().rev()) {
            match self.trie[node].children.get(t) {
                Some(&child) => node = child,
                None => break,
            }
            if let Some(d) = self.trie[node].distribution {
                best = d;
            }
        }
        &self.distributions[best]
    }

    /// The proposal after `prefix ++ tail`: (token, log q) for every token q can sample.
    pub fn proposal(
        &self,
        prefix: &[TokenId],
        tail: &[TokenId],
        temperature: f64,
        top_k: Option<u32>,
        out: &mut Vec<(TokenId, f64)>,
    ) {
        let dist = self.distribution(prefix, tail);
        let k = top_k.map_or(dist.support.len(), |k| (k as usize).min(dist.support.len()));
        out.clear();
        out.extend(
            dist.support[..k]
                .iter()
                .map(|&t| (t, dist.log_probs[t as usize] / temperature)),
        );
        let max = out
            .iter()
            .map(|&(_, w)| w)
            .fold(f64::NEG_INFINITY, f64::max);
        let log_z = max + out.iter().map(|&(_, w)| (w - max).exp()).sum::<f64>().ln();
        for (_, w) in out.iter_mut() {
            *w -= log_z;
        }
    }

    /// The `k` likeliest next tokens after `prefix` with their log p, descending, ties by
    /// ascending id; tokens with p = 0 are left out, so fewer than `k` when fewer have p > 0.
    pub fn candidates(&self, prefix: &[TokenId], k: u32) -> Vec<(TokenId, f64)> {
        let dist = self.distribution(prefix, &[]);
        dist.support
            .iter()
            .take(k as usize)
            .map(|&t| (t, dist.log_probs[t as usize]))
            .collect()
    }

    /// log q of a whole completion sampled in one request from the proposal (−∞ if impossible).
    pub fn proposal_log_prob(
        &self,
        prompt: &[TokenId],
        completion: &[TokenId],
        temperature: f64,
        top_k: Option<u32>,
    ) -> f64 {
        let mut buf = Vec::new();
        let mut total = 0.0;
        for (i, &t) in completion.iter().enumerate() {
            self.proposal(prompt, &completion[..i], temperature, top_k, &mut buf);
            match buf.iter().find(|&&(c, _)| c == t) {
                Some(&(_, lq)) => total += lq,
                None => return f64::NEG_INFINITY,
            }
        }
        total
    }
}

impl LanguageModel for ToyModel {
    type Error = Infallible;

    fn generate(&self, request: &Request<'_>) -> Result<Generation, Infallible> {
        let mut rng = ChaCha8Rng::seed_from_u64(request.seed);
        let n = request.max_tokens as usize;
        let mut generation = Generation {
            tokens: Vec::with_capacity(n),
            log_p: Vec::with_capacity(n),
            log_q: Vec::with_capacity(n),
            eos: false,
            candidates: self.candidates(request.prefix, request.candidates),
        };
        let mut candidates = Vec::with_capacity(self.vocab.len());
        while generation.tokens.len() < n {
            self.proposal(
                request.prefix,
                &generation.tokens,
                request.temperature,
                request.top_k,
                &mut candidates,
            );
            let u = powerfleet_sampler::rng::unit_interval(rng.next_u64());
            let mut cumulative = 0.0;
            let mut chosen = candidates[candidates.len() - 1];
            for &(t, lq) in &candidates {
                cumulative += lq.exp();
                if u < cumulative {
                    chosen = (t, lq);
                    break;
                }
            }
            let (token, log_q) = chosen;
            let log_p = self.next_log_probs(request.prefix, &generation.tokens)[token as usize];
            generation.tokens.push(token);
            generation.log_p.push(log_p);
            generation.log_q.push(log_q);
            if token == self.eos {
                generation.eos = true;
                break;
            }
        }
        Ok(generation)
    }

    fn terminal_tokens(&self) -> Vec<TokenId> {
        vec![self.eos]
    }
}

impl fmt::Display for ToyModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} tokens, {} contexts)",
            self.name,
            self.vocab.len(),
            self.distributions.len() - 1
        )
    }
}

fn check_probs(field: &str, probs: &[f64], vocab_size: usize) -> Result<Distribution, String> {
    if probs.len() != vocab_size {
        return Err(format!(
            "{field} has {} entries, the vocab has {vocab_size}",
            probs.len()
        ));
    }
    if let Some((i, p)) = probs
        .iter()
        .enumerate()
        .find(|(_, p)| !(p.is_finite() && **p >= 0.0))
    {
        return Err(format!("{field}[{i}] is {p}; probabilities must be >= 0"));
    }
    let sum: f64 = probs.iter().sum();
    if (sum - 1.0).abs() > SUM_TOLERANCE {
        return Err(format!(
            "{field} sums to {sum}; probabilities must sum to 1 within {SUM_TOLERANCE:e}"
        ));
    }
    let mut support: Vec<TokenId> = (0..vocab_size as TokenId)
        .filter(|&t| probs[t as usize] > 0.0)
        .collect();
    support.sort_by(|&a, &b| {
        probs[b as usize]
            .total_cmp(&probs[a as usize])
            .then(a.cmp(&b))
    });
    Ok(Distribution {
        log_probs: probs.iter().map(|p| p.ln()).collect(),
        support,
    })
}

fn first_duplicate(items: &[String]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    items
        .iter()
        .find(|item| !seen.insert(item.as_str()))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"{"vocab": ["a","b","<eos>"], "eos": 2, "default": [0.5, 0.4, 0.1],
        "contexts": [{"context": [0], "probs": [0.1, 0.8, 0.1]}, {"context": [0, 1], "probs": [0, 0.5, 0.5]}]}"#;

    fn model() -> ToyModel {
        ToyModel::from_json("example", ISSUE_EXAMPLE).unwrap()
    }

    fn probs(m: &ToyModel, seq: &[TokenId]) -> Vec<f64> {
        // Rounded to 12 digits: exp(ln p) is p only up to rounding.
        m.next_log_probs(seq, &[])
            .iter()
            .map(|l| (l.exp() * 1e12).round() / 1e12)
            .collect()
    }

    #[test]
    fn longest_matching_context_wins() {
        let m = model();
        assert_eq!(probs(&m, &[]), vec![0.5, 0.4, 0.1]);
        assert_eq!(probs(&m, &[1]), vec![0.5, 0.4, 0.1]);
        assert_eq!(probs(&m, &[1, 0]), vec![0.1, 0.8, 0.1]);
        assert_eq!(probs(&m, &[0, 1]), vec![0.0, 0.5, 0.5]);
        assert_eq!(probs(&m, &[1, 1]), vec![0.5, 0.4, 0.1]);
        // The split between prefix and generated tail does not matter.
        assert_eq!(m.next_log_probs(&[0], &[1]), m.next_log_probs(&[0, 1], &[]));
    }

    #[test]
    fn proposal_is_tempered_and_top_k_restricted() {
        let m = model();
        let mut out = Vec::new();
        m.proposal(&[], &[], 0.5, None, &mut out);
        let z = 0.25 + 0.16 + 0.01;
        let want = [0.25 / z, 0.16 / z, 0.01 / z];
        for (i, &(t, lq)) in out.iter().enumerate() {
            assert_eq!(t as usize, i);
            assert!((lq.exp() - want[i]).abs() < 1e-12);
        }
        m.proposal(&[], &[], 1.0, Some(2), &mut out);
        assert_eq!(out.len(), 2);
        assert!((out[0].1.exp() - 0.5 / 0.9).abs() < 1e-12);
        // Zero-probability tokens are never proposed.
        m.proposal(&[0, 1], &[], 1.0, None, &mut out);
        assert_eq!(out.iter().map(|&(t, _)| t).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn generation_reports_exact_log_p_and_log_q_and_stops_at_eos() {
        let m = model();
        for seed in 0..200 {
            let req = Request {
                prefix: &[0],
                prompt_len: 1,
                max_tokens: 5,
                temperature: 0.7,
                top_k: None,
                seed,
                candidates: 0,
            };
            let g = m.generate(&req).unwrap();
            assert_eq!(g.eos, g.tokens.last() == Some(&2));
            assert!(g.eos || g.tokens.len() == 5);
            assert_eq!(
                g.tokens.iter().filter(|&&t| t == 2).count(),
                usize::from(g.eos)
            );
            let total_p: f64 = g.log_p.iter().sum();
            let seq = [&[0][..], &g.tokens].concat();
            let mut want = 0.0;
            for i in 0..g.tokens.len() {
                want += m.next_log_probs(&seq[..=i], &[])[g.tokens[i] as usize];
            }
            assert!((total_p - want).abs() < 1e-12);
            let total_q: f64 = g.log_q.iter().sum();
            assert!((total_q - m.proposal_log_prob(&[0], &g.tokens, 0.7, None)).abs() < 1e-12);
            assert_eq!(g, m.generate(&req).unwrap(), "same seed, same tokens");
        }
    }

    #[test]
    fn tokenize_round_trips_and_names_unknown_words() {
        let m = model();
        assert_eq!(m.tokenize(" a  b ").unwrap(), vec![0, 1]);
        assert_eq!(m.detokenize(&[0, 1, 2]), "a b <eos>");
        let err = m.tokenize("a zz").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown token \"zz\" in the prompt; the vocabulary is: a, b, <eos>"
        );
    }

    fn invalid(text: &str) -> String {
        ToyModel::from_json("m.json", text).unwrap_err().to_string()
    }

    #[test]
    fn malformed_models_name_the_problem() {
        let cases = [
            (
                r#"{"vocab": ["a","<eos>"], "eos": 1, "default": [0.5, 0.6]}"#,
                "default sums to 1.1",
            ),
            (
                r#"{"vocab": ["a","<eos>"], "eos": 1, "default": [1.5, -0.5]}"#,
                "default[1] is -0.5",
            ),
            (
                r#"{"vocab": ["a","<eos>"], "eos": 2, "default": [0.5, 0.5]}"#,
                "eos must be a token id below 2",
            ),
            (
                r#"{"vocab": ["a","<eos>"], "eos": 1, "default": [1.0]}"#,
                "default has 1 entries, the vocab has 2",
            ),
            (
                r#"{"vocab": ["a"], "eos": 0, "default": [1.0]}"#,
                "vocab must hold at least 2 tokens",
            ),
            (
                r#"{"vocab": ["a","a"], "eos": 1, "default": [0.5, 0.5]}"#,
                "vocab lists \"a\" twice",
            ),
            (
                r#"{"vocab": ["a b","c"], "eos": 1, "default": [0.5, 0.5]}"#,
                "white space",
            ),
            (
                r#"{"vocab": ["a","<eos>"], "eos": 1, "default": [0.5, 0.5], "contexts": [{"context": [5], "probs": [0.5, 0.5]}]}"#,
                "contexts[0].context holds token id 5",
            ),
            (
                r#"{"vocab": ["a","<eos>"], "eos": 1, "default": [0.5, 0.5], "contexts": [{"context": [], "probs": [0.5, 0.5]}]}"#,
                "contexts[0].context is empty",
            ),
            (
                r#"{"vocab": ["a","<eos>"], "eos": 1, "default": [0.5, 0.5], "contexts": [{"context": [0], "probs": [0.5, 0.5]}, {"context": [0], "probs": [1, 0]}]}"#,
                "contexts[1].context [0] is listed twice",
            ),
            (
                r#"{"vocab": ["a","<eos>"], "eos": 1, "default": [0.5, 0.5], "contexts": [{"context": [0], "probs": [0.2, 0.2]}]}"#,
                "contexts[0].probs sums to 0.4",
            ),
            (
                r#"{"vocab": ["a","<eos>"], "eos": 1, "default": [0.5, 0.5], "extra": 1}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"vocab": ["a","<eos>"], "eos": 1}"#,
                "missing field `default`",
            ),
            ("not json", "toy model m.json is not valid"),
        ];
        for (text, needle) in cases {
            let err = invalid(text);
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
            assert!(err.starts_with("toy model m.json is not valid"), "{err}");
        }
    }

    #[test]
    fn zeros_are_allowed_and_sums_within_tolerance_pass() {
        ToyModel::from_json(
            "ok",
            r#"{"vocab": ["a","<eos>"], "eos": 1, "default": [0.0, 1.0000000000001]}"#,
        )
        .unwrap();
    }
}
