"""Built-in hypernetwork strategies, registered through the same hook as third-party plugins."""

from hyperaudio import hookimpl
from hyperaudio.hypernet.strategies import BUILTIN


@hookimpl
def register_strategies(register):
    for name, (cls, description, paper) in BUILTIN.items():
        register(name, cls, description=description, paper=paper)
