"""Metric writers with clu's `MetricWriter` interface: absl logging, TensorBoard event files and
a JSON-lines scalar history, plotted to a PNG of training curves at the end of a run.

clu's writers import TensorFlow, so these stand in for them: `LoggingWriter` and `MultiWriter`
follow clu's, and `tensorboardX` encodes and frames the TensorBoard events.
"""

import itertools
import json
import os
import time
from typing import Any, Mapping, Protocol, Sequence

from absl import logging
import numpy as np
from tensorboardX import event_file_writer, summary
from tensorboardX.proto import event_pb2, summary_pb2

from condsr_jax import images as images_lib


class MetricWriter(Protocol):
  """The subset of `clu.metric_writers.MetricWriter` this project writes through."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Scalars (numbers or size-1 arrays) by name."""

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """[N]HWC images (C = 1, 3 or 4), uint8 or float in [0, 1], by name."""

  def flush(self) -> None:
    """Makes everything written so far durable."""

  def close(self) -> None:
    """Flushes and releases resources."""


def _as_image_batch(name: str, value: Any) -> np.ndarray:
  """[N]HWC uint8 or float [0, 1] -> NHWC uint8."""
  img = np.asarray(value)
  if img.ndim == 3:
    img = img[None]
  if img.ndim != 4 or img.shape[3] not in (1, 3, 4):
    raise ValueError(f'image {name!r}: expected [N]HWC with 1, 3 or 4 channels, got {img.shape}')
  if np.issubdtype(img.dtype, np.floating):
    return images_lib.from_float(img, np.uint8)
  if img.dtype != np.uint8:
    raise TypeError(f'image {name!r}: expected uint8 or float in [0, 1], got {img.dtype}')
  return img


def _scalar(value: Any) -> np.ndarray:
  """A number or size-1 array as a 0-d array."""
  return np.asarray(value).reshape(())


def _format_number(value: Any) -> str:
  x = _scalar(value)
  if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
    return str(x.item())
  return f'{float(x):.5g}'


# Event files are named by the second they are opened in: a per-process counter keeps two
# writers of one folder from truncating each other's file.
_FILE_IDS = itertools.count()


class TensorBoardWriter:
  """Writes scalars and images (PNG; an [N]HWC batch as NAME/0 .. NAME/N-1) to a TensorBoard
  event file in `logdir`.

  Writes are synchronous, so `flush` leaves every event on disk: `tensorboardX.SummaryWriter`
  queues events for a thread that its `flush` does not wait for.
  """

  def __init__(self, logdir: str | os.PathLike):
    os.makedirs(logdir, exist_ok=True)
    self._events = event_file_writer.EventsWriter(
        os.path.join(os.fspath(logdir), 'events'), f'.{os.getpid()}.{next(_FILE_IDS)}')

  def _write(self, step: int, summaries: Sequence[summary_pb2.Summary]) -> None:
    values = [v for s in summaries for v in s.value]
    if values:
      self._events.write_event(event_pb2.Event(
          wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._write(step, [summary.scalar(k, float(_scalar(v))) for k, v in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    summaries = []
    for name, value in images.items():
      batch = _as_image_batch(name, value)
      tags = [name] if len(batch) == 1 else [f'{name}/{i}' for i in range(len(batch))]
      summaries += [summary.image(t, img, dataformats='HWC') for t, img in zip(tags, batch)]
    self._write(step, summaries)

  def flush(self) -> None:
    self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None


class LoggingWriter:
  """Writes one absl INFO line per call; images are logged by shape."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    items = ', '.join(f'{k}={_format_number(v)}' for k, v in sorted(scalars.items()))
    logging.info('[%d] %s', step, items)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    items = ', '.join(f'{k}{list(np.shape(v))}' for k, v in sorted(images.items()))
    logging.info('[%d] images: %s', step, items)

  def flush(self) -> None:
    logging.flush()

  def close(self) -> None:
    self.flush()


class MultiWriter:
  """Forwards every call to each of several writers."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self.writers = tuple(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    for w in self.writers:
      w.write_images(step, images)

  def flush(self) -> None:
    for w in self.writers:
      w.flush()

  def close(self) -> None:
    for w in self.writers:
      w.close()


class ScalarHistoryWriter:
  """Appends every scalar write as one JSON line {"step": S, NAME: VALUE, ...}: a history that
  survives resumes and that `plot_curves` reads. Images are not kept."""

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    # Line-buffered: every write reaches the file, so a killed run keeps its history.
    self._file = open(self.path, 'a', buffering=1, encoding='utf-8')  # pylint: disable=R1732

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    record = {'step': int(step), **{k: float(_scalar(v)) for k, v in scalars.items()}}
    self._file.write(json.dumps(record) + '\n')

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    del step, images

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()


HISTORY_FILE, CURVES_FILE = 'metrics.jsonl', 'curves.png'
_BASELINES = ('bicubic', 'lanczos')
_BOOKKEEPING = ('train/steps_per_sec', 'train/skipped_total', 'train/bad_images', 'train/skipped')


def read_history(path: str | os.PathLike) -> dict[str, dict[int, float]]:
  """{scalar name: {step: value}} from a history file; a step written again after a resume
  keeps its last value. A torn last line (a killed run) is skipped."""
  history: dict[str, dict[int, float]] = {}
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      step = record.pop('step')
      for name, value in record.items():
        history.setdefault(name, {})[step] = value
  return history


def plot_curves(history_path: str | os.PathLike, png_path: str | os.PathLike) -> list[str]:
  """Training losses and every evaluation scalar over steps (evaluation ones next to their
  bicubic / Lanczos baselines) as one PNG; returns the panel titles. A bare `Figure` draws
  without pyplot, so the process's (or a notebook's) matplotlib backend is left alone."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  history = read_history(history_path)
  losses = sorted(k for k in history if k.startswith('train/') and k not in _BOOKKEEPING)
  evals = []
  for k in sorted(history, key=lambda k: (-len(k), k)):  # of two equal series, plot the longer name
    if (not k.startswith('train/') and not k.endswith(tuple(f'_{b}' for b in _BASELINES))
        and all(history[k] != history[e] for e in evals)):
      evals.append(k)
  evals.sort()
  panels = ([('training losses', losses)] if losses else []) + [(k, [k]) for k in evals]
  if not panels:
    return []
  cols = min(3, len(panels))
  rows = -(-len(panels) // cols)
  fig = Figure(figsize=(5 * cols, 3.4 * rows))
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax, (title, names) in zip(axes.flat, panels):
    for name in names:
      steps = sorted(history[name])
      ax.plot(steps, [history[name][s] for s in steps], marker='.' if name in evals else None,
              label=name.split('/', 1)[-1])
      for baseline in _BASELINES:
        values = history.get(f'{name}_{baseline}')
        if values:
          ax.axhline(values[max(values)], linestyle='--', linewidth=1, color='gray'
                     if baseline == 'bicubic' else 'tab:green', label=baseline)
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis('off')
  fig.tight_layout()
  fig.savefig(png_path, dpi=80)
  return [title for title, _ in panels]


def create_writer(logdir: str | os.PathLike, *, just_logging: bool = False) -> MetricWriter:
  """Logging + TensorBoard + scalar-history (`HISTORY_FILE`) writer for `logdir`; logging only
  if `just_logging`.

  Pass `just_logging=True` on all but the first process of a multi-host run.
  """
  if just_logging:
    return LoggingWriter()
  return MultiWriter([LoggingWriter(), TensorBoardWriter(logdir),
                      ScalarHistoryWriter(os.path.join(logdir, HISTORY_FILE))])
