//! The chain's random number generator, with a serialized form that survives JSON exactly.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The value in [0, 1) of the top 53 bits of `bits`: the standard uniform draw from 64 random
/// bits, shared by every sampler in the project so their draws agree.
pub fn unit_interval(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// ChaCha12, seeded per chain; serialized as its seed, stream and word position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRng(ChaCha12Rng);

impl ChainRng {
    /// The generator for (`seed`, `stream`): independent streams of one seed.
    pub fn new(seed: u64, stream: u64) -> ChainRng {
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        ChainRng(rng)
    }

    /// A uniform draw in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        unit_interval(self.0.next_u64())
    }

    /// A uniform integer in `0..n` (n >= 1).
    pub fn below(&mut self, n: u32) -> u32 {
        rand::Rng::random_range(&mut self.0, 0..n)
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RngState {
    /// The 32-byte key, hex.
    seed: String,
    stream: u64,
    /// Position in the stream, in 32-bit words; decimal, as it can exceed 2^64.
    word_pos: String,
}

impl Serialize for ChainRng {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RngState {
            seed: self
                .0
                .get_seed()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            stream: self.0.get_stream(),
            word_pos: self.0.get_word_pos().to_string(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ChainRng {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let state = RngState::deserialize(deserializer)?;
        if state.seed.len() != 64 || !state.seed.is_ascii() {
            return Err(D::Error::custom("rng.seed must be 64 hex digits"));
        }
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&state.seed[2 * i..2 * i + 2], 16)
                .map_err(|_| D::Error::custom("rng.seed must be 64 hex digits"))?;
        }
        let word_pos: u128 = state
            .word_pos
            .parse()
            .map_err(|_| D::Error::custom("rng.word_pos must be a decimal integer"))?;
        let mut rng = ChaCha12Rng::from_seed(seed);
        rng.set_stream(state.stream);
        rng.set_word_pos(word_pos);
        Ok(ChainRng(rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_rng_continues_the_same_stream() {
        let mut rng = ChainRng::new(7, 3);
        for _ in 0..5 {
            rng.next_u64();
        }
        let json = serde_json::to_string(&rng).unwrap();
        let mut restored: ChainRng = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, rng);
        let a: Vec<u64> = (0..10).map(|_| rng.next_u64()).collect();
        let b: Vec<u64> = (0..10).map(|_| restored.next_u64()).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn uniform_and_below_stay_in_range() {
        let mut rng = ChainRng::new(1, 0);
        for _ in 0..1000 {
            let u = rng.uniform();
            assert!((0.0..1.0).contains(&u));
            assert!(rng.below(3) < 3);
        }
    }

    #[test]
    fn malformed_state_is_refused() {
        let bad = r#"{"seed":"zz","stream":0,"word_pos":"0"}"#;
        assert!(serde_json::from_str::<ChainRng>(bad).is_err());
    }
}
