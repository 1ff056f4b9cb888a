"""Data floor: COCO drawings in, crops and shard sets out, views and batches for training.

``coco`` reads exports, ``shards`` writes them as WebDataset shards (make-shards), ``shardset``
reads and verifies shard sets, ``crops`` says where a crop comes from, ``preprocess`` is the
model's input rule, ``views`` and ``batches`` make training batches, ``synth`` generates drawings and
``universe`` thousands of symbol classes (font glyphs and procedural ones), ``components`` finds ink
components without labels and ``component_shards`` cuts them into shards (symclr-components).
Nothing here imports a model.
"""


def __getattr__(name: str):
    # `from symclr_ft.data import load_classes` was the flat package's shard reader, now
    # data.shardset: keep such saved scripts working, and say where the name went.
    import importlib
    import warnings

    shardset = importlib.import_module("symclr_ft.data.shardset")
    if name.startswith("__") or not hasattr(shardset, name):
        raise AttributeError(f"module 'symclr_ft.data' has no attribute {name!r}")
    warnings.warn(f"symclr_ft.data.{name} moved to symclr_ft.data.shardset.{name}",
                  DeprecationWarning, stacklevel=2)
    return getattr(shardset, name)
