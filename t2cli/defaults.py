"""Names and defaults the command line shows before it runs anything.

Kept free of torch and transformers (standard library only), so that `t2 --help` and Tab
completion answer at once; the modules that own these names re-export them. The pass-1 strategy
names come from their one table, `t2cli.strategies` (also torch-free).
"""

from __future__ import annotations

DEFAULT_MODEL = "smollm2-135m"  # the embedded default (t2cli.models)
OTHER = "other"  # no domain: pass 1 chose no expert, the base model answers
CLASSIFICATION = "classification"  # the dispatch classifier's domain: it serves pass 1, never a request
# Domains are data: any name that registered experts declare in their `domain` field is a routing
# domain (math, code, reasoning, a user's own …); only these two labels are reserved.
DOMAINS = (CLASSIFICATION, OTHER)  # the reserved domain labels (t2cli.expert)
DOMAIN_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,63}"  # what a domain name may look like
SVD_DTYPES = ("float32", "float64")  # SVD precisions (t2cli.svd_store)
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")  # --dtype: auto = bfloat16 on a GPU with it, else float32
STORE_DTYPES = ("float32", "bfloat16", "float16", "float64")  # --store-dtype of SVD factors (t2cli.svd_store)
PASS1_DTYPE_NAMES = ("float32", "bfloat16", "float16")  # --pass1-dtype (t2cli.dispatch)
