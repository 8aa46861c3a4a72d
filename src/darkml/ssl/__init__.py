"""Self-supervised pre-training on strong-lensing images (Deshmukh et al. 2023).

* ``config``       the study's config and the paper's Tables 1 and 2
* ``data``         train/test splits (simulated or a toy set), label subsets
* ``encoders``     ResNet, ViT and tiny encoders (registered as ``kind="encoder"``)
* ``pretraining``  pre-training, fine-tuning, linear probes (methods in :mod:`darkml.learn.ssl`)
* ``figures``      Tables 1-2, Fig. 2, label efficiency, report.html
* ``study``        simulate -> train -> evaluate -> report

See docs/lensing-ssl.md.
"""
