"""Names and defaults the command line shows before it runs anything.

Kept free of torch and transformers (standard library only), so that `t2 --help` and Tab
completion answer at once; the modules that own these names re-export them.
"""

from __future__ import annotations

DEFAULT_MODEL = "smollm2-135m"  # the embedded default (t2cli.models)
DOMAINS = ("math", "code", "reasoning", "classification", "other")  # expert domain labels (t2cli.expert)
SVD_DTYPES = ("float32", "float64")  # SVD precisions (t2cli.svd_store)
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")  # --dtype: auto = bfloat16 on a GPU with it, else float32
STORE_DTYPES = ("float32", "bfloat16", "float16", "float64")  # --store-dtype of SVD factors (t2cli.svd_store)
STRATEGIES = ("none", "fixed:NAME", "prompt", "cls", "loglik", "loglik-cls", "cem")  # pass 1 (t2cli.dispatch)
PASS1_DTYPE_NAMES = ("float32", "bfloat16", "float16")  # --pass1-dtype (t2cli.dispatch)
