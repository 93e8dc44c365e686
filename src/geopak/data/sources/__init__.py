"""Crawlers and importers for public geotagged photo sources.

Each source turns its API responses or metadata files into manifest rows (``id``, ``url``, ``lat``, ``lon``,
``source``, ``licence``, ``attribution``, ``owner``, ``taken_at``, ``accuracy_m``) restricted to Pakistan's
bounding box; :func:`geopak.data.sources.base.download_images` then fetches the images, resumably, and every
row ends up either with a local ``path`` or in a rejects table with a reason. Validation (province labels,
quality filters) is the manifest pipeline's job (``geopak data validate``).

Network access happens only when a crawler is run; nothing here touches the network at import.
"""

from geopak.data.sources.base import PAKISTAN_BBOX, BBox, CrawlResult, download_images

__all__ = ["PAKISTAN_BBOX", "BBox", "CrawlResult", "download_images"]
