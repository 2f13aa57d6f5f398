"""The PostgreSQL server the tests share: started from the machine's binaries (see testing.py)."""

pytest_plugins = ["storage_shim_postgres.testing"]
