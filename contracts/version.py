"""The contracts' version, which is the version of the ``billing-fleet-contracts`` wheel.

``MAJOR.REVISION.PATCH``: MAJOR is the topics' version (``billing.events.v1`` → 1; a
breaking change needs new topics and a new major), REVISION counts the compatible
revisions of the committed schemas (a new field, event type or tighter bound), PATCH a
release with the same schemas. A test fails when the committed schemas no longer match
``SCHEMAS_SHA256``: bump REVISION then, and record their new digest.
"""

from typing import Final

__version__ = "1.3.0"  # plain assignment: the wheel build reads it with a regex

SCHEMAS_SHA256: Final = "060f3000135dccb288334a9781ab0158eb22f833276cd87189288aabc9280a3b"
"""sha256 over the committed ``schemas/*.json`` this revision describes (``schemas_digest``)."""
