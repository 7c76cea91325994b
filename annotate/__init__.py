"""The labeling loop with Label Studio: projects from the taxonomy, imports, pre-annotations, exports."""
