"""Execute a notebook headless (nbclient) with its parameters cell replaced.

    python run_notebook.py visualize_training.ipynb --param save_dir=saved --output outputs/visualize_training.ipynb

The first code cell of each notebook is its parameters cell; ``--param
name=value`` (a Python literal, or a plain string) overrides one assignment.
"""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from segdata.files import OutputError, check_output_file, write_bytes_atomic
from segdata.flags import Parser, one_line, report_error


def parse_parameter(text: str) -> tuple[str, object]:
    """``name=value`` -> (name, value); the value as a Python literal when it is one, else as a string."""
    name, separator, value = text.partition("=")
    if not separator or not name.isidentifier():
        raise ValueError(f"--param {text!r}: expected name=value")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def set_parameters(notebook: nbformat.NotebookNode, parameters: dict[str, object]) -> None:
    """Replace assignments in the first code cell; a name the cell does not assign is an error."""
    cell = next(cell for cell in notebook.cells if cell.cell_type == "code")
    lines = cell.source.splitlines()
    for name, value in parameters.items():
        indices = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == name]
        if not indices:
            raise ValueError(f"the parameters cell has no {name!r}; it assigns "
                             f"{[line.split('=')[0].strip() for line in lines if '=' in line]}")
        lines[indices[0]] = f"{name} = {value!r}"
    cell.source = "\n".join(lines)


def execute_notebook(path: Path, parameters: dict[str, object] | None = None, output: Path | None = None,
                     cwd: Path | None = None, timeout: int = 900) -> nbformat.NotebookNode:
    """Run every cell (in ``cwd``, default the notebook's folder); save the executed copy to ``output``."""
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    set_parameters(notebook, parameters or {})
    with tempfile.TemporaryDirectory(prefix="kernel-") as sockets:
        # local socket files, not TCP ports, in a folder of this run's own: jupyter_client numbers its socket files
        # from 1 in the current folder by default, and two notebooks started at once there would share them
        kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "ipc"))
        client = NotebookClient(notebook, km=kernel, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(cwd or path.parent)}})
        try:
            client.execute()
        finally:  # nbclient leaves a kernel manager it did not create running
            if kernel.has_kernel:
                kernel.shutdown_kernel(now=False)
    if output is not None:
        write_bytes_atomic(Path(output), nbformat.writes(notebook).encode())
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="run_notebook.py", description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path, help="notebook to execute")
    parser.add_argument("--param", action="append", default=[], help="name=value for the parameters cell")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to save the executed notebook (a file there is replaced, atomically)")
    args = parser.parse_args(argv)
    try:
        parameters = dict(parse_parameter(text) for text in args.param)
        replaced = args.output is not None and Path(args.output).exists()
        if args.output is not None:
            check_output_file(args.output, "--output", overwrite=True)
        execute_notebook(args.notebook, parameters, args.output, cwd=Path.cwd())
    except (OSError, ValueError, CellExecutionError, KeyboardInterrupt) as error:
        return report_error(ValueError(f"{args.notebook}: {one_line(error)}") if isinstance(error, ValueError)
                            and not isinstance(error, OutputError) else error, failures=(CellExecutionError,))
    print(f"executed {args.notebook}" + (f" -> {args.output}" + (" (replaced)" if replaced else "")
                                         if args.output else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
