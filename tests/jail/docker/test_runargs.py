"""The `--docker-run` argument split (where the image is) and what it refuses; the
holder's program. No engine needed."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest

from httpjail_py.jail.docker.holder import pause_executable
from httpjail_py.jail.docker.runargs import parse_docker_run


@pytest.mark.parametrize(("args", "options", "image", "command"), [
    (["img"], [], "img", []),
    (["img", "-c", "x"], [], "img", ["-c", "x"]),
    (["-it", "--rm", "img", "sh"], ["-it", "--rm"], "img", ["sh"]),
    (["-e", "A=1", "-eB=2", "--env", "C=3", "--env=D=4", "img"], ["-e", "A=1", "-eB=2", "--env", "C=3",
                                                                "--env=D=4"], "img", []),
    (["-v", "/a:/b", "--mount", "type=tmpfs,dst=/t", "-w", "/w", "--user", "1:1", "--entrypoint", "sh",
      "img", "-c", "true"], ["-v", "/a:/b", "--mount", "type=tmpfs,dst=/t", "-w", "/w", "--user", "1:1",
                             "--entrypoint", "sh"], "img", ["-c", "true"]),
    (["-itv", "/a:/b", "img"], ["-itv", "/a:/b"], "img", []),
    (["--rm", "--", "img", "--rm"], ["--rm"], "img", ["--rm"]),
    (["--some-future-option=value", "img"], ["--some-future-option=value"], "img", []),
    (["--cap-add", "CHOWN", "--cap-drop=ALL", "img"], ["--cap-add", "CHOWN", "--cap-drop=ALL"], "img", []),
])
def test_the_image_is_found_after_any_option(
    args: list[str], options: list[str], image: str, command: list[str]
) -> None:
    run = parse_docker_run(args)
    assert (list(run.options), run.image, list(run.command)) == (options, image, command)


@pytest.mark.parametrize(("args", "message"), [
    (["--network", "host", "img"], "--network is not allowed"),
    (["--network=none", "img"], "--network is not allowed"),
    (["--net", "bridge", "img"], "--net is not allowed"),
    (["--dns=1.1.1.1", "img"], "--dns is not allowed"),
    (["--dns-search", "x", "img"], "--dns-search is not allowed"),
    (["-p", "80:80", "img"], "--publish is not allowed"),
    (["--cap-add", "net_raw", "img"], "NET_RAW could undo it"),
    (["--cap-add=CAP_NET_ADMIN", "img"], "NET_ADMIN could undo it"),
    (["--cap-add", "CHOWN,ALL", "img"], "ALL could undo it"),
    (["--cap-add", "SYS_ADMIN", "img"], "SYS_ADMIN could undo it"),
    (["--privileged", "img"], "--privileged is not allowed"),
    (["--pid", "host", "img"], "--pid host"),
    (["--use-api-socket", "img"], "--use-api-socket is not allowed"),
    (["--mount", "type=bind,src=/run/docker.sock,dst=/s", "img"], "engine's socket"),
    (["-d", "img"], "--detach is not allowed"),
    (["-dit", "img"], "--detach is not allowed"),
    (["--unknown", "img"], "unknown docker run option --unknown"),
    (["-Z", "img"], "unknown docker run option -Z"),
    (["-e"], "needs a value"),
    (["--rm"], "no image given"),
    (["--", "--privileged", "img"], "is not an image"),
    (["--rm", "--", "--cap-add=ALL", "img"], "is not an image"),
    (["-v", "/run:/hr", "img"], "holds /run/docker.sock"),
    (["-v", "/var/run:/hr", "img"], "holds /run/docker.sock"),
    (["-v", "/:/host", "img"], "holds every host socket"),
    (["-v", "/proc:/hp", "img"], "kernel interface"),
    (["--mount", "type=bind,src=/sys,dst=/s", "img"], "kernel interface"),
    (["--mount", "type=volume,dst=/d,volume-opt=device=/run,volume-opt=o=bind", "img"], "is a bind mount"),
    (["--volumes-from", "other", "img"], "--volumes-from is not allowed"),
    (["--security-opt", "systempaths=unconfined", "img"], "loosens the container's confinement"),
    (["--security-opt", "seccomp=unconfined", "img"], "loosens"),
    (["--security-opt", "apparmor=unconfined", "img"], "loosens"),
    (["--security-opt", "label=disable", "img"], "loosens"),
    (["--cap-add", "DAC_READ_SEARCH", "img"], "DAC_READ_SEARCH could undo it"),
    (["--cap-add", "SYS_RAWIO", "img"], "SYS_RAWIO could undo it"),
    (["--device", "/dev/sda", "img"], "--device is not allowed"),
    (["--device-cgroup-rule=b *:* rwm", "img"], "--device-cgroup-rule is not allowed"),
    (["--runtime", "x", "img"], "--runtime is not allowed"),
    (["--ipc", "host", "img"], "--ipc host"),
    (["--uts=host", "img"], "--uts host"),
    (["--pid", "container:other", "img"], "--pid container:other"),
    (["--sysctl", "net.ipv6.conf.all.disable_ipv6=0", "img"], "network settings are httpjail's"),
    (["--label", "httpjail-py.jail=pyxxxxxxxx", "img"], "httpjail's own"),
    (["--cidfile", "/tmp/x", "img"], "--cidfile is not allowed"),
    (["--dns-opt=ndots:1", "img"], "--dns-opt is not allowed"),
    (["--add-host", "a:1.2.3.4", "img"], "--add-host is not allowed"),
])
def test_refused(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_docker_run(args)


def test_a_link_to_an_engine_socket_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "innocent"
    link.symlink_to("/run/docker.sock")
    with pytest.raises(ValueError, match="holds /run/docker.sock"):
        parse_docker_run(["-v", f"{link}:/s", "img"])


@pytest.mark.parametrize("options", [
    ["--security-opt", "no-new-privileges"], ["--security-opt=no-new-privileges:true"],
    ["--security-opt", "seccomp=/etc/profile.json"], ["--cap-add", "chown,CAP_KILL"],
    ["-v", "named-volume:/data"], ["--ipc", "private"], ["--sysctl", "kernel.shm_rmid_forced=1"],
    ["--privileged=false"], ["--label", "team=a"],
])
def test_harmless_options_pass(options: list[str], tmp_path: Path) -> None:
    assert parse_docker_run([*options, "-v", f"{tmp_path}:/work", "img"]).image == "img"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="runs the x86_64 holder program")
def test_the_holder_program_waits(tmp_path: Path) -> None:
    program = tmp_path / "pause"
    program.write_bytes(pause_executable())
    program.chmod(0o755)
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([str(program)], timeout=0.5)


def test_the_holder_program_exists_for_arm64_too() -> None:
    code = pause_executable("aarch64")
    assert code[:4] == b"\x7fELF" and code[18] == 0xB7
