"""What the experiments share: mean ± std over seeds, and replacing their section of a Markdown
results file."""

import os
import re
from typing import Sequence

import numpy as np


def mean_std(values: Sequence[float], digits: int = 2) -> str:
  """'mean ± std' over seeds ('value' for one seed)."""
  if len(values) == 1:
    return f'{values[0]:.{digits}f}'
  return f'{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}'


def write_section(path: str, section: str, text: str) -> None:
  """Replaces the section headed `section` (up to the next '## ') in `path`, or appends it."""
  old = open(path).read() if os.path.exists(path) else '# Results\n\n'
  pattern = re.escape(section) + r'.*?(?=\n## |\Z)'
  new = re.sub(pattern, lambda _: text.rstrip('\n'), old, flags=re.S) if section in old else (
      old.rstrip('\n') + '\n\n' + text)
  with open(path, 'w') as f:
    f.write(new)
