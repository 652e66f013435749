"""The example targets bundled with the studio (see ``examples/README.md`` for their sources)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

#: name -> (title, file, licence), in the order the page shows them.
EXAMPLES = {
    "astronaut": ("Astronaut", "astronaut.jpg", "public domain (NASA)"),
    "starry-night": ("The Starry Night", "starry-night.jpg",
                     "public domain (Van Gogh, 1889; Google Art Project scan)"),
    "cat": ("Cat", "cat.jpg", "CC0 (Stefan van der Walt)"),
    "coffee": ("Coffee", "coffee.jpg", "CC0 (Rachel Michetti)"),
}


def examples() -> list[dict[str, Any]]:
    """The bundled example targets.

    Returns
    -------
    list of dict
        ``name`` (for URLs), ``title``, ``path`` (the JPEG, a
        :class:`pathlib.Path` inside the installed package) and ``licence``.
    """
    folder = resources.files("mosaicist.studio").joinpath("examples")
    found = []
    for name, (title, file_name, licence) in EXAMPLES.items():
        path = Path(str(folder.joinpath(file_name)))
        if path.is_file():
            found.append({"name": name, "title": title, "path": path, "licence": licence})
    return found


def example_path(name: str) -> Path | None:
    """The file of example ``name``, or None when there is no such example."""
    return next((item["path"] for item in examples() if item["name"] == name), None)
