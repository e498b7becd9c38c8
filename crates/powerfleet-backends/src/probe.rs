//! What a start-up probe learns about a reference's servers ([`ServerInfo`]) and the pure checks
//! the probe runs on the servers' answers that are the same for every server. The requests are
//! `HttpModel::probe`'s: each server's `Dialect::probe`, then the determinism probe; what a
//! chain's log q depends on is `powerfleet_jobs::ServerPin` (`HttpModel::pin`).

use powerfleet_sampler::TokenId;
use serde::{Deserialize, Serialize};

use crate::error::BackendError;
use crate::recipe::CLAMPED_NEG_INF;
use crate::reference::ServerKind;
use crate::wire::RawGeneration;

/// What the start-up probe learned about a reference's servers (all of them agree on it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The server type.
    pub kind: ServerKind,
    /// The served model: llama.cpp's `model_alias` (`--alias`, else the model's name, else its
    /// file name), the id vLLM and SGLang list at `/v1/models`.
    pub served_model: String,
    /// Tokens one sequence may hold, prompt included: llama.cpp's per-slot `n_ctx` (`-c`
    /// divided by `-np`), vLLM's `max_model_len`, SGLang's context length. `None` when the
    /// server does not say.
    pub context_len: Option<u32>,
    /// Token ids that end a generation (EOS and every other end-of-generation token), sorted.
    /// Learned from the server where it tells (llama.cpp: EOS and every `llama_vocab_is_eog`
    /// token; SGLang: `eos_token_ids` of `/get_model_info` where the server lists them) plus the
    /// reference's `eos=` ids. Empty when neither says: the server's own stop rule is then
    /// trusted, and a stop's last token is not checked against a set.
    pub terminal_tokens: Vec<TokenId>,
    /// The servers that answered the probe's repeated request differently from one time to the
    /// next ([`compare_repeats`]), with what differed; empty when every server answered bit for
    /// bit the same each time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nondeterministic: Vec<NondeterministicServer>,
}

impl ServerInfo {
    /// Whether every server answered the probe's repeated request with bit-identical tokens and
    /// log-probabilities each time.
    pub fn deterministic(&self) -> bool {
        self.nondeterministic.is_empty()
    }
}

/// A server that answered one request differently from one time to the next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NondeterministicServer {
    /// The server, as messages show it (credentials redacted).
    pub server: String,
    /// What differed.
    pub seen: Nondeterminism,
}

impl std::fmt::Display for NondeterministicServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.server, self.seen)
    }
}

/// How the answers to one request, repeated, differed from the first answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nondeterminism {
    /// Answers compared.
    pub answers: usize,
    /// Answers that differ from the first in any token or log-probability.
    pub differing: usize,
    /// The largest difference of one token's raw log-probability at one position between the
    /// first answer and another (over the tokens both list there), in nats.
    pub max_log_prob_delta: f64,
    /// Whether some answer drew other tokens than the first, with the same seed.
    pub tokens_differ: bool,
}

impl std::fmt::Display for Nondeterminism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} answers to the same request differed from the first",
            self.differing, self.answers
        )?;
        if self.max_log_prob_delta > 0.0 {
            write!(
                f,
                ": log-probabilities by up to {:.1e} nats",
                self.max_log_prob_delta
            )?;
        }
        if self.tokens_differ {
            f.write_str(if self.max_log_prob_delta > 0.0 {
                ", and the tokens drawn with the same seed"
            } else {
                ": the tokens drawn with the same seed"
            })?;
        }
        Ok(())
    }
}

/// Compares the answers to one request (the same prefix, seed and settings) sent several times
/// under different batching: each answer's drawn tokens, and at every position the top-K token
/// ids and raw log-probabilities, against the first answer's. A deterministic server answers
/// bit for bit the same every time; `None` then. Any difference, however small, counts: a
/// server whose numbers depend on what else it computes gives a resumed or repeated chain other
/// log-probabilities, and now and then other tokens.
pub fn compare_repeats(answers: &[RawGeneration]) -> Option<Nondeterminism> {
    let (first, rest) = answers.split_first()?;
    let mut seen = Nondeterminism {
        answers: answers.len(),
        differing: 0,
        max_log_prob_delta: 0.0,
        tokens_differ: false,
    };
    for other in rest {
        let tokens_differ = other.tokens != first.tokens || other.top.len() != first.top.len();
        let mut lists_differ = false;
        for (a, b) in first.top.iter().zip(&other.top) {
            // The same ids in the same order, with bit-identical values.
            lists_differ |= a.len() != b.len()
                || a.iter()
                    .zip(b)
                    .any(|(x, y)| x.0 != y.0 || x.1.to_bits() != y.1.to_bits());
            for &(id, lp) in a {
                if let Some(&(_, other_lp)) = b.iter().find(|(t, _)| *t == id) {
                    let delta = (lp - other_lp).abs();
                    if delta > seen.max_log_prob_delta {
                        seen.max_log_prob_delta = delta;
                    }
                }
            }
        }
        if tokens_differ || lists_differ {
            seen.differing += 1;
        }
        seen.tokens_differ |= tokens_differ;
    }
    (seen.differing > 0).then_some(seen)
}

/// The start-up check that a server's log-probabilities are raw (temperature 1, before top-k):
/// the same one-token request (same prefix and seed) at temperature 1 and at 0.5 must list the
/// same log-probabilities for the top K. A server in a processed-logprobs mode reports
/// log-probabilities of the tempered (and truncated) distribution, which change with the
/// temperature: at 0.5 every gap between two entries doubles.
///
/// The comparison allows the servers' floating-point noise between two requests (batching
/// moves log-probabilities by up to about 1e-3 nats): an entry may move by 0.02 + 2% of its
/// size. The entries must also be log-probabilities, not logits: their probabilities sum to at
/// most 1.
pub fn check_raw_logprobs(
    kind: ServerKind,
    at_1: &[(TokenId, f64)],
    at_half: &[(TokenId, f64)],
) -> Result<(), BackendError> {
    if at_1.is_empty() || at_half.is_empty() {
        return Err(BackendError::Rejected(format!(
            "{} returned no top log-probabilities for the probe",
            kind.name()
        )));
    }
    let mass: f64 = at_1.iter().map(|&(_, lp)| lp.exp()).sum();
    if mass > 1.0 + 1e-3 || at_1.iter().any(|&(_, lp)| lp > 1e-3) {
        return Err(BackendError::Rejected(format!(
            "{}'s top log-probabilities are not log-probabilities (their probabilities sum to {mass:.4} > 1): it reports logits; {}",
            kind.name(),
            kind.dialect().facts().raw_logprobs_fix
        )));
    }
    let mut compared = 0;
    for &(id, lp1) in at_1 {
        let Some(&(_, lp_half)) = at_half.iter().find(|(t, _)| *t == id) else {
            continue;
        };
        if lp1 <= CLAMPED_NEG_INF && lp_half <= CLAMPED_NEG_INF {
            continue;
        }
        compared += 1;
        if (lp1 - lp_half).abs() > 0.02 + 0.02 * lp1.abs() {
            return Err(BackendError::Rejected(format!(
                "{} reports processed log-probabilities: token {id} has log-probability {lp1} at temperature 1 but {lp_half} at temperature 0.5 for the same prefix and seed, where raw log-probabilities do not depend on the temperature; {}",
                kind.name(),
                kind.dialect().facts().raw_logprobs_fix
            )));
        }
    }
    if compared == 0 {
        return Err(BackendError::Rejected(format!(
            "{} listed different tokens at temperature 1 and 0.5 for the same prefix; its log-probabilities are not the raw top K",
            kind.name()
        )));
    }
    Ok(())
}

/// One [`ServerInfo`] for a reference whose servers each answered a probe: they must serve the
/// same model with the same context and terminal tokens, or chains would sample differently on
/// different servers. The reference is deterministic when every server is; the nondeterministic
/// ones are listed together.
pub fn merge(infos: Vec<(String, ServerInfo)>) -> Result<ServerInfo, BackendError> {
    let mut iter = infos.into_iter();
    let (first_url, mut first) = iter
        .next()
        .ok_or_else(|| BackendError::Rejected("the reference names no server".into()))?;
    for (url, info) in iter {
        let disagree = |what: &str, a: String, b: String| {
            BackendError::Rejected(format!(
                "the servers of this reference disagree on the {what}: {first_url} has {a}, {url} has {b}; every server of one reference must serve the same model the same way"
            ))
        };
        if info.served_model != first.served_model {
            return Err(disagree(
                "served model",
                format!("{:?}", first.served_model),
                format!("{:?}", info.served_model),
            ));
        }
        if info.context_len != first.context_len {
            return Err(disagree(
                "context length",
                format!("{:?}", first.context_len),
                format!("{:?}", info.context_len),
            ));
        }
        if info.terminal_tokens != first.terminal_tokens {
            return Err(disagree(
                "terminal tokens",
                format!("{:?}", first.terminal_tokens),
                format!("{:?}", info.terminal_tokens),
            ));
        }
        first.nondeterministic.extend(info.nondeterministic);
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(model: &str, ctx: Option<u32>, terminal: &[TokenId]) -> ServerInfo {
        ServerInfo {
            kind: ServerKind::Vllm,
            served_model: model.into(),
            context_len: ctx,
            terminal_tokens: terminal.to_vec(),
            nondeterministic: Vec::new(),
        }
    }

    #[test]
    fn raw_logprobs_do_not_move_with_the_temperature() {
        let raw = [(5, -0.3), (9, -1.6), (2, -3.2)];
        let noisy = [(9, -1.6008), (5, -0.3004), (2, -3.199)];
        check_raw_logprobs(ServerKind::Vllm, &raw, &noisy).unwrap();
        // Processed at 0.5: lp/0.5 renormalized over the three.
        let scaled: Vec<f64> = raw.iter().map(|&(_, lp)| lp / 0.5).collect();
        let m = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z = m + scaled.iter().map(|s| (s - m).exp()).sum::<f64>().ln();
        let processed: Vec<(TokenId, f64)> = raw
            .iter()
            .zip(&scaled)
            .map(|(&(t, _), s)| (t, s - z))
            .collect();
        let err = check_raw_logprobs(ServerKind::Vllm, &raw, &processed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("processed log-probabilities"), "{err}");
        assert!(err.contains("--logprobs-mode raw_logprobs"), "{err}");
        let err = check_raw_logprobs(ServerKind::Sglang, &raw, &processed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SGLANG_RETURN_ORIGINAL_LOGPROB=1"), "{err}");
        // Logits are not log-probabilities.
        let logits = [(5, 12.5), (9, 11.0)];
        let err = check_raw_logprobs(ServerKind::Vllm, &logits, &logits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("logits"), "{err}");
        // No common token at all.
        let err = check_raw_logprobs(ServerKind::Vllm, &raw, &[(77, -0.1)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("different tokens"), "{err}");
        // Clamped -inf entries are skipped.
        check_raw_logprobs(
            ServerKind::Vllm,
            &[(1, -0.01), (2, -9999.0)],
            &[(1, -0.01), (2, -9999.0)],
        )
        .unwrap();
    }

    fn answer(tokens: &[TokenId], top: &[&[(TokenId, f64)]]) -> RawGeneration {
        RawGeneration {
            tokens: tokens.to_vec(),
            top: top.iter().map(|l| l.to_vec()).collect(),
            eos: false,
        }
    }

    #[test]
    fn repeats_must_agree_bit_for_bit() {
        let lists: [&[(TokenId, f64)]; 2] =
            [&[(71, -0.5855340361595154), (9, -2.4172)], &[(26, -1.543)]];
        let a = answer(&[71, 26], &lists);
        assert_eq!(compare_repeats(&[]), None);
        assert_eq!(compare_repeats(std::slice::from_ref(&a)), None);
        assert_eq!(compare_repeats(&[a.clone(), a.clone(), a.clone()]), None);
        // One ulp in one log-probability of one answer.
        let mut ulp = a.clone();
        ulp.top[0][0].1 = f64::from_bits(ulp.top[0][0].1.to_bits() + 1);
        let seen = compare_repeats(&[a.clone(), a.clone(), ulp]).unwrap();
        assert_eq!(
            (seen.answers, seen.differing, seen.tokens_differ),
            (3, 1, false)
        );
        assert!(seen.max_log_prob_delta > 0.0 && seen.max_log_prob_delta < 1e-15);
        // llama-server's default flags: 6e-3 nats, and another token drawn.
        let mut moved = a.clone();
        moved.top[0][1].1 += 6e-3;
        moved.tokens[1] = 40;
        let seen = compare_repeats(&[a.clone(), moved.clone(), moved]).unwrap();
        assert_eq!((seen.differing, seen.tokens_differ), (2, true));
        assert!((seen.max_log_prob_delta - 6e-3).abs() < 1e-12);
        assert_eq!(
            seen.to_string(),
            "2 of 3 answers to the same request differed from the first: log-probabilities by up to 6.0e-3 nats, and the tokens drawn with the same seed"
        );
        // The same values listed in another order, or a shorter answer, differ too.
        let mut swapped = a.clone();
        swapped.top[0].swap(0, 1);
        assert_eq!(compare_repeats(&[a.clone(), swapped]).unwrap().differing, 1);
        let short = answer(&[71], &lists[..1]);
        let seen = compare_repeats(&[a, short]).unwrap();
        assert!(seen.tokens_differ && seen.max_log_prob_delta == 0.0);
        assert_eq!(
            seen.to_string(),
            "1 of 2 answers to the same request differed from the first: the tokens drawn with the same seed"
        );
    }

    #[test]
    fn a_reference_is_deterministic_when_every_server_is() {
        let a = info("m", None, &[2]);
        assert!(a.deterministic());
        let mut b = a.clone();
        b.nondeterministic = vec![NondeterministicServer {
            server: "http://b".into(),
            seen: Nondeterminism {
                answers: 6,
                differing: 5,
                max_log_prob_delta: 1.5e-3,
                tokens_differ: false,
            },
        }];
        let merged = merge(vec![("http://a".into(), a), ("http://b".into(), b.clone())]).unwrap();
        assert!(!merged.deterministic());
        assert_eq!(merged.nondeterministic, b.nondeterministic);
        assert_eq!(
            merged.nondeterministic[0].to_string(),
            "http://b: 5 of 6 answers to the same request differed from the first: log-probabilities by up to 1.5e-3 nats"
        );
    }

    #[test]
    fn servers_of_one_reference_must_agree() {
        let a = info("m", Some(4096), &[2]);
        let merged = merge(vec![
            ("http://a".into(), a.clone()),
            ("http://b".into(), a.clone()),
        ])
        .unwrap();
        assert_eq!(merged, a);
        for (b, needle) in [
            (info("n", Some(4096), &[2]), "served model"),
            (info("m", Some(2048), &[2]), "context length"),
            (info("m", Some(4096), &[2, 7]), "terminal tokens"),
        ] {
            let err = merge(vec![("http://a".into(), a.clone()), ("http://b".into(), b)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle) && err.contains("http://b"), "{err}");
        }
    }
}
