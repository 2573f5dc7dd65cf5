"""Pure NumPy reference implementation of the texture_nets generators: the judge.

    from reference import load_network
    net = load_network("model.t7", "float32")        # or a t7file.T7Module root; batchnorm="train"/"evaluate"
    output, trace = net.forward(x, trace=True, noise=noise)   # x: N x C x H x W, noise: {lua_path: array}

The network is built by walking the Torch7 module tree (``reference.network``, the v1-era modules in
``reference.pyramid``); each Torch7 primitive is mirrored by one small NumPy function (``padding``,
``convolution``, ``normalization``, ``pooling``, ``activation``), fast where it matters and pinned to
the plain specification in ``reference.definitions``. Nothing here imports the other implementations
(torch_impl, tf_impl) or shares code with them.
"""

from reference.network import SUPPORTED_CLASSES, Network, build_network, load_network

__all__ = ["SUPPORTED_CLASSES", "Network", "build_network", "load_network"]
