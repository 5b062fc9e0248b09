"""Helpers shared by the Docker tests."""

from __future__ import annotations

import sys

from helpers import USER_MODELS


def hostctl_containers(client) -> list:
    return client.containers.list(all=True, filters={"label": "hostctl.run"})


def user_model(name: str, **kwargs):
    sys.path.insert(0, str(USER_MODELS))
    try:
        import misbehaving
    finally:
        sys.path.remove(str(USER_MODELS))
    return getattr(misbehaving, name)(**kwargs)
