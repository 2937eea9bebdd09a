"""Print the pinned third-party requirements of pyproject.toml, one per line (the image's
dependency layer is installed from these before the sources are copied, so a source change
rebuilds only the last, small layer). Runs on the image's Python 3.10+: tomllib, else the tomli
that pip vendors."""

import re
import sys

try:
    import tomllib
except ImportError:  # Python 3.10 (the PYNQ images' Ubuntu 22.04)
    from pip._vendor import tomli as tomllib

LOCAL = {"fpga-serve-client"}  # installed from ./client, not from an index


def main(path: str) -> None:
    with open(path, "rb") as fh:
        project = tomllib.load(fh)["project"]
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        if name is not None and name.group(0).lower() not in LOCAL:
            print(requirement)


if __name__ == "__main__":
    main(sys.argv[1])
