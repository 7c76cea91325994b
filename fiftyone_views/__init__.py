"""Triage in FiftyOne (issue #4): datasets from runs, worst-sample views, triptychs and the App."""
