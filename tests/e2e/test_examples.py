"""Every examples/*.toml passes `switchboard check --config FILE`.

Examples may reference the bundled upstreams by bare name; the test puts them
on PATH: switchboard, switchboard-fixture, switchboard-fake-upstream, node
(22), mcp-server-everything, python/mcp-server-time (the e2e venv).
Nothing is skipped: an example that cannot be checked here fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import REPO, describe, run

EXAMPLES = sorted((REPO / "examples").glob("*.toml"))


def test_examples_exist():
    assert EXAMPLES, f"no example configs in {REPO / 'examples'}"


@pytest.fixture(scope="module")
def example_path(env, tmp_path_factory) -> str:
    """PATH with every binary an example may name."""
    bindir = tmp_path_factory.mktemp("example-bin")
    links = {
        "switchboard": env.switchboard,
        "switchboard-fixture": env.fixture,
        "switchboard-fake-upstream": env.fake_upstream,
        "mcp-server-everything": env.deps / "mcp-tools" / "node_modules" / ".bin" / "mcp-server-everything",
    }
    for name, target in links.items():
        if Path(target).exists():
            (bindir / name).symlink_to(target)
    venv_bin = env.venv_python.parent
    return os.pathsep.join([str(bindir), str(env.node_bin_dir), str(venv_bin), os.environ.get("PATH", "")])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_check(example, switchboard_bin, fixture_bin, fake_upstream_bin, example_path):
    cp = run(
        [switchboard_bin, "check", "--config", example],
        timeout=90,
        cwd=REPO,
        env={"PATH": example_path},
    )
    assert cp.returncode == 0, describe(cp)
