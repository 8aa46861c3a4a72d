"""The equivariant-network benchmark on strong-lensing images (Cheeramvelil, Gleyzer & Toomey).

* ``config``     the benchmark's config and the paper's Tables 1 and 2
* ``steerable``  e2cnn building blocks (numpy-2 compatibility, steerable convolutions, blur pooling)
* ``models``     C8/D8 steerable CNN, Harmonic Net, Equivariant Transformer, plain CNN (registered)
* ``benchmark``  datasets, fits, test metrics, data efficiency
* ``figures``    ROC / mass / convergence / efficiency figures and report.html
* ``study``      simulate -> train -> evaluate -> efficiency -> report

See docs/lensing-equivariant.md.
"""
