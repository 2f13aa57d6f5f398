"""``storage-shim bench``: the library against raw protocols, SQLite and other libraries.

Not imported by ``import storage_shim``: importing it pulls in sqlite3,
multiprocessing and the optional third-party baselines.
"""
