"""The Docker jail: `httpjail --docker-run -- [docker run options] IMAGE [CMD...]`.

The strong jail's network, around a container (see holder.py):

    prepare   as the strong jail, but the namespace is the holder container's (started
              with `--network none`, the jail's gateway as its DNS server), named with
              `ip netns attach`; its veth, addresses, route and both nft tables as usual
    run       `docker run --network container:<holder>` with the user's options, without
              CAP_NET_RAW, with the proxy variables, the CA files mounted read-only and the
              CA variables pointing at them, and each --secret's placeholder; the docker
              client is the child, so its exit status (the container's) is httpjail's
    teardown  the container stopped and removed, then the strong jail's teardown (the
              holder goes with the namespace's undo steps)

The Docker SDK (`docker` package) talks to the engine (DOCKER_HOST is honoured; it must be
this machine's: the holder's namespace is wired here). The user's container is started by
the `docker` command itself, so that every `docker run` option means what it always does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from httpjail_py.ca import CA_ENV_VARS, CaFiles
from httpjail_py.config import Bind, Config
from httpjail_py.errors import JailSetupError
from httpjail_py.jail.child import run_child
from httpjail_py.jail.docker.holder import LABEL, start_holder
from httpjail_py.jail.docker.runargs import DockerRun, parse_docker_run
from httpjail_py.jail.linux.liveness import RUN_DIR, is_alive, is_our_id, sweep
from httpjail_py.jail.linux.netns import attach_netns
from httpjail_py.jail.linux.nft import JailNetSpec
from httpjail_py.jail.linux.strong import StrongJail
from httpjail_py.jail.weak import own_loopback_env, proxy_env

__all__ = ["DockerJail", "connect", "sweep_containers", "sweep_with_containers"]

log = logging.getLogger("httpjail")

# Where the CA files appear inside the container.
CA_DIR = "/etc/httpjail"
# Seconds between SIGTERM and SIGKILL when httpjail stops a container: short, because a
# container still running at teardown already had its SIGTERM (forwarded by the docker
# client) and the grace of `run_child`.
STOP_TIMEOUT = 1
CIDFILE_DIR = RUN_DIR


def connect() -> Any:
    """A Docker SDK client for the local engine. Raises JailSetupError when there is none."""
    try:
        import docker
        import docker.errors
    except ImportError as e:
        raise JailSetupError(f"--docker-run needs the Docker SDK for Python (pip install docker): {e}") from e
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        raise JailSetupError(
            f"cannot reach the Docker engine ({e}); is dockerd running? (DOCKER_HOST names another engine)"
        ) from e
    return client


def sweep_containers(client: Any) -> list[str]:
    """Remove the containers of jails whose httpjail died. Returns what was removed."""
    removed = []
    # ignore_removed: the list is read, then each container inspected; another jail's
    # teardown may remove one in between, which must not fail this jail's start.
    for container in client.containers.list(all=True, filters={"label": LABEL}, ignore_removed=True):
        jail_id = container.labels.get(LABEL, "")
        if is_our_id(jail_id) and not is_alive(jail_id):
            with contextlib.suppress(Exception):
                container.remove(force=True)
                removed.append(f"container {container.name}")
            (CIDFILE_DIR / f"{jail_id}.cid").unlink(missing_ok=True)
    return removed


def sweep_with_containers(client: Any) -> list[str]:
    """The sweep of dead jails (liveness.sweep), their containers first: what runs in a
    dead jail's namespace goes with them."""
    return sweep(lambda: sweep_containers(client))


class DockerJail(StrongJail):
    name = "docker"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.run_args: DockerRun = parse_docker_run(config.command)
        if shutil.which("docker") is None:
            raise JailSetupError("--docker-run needs the `docker` command (apt-get install docker.io)")
        self._client: Any = None
        self._container_env: dict[str, str] = {}
        self._mounts: list[str] = []
        self._cidfile: Path | None = None
        self._holder = ""  # the holder container's name, once it runs

    def _sweep(self) -> list[str]:
        self._client = connect()
        return sweep_with_containers(self._client)

    # The container's processes go with it; the holder's init would ignore a SIGTERM.
    stop_leftovers = False

    def _make_netns(self, spec: JailNetSpec) -> Callable[[str], None]:
        holder, pid = start_holder(self._client, spec.jail_id, dns=str(spec.host_addr.ip))
        self._undo.push(f"remove container {holder.name}", lambda: holder.remove(force=True))
        self._holder = holder.name
        return lambda name: attach_netns(name, pid)

    def child_env(self, env: Mapping[str, str], ca: CaFiles, bound: Sequence[Bind]) -> dict[str, str]:
        """The docker client's environment (httpjail's own); the container's is kept for `run`."""
        inside = {str(path): f"{CA_DIR}/{name}" for path, name in (
            (ca.bundle, "ca-bundle.pem"), (ca.cert, "ca-cert.pem"), (ca.cert_dir, "certs"))}
        self._mounts = [f"{source}:{target}:ro" for source, target in inside.items()]
        self._container_env = {name: inside[str(ca.bundle)] for name in CA_ENV_VARS}
        self._container_env["SSL_CERT_DIR"] = inside[str(ca.cert_dir)]
        self._container_env["HTTPJAIL_CA_CERT"] = inside[str(ca.cert)]
        self._container_env.update(proxy_env(bound[0], bound[0]) | own_loopback_env())
        return dict(env)

    def docker_argv(self) -> list[str]:
        run = self.run_args
        jail_id = self._net().jail_id
        self._cidfile = CIDFILE_DIR / f"{jail_id}.cid"
        argv = ["docker", "run", "--network", f"container:{self._holder}", "--cap-drop", "NET_RAW",
                "--cidfile", str(self._cidfile)]
        if not run.values("name"):
            argv += ["--name", f"httpjail_{jail_id}"]
        for mount in self._mounts:
            argv += ["-v", mount]
        for name, value in self._container_env.items():
            argv += ["-e", f"{name}={value}"]
        for secret in self.config.credentials.secrets:
            argv += ["-e", secret.name]  # its value, the placeholder, from the client's environment
        # Ours last: a label the user gives cannot replace it (the sweep finds it by it).
        return [*argv, *run.options, "--label", f"{LABEL}={jail_id}", run.image, *run.command]

    async def run(
        self, argv: Sequence[str], env: Mapping[str, str], started: Callable[[], object] | None = None
    ) -> int:
        return await run_child(self.docker_argv(), env, timeout=self.config.timeout, started=started)

    async def teardown(self) -> None:
        if self._client is not None and self._cidfile is not None:
            await asyncio.to_thread(self._remove_container, self._cidfile)
        await super().teardown()

    def _remove_container(self, cidfile: Path) -> None:
        """Stop and remove the container this jail started: the one whose id docker wrote
        to `cidfile` and that carries this jail's label (never another of the same name)."""
        import docker.errors

        try:
            container_id = cidfile.read_text().strip()
        except FileNotFoundError:
            return  # docker did not create it (an error, or a signal before it did)
        finally:
            cidfile.unlink(missing_ok=True)
        if not container_id:
            return
        try:
            container = self._client.containers.get(container_id)
        except docker.errors.NotFound:
            return
        if container.labels.get(LABEL) != self._net().jail_id:
            return
        with contextlib.suppress(docker.errors.APIError):
            container.stop(timeout=STOP_TIMEOUT)
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
