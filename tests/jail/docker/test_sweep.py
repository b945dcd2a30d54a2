"""The sweep of dead jails' containers, against the real engine, when another jail's
teardown removes a container while the sweep is reading the list (seen once on CI: a
Docker jail's start failed with the engine's 404)."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import docker.errors
import pytest

from httpjail_py.jail.docker.holder import LABEL
from httpjail_py.jail.docker.jail import sweep_containers
from httpjail_py.jail.linux.liveness import sweep_lock
from tests.jail.docker.image import build_test_image

pytestmark = [pytest.mark.root, pytest.mark.docker]


def test_a_container_removed_during_the_sweep_is_skipped(docker_client: Any) -> None:
    image = build_test_image(docker_client)
    # Ids of jails that never ran: no claim file, so the sweep takes them for dead ones.
    vanishing, stale = (docker_client.containers.create(image, ["true"], labels={LABEL: dead_id()})
                        for _ in range(2))
    inspect = docker_client.api.inspect_container

    def removed_first(container: Any) -> Any:
        if container == vanishing.id:  # as another jail's teardown would, between list and inspect
            vanishing.remove(force=True)
        return inspect(container)

    docker_client.api.inspect_container = removed_first
    try:
        with sweep_lock():  # no other jail's sweep meanwhile
            removed = sweep_containers(docker_client)
    finally:
        docker_client.api.inspect_container = inspect
        for container in (vanishing, stale):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
    assert f"container {stale.name}" in removed
    assert not docker_client.containers.list(all=True, filters={"id": stale.id})


def dead_id() -> str:
    return f"py{secrets.token_hex(4)}"
