import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# every report figure made by a test is checked for panels, colour bars and legends covering one another
os.environ.setdefault("DARKML_STRICT_FIGURES", "1")

import torch  # noqa: E402

torch.set_num_threads(2)
