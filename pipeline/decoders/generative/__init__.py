"""The generative decoder: network (network.py), int8 kernels (int8.py), search (search.py), bundle I/O (io.py)."""

from pipeline.decoders.generative.int8 import Projection, int8_available
from pipeline.decoders.generative.io import load_decoder_net, load_generative, save_decoder
from pipeline.decoders.generative.network import FROZEN, DecoderNet, GenerativeConfig, build_net
from pipeline.decoders.generative.search import Generated, GenerativeDecoder, reorder

__all__ = [
    "FROZEN",
    "DecoderNet",
    "Generated",
    "GenerativeConfig",
    "GenerativeDecoder",
    "Projection",
    "build_net",
    "int8_available",
    "load_decoder_net",
    "load_generative",
    "reorder",
    "save_decoder",
]
