"""What torch_impl's artefacts share with the backend that runs them: the metadata file name, and the
filter for the exporters' expected warnings. A leaf module, so that torch_impl.backend and
torch_impl.export need not import each other."""

from __future__ import annotations

import warnings

import torch

# The JSON that torch_impl.export stores inside a TorchScript artefact (torch.jit.save's extra files):
# dtype, batch-norm mode, input planes, noise paths (the order of the noise inputs) and trace paths.
METADATA_FILE = "texture_nets.json"


class quiet_export_warnings(warnings.catch_warnings):
    """Silence the exporters' known, expected warnings (torch.jit deprecation, the ONNX
    exporter's 'instance_norm is set to train=True', which is exactly the semantics wanted,
    the tracer's notes on Python-level shape checks, which guard sizes the graph never sees, and
    torch.export.save's note on weights stored channels last)."""

    def __enter__(self):
        result = super().__enter__()
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\..*")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*instance_norm.*train=True.*")
        warnings.filterwarnings("ignore", message=r".*Constant folding.*")
        warnings.filterwarnings("ignore", message=r".*jit.*deprecated.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # torch.export.save on channels-last weights (torch_impl.build): no weight is a plain contiguous view of its
        # storage, so the archive stores the first as it is; reloaded artefacts reproduce the model exactly.
        warnings.filterwarnings("ignore", message=r".*No complete tensor found in the group.*")
        return result
