"""Use floor: what a trained model file is for: feature indexes, predictions with "unknown",
and spotting symbols on whole drawings. Imports the floors below, never the commands.

``embedder`` (:func:`~symclr_ft.use.embedder.load_model`, :class:`~symclr_ft.use.embedder.Embedder`),
``symbol_index`` (:class:`~symclr_ft.use.symbol_index.SymbolIndex`) and ``spot.spotter``
(:class:`~symclr_ft.use.spot.spotter.Spotter`) are the Python API that ``symclr_ft`` exports;
``predict`` (``symclr-embed``, ``symclr-predict``) and ``spot.spotting`` (``symclr-spot``) are
the commands over the same calls.
"""
