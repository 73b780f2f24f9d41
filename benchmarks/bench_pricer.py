"""Cost of pricing one call: costledger's ``Pricer.price`` against genai-prices' ``calc_price``
and LiteLLM's ``cost_per_token``, on the same models and usages, in one run.

Run: python benchmarks/bench_pricer.py
Target (issue 2): ``Pricer.price`` <= 10 us median per call on a warm card cache.
The machine is shared and noisy: read the ratios, which compare peers in the same run.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from costledger import Usage
from costledger._pricing import Pricer

AT = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)

# (model, provider, usage): plain, cached, cache writes with a 1-hour part, a long-context
# tier, and a time-of-day price.
CASES: list[tuple[str, str, Usage]] = [
    ("gpt-4o-mini", "openai", Usage(input_tokens=1200, output_tokens=300)),
    ("gpt-4o", "openai", Usage(input_tokens=5000, cache_read_tokens=4096, output_tokens=800)),
    (
        "claude-sonnet-4-20250514",
        "anthropic",
        Usage(
            input_tokens=20_000,
            cache_read_tokens=8_000,
            cache_write_tokens=6_000,
            cache_write_1h_tokens=2_000,
            output_tokens=1_500,
        ),
    ),
    (
        "gemini-2.5-pro",
        "google",
        Usage(input_tokens=250_000, cache_read_tokens=100_000, output_tokens=2_000),
    ),
    (
        "deepseek-chat",
        "deepseek",
        Usage(input_tokens=3000, cache_read_tokens=1000, output_tokens=500),
    ),
]


def per_call_us(fn: Callable[[], Any], n: int, rounds: int = 7) -> tuple[float, float]:
    """Median and best of ``rounds`` timings, in microseconds per call."""
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples), min(samples)


def ours(pricer: Pricer) -> Callable[[], Any]:
    price = pricer.price

    def run() -> None:
        for model, provider, usage in CASES:
            price(model, usage, provider=provider, at=AT)

    return run


def genai() -> Callable[[], Any]:
    from genai_prices import Usage as GUsage
    from genai_prices import calc_price

    prepared = [
        (
            model,
            provider,
            GUsage(
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cache_read_tokens=u.cache_read_tokens,
                cache_write_tokens=u.cache_write_tokens,
                cache_write_1h_tokens=u.cache_write_1h_tokens,
            ),
        )
        for model, provider, u in CASES
    ]

    def run() -> None:
        for model, provider, usage in prepared:
            calc_price(usage, model, provider_id=provider, genai_request_timestamp=AT)

    return run


def litellm_fn() -> Callable[[], Any] | None:
    # LiteLLM would otherwise try to download its price map (no network here).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from litellm import cost_per_token
    except ImportError:
        return None

    def run() -> None:
        for model, provider, u in CASES:
            cost_per_token(
                model=model,
                custom_llm_provider="gemini" if provider == "google" else provider,
                prompt_tokens=u.input_tokens,
                completion_tokens=u.output_tokens,
                cache_read_input_tokens=u.cache_read_tokens,
                cache_creation_input_tokens=u.cache_write_tokens,
            )

    return run


def main() -> None:
    pricer = Pricer()
    for model, provider, usage in CASES:  # compile the cards once, as a warm process would
        cost = pricer.price(model, usage, provider=provider, at=AT)
        print(f"{model:26} {provider:10} {cost.total!s:>14} {cost.currency}  ({cost.source})")
    print()

    k = len(CASES)
    ours_med, ours_best = per_call_us(ours(pricer), 20_000 // k)
    genai_med, genai_best = per_call_us(genai(), 2_000 // k)
    t0 = time.perf_counter()
    lite = litellm_fn()
    import_s = time.perf_counter() - t0
    rows = [
        ("costledger Pricer.price", ours_med / k, ours_best / k),
        ("genai-prices calc_price", genai_med / k, genai_best / k),
    ]
    if lite is not None:
        lite()  # warm LiteLLM's own caches
        lite_med, lite_best = per_call_us(lite, 2_000 // k)
        rows.append(("litellm cost_per_token", lite_med / k, lite_best / k))
    base = ours_med / k
    title = f"per call, mean over {k} models"
    print(f"{title:32} {'median us':>10} {'best us':>9} {'x ours':>8}")
    for label, med, best in rows:
        print(f"{label:32} {med:10.2f} {best:9.2f} {med / base:8.1f}")
    if lite is not None:
        print(f"\n(import litellm took {import_s:.1f} s; costledger never imports it)")
    print(f"target: Pricer.price <= 10 us median -> {'met' if base <= 10 else 'NOT met'}")


if __name__ == "__main__":
    main()
