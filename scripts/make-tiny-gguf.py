#!/usr/bin/env python3
"""Write a tiny random-weight llama-architecture GGUF model for tests.

Usage (run with the venv python, which has `gguf` and `numpy`):

    PY=$(scripts/ensure-llama-server.sh --python | tail -n1)
    "$PY" scripts/make-tiny-gguf.py OUT.gguf [--seed N]

The model (about 100 KB, f32 weights, deterministic for a given seed):
  * architecture "llama": n_embd 32, 2 layers, 2 heads (head_dim 16), n_ff 64,
    n_ctx_train 256, vocab 98.
  * tokenizer: SentencePiece-style ("llama"), no byte tokens, no merges:
        id 0  <unk>   (UNKNOWN)
        id 1  <s>     (CONTROL, BOS; added by /tokenize with add_special)
        id 2  </s>    (CONTROL, EOS)
        id 3..97      the 95 printable ASCII characters 0x20..0x7E in order,
                      i.e. id = ord(c) - 29; the space is stored as U+2581 ("▁")
                      as SentencePiece does. add_space_prefix is false, so
                      "hello" tokenizes to exactly one token per character.
    There are no byte tokens, so llama.cpp cannot tokenize text containing
    anything outside printable ASCII (e.g. "\\n", "é"): /tokenize and string
    prompts then fail with HTTP 500 "unordered_map::at". Use token-id prompts
    or printable-ASCII text. (Loading logs a harmless warning "SPM vocabulary,
    but newline token not found".)
  * Output distribution: random weights scaled so that the next-token
    distribution is clearly non-uniform; one residual dimension (dim 0) is a
    constant "bias channel" (no layer writes to it) that gives EOS a positive
    logit bias (default --eos-bias 3.0, so generations often stop within a
    few dozen tokens) and BOS/UNK a large negative one (practically never
    sampled, but probability > 0).
"""

import argparse
import sys

import numpy as np
import gguf

N_EMBD = 32
N_LAYER = 2
N_HEAD = 2
N_HEAD_KV = 2
N_FF = 64
N_CTX = 256
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
FIRST_CHAR_ID = 3


def vocab():
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for code in range(0x20, 0x7F):
        c = chr(code)
        tokens.append("\u2581" if c == " " else c)
        types.append(gguf.TokenType.NORMAL)
    scores = [0.0] * len(tokens)
    return tokens, scores, types


def build(path, seed, eos_bias, logit_scale):
    rng = np.random.default_rng(seed)
    tokens, scores, types = vocab()
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w = gguf.GGUFWriter(path, "llama")
    w.add_name("powerfleet-tiny-llama")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(UNK_ID)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)

    # Token embeddings; dim 0 is a constant bias channel.
    tok_embd = normal((n_vocab, N_EMBD), 1.0)
    tok_embd[:, 0] = 1.0
    w.add_tensor("token_embd.weight", tok_embd)

    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", normal((N_EMBD, N_EMBD), 0.5))
        w.add_tensor(p + "attn_k.weight", normal((N_HEAD_KV * head_dim, N_EMBD), 0.5))
        w.add_tensor(p + "attn_v.weight", normal((N_HEAD_KV * head_dim, N_EMBD), 0.3))
        wo = normal((N_EMBD, N_EMBD), 0.3)
        wo[0, :] = 0.0  # never write to the bias channel
        w.add_tensor(p + "attn_output.weight", wo)
        w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", normal((N_FF, N_EMBD), 0.3))
        w.add_tensor(p + "ffn_up.weight", normal((N_FF, N_EMBD), 0.3))
        down = normal((N_EMBD, N_FF), 0.3)
        down[0, :] = 0.0
        w.add_tensor(p + "ffn_down.weight", down)

    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    out = normal((n_vocab, N_EMBD), logit_scale)
    # Bias channel: the normalized hidden state has h[0] = 1/rms(h) > 0.
    out[:, 0] = 0.0
    out[EOS_ID, 0] = eos_bias
    out[BOS_ID, 0] = -30.0
    out[UNK_ID, 0] = -30.0
    w.add_tensor("output.weight", out)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output .gguf path")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eos-bias", type=float, default=3.0,
                    help="weight of the bias channel on the EOS logit (default 3.0)")
    ap.add_argument("--logit-scale", type=float, default=0.5,
                    help="std of the output projection (default 0.5)")
    args = ap.parse_args(argv)
    build(args.out, args.seed, args.eos_bias, args.logit_scale)
    print(args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
