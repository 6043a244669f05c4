"""Use GCL models from other libraries: sentence-transformers (`SentenceTransformer(path)`) and mteb / MIEB.

Each submodule imports its library only when used; neither library is needed to train or save a model.
"""
