"""Loss terms: pure maths in :mod:`functional`, registered terms in one file per family.

Add a loss in one file: subclass :class:`LossTerm`, decorate it with
``@LOSSES.register("name")``, and import the file below.
"""

# importing the files registers the built-in terms
from kdforge.losses import contrastive, feature, logit, multi, regression  # noqa: F401
from kdforge.losses.terms import LOSSES, LossTerm, StepContext, build_loss, build_losses

__all__ = ["LOSSES", "LossTerm", "StepContext", "build_loss", "build_losses"]
