"""The two third-party libraries hako uses, as the distribution installs them.

pyroute2 (networking) and libseccomp's binding (the seccomp filter) come
from the host's packages. A virtualenv or ``python3 -S`` does not see the
system's site-packages, so they are looked for there too before hako says
which package to install.
"""

from __future__ import annotations

import os
import sys

from .errors import MissingLibrary


def system_module(names: tuple[str, ...], library: str, hint: str):
    """The first of ``names`` that imports, from the system's site-packages if need be."""
    for attempt in range(2):
        for name in names:
            try:
                return __import__(name)
            except ImportError:
                continue
        if attempt == 0:
            import site

            for path in [*site.getsitepackages(), "/usr/lib/python3/dist-packages"]:
                if os.path.isdir(path) and path not in sys.path:
                    sys.path.append(path)
    raise MissingLibrary(library, hint)
