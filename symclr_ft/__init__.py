"""symclr_ft: few-shot recognition of symbols in engineering drawings.

COCO drawings -> make-shards -> contrastive fine-tuning (Accelerate) -> k-NN few-shot
evaluation -> feature indexes, predictions with "unknown", and spotting on whole drawings.
"""

from symclr_ft import _moved

__version__ = "0.1.0"

_moved.install()
