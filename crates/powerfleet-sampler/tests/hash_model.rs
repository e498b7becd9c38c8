//! The test model of the resume property tests and the checkpoint fixtures (which were recorded
//! with it): a small language model whose next-token distribution depends on the last two tokens.

use powerfleet_sampler::{Generation, LanguageModel, Request, TokenId};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A small language model whose next-token distribution depends on the last two tokens.
pub struct HashModel {
    pub vocab: u32,
    pub eos: TokenId,
}

impl HashModel {
    fn log_probs(&self, seq: &[TokenId]) -> Vec<f64> {
        let a = seq.last().copied().unwrap_or(99) as u64;
        let b = seq.iter().rev().nth(1).copied().unwrap_or(77) as u64;
        let mut h = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (b + 0x1234_5678).rotate_left(17);
        let weights: Vec<f64> = (0..self.vocab)
            .map(|_| {
                h = h
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                0.05 + (h >> 40) as f64 / (1u64 << 24) as f64
            })
            .collect();
        let z: f64 = weights.iter().sum();
        weights.iter().map(|w| (w / z).ln()).collect()
    }
}

impl LanguageModel for HashModel {
    type Error = std::convert::Infallible;

    fn generate(&self, req: &Request<'_>) -> Result<Generation, Self::Error> {
        let mut rng = ChaCha8Rng::seed_from_u64(req.seed);
        let mut seq = req.prefix.to_vec();
        let mut g = Generation {
            tokens: vec![],
            log_p: vec![],
            log_q: vec![],
            eos: false,
            candidates: Vec::new(),
        };
        if req.candidates > 0 {
            let lp = self.log_probs(req.prefix);
            let mut order: Vec<usize> = (0..lp.len()).collect();
            order.sort_by(|&x, &y| lp[y].total_cmp(&lp[x]).then(x.cmp(&y)));
            g.candidates = order
                .into_iter()
                .take(req.candidates as usize)
                .map(|t| (t as TokenId, lp[t]))
                .collect();
        }
        while g.tokens.len() < req.max_tokens as usize && !g.eos {
            let lp = self.log_probs(&seq);
            let mut order: Vec<usize> = (0..lp.len()).collect();
            order.sort_by(|&x, &y| lp[y].total_cmp(&lp[x]));
            order.truncate(req.top_k.map_or(order.len(), |k| k as usize));
            let w: Vec<f64> = order.iter().map(|&t| lp[t] / req.temperature).collect();
            let m = w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_z = m + w.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let mut acc = 0.0;
            let mut pick = order.len() - 1;
            for (i, x) in w.iter().enumerate() {
                acc += (x - log_z).exp();
                if u < acc {
                    pick = i;
                    break;
                }
            }
            let token = order[pick] as TokenId;
            g.tokens.push(token);
            g.log_p.push(lp[token as usize]);
            g.log_q.push(w[pick] - log_z);
            g.eos = token == self.eos;
            seq.push(token);
        }
        Ok(g)
    }

    fn terminal_tokens(&self) -> Vec<TokenId> {
        vec![self.eos]
    }
}
