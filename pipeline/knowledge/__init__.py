"""Knowledge bases: versioned banks of the user's sentences, apart from the model bundle.

A bank holds sentences with their provenance, their frozen-teacher embeddings, a FAISS
index and a manifest (encoder identity, counts, content hash = version). The model never
owns a bank: any bank built with the same teacher serves any bundle of that teacher.
"""
