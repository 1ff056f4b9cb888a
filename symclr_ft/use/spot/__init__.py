"""Spotting: find and count exemplar symbols on whole drawings.

``candidates`` proposes boxes, ``objectness`` learns which look like symbols, ``spotting`` scores
them against the exemplars, ``report`` draws them. Arrows point one way, in that order.
"""
