"""The warning class of compile_dual, in a module of its own so that every planning module can raise
it without importing tvm_dual.api (which imports them)."""


class DualCompileWarning(UserWarning):
    """Something in the model was compiled differently from what was asked."""
