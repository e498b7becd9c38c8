//! Which workers may run a job: the job's model is either a model *name*, which only workers
//! that map it (`worker --model NAME=REFERENCE`) can run, or a model *reference* (`toy:…`, an
//! inference server's or hosted API's URL), which every worker resolves by itself.

/// The schemes of references to models reached over the network: inference servers and hosted
/// chat APIs.
pub const REMOTE_SCHEMES: &[&str] = &[
    "llamacpp+",
    "vllm+",
    "sglang+",
    "openai+",
    "anthropic+",
    "gemini+",
];

/// Whether `model` names a model reached over the network (an inference server or a hosted chat
/// API) rather than a toy model or a registered name.
pub fn is_remote_reference(model: &str) -> bool {
    REMOTE_SCHEMES.iter().any(|p| model.starts_with(p))
}

/// Who may run a job of model `model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelRoute<'a> {
    /// A reference every worker resolves by itself (`toy:NAME`, `toy:PATH`, a server URL).
    Reference,
    /// A model name: only workers that map it run its jobs.
    Name(&'a str),
}

impl<'a> ModelRoute<'a> {
    /// The route of a job whose model is `model`.
    pub fn of(model: &'a str) -> ModelRoute<'a> {
        if model.starts_with("toy:") || is_remote_reference(model) {
            ModelRoute::Reference
        } else {
            ModelRoute::Name(model)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_references_are_told_apart() {
        for reference in [
            "toy:pivot",
            "toy:/tmp/model.json?delay_ms=3",
            "vllm+http://gpu:8000?model=Qwen/Qwen2.5-Math-7B",
            "llamacpp+http://127.0.0.1:8080",
            "openai+https://api.openai.com/v1?model=gpt-4o-mini",
        ] {
            assert_eq!(
                ModelRoute::of(reference),
                ModelRoute::Reference,
                "{reference}"
            );
        }
        for name in ["qwen", "Qwen/Qwen2.5-Math-7B", "m1", "toy", "llama:8b"] {
            assert_eq!(ModelRoute::of(name), ModelRoute::Name(name), "{name}");
        }
    }
}
