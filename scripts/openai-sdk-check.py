#!/usr/bin/env python3
"""Drives the OpenAI-compatible endpoints of `powerfleet serve` with the official `openai` SDK,
as an application would, and prints what it got as one JSON object on stdout, for
tests/openai_clients.rs to compare with the jobs' stored results.

Usage:
  openai-sdk-check.py BASE_URL TOKEN toy    # completions on toy:suite-double
  openai-sdk-check.py BASE_URL TOKEN chat MODEL  # chat and text completions on MODEL

Run it with the venv of scripts/ensure-eval-clients.sh. Exits non-zero (with the reason) when
the SDK cannot parse an answer or an error does not arrive as the SDK's own exception class.
"""

import json
import sys

import openai


def raw_completion(client, **kwargs):
    """A completion with its correlation header and the SDK's parsed object, as plain JSON."""
    raw = client.completions.with_raw_response.create(**kwargs)
    parsed = raw.parse()
    return {
        "correlation_id": raw.headers.get("x-powerfleet-correlation-id"),
        "response": parsed.model_dump(),
    }


def raw_chat(client, **kwargs):
    raw = client.chat.completions.with_raw_response.create(**kwargs)
    parsed = raw.parse()
    return {
        "correlation_id": raw.headers.get("x-powerfleet-correlation-id"),
        "response": parsed.model_dump(),
    }


def error_of(call):
    """The SDK exception a call raises: its class, status and the server's error object."""
    try:
        call()
    except openai.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "body": e.body}
    raise SystemExit("expected the call to fail with an API error, and it succeeded")


def toy(client, bad_client):
    model = "toy:suite-double"
    fast = {"n_mcmc": 2, "block_size": 2}
    out = {
        "text": raw_completion(
            client,
            model=model,
            prompt="double 3 ?",
            n=2,
            seed=5,
            logprobs=0,
            extra_body={"return_token_ids": True, "power_sampling": fast},
        ),
        "tokens": raw_completion(
            client,
            model=model,
            prompt=[[0, 1, 3], [0, 2, 3]],
            seed=6,
            extra_body={"return_token_ids": True},
        ),
        "stop": raw_completion(
            client,
            model=model,
            prompt="double 4 ?",
            stop=["slow", "fast"],
            seed=1,
            extra_body={"return_token_ids": True},
        ),
    }
    chunks = list(
        client.completions.create(model=model, prompt="double 3 ?", seed=9, stream=True)
    )
    out["stream"] = {
        "chunks": len(chunks),
        "text": "".join(c.choices[0].text for c in chunks if c.choices),
    }
    out["models"] = [m.id for m in client.models.list()]
    out["errors"] = {
        "temperature": error_of(
            lambda: client.completions.create(model=model, prompt="double 3 ?", temperature=0.5)
        ),
        "echo": error_of(
            lambda: client.completions.create(
                model=model, prompt="double 3 ?", echo=True, max_tokens=0, logprobs=1
            )
        ),
        "chat_on_toy": error_of(
            lambda: client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "double 3 ?"}]
            )
        ),
        "auth": error_of(
            lambda: bad_client.completions.create(model=model, prompt="double 3 ?")
        ),
    }
    return out


def chat(client, model):
    fast = {"n_mcmc": 2, "block_size": 2}
    return {
        "chat": raw_chat(
            client,
            model=model,
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello"},
            ],
            max_tokens=4,
            n=2,
            seed=3,
            logprobs=True,
            extra_body={"return_token_ids": True, "power_sampling": fast},
        ),
        "text": raw_completion(
            client,
            model=model,
            prompt="hello",
            max_tokens=4,
            seed=4,
            extra_body={"return_token_ids": True, "power_sampling": fast},
        ),
    }


def main():
    base, token, mode = sys.argv[1:4]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=300)
    bad_client = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0)
    if mode == "toy":
        out = toy(client, bad_client)
    elif mode == "chat":
        out = chat(client, sys.argv[4])
    else:
        raise SystemExit(f"mode must be toy or chat, got {mode!r}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
