"""Study 5 -- gas skymaps: 13CO column density from 12CO with Gaussian processes and a patch CNN.

Reproduces Shmakov, Karwin, Tavakoli, Murgia & Baldi (NeurIPS ML4PS 2020) on MOPRA-like data:

* ``rings``      Galactocentric rings -> LSR velocity windows (Clemens 1985 rotation curve)
* ``radiative``  CO radiative transfer, LTE 13CO column, conversions to N(H2)
* ``synthetic``  the MOPRA-like synthetic survey (pure function of config and seed)
* ``mopra``      reader for local MOPRA FITS cubes -> the same ring planes per 1-deg tile
* ``patches``    preprocessing (sigma = 1 px filter, 3-sigma cut), spatial splits, patches
* ``gp``         batched Matern-3/2 + white-noise GPs on 9-pixel line patches
* ``patch_cnn``  the patch CNN (also fully convolutional), WMAE / Poisson losses
* ``baselines``  per-ring linear regression, physics inverse, conditional median (noise floor)
* ``hpsearch``   Optuna search over lr, filters, window, max weight
* ``metrics``    per-plane correlation, scaled and hot-spot error (Table 1, Fig. 4)
* ``study``      simulate -> train -> evaluate -> report; ``cli`` is ``darkml gas ...``

See docs/gas.md.
"""
