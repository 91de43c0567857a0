"""`POST /v1/translate` (ours): texts into targets with BayLing's translation prompt, through the engine.

Each (text, target) pair is one engine request, so a long list shares the slots with chat traffic; the
answers come back in input order, each text's targets together in the order asked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from bayling_local.backends.base import GenerationConfig
from bayling_local.errors import BaylingError
from bayling_local.serve.errors import ApiError, from_bayling_error
from bayling_local.serve.schemas import TranslateRequest, new_id, usage
from bayling_local.serve.streaming import collect

MAX_PAIRS = 256
"""Most (text, target) pairs in one request: a larger job belongs in `translate -i` over the remote backend."""


@dataclass(frozen=True)
class Job:
    index: int
    text: str
    target: object  # Language


def plan_jobs(request: TranslateRequest) -> tuple[list[str], list, object | None]:
    """Texts, target languages and source language of the request (400 on what cannot be used)."""
    from bayling_local.languages import resolve

    texts = _one_or_many(request.text, request.texts, "text")
    names = _one_or_many(request.target, request.targets, "target")
    if len(texts) * len(names) > MAX_PAIRS:
        raise ApiError(400, f"at most {MAX_PAIRS} (text, target) pairs per request", param="texts")
    try:
        targets = [resolve(name) for name in names]
        source = resolve(request.source) if request.source else None
    except BaylingError as error:
        raise from_bayling_error(error) from None
    return texts, targets, source


def _one_or_many(one, many, name: str) -> list:
    if (one is None) == (many is None):
        raise ApiError(400, f"give exactly one of `{name}` and `{name}s`", param=name)
    values = [one] if one is not None else list(many)
    if not values:
        raise ApiError(400, f"`{name}s` is empty", param=f"{name}s")
    return values


async def translate(model, engine, request: TranslateRequest, model_name: str) -> dict:
    texts, targets, source = plan_jobs(request)
    jobs = [Job(i, text, target) for i, text in enumerate(texts) for target in targets]
    results = await asyncio.gather(*(_translate_one(model, engine, job, source, request) for job in jobs))
    translations = [
        {"index": job.index, "target": job.target.code, "text": text} for job, (text, _, _) in zip(jobs, results)
    ]
    counts = usage(sum(r[1] for r in results), sum(r[2] for r in results))
    return {"id": new_id("translate"), "object": "translation", "model": model_name,
            "translations": translations, "usage": counts}


async def _translate_one(model, engine, job: Job, source, request: TranslateRequest) -> tuple[str, int, int]:
    """(translation, prompt tokens, completion tokens); text that needs no translation comes back as is."""
    from bayling_local.translate import LENGTH_FACTOR, LENGTH_SLACK, as_one_line, passes_through, translation_messages

    if passes_through(job.text, source, job.target):
        return job.text, 0, 0
    messages = translation_messages(job.text, job.target, glossary=request.glossary)
    try:
        prompt_ids = model.fit(messages, reserve=0).prompt_ids
    except BaylingError as error:
        raise from_bayling_error(error) from None
    limit = request.max_tokens or LENGTH_FACTOR * len(model.backend.tokenize(job.text)) + LENGTH_SLACK
    config = model.chat_config(replace(GenerationConfig(), max_tokens=limit))
    handle = engine.submit(prompt_ids, config)
    await collect(handle)
    completion = handle.result()
    return as_one_line(completion.text), len(prompt_ids), len(completion.token_ids)
