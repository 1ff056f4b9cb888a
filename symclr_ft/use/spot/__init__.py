"""Spotting: find and count exemplar symbols on whole drawings, PDF sheet sets included.

``drawings`` reads them, ``candidates`` proposes boxes from ink, ``template`` from correlating
the exemplars' pictures, ``objectness`` learns which look like symbols, ``spotting`` scores them
against the exemplars, ``report`` draws them; ``robustness`` makes scanned, scaled and turned
copies for the benchmark. Arrows point one way (docs/ARCHITECTURE.md, "Spotting").
"""
