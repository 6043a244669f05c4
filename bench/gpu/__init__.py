"""The pieces of `bench/gpu_suite.py`: model cases and batches, timing and records, and one module per figure
family (training, encoding, search). Importing them pulls in neither ``datasets`` nor ``evaluate``."""
