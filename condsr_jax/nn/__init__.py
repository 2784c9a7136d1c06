"""Flax linen networks. `ARCHITECTURES` maps the names used in model files to module classes."""

from condsr_jax.nn.cmdsr import CMDSRNet, CMDSRRRDBNet
from condsr_jax.nn.discriminators import UNetDiscriminatorSN
from condsr_jax.nn.edsr import EDSR
from condsr_jax.nn.rrdbnet import RRDBNet
from condsr_jax.nn.srresnet import MSRResNet
from condsr_jax.nn.srvgg import SRVGGNetCompact
from condsr_jax.nn.vgg import VGG19Features

ARCHITECTURES = {
    'RRDBNet': RRDBNet,
    'EDSR': EDSR,
    'SRVGGNetCompact': SRVGGNetCompact,
    'MSRResNet': MSRResNet,
    'UNetDiscriminatorSN': UNetDiscriminatorSN,
    'VGG19Features': VGG19Features,
    'CMDSRNet': CMDSRNet,
    'CMDSRRRDBNet': CMDSRRRDBNet,
}
