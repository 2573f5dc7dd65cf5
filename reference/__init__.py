"""Pure NumPy reference implementation of the texture_nets generator: the judge.

    from reference import load_network
    net = load_network("model.t7", "float32")       # or a t7file.T7Module root
    output, trace = net.forward(x, trace=True)        # x: N x 3 x H x W

The network is built by walking the Torch7 module tree (``reference.network``);
each Torch7 primitive is mirrored by one small NumPy function (``padding``,
``convolution``, ``normalization``, ``activation``). Nothing here imports the
other implementations (torch_impl, tf_impl) or shares code with them.
"""

from reference.network import SUPPORTED_CLASSES, Network, build_network, load_network

__all__ = ["SUPPORTED_CLASSES", "Network", "build_network", "load_network"]
