import os

# Keep numeric libraries to one thread each: the CI machine has two cores and tests run servers.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
