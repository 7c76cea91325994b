"""``fiftyone_views app``: the FiftyOne App on a loaded run, served on 127.0.0.1 only.

The dataset carries its own App defaults (semantic fields active, the taxonomy's colours: see ``dataset.py``), so
the App opens ready to compare ground truth and prediction. Served remotely (no browser is started here): open
the printed URL, or forward the port from another machine with ``ssh -L PORT:127.0.0.1:PORT``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from core.errors import SegLoopError
from core.services import port_free

DEFAULT_PORT = 5151


def app_url(port: int, dataset: str, view_slug: str | None = None) -> str:
    """The App's address for a dataset, optionally on a saved view (the App names saved views by slug)."""
    url = f"http://127.0.0.1:{port}/datasets/{quote(dataset)}"
    return f"{url}?view={quote(view_slug)}" if view_slug else url


def launch(run: str | Path, split: str = "test", port: int = DEFAULT_PORT, view: str | None = None,
           db_dir: str | Path | None = None, wait: bool = True):
    """Serve the App on the run's dataset (optionally one saved view); blocks until interrupted if ``wait``."""
    from fiftyone_views.dataset import open_dataset

    dataset = open_dataset(run, split, db_dir)
    if view is not None and not dataset.has_saved_view(view):
        raise SegLoopError(f"dataset '{dataset.name}' has no view '{view}'",
                           fix=f"choose one of: {', '.join(dataset.list_saved_views())}")
    if not port_free(port):
        raise SegLoopError(f"port {port} on 127.0.0.1 is busy", fix="choose another with --port")
    import fiftyone as fo

    session = fo.launch_app(dataset, view=dataset.load_saved_view(view) if view else None, port=port,
                            address="127.0.0.1", remote=True, auto=False)
    from fiftyone.core.utils import to_slug

    url = app_url(port, dataset.name, to_slug(view) if view else None)
    print(f"FiftyOne App serving {dataset.name} ({len(dataset)} samples) at {url}", flush=True)
    if wait:
        session.wait(-1)
    return session, url
