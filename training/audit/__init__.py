"""Find exact and near-duplicate images within and across the splits, and the test images that leak.

The public brain-tumor MRI set merges three older sources and ships some slices several times,
sometimes in both Training and Testing, sometimes under different labels. A test image that also
sits in Training measures memory, not generalisation, so evaluation reads the leakage-free list
written here (``clean_test.txt``, readable with ``training.data.read_path_list``).

- Exact duplicates: equal sha256 of the file bytes.
- Near duplicates: perceptual hashes (``imagehash.phash``, 256 bits by default) of the grayscale
  image decoded by ``runtime.imageio`` like everywhere else, at most ``near_threshold`` bits apart.
  They catch re-encoded, resized, re-windowed and re-brightened copies; they do not catch
  neighbouring slices of one patient's scan (patient-level leakage needs patient IDs).

No TensorFlow here; ``imagehash`` (the ``train`` extra) is imported only when an audit runs.

- ``config``: ``AuditConfig``; ``findings``: the result types
- ``hashing``: sha256 and pHash of each image, and the Hamming-distance search
- ``search``: ``audit_dataset``, grouping exact copies and pairing near ones
- ``leakage``: leaked test images and the clean test list
- ``report``: ``write_audit`` (audit.json, audit.md, clean_test.txt)
"""

from training.audit.config import AuditConfig
from training.audit.findings import AuditResult, ExactGroup, Leak, Member, Pair
from training.audit.hashing import hamming_pairs
from training.audit.report import CLEAN_TEST_NAME, clean_test_header, render_markdown, write_audit
from training.audit.search import audit_dataset

__all__ = [
    "CLEAN_TEST_NAME",
    "AuditConfig",
    "AuditResult",
    "ExactGroup",
    "Leak",
    "Member",
    "Pair",
    "audit_dataset",
    "clean_test_header",
    "hamming_pairs",
    "render_markdown",
    "write_audit",
]
