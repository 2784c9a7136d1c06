"""The `condsr-jax` console script: one sub-command per tool.

Each command lives with the code it drives (`add_cli_arguments(parser)`, `cli_main(args) -> int`)
and is imported only when invoked, so `condsr-jax upscale` does not pay for the data pipeline.
"""

import argparse
import importlib
import sys

from condsr_jax import xla_flags

COMMANDS = {
    'upscale': ('condsr_jax.inference', 'upscale images or folders with a model'),
    'convert': ('condsr_jax.convert', 'convert a PyTorch checkpoint to a condsr_jax model file'),
    'export': ('condsr_jax.export',
               'export a model as a PyTorch .pth, safetensors, orbax directory or ONNX file'),
    'prep': ('condsr_jax.data.prep', 'prepare a dataset: multiscale | subimages | meta-info'),
    'degrade': ('condsr_jax.degrade.gallery', 'gallery of synthesized degradations of an image'),
    'evaluate': ('condsr_jax.evaluate',
                 'PSNR/SSIM of a model against bicubic on a validation folder'),
    'adapt': ('condsr_jax.adapt',
              'SR for real LR from unpaired data: degradation, generated pairs, SR (DASR-Wei)'),
}


def _usage() -> str:
  lines = ['usage: condsr-jax COMMAND [options]', '', 'commands:']
  lines += [f'  {name:<10}{help_}' for name, (_, help_) in COMMANDS.items()]
  lines += ['', "'condsr-jax COMMAND -h' describes a command's options."]
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] in ('-h', '--help'):
    print(_usage())
    return 0
  if argv[0] not in COMMANDS:
    print(f'condsr-jax: unknown command {argv[0]!r}\n\n{_usage()}', file=sys.stderr)
    return 2
  xla_flags.tune_xla_cpu()
  module_name, help_ = COMMANDS[argv[0]]
  module = importlib.import_module(module_name)
  parser = argparse.ArgumentParser(prog=f'condsr-jax {argv[0]}', description=help_)
  module.add_cli_arguments(parser)
  return int(module.cli_main(parser.parse_args(argv[1:])) or 0)


if __name__ == '__main__':
  sys.exit(main())
