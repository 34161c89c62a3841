"""Runtime helpers every layer may use: processes under torchrun (collectives that are no-ops in one
process) and mixed precision. Low in the layering: ``bridge``, ``eval`` and ``train`` import it, it imports
none of them."""
