"""Executes the notebooks in colab/ as CI does: smallest settings, on the CPU.

  python colab/run_notebooks.py [NAME.ipynb ...]   # default: every colab/*.ipynb

Each notebook runs top to bottom in a fresh python3 kernel of this interpreter, with
CONDSR_NOTEBOOK_SMOKE=1 and JAX_PLATFORMS=cpu, from the colab/ folder (its set-up cell moves to
the repository root). Executed copies go to a temporary folder, and so do the notebooks' own
temporary files (removed after a successful run): nothing is written into the repository.
Prints the seconds each notebook took; a notebook that fails is named with its failing cell,
the others still run, and the exit status is then 1.
"""

import argparse
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

HERE = pathlib.Path(__file__).resolve().parent
CELL_TIMEOUT_S = 900
_ANSI = re.compile(r'\x1b\[[0-9;]*m')  # colours of IPython tracebacks


def _python3_kernel(root: pathlib.Path) -> None:
  """A `python3` kernel spec that starts this interpreter, ahead of any other on JUPYTER_PATH."""
  spec = root / 'kernels' / 'python3'
  spec.mkdir(parents=True)
  (spec / 'kernel.json').write_text(json.dumps({
      'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'Python 3', 'language': 'python'}))
  os.environ['JUPYTER_PATH'] = os.pathsep.join(
      p for p in (str(root), os.environ.get('JUPYTER_PATH')) if p)


def _failed_cell(nb: nbformat.NotebookNode) -> tuple[int, nbformat.NotebookNode | None]:
  """(index, cell) of the first code cell with an error output."""
  for i, cell in enumerate(nb.cells):
    if any(o.get('output_type') == 'error' for o in cell.get('outputs', [])):
      return i, cell
  return -1, None


def execute(path: pathlib.Path, out_dir: pathlib.Path) -> tuple[float, str | None]:
  """Runs one notebook; returns (seconds, None) or (seconds, what failed)."""
  nb = nbformat.read(path, as_version=4)
  client = NotebookClient(nb, kernel_name='python3', timeout=CELL_TIMEOUT_S,
                          extra_arguments=['--IPKernelApp.log_level=ERROR'],
                          resources={'metadata': {'path': str(HERE)}})
  start = time.perf_counter()
  error = None
  try:
    client.execute()
  except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
    index, cell = _failed_cell(nb)
    where = f'cell {index + 1} of {len(nb.cells)}' if cell is not None else 'a cell'
    source = cell.source.splitlines()[0] if cell is not None and cell.source else ''
    error = f'{path.name}: {where} ({source!r}) failed:\n{_ANSI.sub("", str(e))}'
  seconds = time.perf_counter() - start
  nbformat.write(nb, out_dir / path.name)
  return seconds, error


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('notebooks', nargs='*', help='notebooks to run (default: colab/*.ipynb)')
  args = parser.parse_args(argv)
  paths = [pathlib.Path(p).resolve() for p in args.notebooks] or sorted(HERE.glob('*.ipynb'))
  if not paths:
    print(f'no notebooks in {HERE}', file=sys.stderr)
    return 1
  out_dir = pathlib.Path(tempfile.mkdtemp(prefix='condsr_notebooks_'))
  work = out_dir / 'tmp'  # the notebooks' runs and exports (their tempfile folders)
  work.mkdir()
  os.environ.update(CONDSR_NOTEBOOK_SMOKE='1', JAX_PLATFORMS='cpu', PYTHONDONTWRITEBYTECODE='1',
                    TMPDIR=str(work))
  _python3_kernel(out_dir / 'jupyter')
  total, failed = 0.0, []
  for path in paths:
    seconds, error = execute(path, out_dir)
    total += seconds
    print(f'{path.name}: {seconds:.1f} s{"  FAILED" if error else ""}', flush=True)
    if error:
      print(f'notebook failed: {error}\nexecuted copy: {out_dir / path.name}\n', file=sys.stderr,
            flush=True)
      failed.append(path.name)
  if not failed:
    shutil.rmtree(work, ignore_errors=True)
  print(f'{len(paths)} notebooks in {total:.1f} s (executed copies in {out_dir})'
        + (f'; failed: {", ".join(failed)}' if failed else ''))
  print(f'notebooks: {len(paths) - len(failed)} passed, {len(failed)} failed')
  return 1 if failed else 0

if __name__ == '__main__':
  sys.exit(main())
