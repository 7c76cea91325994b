"""Shared foundation of SegLoop: errors, atomic file writes, the config mechanism and segmentation metrics.

Every stage imports ``core``; ``core`` imports no stage, so the stage graph stays acyclic.
"""
