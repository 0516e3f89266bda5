"""The README's client examples run as written, against the real controller.

The curl block (with `$NET` taken from the create response) and the openstacksdk
snippet (`auth_type="admin_token"`) are read out of README.md and executed, so the
documentation cannot drift from what works: only the URL is swapped for the test
controller's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from topologies.controller_process import ControllerProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TOKENS = {  # the README's --auth-tokens example
    "s3cret-admin-token": {"project_id": "ops", "role": "admin"},
    "tenant-a-token": {"project_id": "tenant-a", "role": "member"},
}


def _block(heading: str, lang: str) -> str:
    """The first ```lang fenced block after `heading` in README.md."""
    text = README.read_text()
    start = text.index(heading)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    assert m, f"no ```{lang} block after {heading!r}"
    return m.group(1)


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    base = tmp_path_factory.mktemp("readme")
    tokens = base / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    ctl = ControllerProcess(base / "state", [], extra_args=("--auth-tokens", str(tokens)))
    ctl.api.token = "s3cret-admin-token"
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()


def test_readme_curl_block_runs_and_sets_net(controller: ControllerProcess) -> None:
    script = _block("### curl", "sh")
    first, _, rest = script.partition("\n")
    assert first.startswith("H=") and "U=http://127.0.0.1:9696" in first
    url = controller.api.base_url
    proc = subprocess.run(["bash", "-c", "set -eu\n" + first.replace(
        "http://127.0.0.1:9696", url) + "\n" + rest], capture_output=True, text=True,
        timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    net_id = proc.stdout.splitlines()[0].strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", net_id), proc.stdout[:500]
    # the subnet and the port went onto that network: $NET was set
    subnets = controller.api.get(f"/v2.0/subnets?network_id={net_id}").ok()["subnets"]
    assert [s["cidr"] for s in subnets] == ["10.0.0.0/24"]
    assert subnets[0]["enable_dhcp"] is True  # as Neutron: Loom answers DHCP
    ports = controller.api.get(f"/v2.0/ports?network_id={net_id}").ok()["ports"]
    assert [p["name"] for p in ports] == ["vm1"]
    assert "HTTP/1.1 201 Created" in proc.stdout


def test_readme_openstacksdk_snippet_runs_with_a_token(controller: ControllerProcess) -> None:
    code = _block("### openstacksdk", "python")
    assert 'auth_type="admin_token"' in code
    url = controller.api.base_url
    code = code.replace('"http://127.0.0.1:9696"', repr(url))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "net-sdk" in proc.stdout
    nets = controller.api.get("/v2.0/networks?name=net-sdk").ok()["networks"]
    assert [n["project_id"] for n in nets] == ["tenant-a"]
    # a member's token works the same way and sees its project's network
    member = code.replace('"s3cret-admin-token"', '"tenant-a-token"').split(
        "net = ")[0] + "print([n.name for n in conn.network.networks()])\n"
    proc = subprocess.run([sys.executable, "-c", member], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "net-sdk" in proc.stdout, proc.stdout + proc.stderr
