#!/usr/bin/env python3
"""Checks powerfleet's vLLM `/v1/completions` request bodies against vLLM's own code.

Usage:
    PY=$(scripts/ensure-vllm.sh | tail -n1)
    "$PY" scripts/vllm-conformance.py BODIES.jsonl [--responses OUT.json]

BODIES.jsonl holds one request body per line, as powerfleet sends them
(`powerfleet_backends::wire::vllm_body`). Each body goes through the steps a vLLM
server (the version pinned by scripts/ensure-vllm.sh) applies to a request, with
vLLM's own code, and the resulting SamplingParams must be exactly the proposal
powerfleet's exactness recipe assumes (top-k at temperature tau, nothing else,
raw top-K log-probabilities). One line is printed per failing body; the exit
status is 1 if any body fails. The last line is "N bodies valid".

With --responses OUT, OUT receives completion responses built with vLLM's own
response code (`_create_completion_logprobs`, `CompletionResponse`, and the
`JSONResponse` the API router returns), for the parser tests. OUT is a JSON
object: case name -> {"response": BODY, "terminal_token_ids": [the model's EOS
ids], ...}, for a model whose tokenizer EOS is 151645 and whose
generation_config.json lists 151643 as well (Qwen2.5 Instruct):
    eos            EOS stop: finish_reason "stop", stop_reason null
    secondary_eos  stop on a secondary EOS id of generation_config.json:
                   finish_reason "stop", stop_reason = that id (an int)
    length         max_tokens reached: finish_reason "length"
    clamped        a top-K entry of -inf, clamped to -9999.0 by vLLM
Tokens are "token_id:N" strings, as with `return_tokens_as_token_ids`.

Source locations below refer to the vllm wheel pinned by scripts/ensure-vllm.sh.
"""

import argparse
import json
import logging
import os
import sys
import types
import warnings

# The vLLM server's defaults that matter here.
# ModelConfig.max_logprobs (vllm/config/model.py), EngineArgs.max_logprobs (vllm/engine/arg_utils.py):
# --max-logprobs defaults to 20; read from vLLM itself below and checked against this.
DEFAULT_MAX_LOGPROBS = 20
# A context length larger than any powerfleet request here, so that get_max_tokens does not
# shorten max_tokens (it takes min(max_model_len - prompt_len, max_tokens, ...)).
MAX_MODEL_LEN = 131072
# The vocabulary of the model the generation-config case stands for (Qwen2.5 Instruct).
VOCAB_SIZE = 151936
# Its tokenizer's EOS (<|im_end|>) and the other EOS id listed in its generation_config.json
# (<|endoftext|>).
PRIMARY_EOS = 151645
SECONDARY_EOS = 151643
# Qwen2.5-7B-Instruct's generation_config.json: what a server with the default
# `--generation-config auto` applies as default sampling parameters (ModelConfig.get_diff_sampling_param,
# vllm/config/model.py) and as extra EOS ids (SamplingParams.update_from_generation_config,
# called by the engine's InputProcessor, vllm/v1/engine/input_processor.py).
QWEN_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [PRIMARY_EOS, SECONDARY_EOS],
    "repetition_penalty": 1.05,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "transformers_version": "4.37.0",
}


def quiet_imports():
    """vLLM pulls in torch, transformers and requests; keep their import-time chatter out."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)


def load_vllm():
    quiet_imports()
    import vllm
    from pydantic import ValidationError
    from vllm.config import ModelConfig
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.openai.completion.protocol import (
        CompletionLogProbs,
        CompletionRequest,
        CompletionResponse,
        CompletionResponseChoice,
    )
    from vllm.entrypoints.openai.completion.serving import OpenAIServingCompletion
    from vllm.entrypoints.serve.engine.protocol import UsageInfo
    from vllm.entrypoints.serve.utils.api_utils import get_max_tokens
    from vllm.logprobs import append_logprobs_for_next_position, create_sample_logprobs
    from vllm.sampling_params import RequestOutputKind, SamplingType
    from starlette.responses import JSONResponse

    return types.SimpleNamespace(**locals())


def model_config_standin(v, max_logprobs):
    """The ModelConfig attributes SamplingParams.verify reads (vllm/sampling_params.py):
    max_logprobs, get_vocab_size(), max_model_len, is_diffusion. A real ModelConfig needs model
    files; everything else in verify is skipped for these requests (no logit_bias, no
    allowed_token_ids, no structured outputs, no trace replay, no speculative decoding)."""
    return types.SimpleNamespace(
        max_logprobs=max_logprobs,
        get_vocab_size=lambda: VOCAB_SIZE,
        max_model_len=MAX_MODEL_LEN,
        is_diffusion=False,
        enable_trace_replay=False,
    )


def server_defaults(v, generation_config):
    """default_sampling_params as OpenAIServingCompletion.__init__ computes them
    (`self.model_config.get_diff_sampling_param()`, vllm/entrypoints/openai/completion/serving.py),
    with vLLM's own ModelConfig.get_diff_sampling_param on a stand-in that has the default
    `--generation-config auto` and the given generation_config.json (None: the model has none)."""
    standin = types.SimpleNamespace(
        generation_config="auto",
        override_generation_config={},
        try_get_generation_config=lambda: dict(generation_config or {}),
    )
    params = v.ModelConfig.get_diff_sampling_param(standin)
    # serving.py: override_max_tokens is max_new_tokens from --override-generation-config when
    # generation_config is "auto" or "vllm": None for a default server.
    return params, None


def check_body(v, body, max_logprobs):
    """Returns a list of problems (strings) for one request body."""
    problems = []

    # OpenAIBaseModel (vllm/entrypoints/serve/engine/protocol.py) has extra="allow": an unknown
    # field is accepted and ignored, logged at debug level only. powerfleet must send only
    # fields vLLM knows, or it believes it set something it did not.
    known = set(v.CompletionRequest.model_fields)
    unknown = sorted(set(body) - known)
    if unknown:
        problems.append(f"fields vLLM ignores: {unknown}")

    # 1. Pydantic validation of the HTTP body (FastAPI parses the JSON into CompletionRequest,
    #    vllm/entrypoints/openai/completion/api_router.py); a failure is an HTTP 400.
    #    e.g. seed: Field(None, ge=-2**63, le=2**63 - 1) in CompletionRequest
    #    (vllm/entrypoints/openai/completion/protocol.py).
    try:
        req = v.CompletionRequest(**body)
    except v.ValidationError as e:
        errs = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in e.errors()
        )
        return problems + [f"CompletionRequest validation (HTTP 400): {errs}"]
    except Exception as e:  # model validators raise VLLMValidationError / ValueError
        return problems + [f"CompletionRequest validation (HTTP 400): {e}"]

    k = body.get("logprobs")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        problems.append(f"logprobs must be the top-K size K >= 1, got {k!r}")
        return problems
    if body.get("top_k") != k:
        problems.append(f"top_k {body.get('top_k')!r} != logprobs {k}: the reported list is not the set sampled from")
    if req.return_tokens_as_token_ids is not True:
        problems.append("return_tokens_as_token_ids is not true: tokens would come back as text")
    if req.echo:
        problems.append("echo is set: prompt log-probabilities would be prepended")
    if req.use_beam_search:
        problems.append("use_beam_search is set")
    if req.stream:
        problems.append("stream is set: powerfleet parses one JSON response")
    if not isinstance(req.prompt, list) or not all(isinstance(t, int) for t in req.prompt):
        problems.append("prompt is not a list of token ids")
        return problems
    # The renderer does not tokenize a token-id prompt (add_special_tokens applies to text only):
    # it only runs TokenizeParams.apply_post_tokenization (truncation, padding, length check),
    # from CompletionRequest.build_tok_params (Renderer._tokenize_singleton_prompt,
    # vllm/renderers/base.py; vllm/renderers/params.py). The model sees exactly these ids.
    try:
        tok_params = req.build_tok_params(model_config_standin(v, max_logprobs))
        rendered = tok_params.apply_post_tokenization(None, {"prompt_token_ids": list(req.prompt)})
        if rendered["prompt_token_ids"] != body["prompt"]:
            problems.append(f"the renderer changes the prompt ids to {rendered['prompt_token_ids']}")
    except Exception as e:
        problems.append(f"prompt rendering (HTTP 400): {e}")

    for case, gen_config in (("no generation_config.json", None), ("Qwen2.5 generation_config.json", QWEN_GENERATION_CONFIG)):
        where = f"[{case}]"
        defaults, override_max_tokens = server_defaults(v, gen_config)
        # 2. max_tokens as OpenAIServingCompletion.create_completion computes it
        #    (get_max_tokens, vllm/entrypoints/serve/utils/api_utils.py).
        try:
            max_tokens = v.get_max_tokens(
                MAX_MODEL_LEN,
                req.max_tokens,
                len(req.prompt),
                defaults,
                override_max_tokens,
                truncate_prompt_tokens=req.truncate_prompt_tokens,
            )
        except Exception as e:
            problems.append(f"{where} get_max_tokens: {e}")
            continue
        # 3. CompletionRequest.to_sampling_params(max_tokens, default_sampling_params)
        #    (protocol.py); SamplingParams.__post_init__/_verify_args (vllm/sampling_params.py)
        #    check ranges (temperature in [0, 2], top_p in (0, 1], top_k >= -1, min_p in [0, 1],
        #    penalties) and silently raise 0 < temperature < 0.01 to 0.01 (_MAX_TEMP).
        try:
            sp = req.to_sampling_params(max_tokens, defaults)
        except Exception as e:
            problems.append(f"{where} to_sampling_params (HTTP 400): {e}")
            continue
        # 4. The engine's per-request checks: InputProcessor._validate_params calls
        #    SamplingParams.verify (vllm/v1/engine/input_processor.py), whose _validate_logprobs
        #    refuses logprobs > model_config.max_logprobs (--max-logprobs, default 20).
        try:
            sp.verify(model_config_standin(v, max_logprobs), None, None, None)
        except Exception as e:
            problems.append(f"{where} SamplingParams.verify (engine, HTTP 400): {e}")
            continue
        # 5. InputProcessor.process_inputs then applies generation_config.json's EOS ids
        #    (SamplingParams.update_from_generation_config, input_processor.py): ids other than
        #    the tokenizer's EOS become stop_token_ids.
        eos_extra = []
        if gen_config is not None:
            sp.update_from_generation_config(gen_config, PRIMARY_EOS)
            eos_extra = [SECONDARY_EOS]

        def expect(name, got, want):
            same_kind = type(got) is type(want) or all(isinstance(x, (int, float)) for x in (got, want))
            if not same_kind or got != want:
                problems.append(f"{where} SamplingParams.{name} = {got!r}, expected {want!r}")

        expect("seed", sp.seed, body.get("seed"))
        expect("temperature", sp.temperature, body.get("temperature"))
        expect("top_k", sp.top_k, k)
        expect("top_p", sp.top_p, 1.0)
        expect("min_p", sp.min_p, 0.0)
        expect("repetition_penalty", sp.repetition_penalty, 1.0)
        expect("presence_penalty", sp.presence_penalty, 0.0)
        expect("frequency_penalty", sp.frequency_penalty, 0.0)
        expect("logprobs", sp.logprobs, k)
        expect("prompt_logprobs", sp.prompt_logprobs, None)
        expect("logprob_token_ids", sp.logprob_token_ids, None)
        expect("max_tokens", sp.max_tokens, body.get("max_tokens"))
        expect("min_tokens", sp.min_tokens, 0)
        expect("n", sp.n, 1)
        expect("ignore_eos", sp.ignore_eos, False)
        expect("stop", sp.stop, [])
        expect("stop_token_ids", sorted(sp.stop_token_ids), eos_extra)
        expect("bad_words", sp.bad_words, [])
        expect("logit_bias", sp.logit_bias, None)
        expect("allowed_token_ids", sp.allowed_token_ids, None)
        expect("structured_outputs", sp.structured_outputs, None)
        expect("skip_special_tokens", sp.skip_special_tokens, False)
        expect("output_kind", sp.output_kind, v.RequestOutputKind.FINAL_ONLY)
        expect("extra_args", sp.extra_args, None)
        expect("repetition_detection", sp.repetition_detection, None)
        expect("thinking_token_budget", sp.thinking_token_budget, None)
        if sp.sampling_type != v.SamplingType.RANDOM_SEED:
            problems.append(f"{where} sampling_type is {sp.sampling_type}, expected RANDOM_SEED (seeded random sampling)")
    return problems


def build_responses(v):
    """Completion responses built by vLLM's response code, one per stop case."""
    # _create_completion_logprobs is vLLM's own code for the `logprobs` object: the "token_id:N"
    # names with return_tokens_as_token_ids, the clamp max(logprob, -9999.0) of -inf, and the
    # first logprobs + 1 entries of each position's dict (vllm/entrypoints/openai/completion/serving.py).
    # Only `return_tokens_as_token_ids` (the server's flag, default off) is read from self.
    serving = object.__new__(v.OpenAIServingCompletion)
    serving.return_tokens_as_token_ids = False
    k = 3

    def positions(tokens, tops):
        """The per-position dicts as the engine's LogprobsProcessor builds them from the
        sampler's output (vllm/v1/engine/logprobs.py): the sampled token first, then the top K
        by rank, through vLLM's own append_logprobs_for_next_position (vllm/logprobs.py)."""
        container = v.create_sample_logprobs(False)
        for sampled, top in zip(tokens, tops):
            ids = [t for t, _ in top]
            assert sampled in ids, "the sampled token must be among the top K"
            lps = [lp for _, lp in top]
            v.append_logprobs_for_next_position(
                container,
                [sampled] + ids,
                [lps[ids.index(sampled)]] + lps,
                [None] * (k + 1),
                ids.index(sampled) + 1,
                k,
            )
        return container

    def response(name, tokens, tops, finish_reason, stop_reason):
        logprobs = serving._create_completion_logprobs(
            token_ids=tokens,
            top_logprobs=positions(tokens, tops),
            num_output_top_logprobs=k,
            tokenizer=None,
            logprob_token_ids=None,
            return_as_token_id=True,
        )
        assert isinstance(logprobs, v.CompletionLogProbs)
        choice = v.CompletionResponseChoice(
            index=0,
            text="",
            logprobs=logprobs,
            finish_reason=finish_reason,
            stop_reason=stop_reason,
        )
        resp = v.CompletionResponse(
            id=f"cmpl-powerfleet-{name}",
            created=0,
            model="m",
            choices=[choice],
            usage=v.UsageInfo(prompt_tokens=4, completion_tokens=len(tokens), total_tokens=4 + len(tokens)),
        )
        # The API router returns JSONResponse(content=generator.model_dump())
        # (vllm/entrypoints/openai/completion/api_router.py): serialize the same way.
        return json.loads(v.JSONResponse(content=resp.model_dump()).body)

    ninf = float("-inf")
    return {
        "eos": {
            "terminal_token_ids": [PRIMARY_EOS, SECONDARY_EOS],
            "response": response(
                "eos",
                [19, 17, PRIMARY_EOS],
                [
                    [(19, -0.21), (20, -1.9), (16, -2.6)],
                    [(17, -0.05), (18, -3.2), (15, -4.0)],
                    [(13, -0.8), (PRIMARY_EOS, -0.9), (11, -2.5)],
                ],
                "stop",
                None,
            ),
        },
        "secondary_eos": {
            "terminal_token_ids": [PRIMARY_EOS, SECONDARY_EOS],
            "stop_token_id": SECONDARY_EOS,
            "response": response(
                "secondary_eos",
                [19, SECONDARY_EOS],
                [
                    [(19, -0.21), (20, -1.9), (16, -2.6)],
                    [(SECONDARY_EOS, -0.4), (PRIMARY_EOS, -1.3), (198, -3.0)],
                ],
                "stop",
                SECONDARY_EOS,
            ),
        },
        "length": {
            "terminal_token_ids": [PRIMARY_EOS, SECONDARY_EOS],
            "response": response(
                "length",
                [856, 284],
                [
                    [(220, -0.7), (856, -1.1), (16, -2.2)],
                    [(284, -0.3), (481, -1.8), (11, -2.9)],
                ],
                "length",
                None,
            ),
        },
        "clamped": {
            "terminal_token_ids": [PRIMARY_EOS, SECONDARY_EOS],
            "clamped_token_id": 11,
            "response": response(
                "clamped",
                [5, 7],
                [
                    [(5, -0.1), (9, -2.4), (11, ninf)],
                    [(7, -0.02), (8, -4.0), (10, -6.0)],
                ],
                "length",
                None,
            ),
        },
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bodies", help="JSONL file, one /v1/completions request body per line")
    ap.add_argument("--responses", metavar="OUT", help="also write vLLM-built completion responses to OUT")
    args = ap.parse_args()

    v = load_vllm()
    max_logprobs = v.EngineArgs.max_logprobs
    if max_logprobs != DEFAULT_MAX_LOGPROBS:
        print(f"vLLM {v.vllm.__version__}: default max_logprobs is {max_logprobs}, not {DEFAULT_MAX_LOGPROBS}")
    logprobs_mode = v.EngineArgs.logprobs_mode
    if logprobs_mode != "raw_logprobs":
        print(f"vLLM {v.vllm.__version__}: default logprobs_mode is {logprobs_mode!r}, not 'raw_logprobs': top_logprobs are not log p")
        return 1

    n = failed = 0
    with open(args.bodies, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            n += 1
            try:
                body = json.loads(line)
            except json.JSONDecodeError as e:
                failed += 1
                print(f"line {line_no}: not JSON: {e}")
                continue
            problems = check_body(v, body, max_logprobs)
            if problems:
                failed += 1
                summary = {key: body.get(key) for key in ("seed", "temperature", "top_k", "logprobs", "max_tokens")}
                print(f"line {line_no} {json.dumps(summary)}: " + " | ".join(problems))

    if args.responses:
        with open(args.responses, "w", encoding="utf-8") as out:
            json.dump(build_responses(v), out, indent=1)

    print(f"vLLM {v.vllm.__version__}: {n - failed} bodies valid, {failed} invalid (max_logprobs {max_logprobs}, logprobs_mode {logprobs_mode})")
    if n == 0:
        print("no request bodies given")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
