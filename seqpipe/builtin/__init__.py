"""Built-in plugins: ordinary plugin modules, listed in :data:`seqpipe.plugins.BUILTIN_PLUGINS`."""
