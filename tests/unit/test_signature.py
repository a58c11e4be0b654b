"""Stripe-Signature: one reading of the header, and stripe-python's verdict on it."""

from __future__ import annotations

import time

import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api_gateway.signature import InvalidSignature, parse_header, verify_signature

SECRET = "whsec_test_primary"
OTHER_SECRET = "whsec_test_other"
TOLERANCE = 300
BODY = b'{"id": "evt_1", "object": "event"}'


def v1(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    """The ``v1=<hex>`` item stripe-python would put in the header for ``timestamp``."""
    header: str = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp
    )
    return header.split(",", 1)[1]


def reason(body: bytes, header: str, secrets: list[str] | None = None) -> str:
    """Our verdict: ``ok`` or the refusal's reason."""
    try:
        verify_signature(body, header, secrets or [SECRET], TOLERANCE)
    except InvalidSignature as exc:
        return exc.reason
    return "ok"


def test_the_header_of_the_issue_is_refused_as_from_the_future() -> None:
    # stripe-python reads the exact key "t" (the second item): the future timestamp its
    # signature covers. A reading that stripped keys saw " t=<now>" and let it pass.
    now = int(time.time())
    future = now + 3600
    header = f"x, t={now},t={future},{v1(BODY, future)}"

    assert parse_header(header)[0] == future
    assert reason(BODY, header) == "future"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("t=12,v1=aa,v1=bb", (12, ["aa", "bb"])),
        (" t=5,t=12,v1=aa", (12, ["aa"])),  # " t" is not the key t
        ("t=12,t=5,v1=aa", (12, ["aa"])),  # the first t counts
        ("t= 12 ,v1=aa=bb", (12, ["aa"])),  # int() strips blanks; split on the first two "="
        ("t=+012,v0=cc,v1=", (12, [""])),
    ],
)
def test_header_is_read_as_stripe_python_reads_it(
    header: str, expected: tuple[int, list[str]]
) -> None:
    assert parse_header(header) == expected


@pytest.mark.parametrize("header", ["v1=aa", "t,v1=aa", "t=12,t,v1=aa", "t=x,v1=aa", "t=1,v1"])
def test_unreadable_header_is_malformed(header: str) -> None:
    with pytest.raises(ValueError):
        parse_header(header)
    assert reason(BODY, header) == "malformed"


def test_non_ascii_signature_is_a_mismatch_not_a_crash() -> None:
    # HTTP header bytes arrive as latin-1 text; stripe-python's comparison raises TypeError.
    header = f"t={int(time.time())},v1=\u00e9{v1(BODY, int(time.time()))[3:]}"
    assert reason(BODY, header) == "mismatch"


def test_any_configured_secret_may_match_and_stale_beats_mismatch() -> None:
    now = int(time.time())
    assert reason(BODY, f"t={now},{v1(BODY, now)}", [OTHER_SECRET, SECRET]) == "ok"
    assert reason(BODY, f"t={now},{v1(BODY, now)}", [OTHER_SECRET]) == "mismatch"
    old = now - 3600
    assert reason(BODY, f"t={old},{v1(BODY, old)}", [OTHER_SECRET, SECRET]) == "stale"


# Timestamps relative to now: stale, fine, fine, fine, from the future (tolerance 300 s).
OFFSETS = (-3600, -10, 0, 10, 3600)


@st.composite
def headers(draw: st.DrawFn, now: int) -> tuple[bytes, str, int]:
    """(body, header, the timestamp every real signature in it covers).

    Mostly a well-formed ``t=…,v1=…`` pair with noise shuffled in: the pieces on which
    readings differ (blanks around keys, repeated and odd ``t`` items, extra ``=``, other
    schemes, decoy signatures by another secret) and arbitrary text.
    """
    body = draw(st.sampled_from([BODY, b"", "{\u00e9}".encode()]) | st.binary(max_size=40))
    signed_at = now + draw(st.sampled_from(OFFSETS))
    spelled = st.sampled_from(
        [str(signed_at), f" {signed_at}", f"+{signed_at}", f"0{signed_at}", f"{signed_at}\n"]
    )
    timestamp_text = spelled | st.sampled_from(OFFSETS).map(lambda offset: str(now + offset))

    def signature(secret: str) -> str:
        try:
            return v1(body, signed_at, secret)
        except UnicodeDecodeError:  # not a body stripe-python can sign
            return f"v1={'0' * 64}"

    items: list[str] = []
    if draw(st.integers(0, 9)) < 8:
        items += [f"t={draw(spelled)}", signature(SECRET)]
    noise = st.one_of(
        st.tuples(st.sampled_from(["t", " t", "t ", "T"]), timestamp_text).map("=".join),
        st.tuples(
            st.sampled_from(["t", " t", "v1", " v1", "v0", "x", ""]),
            timestamp_text | st.text(max_size=12),
        ).map("=".join),
        st.text(max_size=16),
        st.just(OTHER_SECRET).map(signature),
    )
    items += draw(st.lists(noise, max_size=5))
    return body, ",".join(draw(st.permutations(items))), signed_at


def stripe_verdict(body: bytes, header: str, secret: str) -> str | None:
    """stripe-python's verdict in our vocabulary; None where it raises something else
    than SignatureVerificationError (a non-UTF-8 body, a non-ASCII signature)."""
    try:
        stripe.WebhookSignature.verify_header(body, header, secret, TOLERANCE)
    except stripe.SignatureVerificationError as exc:
        message = str(exc)
        if "tolerance" in message:
            return "stale"
        if message.startswith("No signatures found matching"):
            return "mismatch"
        if message.startswith("No Stripe-Signature header"):
            return "missing"
        return "malformed"
    except (UnicodeDecodeError, TypeError):
        return None
    return "ok"


# A shared 2-core machine may make the first examples slow: that is no failure here.
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_verdict_agrees_with_stripe_python_on_arbitrary_headers(data: st.DataObject) -> None:
    now = int(time.time())
    body, header, signed_at = data.draw(headers(now))
    secrets = data.draw(st.sampled_from([[SECRET], [OTHER_SECRET, SECRET], [OTHER_SECRET]]))
    verdicts = [stripe_verdict(body, header, secret) for secret in secrets]

    ours = reason(body, header, secrets)

    if None in verdicts:
        # stripe-python has no verdict; ours is one of the refusals (or ok), never a crash.
        assert ours in {"ok", "missing", "malformed", "mismatch", "stale", "future"}
    elif "ok" in verdicts:
        # Accepted by stripe-python: its timestamp is the one the real signature covers
        # (no other signature in the header can match). We also bound the future.
        assert ours == ("future" if signed_at > now + TOLERANCE else "ok")
    elif "stale" in verdicts:
        assert ours == "stale"
    else:
        assert ours == verdicts[0]
