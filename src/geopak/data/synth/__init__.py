"""GeoPak-Synth: an embedded, offline dataset of Pakistan built from real geographic data.

``generate(n, out_dir, seed)`` writes ground-level procedural photos whose content (horizon, snow, sea,
ground, settlement density and style) derives from packaged real data at each photo's location, plus a
manifest in the project's schema and a dataset card; ``preview`` draws a contact sheet (a row per
province). See :mod:`geopak.data.synth.world` for the data, :mod:`~geopak.data.synth.placement` for where
photos are taken and :mod:`~geopak.data.synth.render` for what they show.
"""

from __future__ import annotations

from geopak.data.synth.generate import generate, image_id, preview
from geopak.data.synth.placement import default_proportions, province_counts, sample_locations
from geopak.data.synth.world import SynthDataError, load_world

__all__ = [
    "SynthDataError",
    "default_proportions",
    "generate",
    "image_id",
    "load_world",
    "preview",
    "province_counts",
    "sample_locations",
]
