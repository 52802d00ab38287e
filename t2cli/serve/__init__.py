"""`t2 serve`: the OpenAI-compatible server (app.py), its continuous-batching engine (engine.py),
the per-row expert layer (layer.py), pass 1 of `:auto` (pass1.py) and its metrics (metrics.py)."""
