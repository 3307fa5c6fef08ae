"""THAU's chat runtime: CLI, REPL, agent loop, tool-call parser, backends."""
