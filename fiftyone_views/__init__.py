"""Triage in FiftyOne: datasets from runs, worst-sample views, triptychs and the App."""
