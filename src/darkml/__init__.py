"""darkml: machine-learning searches for dark matter, as reproducible pipelines.

simulate -> learn -> measure -> report, for five published studies.
"""
__version__ = "0.1.0"
