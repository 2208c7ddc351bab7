"""Memory under hostile input (issue 7, part 5), the quick version for the suite.

``benchmarks/bench_hostile_memory.py`` runs the full measurement: 10,000 malformed
A-ASSOCIATE-RQs in a row must not grow the SCP's RSS by 10 MB. Here the same run,
shorter, holds the SCP to the same rate (1 KB per request at most), on each event loop.
"""

from __future__ import annotations

import pytest
from benchmarks.bench_hostile_memory import MALFORMED, run

REQUESTS = 3_000
#: The issue's budget, 10 MB per 10,000 requests, for the requests sent here.
LIMIT_MB = 10.0 * REQUESTS / 10_000


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_malformed_requests_in_a_row_do_not_grow_the_server(backend: str) -> None:
    """Every kind of malformed request gets its answer, nothing is logged as an error,
    and the SCP's VmRSS grows by less than the budget after a warm-up."""
    outcome = run(requests=REQUESTS, warm_up=1_000, backend=backend)
    assert outcome.wrong_answers == []
    assert outcome.log_problems == []
    assert len(outcome.checkpoints) == 5
    assert outcome.baseline_kb > 0
    assert outcome.growth_mb < LIMIT_MB, outcome.checkpoints
    assert len(MALFORMED) >= 10  # several kinds, all sent many times
