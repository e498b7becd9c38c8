//! What differs between inference servers, one dialect per server.

pub mod common;
pub mod llamacpp;
pub mod sglang;
pub mod vllm;

pub use common::{AnswerError, RawGeneration};

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::common::request;
    use super::llamacpp::{llamacpp_body, llamacpp_seed};
    use super::sglang::{SGLANG_PINNED_PARAMS, sglang_body, sglang_seed};
    use super::vllm::{vllm_body, vllm_seed};

    #[test]
    fn seeds_map_deterministically_into_each_servers_range() {
        // llama.cpp: u32, never LLAMA_DEFAULT_SEED (0xFFFFFFFF, "random").
        assert_eq!(llamacpp_seed(7), 7);
        assert_eq!(llamacpp_seed(0xFFFF_FFFF), u32::MAX - 1);
        assert_eq!(llamacpp_seed(0xFFFF_FFFF_0000_0000), u32::MAX - 1);
        assert_eq!(llamacpp_seed(1 << 32), 1);
        // vLLM: within [0, 2^63 - 1].
        assert_eq!(vllm_seed(u64::MAX), i64::MAX as u64);
        assert_eq!(vllm_seed(12345), 12345);
        // SGLang: 31 bits, which int32 and int64 tensors both hold.
        for seed in [0, 1, u64::MAX, 1 << 40, 0xDEAD_BEEF_CAFE_F00D] {
            assert!(sglang_seed(seed) <= i32::MAX as u64);
            assert_eq!(sglang_seed(seed), sglang_seed(seed));
        }
        assert_ne!(sglang_seed(1 << 40), sglang_seed(1 << 41));
        let body = llamacpp_body(&request(0xFFFF_FFFF), 4);
        assert_eq!(body["seed"], u32::MAX - 1);
        let body = vllm_body(&request(u64::MAX), 4, "m");
        assert_eq!(body["seed"], i64::MAX);
    }

    #[test]
    fn vllm_and_sglang_bodies_set_every_sampling_parameter() {
        let body = vllm_body(&request(3), 20, "m");
        for (key, value) in [
            ("top_k", json!(20)),
            ("logprobs", json!(20)),
            ("top_p", json!(1.0)),
            ("min_p", json!(0.0)),
            ("min_tokens", json!(0)),
            ("stop", json!([])),
            ("bad_words", json!([])),
            ("return_tokens_as_token_ids", json!(true)),
        ] {
            assert_eq!(body[key], value, "{key}");
        }
        let body = sglang_body(&request(3), 64);
        assert_eq!(body["input_ids"], json!([1, 75, 72]));
        assert_eq!(body["top_logprobs_num"], 64);
        assert_eq!(body["logprob_start_len"], -1);
        assert_eq!(body["return_logprob"], true);
        let params = body["sampling_params"].as_object().unwrap();
        assert_eq!(params["top_k"], 64);
        assert_eq!(params["no_stop_trim"], true);
        assert_eq!(params["sampling_seed"], sglang_seed(3));
        let mut keys: Vec<&str> = params.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut pinned = SGLANG_PINNED_PARAMS.to_vec();
        pinned.sort_unstable();
        assert_eq!(keys, pinned, "every parameter sent is listed as pinned");
    }
}
