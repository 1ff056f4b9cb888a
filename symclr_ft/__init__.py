"""symclr_ft: few-shot recognition of symbols in engineering drawings.

COCO drawings -> make-shards -> class-unique contrastive fine-tuning of a SimCLR ResNet-18
(Accelerate) -> cosine k-NN few-shot evaluation on the 512-d backbone features.
"""

__version__ = "0.1.0"
