"""The backend contract: what the harness and every implementation agree on.

A neutral leaf package (it imports only numpy and t7file), so that the reference, the PyTorch
rebuild, the TensorFlow port and every plug-in can depend on it without depending on the harness:

    from contract import BackendError, Backend, Runner, DTYPES
    from contract.families import detect_family

See :mod:`contract.protocol` for the protocol itself and docs/verifying-a-new-port.md for a guide.
"""

from contract.errors import BackendError
from contract.protocol import BATCHNORM_MODES, DTYPES, IN_STATISTICS, Backend, Runner

__all__ = ["BATCHNORM_MODES", "DTYPES", "IN_STATISTICS", "Backend", "BackendError", "Runner"]
