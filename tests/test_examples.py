"""The scripts in examples/ run as a user would run them, offline, and print exact costs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Lines each example must print, exactly (money to the last digit). Lines that carry a
# clock (latencies, alert timestamps) are left out.
EXPECTED: dict[str, list[str]] = {
    "http_example.py": [
        "ledger: 6 calls recorded, $0.005895240 in all",
    ],
    "langchain_example.py": [
        "'Paris.' cost $0.000283200",
        "4 calls in the block cost $0.001132800",
        "  4800 input tokens (4096 from cache)",
        "the ledger holds 5 events, $0.001416000",
    ],
    "litellm_example.py": [
        "call     : gpt-4o-mini, 10 in / 20 out",
        "cost     : $0.00001350 (LiteLLM said $0.0000135)",
        "stream   : 'two plus two is four': 5 tokens out, $0.00000525",
        "guarded  : $0.00001350 for team search",
        "ledger   : 3 calls, $0.00003225 in all",
    ],
}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_offline_and_prints_exact_costs(name: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLEDGER_")}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # LiteLLM must not fetch its price map
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=tmp_path,  # anything an example writes lands here
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    missing = [line for line in EXPECTED[name] if line not in lines]
    assert missing == [], done.stdout
    if name == "http_example.py":
        # every call's own line, cost to the last digit
        costs = [line.split()[-1] for line in lines if " ok " in line]
        openai, anthropic, embedding = "$0.000525000", "$0.00432000", "$0.00000024"
        assert costs == [openai, openai, anthropic, embedding, openai]
