"""The out-of-distribution evaluation set (``brainedge data ood``), built from material that
installs offline: transforms of the dataset's test slices, images that scikit-image and
pydicom ship, MRI templates from Debian's ``mricron-data``, and drawn text and noise.

Groups: ``near`` (still MRI), ``far`` (not MRI) and ``control`` (normal brain MRI from another
source, in planes the dataset holds). Every file's provenance and licence is in the set's
``sources.json``; ``training.ood_eval`` scores a model on it.
"""

from training.ood_set.build import SOURCES_NAME, OODSetConfig, build_ood_set
from training.ood_set.image import GROUPS, OODImage

__all__ = ["GROUPS", "SOURCES_NAME", "OODImage", "OODSetConfig", "build_ood_set"]
