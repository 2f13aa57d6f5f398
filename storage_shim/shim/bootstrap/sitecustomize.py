"""First on the PYTHONPATH that ``storage-shim run`` gives every Python process it starts.

Installs the shim, then runs the ``sitecustomize`` this one shadows. When the
shim cannot be installed the process stops: running unprotected would break
the promise ``storage-shim run`` makes.
"""

import os
import sys

try:
    from storage_shim.shim.environment import install_from_environment, run_shadowed_sitecustomize

    install_from_environment()
except Exception as exc:
    sys.stderr.write(f"storage-shim run: cannot install the shim in {sys.executable}: {exc!r}\n")
    sys.stderr.flush()
    os._exit(1)
run_shadowed_sitecustomize(os.path.dirname(os.path.abspath(__file__)))
