"""Names and defaults the command line shows before it runs anything.

Kept free of torch and transformers (standard library only), so that `t2 --help` and Tab
completion answer at once; the modules that own these names re-export them. The pass-1 strategy
names come from their one table, `t2cli.dispatch.table` (also torch-free).
"""

from __future__ import annotations

# The dtype names live in t2cli.placement (torch-free as well); re-exported for the modules reading them here.
from t2cli.placement import PASS1_DTYPES as PASS1_DTYPE_NAMES  # noqa: F401
from t2cli.placement import STORE_DTYPES as STORE_DTYPES
from t2cli.placement import SVD_DTYPES as SVD_DTYPES

DEFAULT_MODEL = "smollm2-135m"  # the embedded default (t2cli.models)
OTHER = "other"  # no domain: pass 1 chose no expert, the base model answers
CLASSIFICATION = "classification"  # the dispatch classifier's domain: it serves pass 1, never a request
# Domains are data: any name that registered experts declare in their `domain` field is a routing
# domain (math, code, reasoning, a user's own …); only these two labels are reserved.
DOMAINS = (CLASSIFICATION, OTHER)  # the reserved domain labels (t2cli.expert)
DOMAIN_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,63}"  # what a domain name may look like
