"""The oldest and the newest transformers the package allows, each with the tests of the code that
touches transformers' interfaces (layout, generation and its cache keyword, attention capture, the
architecture families, placement, loading):

    pip install nox && nox                          # both sessions
    nox -s "transformers(which='oldest')"           # transformers 5.0.0, the bottom of pyproject's range
    nox -s "transformers(which='newest')"           # the newest 5.x release

torch is installed first from the CPU build (``torch==2.13.0``), as the README's set-up does.
"""

from __future__ import annotations

import nox

VERSIONS = {"oldest": "transformers==5.0.0", "newest": "transformers>=5,<6"}
TESTS = [
    "tests/test_layout.py", "tests/test_bridge_layout.py", "tests/test_rope_phase.py", "tests/test_families.py",
    "tests/test_placement.py", "tests/test_chat_template.py", "tests/test_eval_harness.py", "tests/test_run.py",
    "tests/test_messages.py", "tests/test_source_view.py",
]


@nox.session(reuse_venv=True)
@nox.parametrize("which", list(VERSIONS))
def transformers(session: nox.Session, which: str) -> None:
    session.install("torch==2.13.0")
    session.install("-e", ".[dev]")
    session.install(VERSIONS[which])
    session.run("python", "-c", "import transformers; print('transformers', transformers.__version__)")
    session.run("pytest", "-q", *TESTS, env={"OMP_NUM_THREADS": "1"})
