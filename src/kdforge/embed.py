"""The embedding-distillation function API's documented home (``from kdforge.embed import
distill_loss, DistillationConfig, ...``): it lives in :mod:`kdforge.families.embedding.api`."""

from kdforge.families.embedding.api import *  # noqa: F403
from kdforge.families.embedding.api import __all__  # noqa: F401
