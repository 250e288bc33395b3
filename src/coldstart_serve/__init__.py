"""coldstart_serve: a FastAPI service over a trained coldstart run (docs/serving.md).

    coldstart serve runs/demo --port 8000          # or: from coldstart_serve.app import create_app

Needs the `serve` extra: pip install 'coldstart[serve]'.
"""

__all__ = ["create_app"]


def create_app(*args, **kwargs):
    """The FastAPI app over a run directory (see coldstart_serve.app.create_app)."""
    from coldstart_serve.app import create_app as _create

    return _create(*args, **kwargs)
