"""Child-side code of the sandbox: run by a separate, isolated interpreter, never imported by t2.

These modules use the standard library only and are started by file path (``python -I -S -B
.../box.py``), so the sandboxed interpreter never imports ``t2cli`` (or torch).
"""
