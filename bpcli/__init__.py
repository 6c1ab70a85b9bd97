"""bp: backpropagation for real — a command-line MNIST trainer with a plain NumPy MLP.

Importing the package must stay cheap (``bp --help`` imports it): no numpy,
requests or Pillow at module level here or in ``bpcli.cli``.
"""

__version__ = "0.1.0"
