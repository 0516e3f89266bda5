"""What the topology looks like: GET /v1/topology (JSON), /v1/topology.svg and /topology.

`model.build` turns a TopologyView (and the intent, for names) into a JSON
document; `render.svg` and `render.html_page` draw that document. Both are pure.
"""

from controller.topoview.model import build, empty
from controller.topoview.render import html_page, svg

__all__ = ["build", "empty", "html_page", "svg"]
