"""Knowledge bases: versioned banks of the user's sentences, apart from the model bundle.

A bank holds sentences with their provenance, their frozen-teacher embeddings, a FAISS
index and a manifest (encoder identity, counts, content hash = version). The model never
owns a bank: any bank built with the same teacher serves any bundle of that teacher.

    documents.py  files and folders -> sentences with provenance; formats/ reads each file type by its structure
    cache.py      embeddings by text hash, per encoder (safetensors chunks)
    bankfiles.py  one version on disk; LoadedBank (search, provenance)
    store.py      BankStore: build / add / list / show / remove / resolve / load
    builtin.py    the shipped bundle's bank as the built-in bank `default`
    index.py      FAISS index kinds; provenance.py  Provenance
"""
