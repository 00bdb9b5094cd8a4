"""Hook specifications: the whole plugin API of hyperaudio.

A plugin is a module (or object) with functions decorated by ``hyperaudio.hookimpl`` whose names
match the specs below. Each hook receives a ``register`` callback; call it once per entry.
Built-in components are registered through these same hooks (``hyperaudio.default_plugins``).

Third-party plugins are discovered through the ``hyperaudio`` entry-point group::

    [project.entry-points.hyperaudio]
    my_plugin = "my_package.plugin"
"""

import pluggy

hookspec = pluggy.HookspecMarker("hyperaudio")
hookimpl = pluggy.HookimplMarker("hyperaudio")


@hookspec
def register_target_networks(register):
    """Register target networks: ``register(name, cls, description="", paper="")``.

    ``cls`` is a ``torch.nn.Module`` subclass whose constructor takes keyword hyperparameters
    and whose ``forward`` maps time coordinates ``t`` of shape ``[N, 1]`` in ``[-1, 1]`` to
    amplitudes ``[N, C]`` (see ``hyperaudio.functional`` for the full contract).
    """


@hookspec
def register_encoders(register):
    """Register encoders: ``register(name, cls, description="", paper="")``.

    ``cls`` is a ``torch.nn.Module`` subclass mapping a waveform ``[B, T]`` to a latent.
    """


@hookspec
def register_strategies(register):
    """Register hypernetwork strategies: ``register(name, cls, description="", paper="")``.

    A strategy decides how generated weights become target-network parameters.
    """


@hookspec
def register_presets(register):
    """Register presets: ``register(name, preset)``.

    ``preset`` is a path to a TOML file or an already-parsed ``dict`` with the same layout.
    """
