import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TRAINED_ITERATIONS
from PIL import Image

from run_notebook import execute_notebook, parse_parameter, set_parameters

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["visualize_training.ipynb", "save_predictions.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs_and_with_a_parameters_cell(name):
    notebook = json.loads((REPO / name).read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code)
    assert "".join(code[0]["source"]).startswith("# Parameters")


def test_visualize_training_notebook(trained_run, tmp_path):
    execute_notebook(REPO / "visualize_training.ipynb", {"save_dir": str(trained_run.parent), "out_dir": str(tmp_path)},
                     output=tmp_path / "executed.ipynb", cwd=REPO)
    for stem in ("dlv3p_loss", "dlv3p_miou", "dlv3p_mdice", "dlv3p_mpacc", "dlv3p_class_iou",
                 "tiny_class_iou_over_validations", "tiny_confusion_matrix"):
        with Image.open(tmp_path / f"{stem}.png") as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    summary = (tmp_path / "dlv3p_summary.csv").read_text().splitlines()
    assert summary[0].startswith("run,classes,iterations,best_miou")
    assert summary[1].startswith(f"tiny,cityscapes,{TRAINED_ITERATIONS},")
    executed = json.loads((tmp_path / "executed.ipynb").read_text())
    assert any(
        output.get("output_type") == "display_data" for cell in executed["cells"] for output in cell.get("outputs", [])
    )


def test_save_predictions_notebook(trained_run, learn_root, tmp_path):
    gif = tmp_path / "predictions.gif"
    execute_notebook(REPO / "save_predictions.ipynb", {"checkpoint": str(trained_run / "best.pth"),
                     "data_root": str(learn_root), "num_frames": 5, "out_path": str(gif)}, cwd=REPO)
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 5
        assert image.size == (3 * 128, 64 + 16)  # image | prediction | ground truth, under a title bar


def test_parameters_are_checked():
    assert parse_parameter("num_frames=4") == ("num_frames", 4)
    assert parse_parameter("data_root=data/demo") == ("data_root", "data/demo")
    with pytest.raises(ValueError, match="expected name=value"):
        parse_parameter("oops")
    notebook = {"cells": [type("Cell", (), {"cell_type": "code", "source": "a = 1\nb = 2"})()]}
    notebook = type("Notebook", (), notebook)()
    set_parameters(notebook, {"b": "x"})
    assert notebook.cells[0].source == "a = 1\nb = 'x'"
    with pytest.raises(ValueError, match="has no 'c'"):
        set_parameters(notebook, {"c": 1})


def test_run_notebook_says_when_it_replaces_its_output(tmp_path, capsys):
    import nbformat

    import run_notebook

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# Parameters\nx = 1")])
    nbformat.write(notebook, tmp_path / "n.ipynb")
    for _ in range(2):
        argv = [str(tmp_path / "n.ipynb"), "--param", "x=2", "--output", str(tmp_path / "o.ipynb")]
        assert run_notebook.main(argv) == 0
    first, second = capsys.readouterr().out.strip().splitlines()
    assert not first.endswith("(replaced)") and second.endswith(f"-> {tmp_path / 'o.ipynb'} (replaced)")
    assert run_notebook.main([str(tmp_path / "n.ipynb"), "--output", str(tmp_path)]) == 2
    assert f"argument --output: {tmp_path} is a folder; name a file" in capsys.readouterr().err


def test_notebooks_run_at_once_from_one_folder_never_share_kernel_sockets(tmp_path):
    """Two notebooks started together from one folder (make test's workers, two shells): each kernel's socket files
    are its own, in a folder of the run's own, removed at the end (jupyter_client's default numbers them from 1 in
    the current folder, and two kernels that take the same numbers get each other's messages: "Invalid Signature")."""
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# Parameters\nx = 1\nprint(x * 7)")])
    nbformat.write(notebook, tmp_path / "n.ipynb")
    runs = [subprocess.Popen([sys.executable, str(REPO / "run_notebook.py"), str(tmp_path / "n.ipynb"), "--param",
                              f"x={x}", "--output", str(tmp_path / f"o{x}.ipynb")], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for x in (2, 3)]
    for run in runs:
        output = run.communicate(timeout=120)[0]
        assert run.returncode == 0, output
    for x in (2, 3):
        cell = nbformat.read(tmp_path / f"o{x}.ipynb", as_version=4).cells[0]
        assert cell.outputs[0]["text"] == f"{x * 7}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["n.ipynb", "o2.ipynb", "o3.ipynb"]
