"""`t2 serve`: the OpenAI-compatible server.

app.py       routes, request bodies, OpenAI error envelopes, the uvicorn server
engine.py    continuous batching: admission, pass 1 between decode steps, prefill, decode, retire
requests.py  what callers hand the engine (sampling, adaptation) and the events they get back
batch.py     the running batch: rows, left-padded KV cache, attention mask, joining and trimming
deltas.py    each expert's and mixture's per-row singular-value deltas, cached
layer.py     the per-row expert layer: base output plus each row's low-rank correction
sampling.py  the next token, and the text held back while a stop string may be starting
pass1.py     pass 1 of `MODEL:auto` through the dispatch strategies
metrics.py   Prometheus text for GET /metrics
"""
