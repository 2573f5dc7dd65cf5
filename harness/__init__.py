"""The harness: runs backends, compares them, explains drift, measures speed.

Subpackages, one concern each:

* ``harness.core``  - the backend registry, comparison, the tolerance model, noise and shapes,
  environment records, access to Torch7 ground truth;
* ``harness.drift`` - drift analysis (where a backend leaves the baseline) and its views
  (text, JSON, HTML, pictures);
* ``harness.bench`` - the benchmark.

Backends are reached only through the registry (``harness.core.registry.get_backend``); the
contract they follow lives in the leaf package ``contract``.
"""
