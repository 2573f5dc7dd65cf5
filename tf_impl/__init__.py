"""TensorFlow 2 port of texture_nets' generator, in the published port's idiom but faithful to Torch7.

``backend`` (``tf``), ``seed_backend`` (``tf-seed``: the published flawed port, reproduced),
``tflite_backend`` (``tflite``), ``savedmodel`` (SavedModel / checkpoint export and loading).
TensorFlow is imported only by the modules that need it, never by this package.
"""
