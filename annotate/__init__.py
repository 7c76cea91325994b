"""The labeling loop with Label Studio (issue #3): projects from the taxonomy, imports, pre-annotations, exports."""
