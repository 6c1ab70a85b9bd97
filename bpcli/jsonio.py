"""JSON that bp writes, on stdout and in run dirs: always valid JSON.

Python's ``json`` writes NaN and Infinity as bare tokens, which no strict
parser (``jq``, JavaScript's ``JSON.parse``) accepts. bp writes a
non-finite number as null, "no value", as it already does for a missing
validation accuracy.
"""

import json
import math


def finite(doc):
    """``doc`` with every NaN or infinite float replaced by None (recursively)."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: finite(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [finite(v) for v in doc]
    return doc


def dumps(doc, **kw):
    return json.dumps(finite(doc), allow_nan=False, **kw)
