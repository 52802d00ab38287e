"""Errors the library raises. Each message names the problem and what to do about it.

The CLI catches `T2Error` and prints its message on one line; anything else is a bug.
"""

from __future__ import annotations


class T2Error(Exception):
    """Base class for every error a user can cause (bad input, missing files, mismatches)."""


class ModelNotFoundError(T2Error):
    """A model name/path/Hub id could not be resolved or loaded."""


class TargetError(T2Error):
    """Target selection matched nothing, or matched something that must never be adapted."""


class SVDStoreError(T2Error):
    """The SVD store is missing, incomplete or does not belong to this model."""


class ExpertError(T2Error):
    """An expert vector file is invalid or does not fit the model it is applied to."""


class RegistryError(T2Error):
    """Unknown expert names, name clashes, read-only registries, Hub problems."""


class DispatchError(T2Error):
    """A dispatch strategy cannot run (unknown strategy, missing experts, no shots)."""


class MixError(T2Error):
    """A mixing recipe is invalid (unknown experts, bad weights, mismatched bases)."""
