"""Spotting: find and count exemplar symbols on whole drawings, PDF sheet sets included.

``drawings`` reads them, ``candidates`` proposes boxes from ink, ``template`` from correlating
the exemplars' pictures, ``objectness`` learns which look like symbols, ``pipeline`` embeds and
scores them against the exemplars, ``report`` draws them. On top, over the same calls:
``spotter`` (the Python API, :class:`~symclr_ft.use.spot.spotter.Spotter`) and ``spotting``
(the ``symclr-spot`` command). ``robustness`` makes scanned, scaled and turned copies for the
benchmark. Arrows point one way, in that order.
"""
