"""SegLoop's data layer: taxonomies, label codecs, sources (Cityscapes, mask folders, the demo city) and
immutable dataset versions. Every other stage reads data through this package."""
