"""``%%container`` from a local kernel sees the notebook's folder, as the kernel does.

nbclient runs a notebook on the host's ``python3`` kernel next to ``data.csv``; its
``%%container local`` cell (the embedded default config and image) starts in that folder,
reads the file with pandas, gets a DataFrame in and sends a numpy array out, and writes a
file that then exists next to the notebook, owned by the folder's owner. Guards: a job
started in the image's HOME (no mount, or no working directory), a job run as root or as
the image's uid on a folder another uid owns, the default image without pandas.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.docker

OWNER = (1234, 100)  # not root, not the image's 1000: only the uid rule makes it right
CELLS = [
    "%load_ext jupyter_dss_containers\nimport pandas as pd\ndf = pd.DataFrame({'x': [10, 20, 30]})",
    "%%container local --in df --out arr\n"
    "import os, pandas as pd\n"
    "print('cwd', os.getcwd(), 'uid', os.getuid())\n"
    "src = pd.read_csv('data.csv')\n"
    "arr = src.x.to_numpy() + df.x.to_numpy()\n"
    "src.assign(y=arr).to_csv('from_job.csv', index=False)\n",
    "print('arr', type(arr).__name__, arr.tolist())",
]


@pytest.fixture
def notebook_folder(base_image):
    top = Path(tempfile.mkdtemp(prefix="dss-wsjob-"))
    folder = top / "project" / "analysis"
    folder.mkdir(parents=True)
    (folder / "data.csv").write_text("x\n1\n2\n3\n")
    for path in [top, top / "project", folder, folder / "data.csv"]:
        os.chown(path, *OWNER)
    top.chmod(0o755)
    saved = os.environ.pop("DSS_CONTAINERS_CONFIG", None)  # the embedded default: `local`
    try:
        yield folder
    finally:
        if saved is not None:
            os.environ["DSS_CONTAINERS_CONFIG"] = saved
        shutil.rmtree(top, ignore_errors=True)


def test_container_cell_reads_and_writes_next_to_the_notebook(notebook_folder):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=240,
        resources={"metadata": {"path": str(notebook_folder)}},
    )
    executed = client.execute()
    texts = [
        "".join(
            o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
        )
        for cell in executed.cells
    ]
    errors = [o for cell in executed.cells for o in cell.outputs if o.output_type == "error"]
    assert not errors, errors
    assert f"cwd {notebook_folder} uid {OWNER[0]}" in texts[1], texts[1]
    assert "arr ndarray [11, 22, 33]" in texts[2], texts
    written = notebook_folder / "from_job.csv"
    assert written.read_text().splitlines() == ["x,y", "1,11", "2,22", "3,33"]
    assert (written.stat().st_uid, written.stat().st_gid) == OWNER
