"""``bench fetch-wait``'s command-line pairs of waits."""

from __future__ import annotations

import pytest

from bench.fetch_wait import Wait


@pytest.mark.parametrize(
    ("text", "fetch", "poll", "shown"),
    [("10", 10, 10, "10"), ("40:10", 40, 10, "40:10"), ("25:25", 25, 25, "25")],
)
def test_a_wait_is_a_fetch_wait_and_a_poll_timeout(
    text: str, fetch: int, poll: int, shown: str
) -> None:
    wait = Wait.parse(text)
    assert (wait.fetch_ms, wait.poll_ms, str(wait)) == (fetch, poll, shown)


def test_a_wait_that_is_no_number_is_refused() -> None:
    with pytest.raises(ValueError):
        Wait.parse("fast")
